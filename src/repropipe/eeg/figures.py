"""EEG figures and dvc-plots CSVs, drawn from evaluate's results with repropipe.plotting's helpers.

Why apart from evaluate: scores must not depend on how they are drawn, and the loss curves and
confusion matrices look the same as every other branch's (plotting.curves_figure / confusion_figure).
The benchmark figure shows measured times, so it goes under timings/ (a noisy output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from repropipe import io
from repropipe.eeg.evaluate import Results
from repropipe.report.section import Figure

SFREQ = 160.0  # the benchmark windows are in samples at PhysioNet's rate


def write_plot_csvs(res: Results, out: str | Path) -> None:
    """The CSVs dvc plots reads: loss curves, per-subject accuracy, benchmark accuracy and (noisy) times."""
    out = Path(out)
    bench = res.bench
    io.atomic_write_text(out / "plots/loss_curves.csv", res.curves.to_csv(index=False))
    rows = [{"run": r, "subject": s, "accuracy": a} for r, v in res.every.items()
            for s, a in v["per_subject_accuracy"].items()]
    io.atomic_write_text(out / "plots/per_subject_accuracy.csv", pd.DataFrame(rows).to_csv(index=False))
    rows = [{"run": r, "tokens": n, "seconds": s} for r, v in bench["time_by_tokens"].items() for n, s in v.items()]
    io.atomic_write_text(out / "timings/benchmark_time.csv",
                         pd.DataFrame(rows, columns=["run", "tokens", "seconds"]).to_csv(index=False))
    rows = [{"run": r, "window": w, "accuracy": a} for r, v in bench["accuracy_by_window"].items() for w, a in v.items()]
    io.atomic_write_text(out / "plots/benchmark_accuracy.csv",
                         pd.DataFrame(rows, columns=["run", "window", "accuracy"]).to_csv(index=False))


def write_figures(res: Results, out: str | Path) -> list[Figure]:
    """Loss curves, confusion matrices and the benchmark; returns them with their captions for the section."""
    from repropipe.plotting import confusion_figure, curves_figure

    out = Path(out)
    curves_figure(_loss_panels(res.curves, list(res.every)), out / "figures/loss_curves.png")
    confusion_figure({run: r["chunk"]["confusion"] for run, r in res.every.items()}, ["left", "right"],
                     out / "figures/confusion.png")
    _benchmark_figure(res.bench, out / "timings/benchmark.png")
    return [
        Figure("figures/loss_curves.png", "Training and validation loss per epoch for each run; right, the SimCLR "
               "NT-Xent loss during contrastive pretraining."),
        Figure("figures/confusion.png", "Chunk-level confusion matrices on the held-out subjects."),
        Figure("timings/benchmark.png", "Quadratic attention vs Linformer: median inference time of one sequence as "
               "the token count grows (log-log), and held-out trial accuracy on growing windows after the cue."),
    ]


def _loss_panels(curves: pd.DataFrame, runs: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    supervised: dict[str, Any] = {}
    pretrain: dict[str, Any] = {}
    for run in runs:
        c = curves[(curves.run == run) & (curves.phase == "train")] if len(curves) else curves
        if len(c):
            supervised[f"{run} train"] = (c.epoch.tolist(), c.loss.tolist())
            supervised[f"{run} val"] = (c.epoch.tolist(), c.val_loss.tolist())
        p = curves[(curves.run == run) & (curves.phase == "pretrain")] if len(curves) else curves
        if len(p):
            pretrain[f"{run} NT-Xent"] = (p.epoch.tolist(), p.loss.tolist())
    return [("Supervised loss (train / validation)", "NLL", supervised),
            ("SimCLR pretraining loss", "NT-Xent", pretrain)]


def _benchmark_figure(bench: dict[str, Any], path: Path) -> None:
    """Inference time by token count (log-log) beside held-out accuracy by post-cue window."""
    from repropipe.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for run, v in bench["time_by_tokens"].items():
        ns = sorted(int(k) for k in v)
        axes[0].loglog(ns, [v[n] if n in v else v[str(n)] for n in ns], marker="o", label=run)
    for run, v in bench["accuracy_by_window"].items():
        ws = sorted(int(k) for k in v)
        axes[1].plot([w / SFREQ for w in ws], [v[w] if w in v else v[str(w)] for w in ws], marker="o", label=run)
    axes[0].set(xlabel="tokens", ylabel="seconds per sequence", title="Inference time as the sequence grows")
    axes[1].set(xlabel="window after cue (s)", ylabel="accuracy", title="Held-out accuracy by window length")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
