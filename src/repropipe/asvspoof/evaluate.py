"""Scoring and metrics: score files, EER overall and per attack, accuracies, min t-DCF when ASV scores exist.

Convention throughout: higher score = more bona fide; bona fide is the target class of
:func:`repropipe.metrics.compute_eer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from repropipe.io import DataError
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


ASV_KEYS = ("target", "nontarget", "spoof")
ATTACK_IDS = tuple(f"A{i:02d}" for i in range(1, 20))

# The ASVspoof 2019 cost model (evaluation plan; evaluate_tDCF_asvspoof19.py of the organisers' t-DCF package):
# P_spoof = 0.05, P_tar = 0.95 * 0.99, P_non = 0.95 * 0.01; C_miss_asv = C_miss_cm = 1, C_fa_asv = C_fa_cm = 10.
COST_MODEL = {"Pspoof": 0.05, "Ptar": 0.95 * 0.99, "Pnon": 0.95 * 0.01,
              "Cmiss_asv": 1.0, "Cfa_asv": 10.0, "Cmiss_cm": 1.0, "Cfa_cm": 10.0}


def parse_asv_scores(raw: bytes | str, *, name: str, split: str | None = None) -> dict[str, np.ndarray]:
    """The organisers' ASV scores, ``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``.

    Three columns, ``CM_KEY ASV_KEY SCORE`` (README.LA.txt, section 4): CM_KEY is ``bonafide`` or the
    attack id (A01-A19; ``spoof`` is accepted too), ASV_KEY ``target``, ``nontarget`` or ``spoof``,
    SCORE a number; target and nontarget trials are bona fide speech, spoof trials are not. The
    official scorer reads only columns 2 and 3, but a line that breaks any of this is a
    :class:`DataError` naming file and line: a four-column file (an ASV *protocol*, or the t-DCF
    package's own six-column copy) must not be silently read as nothing. Without target, nontarget
    or spoof trials no t-DCF exists: a DataError naming the file.
    """
    from repropipe.asvspoof.data import ATTACKS, decode_lines

    attacks = ATTACKS[split] if split in ATTACKS else ATTACK_IDS
    out: dict[str, list[float]] = {k: [] for k in ASV_KEYS}
    for lineno, text, problem in decode_lines(raw):
        if text is not None and not text.strip():
            continue
        parts = text.split() if text is not None else []
        if problem is None and len(parts) != 3:
            problem = f"expected 3 columns 'CM_KEY ASV_KEY SCORE' (e.g. 'bonafide target 7.981530'), got {len(parts)}"
        if problem is None:
            cm_key, asv_key, value = parts
            if asv_key not in ASV_KEYS:
                problem = f"ASV key {asv_key!r}, expected target, nontarget or spoof"
            elif asv_key != "spoof" and cm_key != "bonafide":
                problem = f"{asv_key} trial with CM key {cm_key!r}; target and nontarget trials are bonafide"
            elif asv_key == "spoof" and cm_key != "spoof" and cm_key not in attacks:
                problem = (f"spoof trial with CM key {cm_key!r}; expected an attack id "
                           f"({attacks[0]}-{attacks[-1]}{' for ' + split if split in ATTACKS else ''}) or spoof")
            else:
                try:
                    score = float(value)
                except ValueError:
                    score = float("nan")
                if not np.isfinite(score):
                    problem = f"score {value!r} is not a finite number"
                else:
                    out[asv_key].append(score)
        if problem is not None:
            raise DataError(name, problem, line=lineno)
    empty = [k for k in ASV_KEYS if not out[k]]
    if empty:
        counts = ", ".join(f"{len(out[k])} {k}" for k in ASV_KEYS)
        raise DataError(name, f"no {' and no '.join(empty)} trials ({counts}); the t-DCF needs all three")
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def read_asv_scores(path: str | Path, split: str | None = None) -> dict[str, np.ndarray]:
    """:func:`parse_asv_scores` of a file on disk (errors name it)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read the ASV score file ({exc.strerror})") from exc
    return parse_asv_scores(raw, name=str(path), split=split)


def asv_eer_threshold(tar: np.ndarray, non: np.ndarray) -> tuple[float, float]:
    """ASV EER and the threshold the official t-DCF code fixes the ASV at.

    As ``compute_eer`` of the organisers' ``eval_metrics.py``: sort all trials (stable, targets
    first among equal scores); at threshold k-th sorted score the first k trials are rejected;
    take the point where |FRR - FAR| is smallest, EER = (FRR + FAR) / 2 there; the threshold is that
    score (below all scores, minus 0.001, for k = 0). Reproduced exactly, so C1 and C2 of
    :func:`min_tdcf` equal the official ones on the official ASV scores.
    """
    tar, non = np.asarray(tar, np.float64), np.asarray(non, np.float64)
    scores = np.concatenate([tar, non])
    order = np.argsort(scores, kind="mergesort")
    is_tar = np.concatenate([np.ones(tar.size), np.zeros(non.size)])[order]
    frr = np.concatenate([[0.0], np.cumsum(is_tar) / tar.size])
    far = np.concatenate([[1.0], (non.size - np.cumsum(1 - is_tar)) / non.size])
    thr = np.concatenate([[scores[order[0]] - 0.001], scores[order]])
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(thr[i])


def asv_error_rates(asv: dict[str, np.ndarray]) -> dict[str, float]:
    """The ASV operating point of the t-DCF: EER threshold, P_fa, P_miss, P_miss_spoof (official rules:
    a trial is accepted when ``score >= threshold``)."""
    eer, thr = asv_eer_threshold(asv["target"], asv["nontarget"])
    return {"eer": eer, "threshold": thr,
            "pfa": float(np.mean(asv["nontarget"] >= thr)),
            "pmiss": float(np.mean(asv["target"] < thr)),
            "pmiss_spoof": float(np.mean(asv["spoof"] < thr))}


def min_tdcf(bona_cm: np.ndarray, spoof_cm: np.ndarray, asv: dict[str, np.ndarray]) -> float:
    """Normalised minimum tandem DCF, ASVspoof 2019 formulation and cost model (:data:`COST_MODEL`).

    As the organisers' ``compute_tDCF`` (Kinnunen et al., Odyssey 2018; ASVspoof 2019 evaluation
    plan): the ASV is fixed at its EER threshold (:func:`asv_error_rates`), then
    ``C1 = P_tar (C_miss_cm - C_miss_asv P_miss_asv) - P_non C_fa_asv P_fa_asv``,
    ``C2 = C_fa_cm P_spoof (1 - P_miss_spoof_asv)``, and
    ``min over CM thresholds s of (C1 P_miss_cm(s) + C2 P_fa_cm(s)) / min(C1, C2)``.
    One difference: the CM thresholds are the distinct scores (tied scores are accepted or rejected
    together, :func:`repropipe.metrics.det_curve`); the official DET also visits points between tied
    scores that no threshold reaches, so with ties in the CM scores it can come out lower. Without
    ties the two are equal (tested). NaN when C1 or C2 is not positive (no meaningful t-DCF).
    """
    c1, c2 = tdcf_costs(asv)
    if c1 <= 0 or c2 <= 0:
        return float("nan")
    frr, far, _ = det_curve(bona_cm, spoof_cm)
    return float(np.min((c1 * frr + c2 * far) / min(c1, c2)))


def tdcf_costs(asv: dict[str, np.ndarray]) -> tuple[float, float]:
    """C1 and C2 of :func:`min_tdcf` (the ASV fixed at its EER threshold)."""
    m = COST_MODEL
    r = asv_error_rates(asv)
    c1 = m["Ptar"] * (m["Cmiss_cm"] - m["Cmiss_asv"] * r["pmiss"]) - m["Pnon"] * m["Cfa_asv"] * r["pfa"]
    c2 = m["Cfa_cm"] * m["Pspoof"] * (1 - r["pmiss_spoof"])
    return float(c1), float(c2)
