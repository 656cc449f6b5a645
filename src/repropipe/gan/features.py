"""Preprocess once: center crop 178, resize to 64, uint8 tensor shards per split.

The JPEGs are read straight from img_align_celeba.zip (or an extracted tree the user pointed at),
wherever ``data/raw/gan/source.json`` says they are.

Layout of ``data/features/gan``: ``<split>-<k>.pt`` (uint8 [n, 3, 64, 64]) and ``index.json``
(counts, shard names, skipped files, where the data came from). A few shards instead of 200k
files keeps DVC hashing and Snakemake stat calls cheap, and training reads them straight into
memory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from repropipe import io
from repropipe.gan import data
from repropipe.io import DataError

log = logging.getLogger("repropipe.gan")

INDEX = "index.json"


def build_shards(raw: str | os.PathLike[str], out: str | os.PathLike[str], crop: int, size: int,
                 shard_size: int, on_bad: str) -> dict[str, Any]:
    """Read every listed image once and write the shards; returns the index that was written."""
    from tqdm import tqdm

    raw, out = Path(raw), Path(out)
    src = data.open_source(raw)  # the zip (one open handle) or an extracted tree, never extracted here
    entries = data.read_partition(src.partition)
    entries, mismatch = data.check_layout(src.images, src.partition, entries, on_bad)
    corrupt: list[str] = []
    per_split: dict[str, list[np.ndarray]] = {s: [] for s in data.SPLITS}
    names = {code: s for s, code in data.SPLITS.items()}
    for e in tqdm(entries, desc="gan features", unit="img"):
        try:
            arr = data.load_image(src.images, e.name, crop, size)
        except DataError:
            if on_bad == "error":
                raise
            corrupt.append(e.name)
            continue
        per_split[names[e.split]].append(arr)
    index: dict[str, Any] = {"size": size, "crop": crop, "splits": {},
                             "skipped": {"missing": mismatch["missing"], "unlisted": mismatch["unlisted"],
                                         "corrupt": corrupt},
                             "source": src.info}
    for split, arrays in per_split.items():
        shards = []
        for k in range(0, len(arrays), shard_size):
            name = f"{split}-{k // shard_size:03d}.pt"
            io.atomic_torch_save(out / name, torch.from_numpy(np.stack(arrays[k:k + shard_size])))
            shards.append(name)
        index["splits"][split] = {"count": len(arrays), "shards": shards}
    if not index["splits"]["train"]["count"]:
        raise DataError(src.partition, "no usable training images (split 0)")
    io.atomic_write_json(out / INDEX, index)
    log.info("event=features out=%s %s skipped_missing=%d skipped_unlisted=%d skipped_corrupt=%d", out,
             " ".join(f"{s}={v['count']}" for s, v in index["splits"].items()), len(mismatch["missing"]),
             len(mismatch["unlisted"]), len(corrupt))
    return index


def read_index(features: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(features) / INDEX
    if not path.exists():
        raise DataError(path, "feature index missing; run the gan_features stage first")
    return json.loads(path.read_text())


def load_split(features: str | os.PathLike[str], split: str, limit: int | None = None) -> torch.Tensor:
    """All images of one split as one uint8 tensor [n, 3, H, W] (the first ``limit`` when given)."""
    features = Path(features)
    index = read_index(features)
    if split not in index["splits"]:
        raise DataError(features / INDEX, f"no split {split!r}")
    parts = [io.torch_load(features / s) for s in index["splits"][split]["shards"]]
    if not parts:
        raise DataError(features / INDEX, f"split {split!r} has no images")
    x = torch.cat(parts)
    return x[:limit] if limit else x


class Uint8Images(Dataset):
    """uint8 [3, H, W] images, as torch-fidelity wants them and as training reads them."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]
