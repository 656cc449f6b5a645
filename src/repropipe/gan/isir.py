"""Iterated sampling-importance-resampling (i-SIR) in the generator's latent space, with a calibrated critic.

Target: p*(z) proportional to p(z) r(G(z)), p = N(0, I), where r(x) = p_data(x) / p_G(x) is the
density ratio between real and generated images: the pushforward of p* by G is then p_data
wherever p_G covers it (discriminator-driven latent sampling, Che et al. 2020). Each iteration
keeps the current particle of every row and adds N_p fresh ones from the proposal q = N(0, I);
one of the N_p + 1 is drawn with probability proportional to p*(z) / q(z) = r(G(z)). The chain
leaves p* invariant (Andrieu et al. 2018; Ex2MCMC, Samsonov et al. 2022). Everything is batched:
G and D see [batch, n_z] latents, never one sample at a time.

A WGAN critic D is not log r: it is trained to separate the two distributions by an arbitrary
margin in arbitrary units, so exp(D) is a far too sharp weight (i-SIR then keeps only the
critic's favourite images, and FID rises). :func:`calibrate` fits log r(x) = a D(x) + b by
logistic regression of held-out real against generated critic scores (the classifier's log-odds
are the log density ratio plus the log ratio of the class sizes), so i-SIR weighs particles by
exp(a D + b). With a = 1, b = 0 it is the uncalibrated sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


def log_rho(z: torch.Tensor, scores: torch.Tensor, a: float = 1.0, b: float = 0.0) -> torch.Tensor:
    """log of the unnormalised target density at ``z`` [..., n_z] given critic scores D(G(z))."""
    return -0.5 * (z ** 2).sum(-1) + a * scores + b


@torch.no_grad()
def critic_scores(z: torch.Tensor, D: Callable[[torch.Tensor], torch.Tensor], G: Callable[[torch.Tensor], torch.Tensor],
                  batch_size: int = 512) -> torch.Tensor:
    """D(G(z)) for a flat [m, n_z] batch of latents, in chunks of ``batch_size``."""
    return torch.cat([D(G(chunk)).reshape(-1) for chunk in z.split(batch_size)])


@dataclass(frozen=True)
class Calibration:
    """log r(x) = a D(x) + b, fitted on ``n_real`` held-out real and ``n_fake`` generated images."""

    a: float
    b: float
    n_real: int
    n_fake: int
    auc: float  # how well D's score alone tells the held-out real images from generated ones

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> Calibration:
    """Fit a and b by logistic regression of real (1) against generated (0) on the critic score.

    The classifier's log-odds are log r(x) + log(n_real / n_fake), so b is its intercept plus
    log(n_fake / n_real). scikit-learn's default L2 penalty (C = 1) is kept: it changes nothing
    measurable when the classes overlap, and keeps a finite when the scores separate them
    completely (then no finite maximum-likelihood a exists).
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    real = real_scores.detach().double().cpu().numpy().reshape(-1)
    fake = fake_scores.detach().double().cpu().numpy().reshape(-1)
    if not len(real) or not len(fake):
        raise ValueError(f"calibration needs real and generated scores, got {len(real)} and {len(fake)}")
    x = np.concatenate([real, fake])[:, None]
    y = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    clf = LogisticRegression(C=1.0).fit(x, y)
    a = float(clf.coef_[0, 0])
    b = float(clf.intercept_[0]) + math.log(len(fake) / len(real))
    return Calibration(a=a, b=b, n_real=len(real), n_fake=len(fake), auc=float(roc_auc_score(y, x[:, 0])))


@torch.no_grad()
def isir_sample(N_i: int, N_s: int, N_p: int, n_z: int, D: Callable[[torch.Tensor], torch.Tensor],
                G: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int = 512,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                calibration: Calibration | None = None) -> tuple[torch.Tensor, list[float]]:
    """Run N_s independent i-SIR chains for N_i iterations with N_p proposals each.

    Importance log-weights are a D(G(z)) + b with ``calibration``, D(G(z)) without. Returns the
    final latents [N_s, n_z] and, per iteration, the fraction of rows whose particle changed (the
    acceptance rate of the move).
    """
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device)

    a, b = (calibration.a, calibration.b) if calibration is not None else (1.0, 0.0)
    z = randn(N_s, 1, n_z)
    changed: list[float] = []
    for _ in range(N_i):
        cand = torch.cat([z, randn(N_s, N_p, n_z)], dim=1)                # [N_s, N_p + 1, n_z]
        flat = cand.reshape(-1, n_z)
        scores = critic_scores(flat, D, G, batch_size).reshape(N_s, N_p + 1)
        log_w = log_rho(cand, scores, a, b) - (-0.5 * (cand ** 2).sum(-1))  # p* / q with q = N(0, I)
        probs = torch.softmax(log_w.double(), dim=1).cpu()
        idx = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(cand.device)
        changed.append(float((idx != 0).double().mean()))
        z = cand[torch.arange(N_s, device=cand.device), idx].unsqueeze(1)
    return z.squeeze(1), changed
