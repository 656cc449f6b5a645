# repropipe, driven by Snakemake. The rules in workflow/rules/<branch>.smk and dvc.yaml are generated from
# one stage registry (src/repropipe/<branch>/stage.py) by `python -m repropipe pipeline write-dag`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/qr.smk"
include: "workflow/rules/speaker.smk"
include: "workflow/rules/eeg.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/asvspoof.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report.html",
