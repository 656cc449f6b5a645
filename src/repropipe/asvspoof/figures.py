"""The ASVspoof branch's figures and dvc-plots CSVs, drawn from :class:`repropipe.asvspoof.evaluate.Evaluation`.

DET and training curves are repropipe.plotting's (the same axes in every section of the report); the
score histograms, threshold sweeps and per-attack bars are this branch's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repropipe import io
from repropipe.asvspoof.evaluate import pct
from repropipe.metrics import det_curve
from repropipe.plotting import curves_figure, det_figure, pyplot, save_figure
from repropipe.report.section import Figure

if TYPE_CHECKING:
    from repropipe.asvspoof.evaluate import Evaluation


def write_plots(ev: Evaluation, out: str) -> None:
    """``out/plots/*.csv``: EER per run, eval EER per attack, training history (what `dvc plots` draws)."""
    lines = ["model,seed,dev_eer,eval_eer,accuracy_at_eer_threshold,best_accuracy"]
    lines += [f"{r['model']},{r['seed']},{r['dev']['eer']:.6f},{r['eval']['eer']:.6f},"
              f"{r['eval']['accuracy_at_eer_threshold']:.6f},{r['eval']['best_accuracy']:.6f}" for r in ev.results]
    io.atomic_write_text(f"{out}/plots/eer.csv", "\n".join(lines) + "\n")
    lines = ["model,attack,eer"]
    lines += [f"{m},{a},{e:.6f}" for m, v in ev.per_model.items() for a, e in v["per_attack_eer_mean"].items()]
    io.atomic_write_text(f"{out}/plots/per_attack_eer.csv", "\n".join(lines) + "\n")
    nan = float("nan")
    lines = ["run,epoch,loss,accuracy,dev_eer"]
    lines += [f"{k.replace(' ', '_')},{h['epoch']},{h.get('loss', nan):.6f},{h.get('accuracy', nan):.6f},"
              f"{h.get('dev_eer', nan):.6f}" for k, hist in ev.histories.items() for h in hist]
    io.atomic_write_text(f"{out}/plots/training.csv", "\n".join(lines) + "\n")


def write_figures(ev: Evaluation, out: str) -> list[Figure]:
    """Every PNG under ``out/figures``, with its caption for the report section."""
    fig_dir = Path(out) / "figures"
    lab = ev.eval_index.label.to_numpy()
    first = {}
    for r in ev.results:  # the first seed of each model for the per-model panels
        first.setdefault(r["model"], r)
    scores = {m: ev.scores_eval[(m, r["seed"])] for m, r in first.items()}
    curves = {f"{m} seed {r['seed']} (EER {pct(r['eval']['eer'])} %)": (scores[m][lab == 1], scores[m][lab == 0])
              for m, r in first.items()}
    hist = {f"{m} seed {r['seed']}": (scores[m][lab == 1], scores[m][lab == 0], r["eval"]["eer_threshold"])
            for m, r in first.items()}
    return [
        Figure(det(curves, fig_dir), "DET curves on the eval partition (first seed of each model); normal-deviate axes."),
        Figure(histograms(hist, fig_dir), "Eval score distributions per class with the EER threshold."),
        Figure(thresholds({k: v[:2] for k, v in hist.items()}, fig_dir),
               "Threshold analysis: bona fide rejected and spoofs accepted as the threshold moves."),
        Figure(per_attack({m: v["per_attack_eer_mean"] for m, v in ev.per_model.items()}, fig_dir),
               "EER of bona fide against each eval attack alone (mean over seeds); eval attacks are unseen in training."),
        Figure(training(ev.histories, fig_dir), "Training loss and dev EER per epoch, every model and seed."),
    ]


def det(curves: dict[str, tuple[np.ndarray, np.ndarray]], fig_dir: Path) -> str:
    """DET curves; ``curves`` maps a label to (bona fide, spoof) scores."""
    det_figure(curves, fig_dir / "det.png", target="bona fide", nontarget="spoofs",
               title="DET curves, eval partition (EER where a curve meets the dotted line)")
    return "figures/det.png"


def histograms(per_model: dict[str, tuple[np.ndarray, np.ndarray, float]], fig_dir: Path) -> str:
    """Score histograms per class, one panel per model, with the EER threshold marked."""
    plt = pyplot()
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
    save_figure(fig, fig_dir / "histograms.png")
    return "figures/histograms.png"


def thresholds(per_model: dict[str, tuple[np.ndarray, np.ndarray]], fig_dir: Path) -> str:
    """Miss and false-alarm rates against the threshold: how sensitive each model is to the operating point."""
    plt = pyplot()
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
    save_figure(fig, fig_dir / "thresholds.png")
    return "figures/thresholds.png"


def training(histories: dict[str, list[dict[str, float]]], fig_dir: Path) -> str:
    """Training loss and dev EER per epoch (counted from 1), one line per model and seed; chance EER dotted."""
    loss, eer = {}, {}
    for label, hist in histories.items():
        ep = [h["epoch"] + 1 for h in hist]
        loss[label] = (ep, [h.get("loss", np.nan) for h in hist])
        eer[label] = (ep, [h.get("dev_eer", np.nan) for h in hist])
    epochs = [e for x, _ in eer.values() for e in x]
    if epochs:
        eer["chance (EER 0.5)"] = ([min(epochs), max(epochs)], [0.5, 0.5])
    curves_figure([("training loss", "training loss (epoch mean)", loss), ("dev EER", "dev EER", eer)],
                  fig_dir / "training.png")
    return "figures/training.png"


def per_attack(table: dict[str, dict[str, float]], fig_dir: Path) -> str:
    """Eval EER per attack system, grouped bars per model (mean over seeds)."""
    plt = pyplot()
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
    save_figure(fig, fig_dir / "per_attack.png")
    return "figures/per_attack.png"
