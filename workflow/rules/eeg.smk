rule eeg_download:
    input:
        code("eeg"),
    output:
        directory("data/raw/eeg"),
    params:
        seed=param("seed"),
        eeg__source=param("eeg.source"),
        eeg__subjects=param("eeg.subjects"),
        eeg__runs=param("eeg.runs"),
        eeg__local_dir=param("eeg.local_dir"),
        eeg__exclude_known_bad=param("eeg.exclude_known_bad"),
        eeg__synthetic=param("eeg.synthetic"),
    resources:
        mem_mb=4000,
        runtime=240,
        cpus_per_task=1,
    shell:
        "python -m repropipe eeg download"


rule eeg_features:
    input:
        "data/raw/eeg",
        code("eeg"),
    output:
        directory("data/features/eeg"),
    params:
        seed=param("seed"),
        eeg__on_bad=param("eeg.on_bad"),
        eeg__features=param("eeg.features"),
        eeg__split=param("eeg.split"),
    resources:
        mem_mb=8000,
        runtime=60,
        cpus_per_task=1,
    shell:
        "python -m repropipe eeg features"


rule eeg_train:
    input:
        "data/features/eeg",
        code("eeg"),
    output:
        directory("results/eeg/models"),
    params:
        seed=param("seed"),
        device=param("device"),
        eeg__train=param("eeg.train"),
    resources:
        mem_mb=8000,
        runtime=240,
        cpus_per_task=2,
        gpu=1,  # one GPU on a cluster; `pipeline set-resources gpu=0` runs it on CPU nodes
    shell:
        "python -m repropipe eeg train"


rule eeg_evaluate:
    input:
        "data/features/eeg",
        "results/eeg/models",
        code("eeg"),
    output:
        "results/eeg/metrics.json",
        "results/eeg/section.json",
        directory("results/eeg/plots"),
        directory("results/eeg/figures"),
    params:
        seed=param("seed"),
        device=param("device"),
        eeg__evaluate=param("eeg.evaluate"),
    resources:
        mem_mb=8000,
        runtime=60,
        cpus_per_task=1,
    shell:
        "python -m repropipe eeg evaluate"
