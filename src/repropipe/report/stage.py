"""The report stage: every branch's section into results/report.html."""

from __future__ import annotations

from repropipe import costs
from repropipe.report.build import build_report
from repropipe.stages import StageContext, stage

BRANCH_DIRS = ("results/asvspoof", "results/speaker", "results/gan", "results/eeg", "results/qr")
# every other stage, in the order of the cost table (the report may not import branch code to list them;
# tests/test_report.py checks this is the registry less the report)
COSTED_STAGES = ("asvspoof_download", "asvspoof_features", "asvspoof_train", "asvspoof_evaluate",
                 "speaker_download", "speaker_features", "speaker_train", "speaker_evaluate",
                 "gan_download", "gan_features", "gan_train", "gan_real_stats", "gan_evaluate",
                 "eeg_download", "eeg_features", "eeg_train", "eeg_evaluate", "qr_benchmark")
COST_FILES = tuple(costs.path_of(s) for s in COSTED_STAGES)


@stage(
    "report", branch="report", step="build",
    help="Assemble results/report.html from every branch's section.json, metrics.json and figures.",
    params=("report",),
    deps=tuple(f"{d}/{f}" for d in BRANCH_DIRS for f in ("metrics.json", "provenance.json", "section.json", "figures"))
    + COST_FILES + ("results/qr/timings", "results/eeg/timings"),  # figures of measured times live apart
    outs=("results/report.html",),
    noisy=("results/report.html",),  # it shows the measured times of qr and eeg, and every stage's cost
    resources={"mem_mb": 2000, "runtime": 10, "threads": 1},
)
def run(ctx: StageContext) -> None:
    from repropipe.report.costs import tables

    from repropipe.report.config import ReportConfig

    build_report(list(BRANCH_DIRS), "results/report.html", ReportConfig.of(ctx.params).title, tables(COST_FILES))
