"""The QR benchmark's figures and dvc-plots CSVs: saved-for-backward bytes against n, and time ratios.

Saved bytes are exact (plots/, figures/); times are measured and noisy, so their CSV and figure live
under timings/, which the stage declares noisy.
"""

from __future__ import annotations

from pathlib import Path

from repropipe import io
from repropipe.qr.evaluate import Benchmark

SAVED_BYTES = "figures/saved_bytes.png"
TIME_RATIO = "timings/time_ratio.png"


def write_all(bench: Benchmark, out: str | Path) -> None:
    """Every CSV and figure under ``out`` (results/qr)."""
    out = Path(out)
    df = bench.frame()
    io.atomic_write_text(out / "plots" / "saved_bytes.csv", df[["method", "m", "n", "saved_bytes"]].to_csv(index=False))
    io.atomic_write_text(out / "timings" / "time.csv",
                         df[["method", "m", "n", "time_s", "time_ratio_to_linalg"]].to_csv(index=False))
    saved_bytes_figure(bench, out / SAVED_BYTES)
    time_ratio_figure(bench, out / TIME_RATIO)


def saved_bytes_figure(bench: Benchmark, path: Path) -> Path:
    """Saved bytes against n at the largest m, log-log, each method's fitted slope beside the theoretical one."""
    from repropipe.plotting import pyplot, save_figure

    plt = pyplot()
    df = bench.frame()
    m_max = int(df.m.max())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, g in df[df.m == m_max].groupby("method", sort=True):
        s = bench.slopes.get(method, {})
        label = (f"{method} (slope {s.get('fitted_slope', float('nan')):.2f}, "
                 f"theory {s.get('theory_slope', float('nan')):.2f})")
        ax.loglog(g.n, g.saved_bytes, marker="o", label=label)
    ax.set_xlabel("n (columns)")
    ax.set_ylabel("bytes saved for backward")
    ax.set_title(f"Saved-for-backward memory at m = {m_max}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def time_ratio_figure(bench: Benchmark, path: Path) -> Path:
    """Each variant's median forward+backward time over torch.linalg.qr's, shape by shape."""
    from repropipe.plotting import pyplot, save_figure

    plt = pyplot()
    df = bench.frame()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    df = df.assign(shape=df.m.astype(str) + "x" + df.n.astype(str))
    for method, g in df[df.method != "torch.linalg.qr"].groupby("method", sort=True):
        ax.plot(g["shape"], g.time_ratio_to_linalg, marker="o", label=method)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("shape m x n")
    ax.set_ylabel("forward+backward time / torch.linalg.qr")
    ax.set_title("Time relative to torch.linalg.qr (CPU, median)")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
