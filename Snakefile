# repropipe, driven by Snakemake. dvc.yaml declares the same stages; tests/test_dag.py checks both agree.
configfile: "params.yaml"


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
