"""The qr_benchmark stage: runs the grid, writes metrics, plot CSVs, figures and the report section.

Heavy imports (torch, pandas, matplotlib) happen inside the stage so that `repropipe --help`
and the stage registry stay instant.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from repropipe import io
from repropipe.plotting import save_figure
from repropipe.qr import bench as _bench  # noqa: F401  (registers `qr bench-backward`)
from repropipe.report.section import Figure, Section, Table
from repropipe.stages import Plot, StageContext, stage

if TYPE_CHECKING:
    import pandas as pd

    from repropipe.qr import benchmark

log = logging.getLogger("repropipe.qr")

OUT = "results/qr"


NOISY_FIELDS = ("time_s", "time_ratio_to_linalg", "peak_rss_mib")  # measured, never repeat byte for byte


def _headline(rows: list["benchmark.Row"]) -> tuple[dict[str, float], dict[str, float]]:
    """At the largest shape measured (4096 x 256 in the demo): saved bytes (exact) and time ratios (measured)."""
    m, n = max((r.m, r.n) for r in rows)
    at = {r.method: r for r in rows if (r.m, r.n) == (m, n)}
    exact, measured = {"headline_m": m, "headline_n": n}, {"headline_m": m, "headline_n": n}
    for method, r in at.items():
        measured[f"time_ratio/{method}"] = r.time_ratio_to_linalg
        measured[f"peak_rss_mib/{method}"] = r.peak_rss_mib
        exact[f"saved_bytes/{method}"] = r.saved_bytes
    return exact, measured


def _figures(df: "pd.DataFrame", slopes: dict[str, dict[str, float]]) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m_max = int(df.m.max())
    sub = df[df.m == m_max]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, g in sub.groupby("method", sort=True):
        s = slopes.get(method, {})
        label = f"{method} (slope {s.get('fitted_slope', float('nan')):.2f}, theory {s.get('theory_slope', float('nan')):.2f})"
        ax.loglog(g.n, g.saved_bytes, marker="o", label=label)
    ax.set_xlabel("n (columns)")
    ax.set_ylabel("bytes saved for backward")
    ax.set_title(f"Saved-for-backward memory at m = {m_max}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, f"{OUT}/figures/saved_bytes.png")
    plt.close(fig)

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
    save_figure(fig, f"{OUT}/timings/time_ratio.png")
    plt.close(fig)
    return [
        Figure("figures/saved_bytes.png", "Bytes saved for backward against n on log axes; the legend gives the "
               "fitted slope beside the theoretical one (autograd MGS ~ m n^2, Q-and-R-only ~ m n + n^2)."),
        Figure("timings/time_ratio.png", "Median forward+backward time of each variant divided by torch.linalg.qr's "
               "on the same matrix (below the dashed line is faster)."),
    ]


@stage(
    "qr_benchmark", branch="qr", step="benchmark",
    help="Measure saved-for-backward bytes, peak RSS, time and accuracy of every QR variant over a grid.",
    params=("seed", "qr"),
    deps=(),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures",
          f"{OUT}/timings.json", f"{OUT}/timings"),
    noisy=(f"{OUT}/section.json", f"{OUT}/timings.json", f"{OUT}/timings"),  # times and RSS; the section shows them
    resources={"mem_mb": 4000, "runtime": 60, "threads": 1},
    plots=(Plot("qr saved bytes", f"{OUT}/plots/saved_bytes.csv", x="n", y="saved_bytes", template="scatter",
                series="method"),
           Plot("qr time ratio", f"{OUT}/timings/time.csv", x="n", y="time_ratio_to_linalg", template="scatter",
                series="method")),
)
def run(ctx: StageContext) -> None:
    import pandas as pd
    import torch
    from tqdm import tqdm

    from repropipe.qr import benchmark

    p = ctx.params["qr"]
    dtype = getattr(torch, p["dtype"])
    torch.set_num_threads(int(p["threads"]))
    todo = [(m, n, meth) for m in p["m"] for n in p["n"] if n <= m for meth in p["methods"]]
    bar = tqdm(total=len(todo), desc="qr_benchmark", unit="case")

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    rows = benchmark.run_grid(p["m"], p["n"], p["methods"], int(p["repeats"]), ctx.seed, dtype, progress)
    bar.close()
    df = pd.DataFrame(benchmark.rows_as_dicts(rows))
    slopes = benchmark.fitted_slopes(rows)

    io.atomic_write_text(f"{OUT}/plots/saved_bytes.csv", df[["method", "m", "n", "saved_bytes"]].to_csv(index=False))
    io.atomic_write_text(f"{OUT}/timings/time.csv",
                         df[["method", "m", "n", "time_s", "time_ratio_to_linalg"]].to_csv(index=False))
    figures = _figures(df, slopes)

    exact, measured = _headline(rows)
    grid = benchmark.rows_as_dicts(rows)
    ctx.write_metrics(f"{OUT}/metrics.json", {
        **exact,
        "slopes": slopes,
        "grid": [{k: v for k, v in r.items() if k not in NOISY_FIELDS} for r in grid],
        "dtype": p["dtype"],
        "threads": int(p["threads"]),
    }, data_source="none (random matrices, no dataset)", device="cpu")
    # measured times and memory apart from the exact numbers, so metrics.json repeats byte for byte
    io.atomic_write_json(f"{OUT}/timings.json", {
        **measured,
        "grid": [{k: r[k] for k in ("method", "m", "n", *NOISY_FIELDS)} for r in grid],
    })
    headline = {**exact, **measured}

    m, n = headline["headline_m"], headline["headline_n"]
    table = Table(
        title=f"QR variants at m={m}, n={n} ({p['dtype']}, CPU, {p['threads']} thread(s), median of {p['repeats']})",
        columns=["method", "saved for backward (bytes)", "theory", "peak RSS growth (MiB)", "time (s)",
                 "time / linalg.qr", "||A-QR||/||A||", "||QᵀQ-I||", "grad rel. diff to linalg.qr"],
        rows=[[r.method, r.saved_bytes, benchmark.THEORY[r.method], round(r.peak_rss_mib, 1), r.time_s,
               r.time_ratio_to_linalg, r.recon_error, r.orth_error, r.grad_rel_diff]
              for r in rows if (r.m, r.n) == (m, n)],
        anchor="Anchor: torch.linalg.qr (LAPACK Householder) is the reference; the memory-efficient backward "
               "saves exactly m n + n^2 elements where autograd through MGS saves O(m n^2).",
    )
    slope_table = Table(
        title="Saved-bytes growth in n (log-log slope)",
        columns=["method", "m", "fitted slope", "theoretical slope"],
        rows=[[k, v["m"], v["fitted_slope"], v["theory_slope"]] for k, v in slopes.items()],
    )
    Section(
        branch="qr", title="QR orthogonalization layer: memory and time",
        summary="Modified Gram-Schmidt with autograd, a hand-written backward, and two variants with a "
                "Q-and-R-only backward (memory-efficient: blocked MGS forward; fast: LAPACK Householder "
                "forward), against torch.linalg.qr, on random Gaussian matrices.",
        data_source="none (random matrices, no dataset)", synthetic=False,
        tables=[table, slope_table], figures=figures,
    ).write(f"{OUT}/section.json")
    log.info("qr_benchmark event=metrics %s", {k: v for k, v in headline.items() if k.startswith("time_ratio")})
    print(f"\nqr_benchmark at m={m}, n={n} ({p['dtype']}, CPU, {p['threads']} thread(s)):")
    print(df[(df.m == m) & (df.n == n)][["method", "saved_bytes", "peak_rss_mib", "time_s", "time_ratio_to_linalg",
                                         "grad_rel_diff"]].to_string(index=False))
