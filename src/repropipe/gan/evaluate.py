"""Sampling (plain, I-SIR with the raw and the calibrated critic), FID/KID against cached real statistics, curves."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import torch

from repropipe.gan import fidelity
from repropipe.gan.isir import Calibration, calibrate, critic_scores, isir_sample
from repropipe.gan.train import to_float, to_uint8

log = logging.getLogger("repropipe.gan")


@torch.no_grad()
def generate(G: torch.nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images [n, 3, 64, 64] for latents ``z`` [n, n_z], in batches."""
    G.eval()
    return torch.cat([to_uint8(G(chunk)).cpu() for chunk in z.split(batch_size)])


def plain_latents(n: int, nz: int, seed: int, device: torch.device) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def image_scores(D: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Critic scores D(x) [n] of uint8 images [n, 3, 64, 64]."""
    D.eval()
    return torch.cat([D(to_float(chunk.to(device))).reshape(-1).cpu() for chunk in images.split(batch_size)])


def calibrate_critic(G: torch.nn.Module, D: torch.nn.Module, real: torch.Tensor, *, nz: int, seed: int,
                     device: torch.device, batch_size: int = 512) -> Calibration:
    """a, b of log r = a D + b from held-out real images and as many generated ones.

    The generated side is scored as i-SIR scores it, D(G(z)) on G's float output, with latents of
    their own (seed + 11) apart from the plain sample and the i-SIR chains.
    """
    G.eval(), D.eval()
    z = plain_latents(len(real), nz, seed + 11, device)
    return calibrate(image_scores(D, real, device), critic_scores(z, D, G, batch_size).cpu())


def evaluate_generator(G: torch.nn.Module, D: torch.nn.Module, *, nz: int, num_samples: int, isir: dict[str, Any],
                       cache_dir: str | os.PathLike[str], kid_subset_size: int, seed: int, device: torch.device,
                       calibration: Calibration | None = None) -> dict[str, Any]:
    """FID/KID of plain N(0, I) sampling and of I-SIR sampling, same generator and sample count.

    I-SIR runs with the raw critic (weights exp(D)) and, given ``calibration``, again with the
    calibrated one (exp(a D + b)); both chains draw the same proposals (one seed).
    """
    cuda = device.type == "cuda"
    D.eval()
    plain = generate(G, plain_latents(num_samples, nz, seed, device))
    out: dict[str, Any] = {"plain": fidelity.fid_kid(plain, cache_dir, kid_subset_size, cuda), "images": {"plain": plain[:64]},
                           # feature vectors for the FID bootstrap (fake, real)
                           "features": {"plain": fidelity.features(plain, cache_dir, cuda)}}
    variants: dict[str, Calibration | None] = {}
    if int(isir["iterations"]) > 0:  # 0: plain sampling only (the untrained baseline)
        variants["isir_uncalibrated"] = None
        if calibration is not None:
            variants["isir"] = calibration
    for key, cal in variants.items():
        z, changed = isir_sample(int(isir["iterations"]), num_samples, int(isir["particles"]), nz, D, G,
                                 batch_size=int(isir["batch_size"]), generator=torch.Generator().manual_seed(seed + 7),
                                 device=device, calibration=cal)
        sampled = generate(G, z)
        out[key] = fidelity.fid_kid(sampled, cache_dir, kid_subset_size, cuda)
        out[f"{key}_changed_fraction"] = changed
        out["images"][key] = sampled[:64]
        out["features"][key] = fidelity.features(sampled, cache_dir, cuda)
    return out


def read_dvclive_curves(run_dir: str | os.PathLike[str], names: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Per-step curves dvclive wrote during training (``live/plots/metrics/train/step/<name>.tsv``)."""
    out: dict[str, list[tuple[int, float]]] = {}
    base = Path(run_dir) / "live" / "plots" / "metrics" / "train" / "step"
    for name in names:
        path = base / f"{name}.tsv"
        if not path.exists():
            continue
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        out[name] = [(int(r["step"]), float(r[name])) for r in rows]
    return out


N_BOOT_FID = 200  # each replicate is one weighted covariance and one symmetric eigensolve of the feature dimension


def fid_uncertainty(systems: dict[str, tuple[float, Any, Any]], reference: str, seed: int) -> dict[str, Any]:
    """95 % intervals of FID for each system and tests against ``reference``.

    ``systems``: name -> (torch-fidelity's FID, fake features, real features). Generated samples are
    resampled (``N_BOOT_FID`` replicates; the real statistics stay fixed); FID's bootstrap distribution
    sits above the estimate (repeated samples shrink the covariance), so the interval is the basic
    bootstrap interval. Different systems draw different samples, so the difference is tested with
    independent replicates (:func:`repropipe.stats.independent_test`)."""
    from repropipe import stats

    boots, out = {}, {}
    for name, (fid, fake, real) in systems.items():
        boots[name] = stats.Resampler(len(fake), seed=seed, name=f"gan/fid/{name}", n_boot=N_BOOT_FID).run(
            fidelity.FIDBootstrap(fake, real))
        lo, hi = stats.basic_interval(fid, boots[name])
        out[name] = {"value": fid, "ci_low": lo, "ci_high": hi, "n_boot": N_BOOT_FID,
                     "ci": "basic bootstrap over generated samples, real statistics fixed"}
    for name in systems:
        if name != reference and reference in systems:
            diff = systems[name][0] - systems[reference][0]
            out[name]["vs_reference"] = {**stats.independent_test(diff, boots[name] - boots[reference]),
                                         "test": "independent bootstrap over generated samples (basic interval)"}
    return out
