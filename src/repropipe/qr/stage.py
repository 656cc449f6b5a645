"""The qr_benchmark stage: reads its typed params and calls evaluate (the grid, metrics.json, timings.json),
figures (plot CSVs and PNGs) and section.

Heavy imports (torch, pandas, matplotlib) happen inside the stage so that `repropipe --help`
and the stage registry stay instant.
"""

from __future__ import annotations

from repropipe.qr import bench as _bench  # noqa: F401  (registers `qr bench-backward`)
from repropipe.stages import Plot, StageContext, stage

OUT = "results/qr"


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
    from repropipe.qr import evaluate, figures, section
    from repropipe.qr.config import QRConfig

    bench = evaluate.run(QRConfig.of(ctx.params), ctx.seed)
    figures.write_all(bench, OUT)
    evaluate.write_results(ctx, bench, OUT)
    section.build(bench).write(f"{OUT}/section.json")
