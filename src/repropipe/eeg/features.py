"""Preprocessing: EDF -> band-passed, epoched, chunked, per-channel-normalised tensors with an index.

Steps (the course's recipe): standardise channel names (``eegbci.standardize``), montage
standard_1005, FIR band-pass 7-30 Hz, events T1 -> left (0) and T2 -> right (1), epochs -1 s..4 s
around each cue, cut into chunks (``chunk`` samples, ``overlap``) or kept whole (``chunk: 0``).

Normalisation is per channel over each whole run (after filtering), not per chunk: a per-chunk
z-score would erase the very power difference between C3 and C4 that carries the label, while the
per-run statistics still remove subject and session gain.

Output: ``data/features/eeg/chunks.pt`` (float16 tensor [N, C, T] plus channel names) and
``data/features/eeg/index.parquet`` with one row per chunk: subject, run, trial, label, chunk,
start_s/end_s (chunk window in seconds relative to the cue, so evaluation can keep post-cue windows),
split and fold.

Evaluation protocols (``eeg.evaluation``):
  cross_subject   splits by subject (``eeg.split``): every chunk of a trial shares its subject, so no
                  trial crosses splits; ``fold`` is -1.
  within_subject  every subject's trials go into ``eeg.within_subject_folds`` stratified folds
                  (``split`` is "cv"); fold f is tested by models that never saw its trials but did see
                  the subject's other folds (MOABB's within-session evaluation, most EEGNet tables).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repropipe import io
from repropipe.io import DataError

if TYPE_CHECKING:
    from repropipe.eeg.config import FeatureConfig, FeaturesStageConfig, SplitConfig

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


def preprocess_file(path: Path, fp: FeatureConfig) -> RunEpochs:
    """:func:`preprocess_raw` on one checked recording; whatever MNE raises on it names the file."""
    from repropipe.eeg.data import read_run

    raw = read_run(path)
    try:
        ep = preprocess_raw(raw, fp.l_freq, fp.h_freq, fp.tmin, fp.tmax)
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:
        raise DataError(path, f"cannot epoch this recording ({type(exc).__name__}: {exc})") from exc
    if not len(ep.x):
        raise DataError(path, f"no complete T1/T2 epoch from {fp.tmin} s to {fp.tmax} s around a cue")
    return ep


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


def within_subject_folds(index: "Any", k: int, seed: int, raw_root: str | Path = ".") -> np.ndarray:
    """Fold (0..k-1) of every row: a seeded stratified k-fold over each subject's *trials* (all chunks of
    a trial share its fold). A subject with fewer than ``k`` trials of a class cannot be split so."""
    from sklearn.model_selection import StratifiedKFold

    from repropipe.eeg.data import run_path

    trials = index.groupby(["subject", "run", "trial"], sort=True).label.first().reset_index()
    fold_of: dict[tuple[int, int, int], int] = {}
    for s, g in trials.groupby("subject", sort=True):
        counts = g.label.value_counts().reindex([0, 1], fill_value=0)
        if int(counts.min()) < k:
            runs = sorted(set(g.run))
            raise DataError(run_path(raw_root, int(s), runs[0]).parent,
                            f"eeg.evaluation within_subject with {k} folds needs at least {k} trials of each class "
                            f"per subject; subject {int(s)} has {int(counts[0])} left (T1) and {int(counts[1])} right "
                            f"(T2) in runs {runs}: lower eeg.within_subject_folds or add runs")
        rs = int(np.random.default_rng([seed, 13, int(s)]).integers(2**31 - 1))
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=rs)
        for f, (_, test) in enumerate(skf.split(np.zeros(len(g)), g.label.to_numpy())):
            for row in g.iloc[test].itertuples(index=False):
                fold_of[(int(row.subject), int(row.run), int(row.trial))] = f
    return np.array([fold_of[(int(a), int(b), int(c))] for a, b, c in
                     index[["subject", "run", "trial"]].itertuples(index=False)], dtype=np.int64)


def fold_split(index: "Any", fold: int, k: int) -> "Any":
    """train/val/test labels for within-subject fold ``fold``: its trials are the test set, the next
    fold (k >= 3) selects the epoch, the rest train. With k = 2 there is no validation fold."""
    val = (fold + 1) % k if k >= 3 else -1
    f = index["fold"].to_numpy()
    return np.where(f == fold, "test", np.where(f == val, "val", "train"))


def build(raw_root: str | Path, subjects: list[int], runs: list[int], fp: FeatureConfig, split: SplitConfig,
          seed: int, on_bad: str, evaluation: str = "cross_subject",
          folds: int = 5) -> tuple[np.ndarray, "Any", list[str], list[dict[str, str]]]:
    """Every run of every subject -> (chunks [N, C, T] float16, index DataFrame, channel names, skipped)."""
    import pandas as pd
    from tqdm import tqdm

    from repropipe.eeg.data import SFREQ, read_run, run_path

    chunks, rows, skipped, ch_names = [], [], [], None
    for s in tqdm(subjects, desc="eeg_features", unit="subject"):
        trial = 0
        for r in runs:
            path = run_path(raw_root, s, r)
            try:
                ep = preprocess_file(path, fp)
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
            starts = chunk_starts(ep.x.shape[-1], fp.chunk, fp.overlap)
            width = fp.chunk if 0 < fp.chunk < ep.x.shape[-1] else ep.x.shape[-1]
            for i in range(len(ep.x)):
                for c, st in enumerate(starts):
                    chunks.append(ep.x[i, :, st:st + width].astype(np.float16))
                    t0 = round(fp.tmin + st / SFREQ, 6)
                    rows.append({"subject": s, "run": r, "trial": trial, "label": int(ep.labels[i]), "chunk": c,
                                 "start_s": t0, "end_s": round(t0 + width / SFREQ, 6)})
                trial += 1
    if not rows:
        raise DataError(raw_root, "no usable trials in any recording")
    index = pd.DataFrame(rows)
    if evaluation == "within_subject":
        index["split"] = "cv"
        index["fold"] = within_subject_folds(index, int(folds), seed, raw_root)
    elif evaluation == "cross_subject":
        sp = split_subjects(sorted(set(index.subject)), seed, split.val_subjects, split.test_subjects)
        index["split"] = index.subject.map(sp)
        index["fold"] = -1
    else:
        raise ValueError(f"eeg.evaluation must be cross_subject or within_subject, got {evaluation!r}")
    return np.stack(chunks), index, ch_names or [], skipped


def write(out: str | Path, x: np.ndarray, index: Any, ch_names: list[str], skipped: list[dict[str, str]], source: str,
          cfg: FeaturesStageConfig) -> None:
    """``chunks.pt``, ``index.parquet`` and ``meta.json`` (what later stages read about how the chunks were made)."""
    import dataclasses

    import torch

    out = Path(out)
    protocol, folds = cfg.evaluation, cfg.within_subject_folds
    io.atomic_torch_save(out / "chunks.pt", {"x": torch.from_numpy(x), "ch_names": ch_names})
    with io.atomic_path(out / "index.parquet") as tmp:
        index.to_parquet(tmp, index=False)
    io.atomic_write_json(out / "meta.json", {
        "source": source, "ch_names": ch_names, "sfreq": 160.0, "features": dataclasses.asdict(cfg.features),
        "evaluation": {"protocol": protocol, "folds": folds if protocol == "within_subject" else None},
        "skipped": skipped, "n_skipped": len(skipped), "n_chunks": len(index),
        "n_trials": int(index.groupby(["subject", "run", "trial"]).ngroups),
        "subjects_by_split": {k: sorted(map(int, g.subject.unique())) for k, g in index.groupby("split")},
    })
    log.info("eeg_features event=done chunks=%d shape=%s skipped=%d", len(index), list(x.shape), len(skipped))


def read_meta(root: str | Path) -> dict[str, Any]:
    return io.read_json(Path(root) / "meta.json", "missing; run `python -m repropipe eeg features`")


def protocol(meta: dict[str, Any]) -> tuple[str, int]:
    """(protocol, folds) the features were split for; indexes from before within_subject are cross_subject."""
    ev = meta.get("evaluation") or {}
    return str(ev.get("protocol", "cross_subject")), int(ev.get("folds") or 0)


def feature_config(meta: dict[str, Any], where: str | Path) -> FeatureConfig:
    """The ``eeg.features`` the chunks were cut with, as meta.json records them."""
    from repropipe.config import ConfigError, parse
    from repropipe.eeg.config import FeatureConfig

    try:
        return parse(FeatureConfig, meta["features"], "features")
    except (KeyError, ConfigError) as exc:
        raise DataError(where, f"not an eeg_features meta.json ({exc})") from exc
