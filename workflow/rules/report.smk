rule report:
    input:
        "results/qr/metrics.json",
        "results/qr/section.json",
        "results/qr/figures",
        "results/asvspoof/metrics.json",
        "results/asvspoof/section.json",
        "results/asvspoof/figures",
        code("report"),
    output:
        "results/report.html",
    params:
        report=param("report"),
    resources:
        mem_mb=2000,
        runtime=10,
        cpus_per_task=1,
    shell:
        "python -m repropipe report build"
