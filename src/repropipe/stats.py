"""Uncertainty for every headline metric: seeded bootstrap intervals and paired significance tests.

Why: on demo-sized evaluation sets one utterance, trial or speaker moves a metric by points, so a
table of point estimates cannot tell models apart. Each branch reports a 95 % percentile bootstrap
interval beside every headline number and tests each system against a named reference row.

How it resamples (after NII's ``sandbox/eval_conf_inter.py``, which follows Ferrer & Riera's
``ConfidenceIntervals``): with no clusters, items (utterances, trials) are drawn with replacement;
with one cluster id per item (speaker, subject), clusters are drawn with replacement and then, for
each drawn cluster, its items are drawn with replacement and repeated as often as the cluster was
drawn (two-stage). With two cluster ids per item (a verification pair joins two speakers), the
speakers are drawn with replacement and a pair counts ``m_a * m_b`` times, ``m`` being how often each
of its speakers was drawn (no item stage: a pair is not an item of one cluster).

A bootstrap replicate is a vector of integer weights over the fixed items, so every metric here is
computed with weights (a weighted DET from one sort, weighted confusion counts), vectorised over
replicates. All systems compared on the same items see the same replicates (:class:`Resampler`
re-creates its generator from ``(seed, name)`` on every call), which makes the paired test a plain
difference of columns. Randomness comes only from ``numpy.random.default_rng``, seeded from the stage
seed, so outputs repeat byte for byte.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

N_BOOT = 1000  # replicates; percentile ends at 2.5 % and 97.5 % rest on 25 replicates each
LEVEL = 0.95
CHUNK = 50  # replicates built at once (memory: CHUNK x items floats); fixed, so results do not depend on it


class Resampler:
    """Bootstrap weights over ``n`` items, the same on every call for the same ``(seed, name)``.

    ``clusters``: None (items), an array [n] (two-stage cluster bootstrap), or [n, 2] (pair trials:
    weight = product of both clusters' multiplicities).
    """

    def __init__(self, n: int, *, seed: int, name: str, clusters: ArrayLike | None = None, n_boot: int = N_BOOT):
        if n <= 0:
            raise ValueError("nothing to resample: no items")
        self.n, self.n_boot, self.seed, self.name = int(n), int(n_boot), int(seed), name
        self.pairs = False
        self._members: list[np.ndarray] = []
        if clusters is None:
            self.codes = None
            return
        c = np.asarray(clusters)
        if c.ndim == 2 and c.shape[1] == 2:
            self.pairs = True
            uniq, codes = np.unique(c.ravel(), return_inverse=True)
            self.codes = codes.reshape(-1, 2)
        elif c.ndim == 1:
            uniq, self.codes = np.unique(c, return_inverse=True)
            self._members = [np.flatnonzero(self.codes == k) for k in range(len(uniq))]
        else:
            raise ValueError(f"clusters must have shape [n] or [n, 2], got {c.shape}")
        if len(self.codes) != self.n:
            raise ValueError(f"{len(self.codes)} cluster ids for {self.n} items")
        self.n_clusters = len(uniq)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(self.name.encode())])

    def _counts(self, rng: np.random.Generator, b: int, k: int) -> np.ndarray:
        """[b, k] multiplicities of k things drawn k times with replacement."""
        draw = rng.integers(0, k, (b, k)) + (np.arange(b) * k)[:, None]
        return np.bincount(draw.ravel(), minlength=b * k).reshape(b, k).astype(np.float64)

    def weights(self) -> Any:
        """Yield [b, n] weight chunks, ``n_boot`` rows in all."""
        rng = self._rng()
        done = 0
        while done < self.n_boot:
            b = min(CHUNK, self.n_boot - done)
            if self.codes is None:
                w = self._counts(rng, b, self.n)
            elif self.pairs:
                m = self._counts(rng, b, self.n_clusters)
                w = m[:, self.codes[:, 0]] * m[:, self.codes[:, 1]]
            else:
                m = self._counts(rng, b, self.n_clusters)
                w = np.zeros((b, self.n))
                for k, idx in enumerate(self._members):
                    w[:, idx] = m[:, k:k + 1] * self._counts(rng, b, len(idx))
            done += b
            yield w

    def run(self, stat: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``stat`` maps weights [b, n] to values [b] or [b, k]; returns them stacked, [n_boot, ...]."""
        return np.concatenate([np.asarray(stat(w), dtype=np.float64) for w in self.weights()])


def interval(samples: ArrayLike, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap values (replicates where the metric is undefined, NaN, are left out)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not s.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def basic_interval(point: float, samples: ArrayLike, level: float = LEVEL) -> tuple[float, float]:
    """Basic (reverse percentile) bootstrap interval ``[2 t - q_hi, 2 t - q_lo]``: for a statistic whose
    bootstrap distribution is shifted from the estimate (FID rises when resampling repeats samples),
    the shift is subtracted instead of reported as the interval."""
    lo, hi = interval(samples, level)
    return float(2 * point - hi), float(2 * point - lo)


def paired_test(diff: float, boot_diff: ArrayLike, level: float = LEVEL) -> dict[str, Any]:
    """Paired bootstrap test of a metric difference (system minus reference) on the same items.

    ``boot_diff``: the difference on each replicate (same weights for both systems). The interval is
    the percentile interval; the two-sided p-value is twice the smaller tail beyond zero (capped at 1);
    the difference is significant at ``1 - level`` when the interval excludes zero.
    """
    d = np.asarray(boot_diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    lo, hi = interval(d, level)
    p = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))) if d.size else float("nan")
    return {"diff": float(diff), "ci_low": lo, "ci_high": hi, "p_value": p, "n_boot": int(d.size),
            "significant": bool(d.size and (lo > 0 or hi < 0)), "test": "paired bootstrap"}


