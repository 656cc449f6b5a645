"""Iterated sampling-importance-resampling (i-SIR) in the generator's latent space.

Target: p*(z) proportional to p(z) exp(D(G(z))), p = N(0, I), i.e. log rho(z) = -||z||^2/2 + D(G(z)).
Each iteration keeps the current particle of every row and adds N_p fresh ones from the proposal
q = N(0, I); one of the N_p + 1 is drawn with probability proportional to rho(z) / q(z). Since
q = p, the normalising terms cancel and the importance log-weight is log rho(z) - log q(z) =
D(G(z)). The chain leaves p* invariant (Andrieu et al. 2018; Ex2MCMC, Samsonov et al. 2022).
Everything is batched: G and D see [batch, n_z] latents, never one sample at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def log_rho(z: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """log of the unnormalised target density at ``z`` [..., n_z] given critic scores D(G(z))."""
    return -0.5 * (z ** 2).sum(-1) + scores


@torch.no_grad()
def critic_scores(z: torch.Tensor, D: Callable[[torch.Tensor], torch.Tensor], G: Callable[[torch.Tensor], torch.Tensor],
                  batch_size: int = 512) -> torch.Tensor:
    """D(G(z)) for a flat [m, n_z] batch of latents, in chunks of ``batch_size``."""
    return torch.cat([D(G(chunk)).reshape(-1) for chunk in z.split(batch_size)])


@torch.no_grad()
def isir_sample(N_i: int, N_s: int, N_p: int, n_z: int, D: Callable[[torch.Tensor], torch.Tensor],
                G: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int = 512,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, list[float]]:
    """Run N_s independent i-SIR chains for N_i iterations with N_p proposals each.

    Returns the final latents [N_s, n_z] and, per iteration, the fraction of rows whose particle
    changed (the acceptance rate of the move).
    """
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device)

    z = randn(N_s, 1, n_z)
    changed: list[float] = []
    for _ in range(N_i):
        cand = torch.cat([z, randn(N_s, N_p, n_z)], dim=1)                # [N_s, N_p + 1, n_z]
        flat = cand.reshape(-1, n_z)
        scores = critic_scores(flat, D, G, batch_size).reshape(N_s, N_p + 1)
        log_w = log_rho(cand, scores) - (-0.5 * (cand ** 2).sum(-1))     # rho / q with q = N(0, I)
        probs = torch.softmax(log_w.double(), dim=1).cpu()
        idx = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(cand.device)
        changed.append(float((idx != 0).double().mean()))
        z = cand[torch.arange(N_s, device=cand.device), idx].unsqueeze(1)
    return z.squeeze(1), changed
