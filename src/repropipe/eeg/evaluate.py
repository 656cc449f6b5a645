"""Evaluation on held-out data (subjects, or folds of each subject's trials) and the benchmark.

Scores measure the task: chunk-level macro F1 / accuracy use only windows that start at or after
the cue (``start_s >= 0``); windows that end at or before the cue are scored apart (``pre_cue``), a
sanity check that must stay near chance since nothing in them tells left from right; windows across
the cue are in neither. Trial-level scores average a trial's post-cue log-probabilities and carry a
95 % bootstrap interval clustered by subject (trials of one subject are not independent), as do the
chunk scores (:mod:`repropipe.stats`). Plus the
classical baseline (CSP + LDA on the same chunks) and, for the two Transformers, accuracy on windows
of growing length after the cue and inference time as the token sequence grows.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from repropipe.io import torch_load
from repropipe.eeg import models as _eeg_models  # noqa: F401  (registers the EEG models by name)
from repropipe.models import build_model


def load_run(path: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    from repropipe.io import DataError

    try:
        blob = torch_load(path, map_location=device)  # weights_only: a pulled model.pt cannot run code
    except DataError:
        raise
    except Exception as exc:  # a foreign file: name it
        raise DataError(path, f"not a readable EEG model checkpoint ({type(exc).__name__}: {exc})") from exc
    model = build_model(blob["model"], **blob["kwargs"]).to(device)
    model.load_state_dict(blob["weights"])
    model.eval()
    return model, blob


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {"macro_f1": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)),
            "accuracy": float(accuracy_score(y, pred)),
            "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist()}


def _with_ci(scored: dict[str, Any], y: np.ndarray, pred: np.ndarray, subjects: np.ndarray, seed: int,
             name: str) -> dict[str, Any]:
    """Add 95 % intervals of accuracy and macro F1, resampling subjects and then their items
    (:class:`repropipe.stats.Resampler`; one subject: its items only)."""
    from repropipe import stats

    if not len(y):
        return {**scored, "ci": "none (no items)"}
    boot = stats.Resampler(len(y), seed=seed, name=name, clusters=subjects).run(
        lambda w: np.stack([stats.accuracy(y == pred, w), stats.macro_f1(y, pred, w)], 1))
    (lo, hi), (flo, fhi) = stats.interval(boot[:, 0]), stats.interval(boot[:, 1])
    return {**scored, "ci_low": lo, "ci_high": hi, "macro_f1_ci_low": flo, "macro_f1_ci_high": fhi,
            "ci": "95 % percentile bootstrap, subjects then their items resampled"}


def evaluate_run(lp: torch.Tensor, test: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """``lp`` log-probs [N, 2] for the rows of ``test`` (in order); ``test`` has start_s/end_s when
    the features are chunked around the cue (older indexes without them count every chunk)."""
    lp = lp.float()
    y = test.label.to_numpy()
    pred = lp.argmax(1).numpy()
    if "start_s" in test:
        post = (test.start_s.to_numpy() >= -1e-9)
        pre = (test.end_s.to_numpy() <= 1e-9)
    else:
        post, pre = np.ones(len(test), bool), np.zeros(len(test), bool)
    if not post.any():  # whole epochs (chunk: 0) span the cue: score them whole
        post = np.ones(len(test), bool)
    subj = test.subject.to_numpy()
    out: dict[str, Any] = {"chunk": _with_ci(scores(y[post], pred[post]), y[post], pred[post], subj[post], seed,
                                             "eeg/chunk"),
                           "all_chunks": scores(y, pred),
                           "n_chunks": int(post.sum()), "n_pre_cue_chunks": int(pre.sum())}
    if pre.any():
        out["pre_cue"] = scores(y[pre], pred[pre])
    df = test[["subject", "run", "trial", "label"]].copy()
    df["lp0"], df["lp1"], df["correct"] = lp[:, 0].numpy(), lp[:, 1].numpy(), pred == y
    dp = df[post]
    trials = dp.groupby(["subject", "run", "trial"], sort=True).agg(label=("label", "first"), lp0=("lp0", "mean"),
                                                                    lp1=("lp1", "mean")).reset_index()
    tpred = (trials.lp1 > trials.lp0).astype(int).to_numpy()
    ty = trials.label.to_numpy()
    out["trial"] = _with_ci(scores(ty, tpred), ty, tpred, trials.subject.to_numpy(), seed, "eeg/trial")
    tcorrect = tpred == ty
    out["per_subject_accuracy"] = {str(s): float(g.correct.mean()) for s, g in dp.groupby("subject", sort=True)}
    per_subject_trial = {str(s): float(c.mean()) for s, c in
                         pd.Series(tcorrect).groupby(trials.subject.to_numpy(), sort=True)}
    out["per_subject_trial_accuracy"] = per_subject_trial
    out["subject_mean_accuracy"] = float(np.mean(list(out["per_subject_accuracy"].values())))
    out["subject_mean_trial_accuracy"] = float(np.mean(list(per_subject_trial.values())))
    out["n_trials"] = int(len(trials))
    # per-item outcomes for the paired tests against the baseline (the stage drops them before writing)
    out["_items"] = {"chunk": (subj[post], y[post] == pred[post]), "trial": (trials.subject.to_numpy(), tcorrect)}
    return out


CSP_COMPONENTS = 4


def csp_lda_log_proba(x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor) -> torch.Tensor:
    """The classical baseline: ``mne.decoding.CSP`` (4 components, log-variance features) + scikit-learn
    LDA, fitted on the training chunks (the same band-passed, normalised chunks the deep models get);
    log-probabilities [N, 2] for the test chunks."""
    from mne.decoding import CSP
    from mne.utils import use_log_level
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline

    if len(np.unique(y_train)) < 2:
        raise ValueError("CSP + LDA needs training chunks of both classes")
    clf = make_pipeline(CSP(n_components=CSP_COMPONENTS, log=True, norm_trace=False),
                        LinearDiscriminantAnalysis())
    with use_log_level("warning"):  # CSP logs its rank estimate and covariances at INFO
        clf.fit(x_train.double().numpy(), y_train)
        lp = clf.predict_log_proba(x_test.double().numpy())
    return torch.from_numpy(lp[:, np.searchsorted(clf.classes_, [0, 1])]).float()


def reassemble_trials(x: torch.Tensor, index: pd.DataFrame, chunk: int, overlap: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Rebuild whole trials [n, C, T] from overlapping chunks (chunk c starts at c * (chunk - overlap))."""
    hop = chunk - overlap
    groups = index.groupby(["subject", "run", "trial"], sort=True)
    out, labels, subjects = [], [], []
    for (s, _, _), g in groups:
        g = g.sort_values("chunk")
        pieces = [x[i] for i in g.index]
        length = hop * (len(pieces) - 1) + chunk
        full = torch.zeros(x.shape[1], length, dtype=torch.float32)
        for c, p in zip(g.chunk, pieces):
            full[:, c * hop:c * hop + chunk] = p.float()
        out.append(full)
        labels.append(int(g.label.iloc[0]))
        subjects.append(int(s))
    return torch.stack(out), np.array(labels), np.array(subjects)


def accuracy_by_window(model: torch.nn.Module, trials: torch.Tensor, labels: np.ndarray, onset: int,
                       windows: list[int], device: torch.device) -> dict[int, float]:
    from repropipe.eeg.train import predict

    out = {}
    for w in windows:
        if onset + w > trials.shape[-1]:
            continue
        pred = predict(model, trials[:, :, onset:onset + w], device).argmax(1).numpy()
        out[w] = float((pred == labels).mean())
    return out


@torch.no_grad()
def inference_time(model: torch.nn.Module, n_channels: int, token_len: int, tokens: list[int], device: torch.device,
                   repeats: int, seed: int) -> dict[int, float]:
    """Median seconds of one forward pass on a single sequence of ``n`` tokens."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    model.eval()
    for n in tokens:
        x = torch.randn(1, n_channels, n * token_len, generator=g).to(device)
        model(x)  # warm-up
        ts = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        out[n] = statistics.median(ts)
    return out