def independent_test(diff: float, boot_diff: ArrayLike, level: float = LEVEL) -> dict[str, Any]:
    """Difference of a statistic between two independent sample sets (each resampled on its own),
    with the basic bootstrap interval; the p-value counts centred replicates at least as far from 0
    as the observed difference. Significant when the interval excludes 0."""
    d = np.asarray(boot_diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    lo, hi = basic_interval(diff, d, level)
    p = float(np.mean(np.abs(d - diff) >= abs(diff))) if d.size else float("nan")
    return {"diff": float(diff), "ci_low": lo, "ci_high": hi, "p_value": p, "n_boot": int(d.size),
            "significant": bool(d.size and (lo > 0 or hi < 0)), "test": "independent bootstrap (basic interval)"}


def mcnemar_exact(correct_a: ArrayLike, correct_ref: ArrayLike) -> dict[str, Any]:
    """Exact McNemar test (two-sided binomial test on the discordant pairs) of two classifiers on the same items."""
    from scipy.stats import binomtest

    a, r = np.asarray(correct_a, bool), np.asarray(correct_ref, bool)
    if a.shape != r.shape:
        raise ValueError(f"McNemar needs the same items: {a.shape} vs {r.shape}")
    b, c = int(np.sum(a & ~r)), int(np.sum(~a & r))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_only_correct": b, "ref_only_correct": c, "p_value": p, "significant": bool(p < 1 - LEVEL),
            "test": "exact McNemar"}


# ----------------------------------------------------------------------------- weighted metrics


