rule qr_benchmark:
    input:
        code("qr"),
    output:
        "results/qr/metrics.json",
        "results/qr/section.json",
        directory("results/qr/plots"),
        directory("results/qr/figures"),
    params:
        seed=param("seed"),
        qr=param("qr"),
    resources:
        mem_mb=4000,
        runtime=60,
        cpus_per_task=1,
    shell:
        "python -m repropipe qr benchmark"
