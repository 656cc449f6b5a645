"""Figures shared by every branch: one headless backend, one PNG writer, and the plots every branch draws.

Why one module: DET curves, training curves and confusion matrices look the same in every section of
the report (same axes, ticks and labels), and the backend is chosen once (``pyplot()``), not in
each figure function. Figures are written atomically at a fixed DPI with no software/date metadata
so a rerun gives the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repropipe.io import atomic_path

_DET_EPS = 1e-4


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (the only place the backend is chosen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    return Path(path)


def det_figure(curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike[str], *, title: str,
               target: str = "target", nontarget: str = "non-target",
               ticks: Sequence[float] = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95),
               limits: tuple[float, float] = (_DET_EPS, 0.99)) -> Path:
    """DET curves on normal-deviate axes, in percent; ``curves`` maps a legend label to (target, non-target) scores.

    Higher scores mean "target" (bona fide / same speaker). The EER is where a curve meets the dotted diagonal.
    """
    from scipy.special import ndtri  # the normal quantile; scipy.stats takes seconds to import

    from repropipe.metrics import det_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    for label, (tar, non) in curves.items():
        frr, far, _ = det_curve(tar, non)
        ax.plot(ndtri(np.clip(far, _DET_EPS, 1 - _DET_EPS)), ndtri(np.clip(frr, _DET_EPS, 1 - _DET_EPS)), label=label)
    t = np.asarray(ticks, dtype=float)
    ax.set_xticks(ndtri(t), [f"{100 * v:g}" for v in t])
    ax.set_yticks(ndtri(t), [f"{100 * v:g}" for v in t])
    ax.plot([-5, 5], [-5, 5], color="grey", lw=0.7, ls=":")
    ax.set_xlim(ndtri(limits[0]), ndtri(limits[1]))
    ax.set_ylim(ndtri(limits[0]), ndtri(limits[1]))
    ax.set_xlabel(f"false acceptance rate of {nontarget} (%)")
    ax.set_ylabel(f"false rejection rate of {target} (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def curves_figure(panels: Sequence[tuple[str, str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]],
                  path: str | os.PathLike[str], *, xlabel: str = "epoch", log_y: Sequence[bool] = ()) -> Path:
    """Training curves side by side: each panel is (title, y label, {series label: (x, y)})."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for i, (ax, (title, ylabel, series)) in enumerate(zip(axes[0], panels)):
        for label, (x, y) in series.items():
            ax.plot(list(x), list(y), marker="." if len(x) < 60 else None, lw=0.9, label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        if i < len(log_y) and log_y[i]:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_figure(matrices: Mapping[str, Any], labels: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """One confusion-matrix panel per system (rows: true class, columns: predicted), counts written in the cells."""
    plt = pyplot()
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.6), squeeze=False)
    k = len(labels)
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm)
        ax.imshow(cm, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center")
        ax.set(xticks=range(k), yticks=range(k), xticklabels=list(labels), yticklabels=list(labels),
               xlabel="predicted", ylabel="true", title=name)
    fig.tight_layout()
    return save_figure(fig, path)