def _as_rows(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return w[None, :] if w.ndim == 1 else w


class ScoreSet:
    """Scores and labels sorted once (descending, ties grouped) for fast weighted DET curves.

    Convention of :func:`repropipe.metrics.det_curve`: higher = more target-like, accept when
    ``score >= threshold``; at unit weights the curve and EER equal those of ``metrics`` exactly.
    """

    def __init__(self, scores: ArrayLike, is_target: ArrayLike):
        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(is_target, dtype=bool).ravel()
        if s.shape != y.shape:
            raise ValueError(f"{s.size} scores for {y.size} labels")
        self.order = np.argsort(-s, kind="mergesort")
        ss = s[self.order]
        self.y = y[self.order]
        # the last position of each group of tied scores is where that threshold's counts are read
        self.ends = np.flatnonzero(np.concatenate([ss[1:] != ss[:-1], [True]]))

    def det(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FRR and FAR [b, thresholds + 1] (first column: threshold above every score) for weights [b, n]."""
        w = _as_rows(w)[:, self.order]
        tp = np.cumsum(w * self.y, axis=1)[:, self.ends]
        fp = np.cumsum(w * ~self.y, axis=1)[:, self.ends]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = tp / tp[:, -1:]
            far = fp / fp[:, -1:]
        zero = np.zeros((len(w), 1))
        return 1.0 - np.hstack([zero, tpr]), np.hstack([zero, far])

    def eer(self, w: np.ndarray) -> np.ndarray:
        """EER per row, interpolated exactly as :func:`repropipe.metrics.compute_eer` (NaN without both classes)."""
        frr, far = self.det(w)
        return eer_from_det(frr, far)


def eer_from_det(frr: np.ndarray, far: np.ndarray) -> np.ndarray:
    diff = frr - far
    with np.errstate(invalid="ignore"):
        idx = np.argmax(diff <= 0, axis=1)
    rows = np.arange(len(diff))
    prev = np.maximum(idx - 1, 0)
    d0, d1 = diff[rows, prev], diff[rows, idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        wgt = np.where(d0 != d1, d0 / (d0 - d1), 0.5)
    out = far[rows, prev] + wgt * (far[rows, idx] - far[rows, prev])
    out = np.where(idx == 0, (frr[rows, 0] + far[rows, 0]) / 2, out)
    bad = ~np.isfinite(diff).all(axis=1)
    return np.where(bad, np.nan, out)


def accuracy(correct: ArrayLike, w: np.ndarray) -> np.ndarray:
    """Weighted accuracy per row of ``w``."""
    w = _as_rows(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return w @ np.asarray(correct, dtype=np.float64) / w.sum(1)


def macro_f1(y: ArrayLike, pred: ArrayLike, w: np.ndarray, labels: Sequence[int] = (0, 1)) -> np.ndarray:
    """Weighted macro F1 per row (a class with no true and no predicted items scores 0, as
    scikit-learn's ``zero_division=0``)."""
    w = _as_rows(w)
    y, pred = np.asarray(y), np.asarray(pred)
    f1s = []
    for k in labels:
        tp = w @ ((y == k) & (pred == k)).astype(np.float64)
        fp = w @ ((y != k) & (pred == k)).astype(np.float64)
        fn = w @ ((y == k) & (pred != k)).astype(np.float64)
        den = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            f1s.append(np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0))
    return np.mean(f1s, axis=0)


# ----------------------------------------------------------------------------- one-call helpers


def with_interval(point: float, boot: ArrayLike) -> dict[str, float]:
    lo, hi = interval(boot)
    return {"value": float(point), "ci_low": lo, "ci_high": hi}


def compare_columns(points: dict[str, float], boot: np.ndarray, reference: str,
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Intervals for every system and paired tests against ``reference``.

    ``points``: system -> metric on the full set; ``boot``: [n_boot, systems] in the same order,
    computed on shared replicates. Returns ({system: value/ci}, {system: paired test vs reference}).
    """
    names = list(points)
    cis = {n: with_interval(points[n], boot[:, i]) for i, n in enumerate(names)}
    tests = {}
    if reference in points:
        r = names.index(reference)
        for i, n in enumerate(names):
            if n != reference:
                tests[n] = paired_test(points[n] - points[reference], boot[:, i] - boot[:, r])
    return cis, tests


def fmt_ci(value: float, low: float, high: float, digits: int = 3, scale: float = 1.0) -> str:
    """``0.812 [0.771, 0.850]`` for tables."""
    if not np.isfinite(value):
        return "n/a"
    f = f"{{:.{digits}f}}"
    ends = "n/a" if not (np.isfinite(low) and np.isfinite(high)) else f"{f.format(low * scale)}, {f.format(high * scale)}"
    return f"{f.format(value * scale)} [{ends}]"


def fmt_test(t: dict[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    """``+0.021 [-0.010, +0.052], p=0.18, n.s. (paired bootstrap)`` for tables."""
    if not t:
        return "reference"
    f = f"{{:+.{digits}f}}"
    verdict = "significant" if t["significant"] else "n.s."
    if "diff" in t and np.isfinite(t.get("ci_low", np.nan)):
        head = f"{f.format(t['diff'] * scale)} [{f.format(t['ci_low'] * scale)}, {f.format(t['ci_high'] * scale)}]"
    elif "diff" in t:
        head = f.format(t["diff"] * scale)
    else:
        head = ""
    p = t["p_value"]
    # a bootstrap p of 0 means no replicate crossed zero: below 1 / replicates, not zero
    ptext = f"p<{1 / t['n_boot']:.2g}" if p == 0 and t.get("n_boot") else f"p={p:.3g}"
    return f"{head}{', ' if head else ''}{ptext}, {verdict} ({t['test']})"
