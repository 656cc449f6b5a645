rule report:
    input:
        "results/qr/metrics.json",
        "results/qr/section.json",
        "results/qr/figures",
        "results/speaker/metrics.json",
        "results/speaker/section.json",
        "results/speaker/figures",
        "results/eeg/metrics.json",
        "results/eeg/section.json",
        "results/eeg/figures",
        "results/gan/metrics.json",
        "results/gan/section.json",
        "results/gan/figures",
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
