rule gan_download:
    input:
        code("gan"),
    output:
        directory("data/raw/gan"),
    params:
        seed=param("seed"),
        gan__source=param("gan.source"),
        gan__data=param("gan.data"),
    resources:
        mem_mb=4000,
        runtime=600,
        cpus_per_task=1,
    shell:
        "python -m repropipe gan download"


rule gan_features:
    input:
        "data/raw/gan",
        code("gan"),
    output:
        directory("data/features/gan"),
    params:
        gan__features=param("gan.features"),
    resources:
        mem_mb=16000,
        runtime=240,
        cpus_per_task=1,
    shell:
        "python -m repropipe gan features"


rule gan_train:
    input:
        "data/features/gan",
        code("gan"),
    output:
        directory("results/gan/models"),
    params:
        seed=param("seed"),
        device=param("device"),
        gan__model=param("gan.model"),
        gan__train=param("gan.train"),
    resources:
        mem_mb=16000,
        runtime=1440,
        cpus_per_task=4,
        gpu=1,  # one GPU on a cluster; `pipeline set-resources gpu=0` runs it on CPU nodes
    shell:
        "python -m repropipe gan train"


rule gan_real_stats:
    input:
        "data/features/gan",
        code("gan"),
    output:
        directory("results/gan/real_stats"),
    params:
        device=param("device"),
        gan__fidelity=param("gan.fidelity"),
    resources:
        mem_mb=16000,
        runtime=120,
        cpus_per_task=4,
        gpu=1,  # one GPU on a cluster; `pipeline set-resources gpu=0` runs it on CPU nodes
    shell:
        "python -m repropipe gan real-stats"


rule gan_evaluate:
    input:
        "results/gan/models",
        "results/gan/real_stats",
        code("gan"),
    output:
        "results/gan/metrics.json",
        "results/gan/section.json",
        directory("results/gan/plots"),
        directory("results/gan/figures"),
    params:
        seed=param("seed"),
        device=param("device"),
        gan__model=param("gan.model"),
        gan__evaluate=param("gan.evaluate"),
    resources:
        mem_mb=16000,
        runtime=120,
        cpus_per_task=4,
        gpu=1,  # one GPU on a cluster; `pipeline set-resources gpu=0` runs it on CPU nodes
    shell:
        "python -m repropipe gan evaluate"
