"""Held-out-subject evaluation and the quadratic-vs-Linformer benchmark.

Chunk-level and trial-level (mean log-probability over a trial's chunks) macro F1 and accuracy,
confusion matrix, per-subject accuracy; plus, for the two Transformers, accuracy on windows of
growing length after the cue and inference time as the token sequence grows.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from repropipe.io import torch_load
from repropipe.models import build_model


def load_run(path: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    blob = torch_load(path, map_location=device)  # weights_only: a pulled model.pt cannot run code
    model = build_model(blob["model"], **blob["kwargs"]).to(device)
    model.load_state_dict(blob["weights"])
    model.eval()
    return model, blob


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {"macro_f1": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)),
            "accuracy": float(accuracy_score(y, pred)),
            "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist()}


def evaluate_run(lp: torch.Tensor, test: pd.DataFrame) -> dict[str, Any]:
    """``lp`` log-probs for the rows of ``test`` (in order)."""
    y = test.label.to_numpy()
    pred = lp.argmax(1).numpy()
    chunk = scores(y, pred)
    df = test[["subject", "run", "trial", "label"]].copy()
    df["lp0"], df["lp1"], df["correct"] = lp[:, 0].numpy(), lp[:, 1].numpy(), pred == y
    trials = df.groupby(["subject", "run", "trial"], sort=True).agg(label=("label", "first"), lp0=("lp0", "mean"),
                                                                   lp1=("lp1", "mean"))
    trial = scores(trials.label.to_numpy(), (trials.lp1 > trials.lp0).astype(int).to_numpy())
    per_subject = {str(s): float(g.correct.mean()) for s, g in df.groupby("subject", sort=True)}
    return {"chunk": chunk, "trial": trial, "per_subject_accuracy": per_subject, "n_chunks": int(len(df)),
            "n_trials": int(len(trials))}


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
