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


def log_rho(z: torch.Tensor, scores: torch.Tensor, a: float = 1.0, b: float = 0.0,
            temperature: float = 1.0) -> torch.Tensor:
    """log of the unnormalised target density p(z) r(G(z))^temperature at ``z`` [..., n_z] given critic scores
    D(G(z)), with log r = a D + b."""
    return -0.5 * (z ** 2).sum(-1) + temperature * (a * scores + b)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size (sum w)^2 / sum w^2 along the last dimension, from log-weights.

    1 when one weight takes all the mass, the number of weights when they are equal: how many of
    the candidates an importance-resampling step really chooses among."""
    log_w = log_w.double()
    return torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1))


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


@dataclass(frozen=True)
class Trace:
    """Per iteration of :func:`isir_sample`: the fraction of chains whose particle changed (the move's
    acceptance rate) and the mean effective sample size of the N_p + 1 candidates' weights."""

    changed: list[float]
    ess: list[float]


@torch.no_grad()
def isir_sample(N_i: int, N_s: int, N_p: int, n_z: int, D: Callable[[torch.Tensor], torch.Tensor],
                G: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int = 512,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                calibration: Calibration | None = None, temperature: float = 1.0) -> tuple[torch.Tensor, Trace]:
    """Run N_s independent i-SIR chains for N_i iterations with N_p proposals each.

    Importance log-weights are temperature * (a D(G(z)) + b) with ``calibration``, temperature * D(G(z))
    without (b cancels in the resampling step; a and temperature set how sharp it is). Returns the
    final latents [N_s, n_z] and the chains' :class:`Trace`.
    """
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device)

    a, b = (calibration.a, calibration.b) if calibration is not None else (1.0, 0.0)
    z = randn(N_s, 1, n_z)
    changed: list[float] = []
    ess: list[float] = []
    for _ in range(N_i):
        cand = torch.cat([z, randn(N_s, N_p, n_z)], dim=1)                # [N_s, N_p + 1, n_z]
        flat = cand.reshape(-1, n_z)
        scores = critic_scores(flat, D, G, batch_size).reshape(N_s, N_p + 1)
        log_w = log_rho(cand, scores, a, b, temperature) - (-0.5 * (cand ** 2).sum(-1))  # p* / q, q = N(0, I)
        ess.append(float(effective_sample_size(log_w).mean()))
        probs = torch.softmax(log_w.double(), dim=1).cpu()
        idx = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(cand.device)
        changed.append(float((idx != 0).double().mean()))
        z = cand[torch.arange(N_s, device=cand.device), idx].unsqueeze(1)
    return z.squeeze(1), Trace(changed=changed, ess=ess)


@dataclass(frozen=True)
class TemperatureChoice:
    """The tempered weight exp(temperature * (a D + b)) chosen on held-out data, and what it was chosen from."""

    temperature: float
    temperatures: list[float]
    criterion: list[float]  # the held-out criterion at each temperature (lower is better)
    ess_fraction: list[float]  # effective sample size of the pool's weights at each temperature, over its size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tempered_weights(log_r: torch.Tensor, temperatures: list[float]) -> torch.Tensor:
    """Self-normalised importance weights [len(temperatures), m] proportional to r^temperature over a pool of
    m proposals with log density ratios ``log_r`` [m]."""
    t = torch.as_tensor(temperatures, dtype=torch.float64)[:, None]
    return torch.softmax(t * log_r.double().reshape(1, -1), dim=1)


def select_temperature(log_r: torch.Tensor, temperatures: list[float],
                       criterion: Callable[[torch.Tensor], torch.Tensor]) -> TemperatureChoice:
    """The temperature whose reweighted pool minimises ``criterion`` (weights [k, m] -> values [k]).

    The target p(z) r(G(z))^t runs from plain sampling (t = 0) to the calibrated target (t = 1). Where
    the critic separates real from generated almost perfectly, r is concentrated on a sliver of p_G and
    the t = 1 target is narrower than the data, so an intermediate t can be closer to the data. The
    pool is drawn from the proposal once, so every temperature costs one weighted criterion, not a
    sampler run; ties go to the smallest temperature (the least reweighting that does as well).
    """
    if not temperatures:
        raise ValueError("select_temperature needs at least one temperature")
    w = tempered_weights(log_r, temperatures)
    values = torch.as_tensor(criterion(w), dtype=torch.float64).reshape(-1)
    if values.numel() != len(temperatures) or not torch.isfinite(values).all():
        raise ValueError(f"criterion gave {values.tolist()} for temperatures {temperatures}")
    best = min(range(len(temperatures)), key=lambda i: (float(values[i]), temperatures[i]))
    ess = effective_sample_size(torch.log(w)) / w.shape[1]
    return TemperatureChoice(temperature=float(temperatures[best]), temperatures=[float(t) for t in temperatures],
                             criterion=values.tolist(), ess_fraction=ess.tolist())
