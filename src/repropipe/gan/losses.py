"""WGAN-GP losses exactly as torch-mimicry / Gulrajani et al. define them."""

from __future__ import annotations

from collections.abc import Callable

import torch


def loss_D(d_fake: torch.Tensor, d_real: torch.Tensor) -> torch.Tensor:
    """Critic loss: E[D(fake)] - E[D(real)] (the negated Wasserstein estimate)."""
    return d_fake.mean() - d_real.mean()


def loss_G(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss: -E[D(G(z))]."""
    return -d_fake.mean()


def loss_GP(x_fake: torch.Tensor, x_real: torch.Tensor, D: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Gradient penalty: mean over samples of (||grad_x D(x_hat)||_2 - 1)^2.

    x_hat = alpha x_real + (1 - alpha) x_fake with one alpha ~ U(0, 1) per sample and x_fake
    detached; the gradient keeps its graph (create_graph) so the penalty trains the critic.
    """
    n = x_real.shape[0]
    alpha = torch.rand(n, 1, 1, 1, device=x_real.device, dtype=x_real.dtype)
    x_hat = (alpha * x_real + (1 - alpha) * x_fake.detach()).requires_grad_(True)
    out = D(x_hat)
    grad, = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)
    grad = grad.reshape(n, -1)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()
