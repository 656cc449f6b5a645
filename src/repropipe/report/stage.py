"""The report stage: every branch's section into results/report.html."""

from __future__ import annotations

from repropipe.report.build import build_report
from repropipe.stages import StageContext, stage

BRANCH_DIRS = ("results/asvspoof", "results/speaker", "results/gan", "results/eeg", "results/qr")


@stage(
    "report", branch="report", step="build",
    help="Assemble results/report.html from every branch's section.json, metrics.json and figures.",
    params=("report",),
    deps=tuple(f"{d}/{f}" for d in BRANCH_DIRS for f in ("metrics.json", "provenance.json", "section.json", "figures"))
    + ("results/qr/timings", "results/eeg/timings"),  # figures of measured times live apart
    outs=("results/report.html",),
    noisy=("results/report.html",),  # it shows the measured times of qr and eeg
    resources={"mem_mb": 2000, "runtime": 10, "threads": 1},
)
def run(ctx: StageContext) -> None:
    from repropipe.report.config import ReportConfig

    build_report(list(BRANCH_DIRS), "results/report.html", ReportConfig.of(ctx.params).title)
