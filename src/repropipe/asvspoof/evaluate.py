"""Scoring and metrics: score files, EER overall and per attack, accuracies, min t-DCF when ASV scores exist.

Convention throughout: higher score = more bona fide; bona fide is the target class of
:func:`repropipe.metrics.compute_eer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from repropipe.metrics import compute_eer, det_curve


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction correct when ``score >= threshold`` is called bona fide."""
    return float(((scores >= threshold).astype(int) == labels).mean())


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The best accuracy over every threshold (an oracle on this set) and that threshold."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # accepting the top i utterances: correct = bona fide among them + spoof outside them
    tp = np.concatenate([[0], np.cumsum(y)])
    tn = (len(y) - y.sum()) - np.concatenate([[0], np.cumsum(1 - y)])
    # only cut between distinct scores
    valid = np.concatenate([[True], s[1:] != s[:-1], [True]])
    acc = np.where(valid, (tp + tn) / len(y), -1)
    i = int(np.argmax(acc))
    thr = float(s[i - 1]) if i > 0 else float(np.nextafter(s[0], np.inf))
    return float(acc[i]), thr


def eer_by_attack(scores: np.ndarray, index: Any) -> dict[str, float]:
    """EER of bona fide against each spoofing system alone."""
    bona = scores[index.label.to_numpy() == 1]
    out = {}
    for system in sorted(index.system_id[index.label == 0].unique()):
        spoof = scores[(index.system_id == system).to_numpy() & (index.label == 0).to_numpy()]
        out[system] = compute_eer(bona, spoof)[0]
    return out


def summarize(scores: np.ndarray, index: Any) -> dict[str, Any]:
    labels = index.label.to_numpy()
    eer, thr = compute_eer(scores[labels == 1], scores[labels == 0])
    best_acc, best_thr = best_accuracy(scores, labels)
    return {"eer": eer, "eer_threshold": thr, "accuracy_at_eer_threshold": accuracy_at(scores, labels, thr),
            "best_accuracy": best_acc, "best_accuracy_threshold": best_thr, "per_attack_eer": eer_by_attack(scores, index)}


def score_file_text(scores: np.ndarray, index: Any) -> str:
    """The usual CM score file: ``utt_id system_id key score`` per line."""
    return "".join(f"{u} {s} {k} {v:.6f}\n" for u, s, k, v in zip(index.utt_id, index.system_id, index.key, scores))


# --------------------------------------------------------------------------- min t-DCF (ASVspoof 2019)


def read_asv_scores(path: Path) -> dict[str, np.ndarray]:
    """``ASVspoof2019.LA.asv.*.gi.trl.scores.txt``: columns speaker, source, key (target|nontarget|spoof), score."""
    tgt, non, spf = [], [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        {"target": tgt, "nontarget": non, "spoof": spf}.get(parts[2], []).append(float(parts[3]))
    return {"target": np.array(tgt), "nontarget": np.array(non), "spoof": np.array(spf)}


def min_tdcf(bona_cm: np.ndarray, spoof_cm: np.ndarray, asv: dict[str, np.ndarray]) -> float:
    """Normalised minimum tandem DCF with the ASVspoof 2019 cost model (Kinnunen et al. 2018/2020).

    ASV operates at its own EER threshold; priors P_tar=0.9405, P_non=0.0095, P_spoof=0.05 and costs
    C_miss_asv=1, C_fa_asv=10, C_miss_cm=1, C_fa_cm=10, as in the ASVspoof 2019 evaluation plan.
    """
    p_tar, p_non, p_spoof = 0.9405, 0.0095, 0.05
    c_miss_asv, c_fa_asv, c_miss_cm, c_fa_cm = 1.0, 10.0, 1.0, 10.0
    _, asv_thr = compute_eer(asv["target"], asv["nontarget"])
    p_miss_asv = float(np.mean(asv["target"] < asv_thr))
    p_fa_asv = float(np.mean(asv["nontarget"] >= asv_thr))
    p_miss_spoof_asv = float(np.mean(asv["spoof"] < asv_thr))
    c1 = p_tar * (c_miss_cm - c_miss_asv * p_miss_asv) - p_non * c_fa_asv * p_fa_asv
    c2 = c_fa_cm * p_spoof * (1 - p_miss_spoof_asv)
    if c1 <= 0 or c2 <= 0:
        return float("nan")
    frr, far, _ = det_curve(bona_cm, spoof_cm)
    tdcf = c1 * frr + c2 * far
    return float(np.min(tdcf / min(c1, c2)))
