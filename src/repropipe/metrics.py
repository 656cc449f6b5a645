"""Metrics shared across branches, computed with scikit-learn where it has them."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve


def det_curve(target_scores: ArrayLike, nontarget_scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss rate (FRR) and false-alarm rate (FAR) at every distinct threshold.

    Convention of ASVspoof and speaker verification: a higher score means more target-like
    (bona fide, same speaker); a trial is accepted when score >= threshold. Tied scores form one
    threshold (scikit-learn's roc_curve groups them), so ties are handled exactly.
    """
    tgt = np.asarray(target_scores, dtype=np.float64).ravel()
    non = np.asarray(nontarget_scores, dtype=np.float64).ravel()
    if tgt.size == 0 or non.size == 0:
        raise ValueError(f"need target and non-target scores, got {tgt.size} and {non.size}")
    if not (np.isfinite(tgt).all() and np.isfinite(non).all()):
        raise ValueError("scores must be finite")
    y = np.concatenate([np.ones_like(tgt), np.zeros_like(non)])
    s = np.concatenate([tgt, non])
    far, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    frr = 1.0 - tpr
    thr = np.where(np.isinf(thr), np.nextafter(s.max(), np.inf), thr)
    return frr, far, thr


def compute_eer(target_scores: ArrayLike, nontarget_scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold.

    The DET curve is a step function; the EER is where FRR and FAR cross. Between two adjacent
    thresholds FRR rises and FAR falls, so the crossing lies on the segment where the sign of
    FRR - FAR changes; we interpolate linearly there (exact when the curves cross at a point, and
    the midpoint of the gap otherwise) and return the higher threshold of that segment.
    """
    frr, far, thr = det_curve(target_scores, nontarget_scores)
    # roc_curve orders thresholds from high to low: FAR rises, FRR falls along the arrays.
    diff = frr - far
    idx = int(np.argmax(diff <= 0))  # first threshold where FRR <= FAR
    if idx == 0:
        return float((frr[0] + far[0]) / 2), float(thr[0])
    d0, d1 = diff[idx - 1], diff[idx]
    w = d0 / (d0 - d1) if d0 != d1 else 0.5
    eer = far[idx - 1] + w * (far[idx] - far[idx - 1])
    return float(eer), float(thr[idx])
