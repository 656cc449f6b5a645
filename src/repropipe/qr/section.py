"""The QR branch's report section: the variants at the headline shape, and how saved bytes grow in n."""

from __future__ import annotations

from repropipe.qr import figures
from repropipe.qr.evaluate import DATA_SOURCE, THEORY, Benchmark
from repropipe.report.section import Figure, Section, Table


def build(bench: Benchmark) -> Section:
    """The section results/qr/section.json holds (noisy: it shows measured times and RSS)."""
    return Section(
        branch="qr", title="QR orthogonalization layer: memory and time",
        summary="Modified Gram-Schmidt with autograd, a hand-written backward, and two variants with a "
                "Q-and-R-only backward (memory-efficient: blocked MGS forward; fast: LAPACK Householder "
                "forward), against torch.linalg.qr, on random Gaussian matrices.",
        data_source=DATA_SOURCE, synthetic=False,
        tables=[headline_table(bench), slope_table(bench)],
        figures=[
            Figure(figures.SAVED_BYTES, "Bytes saved for backward against n on log axes; the legend gives the "
                   "fitted slope beside the theoretical one (autograd MGS ~ m n^2, Q-and-R-only ~ m n + n^2)."),
            Figure(figures.TIME_RATIO, "Median forward+backward time of each variant divided by torch.linalg.qr's "
                   "on the same matrix (below the dashed line is faster)."),
        ],
    )


def headline_table(bench: Benchmark) -> Table:
    """Every method at the headline shape: memory (exact and measured), time, accuracy, gradient agreement."""
    cfg = bench.cfg
    m, n = bench.headline_shape
    return Table(
        title=f"QR variants at m={m}, n={n} ({cfg.dtype}, CPU, {cfg.threads} thread(s), median of {cfg.repeats})",
        columns=["method", "saved for backward (bytes)", "theory", "peak RSS growth (MiB)", "time (s)",
                 "time / linalg.qr", "||A-QR||/||A||", "||QᵀQ-I||", "grad rel. diff to linalg.qr"],
        rows=[[r.method, r.saved_bytes, THEORY[r.method], round(r.peak_rss_mib, 1), r.time_s,
               r.time_ratio_to_linalg, r.recon_error, r.orth_error, r.grad_rel_diff]
              for r in bench.at_headline()],
        anchor="Anchor: torch.linalg.qr (LAPACK Householder) is the reference; the memory-efficient backward "
               "saves exactly m n + n^2 elements where autograd through MGS saves O(m n^2).",
    )


def slope_table(bench: Benchmark) -> Table:
    return Table(
        title="Saved-bytes growth in n (log-log slope)",
        columns=["method", "m", "fitted slope", "theoretical slope"],
        rows=[[k, v["m"], v["fitted_slope"], v["theory_slope"]] for k, v in bench.slopes.items()],
    )
