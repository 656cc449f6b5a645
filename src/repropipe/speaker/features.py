"""Split the HW4 layout into train / val / verify / test and pack each split into one shard.

Why shards: thousands of uttr-*.pt files are slow to stat and hash (DVC, Snakemake); four shards
are not. A shard is a plain dict of tensors and strings, loadable with ``weights_only=True``::

    {"mels": (total_frames, n_mels) float32, "offsets": (n+1,) int64, "labels": (n,) int64, "names": [str]}

Splits:
* ``verify``: ``verify_speakers`` speakers drawn with the seed, never seen in training; their
  utterances give the verification trials (unseen speakers, as in speaker verification).
* ``train`` / ``val``: every other speaker's utterances, ``val_fraction`` of each held out for
  identification accuracy. Labels index ``classes`` in manifest.json.
* ``test``: testdata.json's unlabelled utterances (label -1), for the Id,Category predictions CSV.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repropipe.io import DataError, atomic_path, atomic_write_json, atomic_torch_save, torch_load
from repropipe.speaker.data import SOURCE_FILE, HW4Dataset, Utterance, data_root, load_feature, read_dataset

log = logging.getLogger("repropipe.speaker")

SPLITS = ("train", "val", "verify", "test")


@dataclass
class Shard:
    mels: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def utterance(self, i: int) -> torch.Tensor:
        return self.mels[int(self.offsets[i]):int(self.offsets[i + 1])]

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


def split(ds: HW4Dataset, verify_speakers: int, val_fraction: float, seed: int) -> dict[str, Any]:
    """Which utterance goes where, decided by the seed only."""
    if verify_speakers >= len(ds.speakers) - 1:
        raise ValueError(f"speaker.features.verify_speakers={verify_speakers} leaves fewer than 2 of "
                         f"{len(ds.speakers)} speakers for identification")
    rng = np.random.default_rng(seed + 7919)
    verify = sorted(rng.choice(ds.speakers, size=verify_speakers, replace=False).tolist())
    classes = [s for s in ds.speakers if s not in set(verify)]
    by_spk: dict[str, list[Utterance]] = {}
    for u in ds.utterances:
        by_spk.setdefault(u.speaker, []).append(u)
    train, val = [], []
    for ci, s in enumerate(classes):
        utts = by_spk.get(s, [])
        perm = rng.permutation(len(utts))
        n_val = int(round(val_fraction * len(utts))) if len(utts) >= 2 else 0
        n_val = max(n_val, 1) if len(utts) >= 2 and val_fraction > 0 else n_val
        val += [(utts[j], ci) for j in perm[:n_val]]
        train += [(utts[j], ci) for j in perm[n_val:]]
    ver = [(u, vi) for vi, s in enumerate(verify) for u in by_spk.get(s, [])]
    test = [(u, -1) for u in ds.test]
    return {"classes": classes, "verify_speakers": verify,
            "splits": {"train": train, "val": val, "verify": ver, "test": test}}


def write_shard(path: Path, root: Path, items: list[tuple[Utterance, int]], n_mels: int) -> int:
    mels, offsets, labels, names = [], [0], [], []
    for u, label in items:
        x = load_feature(root, u, n_mels)
        mels.append(x)
        offsets.append(offsets[-1] + x.shape[0])
        labels.append(label)
        names.append(u.feature_path)
    payload = {
        "mels": torch.cat(mels) if mels else torch.zeros(0, n_mels),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "names": names,
    }
    atomic_torch_save(path, payload)
    return len(items)


def build(raw: str | os.PathLike[str], out: str | os.PathLike[str], verify_speakers: int, val_fraction: float,
          seed: int) -> dict[str, Any]:
    """Validate every utterance while packing the shards; manifest.json last, so it marks completion."""
    raw, out = Path(raw), Path(out)
    root = data_root(raw)  # real data is read in place where source.json points
    ds = read_dataset(root)
    plan = split(ds, verify_speakers, val_fraction, seed)
    counts = {}
    for name in SPLITS:
        counts[name] = write_shard(out / f"{name}.pt", root, plan["splits"][name], ds.n_mels)
        log.info("event=shard split=%s utterances=%d", name, counts[name])
    if counts["train"] == 0 or counts["verify"] == 0:
        raise ValueError(f"{raw}: the split left no training or no verification utterances ({counts})")
    source_path = raw / SOURCE_FILE
    source = (json.loads(source_path.read_text()) if source_path.exists()
              else {"data_source": f"real (HW4 layout at {raw})", "synthetic": False})
    manifest = {"n_mels": ds.n_mels, "classes": plan["classes"], "verify_speakers": plan["verify_speakers"],
                "counts": counts, **source}
    atomic_write_json(out / "manifest.json", manifest)
    log.info("stage=speaker_features event=done counts=%s", counts)
    return manifest


def read_manifest(features: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(features) / "manifest.json"
    if not path.exists():
        raise DataError(path, "missing: run `python -m repropipe speaker features` first")
    return json.loads(path.read_text())


def load_shard(path: str | os.PathLike[str]) -> Shard:
    path = Path(path)
    if not path.exists():
        raise DataError(path, "missing shard: run `python -m repropipe speaker features` first")
    try:
        d = torch_load(path)
    except Exception as exc:
        raise DataError(path, f"not a readable feature shard ({type(exc).__name__}: {exc})") from exc
    if not isinstance(d, dict) or not {"mels", "offsets", "labels", "names"} <= set(d):
        raise DataError(path, "expected a dict with mels, offsets, labels, names")
    return Shard(d["mels"], d["offsets"], d["labels"], list(d["names"]))
