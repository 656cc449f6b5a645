"""Sampling (plain and I-SIR), FID/KID against cached real statistics, curves for the report."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import torch

from repropipe.gan import fidelity
from repropipe.gan.isir import isir_sample
from repropipe.gan.train import to_uint8

log = logging.getLogger("repropipe.gan")


@torch.no_grad()
def generate(G: torch.nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images [n, 3, 64, 64] for latents ``z`` [n, n_z], in batches."""
    G.eval()
    return torch.cat([to_uint8(G(chunk)).cpu() for chunk in z.split(batch_size)])


def plain_latents(n: int, nz: int, seed: int, device: torch.device) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed)).to(device)


def evaluate_generator(G: torch.nn.Module, D: torch.nn.Module, *, nz: int, num_samples: int, isir: dict[str, Any],
                       cache_dir: str | os.PathLike[str], kid_subset_size: int, seed: int, device: torch.device
                       ) -> dict[str, Any]:
    """FID/KID of plain N(0, I) sampling and of I-SIR sampling, same generator and sample count."""
    cuda = device.type == "cuda"
    D.eval()
    plain = generate(G, plain_latents(num_samples, nz, seed, device))
    z_isir, changed = isir_sample(int(isir["iterations"]), num_samples, int(isir["particles"]), nz, D, G,
                                  batch_size=int(isir["batch_size"]),
                                  generator=torch.Generator().manual_seed(seed + 7), device=device)
    sampled = generate(G, z_isir)
    return {
        "plain": fidelity.fid_kid(plain, cache_dir, kid_subset_size, cuda),
        "isir": fidelity.fid_kid(sampled, cache_dir, kid_subset_size, cuda),
        "isir_changed_fraction": changed,
        "images": {"plain": plain[:64], "isir": sampled[:64]},
    }


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
