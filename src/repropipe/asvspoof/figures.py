"""The report's figures for the ASVspoof branch: DET curves, score histograms, thresholds, training curves."""

from __future__ import annotations

from typing import Any

import numpy as np

from repropipe.metrics import det_curve
from repropipe.plotting import save_figure

OUT = "results/asvspoof/figures"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def det(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """DET curves on normal-deviate axes; ``curves`` maps a label to (bona fide, spoof) scores."""
    from scipy.special import ndtri  # the normal quantile; scipy.stats takes seconds to import

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    eps = 1e-4
    for label, (bona, spoof) in curves.items():
        frr, far, _ = det_curve(bona, spoof)
        ax.plot(ndtri(np.clip(far, eps, 1 - eps)), ndtri(np.clip(frr, eps, 1 - eps)), label=label)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(ndtri(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(ndtri(ticks), [f"{100 * t:g}" for t in ticks])
    ax.plot([-4, 4], [-4, 4], color="grey", lw=0.7, ls=":")
    ax.set_xlim(ndtri(eps), ndtri(0.99))
    ax.set_ylim(ndtri(eps), ndtri(0.99))
    ax.set_xlabel("false acceptance rate of spoofs (%)")
    ax.set_ylabel("false rejection rate of bona fide (%)")
    ax.set_title("DET curves, eval partition (EER where a curve meets the dotted line)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    path = f"{OUT}/det.png"
    save_figure(fig, path)
    plt.close(fig)
    return "figures/det.png"


def histograms(per_model: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> str:
    """Score histograms per class, one panel per model, with the EER threshold marked."""
    plt = _plt()
    n = len(per_model)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (label, (bona, spoof, thr)) in zip(axes[0], per_model.items()):
        bins = np.linspace(min(bona.min(), spoof.min()), max(bona.max(), spoof.max()), 40)
        ax.hist(spoof, bins=bins, alpha=0.6, density=True, label="spoof")
        ax.hist(bona, bins=bins, alpha=0.6, density=True, label="bona fide")
        ax.axvline(thr, color="black", lw=0.8, ls="--", label="EER threshold")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("score (higher = bona fide)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/histograms.png")
    plt.close(fig)
    return "figures/histograms.png"


def thresholds(per_model: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Miss and false-alarm rates against the threshold: how sensitive each model is to the operating point."""
    plt = _plt()
    n = len(per_model)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (label, (bona, spoof)) in zip(axes[0], per_model.items()):
        frr, far, thr = det_curve(bona, spoof)
        ax.plot(thr, frr, label="bona fide rejected (FRR)")
        ax.plot(thr, far, label="spoof accepted (FAR)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("threshold")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/thresholds.png")
    plt.close(fig)
    return "figures/thresholds.png"


def training(histories: dict[str, list[dict[str, float]]]) -> str:
    """Training loss and dev EER per epoch, one line per model and seed."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, hist in histories.items():
        ep = [h["epoch"] + 1 for h in hist]
        a1.plot(ep, [h.get("loss", np.nan) for h in hist], marker="o", label=label)
        a2.plot(ep, [h.get("dev_eer", np.nan) for h in hist], marker="o", label=label)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (epoch mean)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("dev EER")
    a2.axhline(0.5, color="grey", lw=0.7, ls=":")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    a2.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/training.png")
    plt.close(fig)
    return "figures/training.png"


def per_attack(table: dict[str, dict[str, float]]) -> str:
    """Eval EER per attack system, grouped bars per model (mean over seeds)."""
    plt = _plt()
    attacks = sorted({a for v in table.values() for a in v})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(attacks) * len(table)), 3.6))
    width = 0.8 / max(len(table), 1)
    for j, (model, eers) in enumerate(table.items()):
        ax.bar(np.arange(len(attacks)) + j * width, [100 * eers.get(a, np.nan) for a in attacks], width, label=model)
    ax.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2, attacks)
    ax.set_ylabel("EER (%)")
    ax.set_title("EER per eval attack (unseen in training)")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/per_attack.png")
    plt.close(fig)
    return "figures/per_attack.png"
