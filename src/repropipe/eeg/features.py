"""Preprocessing: EDF -> band-passed, epoched, chunked, per-channel-normalised tensors with an index.

Steps (the course's recipe): standardise channel names (``eegbci.standardize``), montage
standard_1005, FIR band-pass 7-30 Hz, events T1 -> left (0) and T2 -> right (1), epochs -1 s..4 s
around each cue, cut into chunks (``chunk`` samples, ``overlap``) or kept whole (``chunk: 0``).

Normalisation is per channel over each whole run (after filtering), not per chunk: a per-chunk
z-score would erase the very power difference between C3 and C4 that carries the label, while the
per-run statistics still remove subject and session gain.

Output: ``data/features/eeg/chunks.pt`` (float16 tensor [N, C, T] plus channel names) and
``data/features/eeg/index.parquet`` with one row per chunk: subject, run, trial, label, chunk, split.
Splits are by subject; every chunk of a trial shares its subject, so no trial crosses splits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repropipe.io import DataError

log = logging.getLogger("repropipe.eeg")

LABELS = {"T1": 0, "T2": 1}  # left fist, right fist


@dataclass
class RunEpochs:
    x: np.ndarray  # [trials, C, T] float32
    labels: np.ndarray  # [trials]
    ch_names: list[str]


def preprocess_raw(raw: Any, l_freq: float, h_freq: float, tmin: float, tmax: float) -> RunEpochs:
    import mne
    from mne.datasets import eegbci

    from repropipe.eeg.data import montage

    eegbci.standardize(raw)
    raw.set_montage(montage(), on_missing="ignore")
    raw.filter(l_freq, h_freq, method="fir", fir_design="firwin", skip_by_annotation="edge", verbose="error")
    data = raw.get_data()
    mean, std = data.mean(axis=1, keepdims=True), data.std(axis=1, keepdims=True)
    raw._data = (data - mean) / np.where(std > 0, std, 1.0)
    events, event_id = mne.events_from_annotations(raw, event_id=LABELS, verbose="error")
    epochs = mne.Epochs(raw, events, event_id=event_id, tmin=tmin, tmax=tmax, baseline=None, preload=True,
                        verbose="error")
    inv = {v: LABELS[k] for k, v in epochs.event_id.items()}
    return RunEpochs(epochs.get_data(copy=False).astype(np.float32), np.array([inv[e] for e in epochs.events[:, 2]]),
                     list(epochs.ch_names))


def chunk_starts(n_times: int, chunk: int, overlap: int) -> list[int]:
    """Start indices of every full chunk; ``chunk <= 0`` keeps the epoch whole."""
    if chunk <= 0 or chunk >= n_times:
        return [0]
    if not 0 <= overlap < chunk:
        raise ValueError(f"eeg.features.overlap must be in [0, chunk), got {overlap} for chunk {chunk}")
    return list(range(0, n_times - chunk + 1, chunk - overlap))


def split_subjects(subjects: list[int], seed: int, n_val: int, n_test: int) -> dict[int, str]:
    """Seeded subject-wise split: the first ``n_test`` of a permutation test, next ``n_val`` val."""
    if n_val + n_test >= len(subjects):
        raise ValueError(f"eeg.split needs at least one training subject: {len(subjects)} subjects, "
                         f"{n_val} val, {n_test} test")
    order = np.random.default_rng([seed, 11]).permutation(sorted(subjects)).tolist()
    out = {}
    for i, s in enumerate(order):
        out[int(s)] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def build(raw_root: str | Path, subjects: list[int], runs: list[int], fp: dict[str, Any], split: dict[str, int],
          seed: int, on_bad: str) -> tuple[np.ndarray, "Any", list[str], list[dict[str, str]]]:
    """Every run of every subject -> (chunks [N, C, T] float16, index DataFrame, channel names, skipped)."""
    import pandas as pd
    from tqdm import tqdm

    from repropipe.eeg.data import read_run, run_path

    chunks, rows, skipped, ch_names = [], [], [], None
    for s in tqdm(subjects, desc="eeg_features", unit="subject"):
        trial = 0
        for r in runs:
            path = run_path(raw_root, s, r)
            try:
                ep = preprocess_raw(read_run(path), fp["l_freq"], fp["h_freq"], fp["tmin"], fp["tmax"])
            except DataError as exc:
                if on_bad != "skip":
                    raise
                log.warning("eeg_features event=skip file=%s reason=%s", path, exc)
                skipped.append({"file": str(path), "reason": str(exc)})
                continue
            if ch_names is None:
                ch_names = ep.ch_names
            elif ep.ch_names != ch_names:
                raise DataError(path, f"channel names differ from the first recording's ({ep.ch_names[:3]}...)")
            starts = chunk_starts(ep.x.shape[-1], int(fp["chunk"]), int(fp["overlap"]))
            width = int(fp["chunk"]) if 0 < int(fp["chunk"]) < ep.x.shape[-1] else ep.x.shape[-1]
            for i in range(len(ep.x)):
                for c, st in enumerate(starts):
                    chunks.append(ep.x[i, :, st:st + width].astype(np.float16))
                    rows.append({"subject": s, "run": r, "trial": trial, "label": int(ep.labels[i]), "chunk": c})
                trial += 1
    if not rows:
        raise DataError(raw_root, "no usable trials in any recording")
    index = pd.DataFrame(rows)
    sp = split_subjects(sorted(set(index.subject)), seed, int(split["val_subjects"]), int(split["test_subjects"]))
    index["split"] = index.subject.map(sp)
    return np.stack(chunks), index, ch_names or [], skipped
