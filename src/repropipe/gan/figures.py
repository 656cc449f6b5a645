"""gan_evaluate's figures (sample grids, training curves, I-SIR moves) and its dvc-plots CSVs.

Drawn from :class:`repropipe.gan.evaluate.Results` with repropipe.plotting's helpers; nothing here
computes a number that metrics.json or the report section reports.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from repropipe import io
from repropipe.gan.evaluate import CURVES, Results
from repropipe.plotting import curves_figure, pyplot, save_figure


def write_plots(res: Results, out: str | os.PathLike[str]) -> None:
    """The CSVs `dvc plots` draws: training losses per step and I-SIR's moves per iteration."""
    out = Path(out)
    by_step: dict[int, dict[str, float]] = {}
    for name, pts in res.curves.items():
        for s, v in pts:
            by_step.setdefault(s, {})[name] = v
    lines = ["step," + ",".join(CURVES)] + [
        f"{s}," + ",".join(str(by_step[s].get(c, "")) for c in CURVES) for s in sorted(by_step)]
    io.atomic_write_text(out / "train_curves.csv", "\n".join(lines) + "\n")
    changed, changed_raw = res.trained["isir_changed_fraction"], res.trained["isir_uncalibrated_changed_fraction"]
    io.atomic_write_text(out / "isir_changed.csv",
                         "iteration,changed_fraction,changed_fraction_uncalibrated\n"
                         + "".join(f"{i + 1},{c},{r}\n" for i, (c, r) in enumerate(zip(changed, changed_raw))))


def write_figures(res: Results, out: str | os.PathLike[str]) -> None:
    """Every PNG the report section shows (its Figure paths are ``figures/<name>.png``)."""
    out = Path(out)
    images, isir = res.trained["images"], res.cfg.isir
    its = f"{isir.iterations} it., {isir.particles} particles"
    cal = f"calibrated exp(t (a D + b)), t = {res.temperature.temperature:g}"
    grid_figure([(images["plain"], "trained G, z ~ N(0, I)")], out / "samples_plain.png")
    grid_figure([(images["isir"], f"I-SIR, {cal} ({its})"),
                 (images["isir_uncalibrated"], f"I-SIR, raw critic exp(D) ({its})")], out / "samples_isir.png")
    grid_figure([(res.untrained["images"]["plain"], "untrained G (baseline)")], out / "samples_untrained.png")
    train_curves_figure(res.curves, out / "train_curves.png")
    isir_figure({cal: res.trained["isir_changed_fraction"],
                 "raw exp(D)": res.trained["isir_uncalibrated_changed_fraction"]}, out / "isir_changed.png")


def grid_figure(panels: list[tuple[torch.Tensor, str]], path: str | os.PathLike[str]) -> Path:
    """One 8x8 grid of images per panel, side by side."""
    from torchvision.utils import make_grid

    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (images, title) in zip(axes[0], panels):
        ax.imshow(make_grid(images[:64], nrow=8, padding=2).permute(1, 2, 0).numpy())
        ax.set_axis_off()
        ax.set_title(title)
    return save_figure(fig, path)


def train_curves_figure(curves: dict[str, list[tuple[int, float]]], path: str | os.PathLike[str]) -> Path:
    """WGAN-GP losses and the Wasserstein estimate beside the gradient penalty (log scale), per step."""

    def series(names: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
        return {name: ([s for s, _ in curves[name]], [v for _, v in curves[name]]) for name in names if name in curves}

    return curves_figure([("WGAN-GP losses", "loss", series(("loss_D", "loss_G", "wasserstein"))),
                          ("gradient penalty", "loss_GP", series(("loss_GP",)))],
                         path, xlabel="step", log_y=(False, True))


def isir_figure(changed: dict[str, list[float]], path: str | os.PathLike[str]) -> Path:
    """Fraction of I-SIR chains whose particle changed, per iteration, one line per critic."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, values in changed.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("I-SIR iteration")
    ax.set_ylabel("fraction of rows that moved")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
