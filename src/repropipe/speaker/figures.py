"""The speaker branch's figures and dvc-plots CSVs: verification DET curves and training curves.

Drawn with repropipe.plotting's shared helpers so they look like every other branch's DET and
training-curve figures; the CSVs are what `dvc plots show` draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repropipe import io
from repropipe.speaker.evaluate import Evaluation

DET = "figures/det.png"
CURVES = "figures/training_curves.png"


def write_all(ev: Evaluation, out: str | Path) -> None:
    """Every figure and plot CSV under ``out`` (results/speaker)."""
    out = Path(out)
    write_plot_csvs(ev, out)
    det_figure(ev, out / DET)
    curves_figure(ev, out / CURVES)


def write_plot_csvs(ev: Evaluation, out: Path) -> None:
    """plots/det.csv (at most 200 points of each model's DET curve) and plots/training.csv (one row per epoch)."""
    from repropipe.metrics import det_curve

    lines = ["model,far,frr"]
    for name, r in ev.results.items():
        frr, far, _ = det_curve(r["pairs"].target, r["pairs"].nontarget)
        keep = np.unique(np.linspace(0, len(far) - 1, min(len(far), 200)).astype(int))
        lines += [f"{name},{far[k]:.6g},{frr[k]:.6g}" for k in keep]
    io.atomic_write_text(out / "plots" / "det.csv", "\n".join(lines) + "\n")
    lines = ["model,epoch,loss,val_accuracy"]
    for name, hist in ev.histories.items():
        lines += [f"{name},{h['epoch']},{h.get('loss', '')},{h.get('val_accuracy', '')}" for h in hist]
    io.atomic_write_text(out / "plots" / "training.csv", "\n".join(lines) + "\n")


def det_figure(ev: Evaluation, path: Path) -> Path:
    """Every model's verification trials (cosine scores, held-out speakers) on one DET plot."""
    from repropipe import plotting

    curves = {f"{name} (EER {r['metrics']['verification_eer']:.3f})": (r["pairs"].target, r["pairs"].nontarget)
              for name, r in ev.results.items()}
    return plotting.det_figure(curves, path, title="Verification DET (cosine, held-out speakers)",
                               target="same-speaker trials", nontarget="different-speaker trials",
                               ticks=(0.01, 0.02, 0.05, 0.1, 0.2, 0.4), limits=(0.005, 0.6))


def curves_figure(ev: Evaluation, path: Path) -> Path:
    """Training loss (log axis) and held-out identification accuracy per epoch, one line per model."""
    from repropipe import plotting

    def series(key: str) -> dict[str, tuple[list[float], list[float]]]:
        return {name: ([h["epoch"] + 1 for h in hist], [h.get(key, float("nan")) for h in hist])
                for name, hist in ev.histories.items()}

    return plotting.curves_figure([("training loss", "training loss (epoch mean)", series("loss")),
                                   ("identification", "held-out identification accuracy", series("val_accuracy"))],
                                  path, log_y=(True, False))
