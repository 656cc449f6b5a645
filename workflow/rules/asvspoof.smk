# ASVspoof 2019 LA: download -> features -> train -> evaluate. dvc.yaml declares the same stages.
rule asvspoof_download:
    input:
        "src/repropipe/asvspoof/data.py",
        "src/repropipe/asvspoof/synth.py",
    output:
        directory("data/raw/asvspoof"),
    params:
        seed=param("seed"),
        asvspoof__source=param("asvspoof.source"),
        asvspoof__real=param("asvspoof.real"),
        asvspoof__synthetic=param("asvspoof.synthetic"),
    resources:
        mem_mb=4000,
        runtime=240,
        cpus_per_task=1,
    shell:
        "python -m repropipe asvspoof download"


rule asvspoof_features:
    input:
        "data/raw/asvspoof",
        code("asvspoof"),
    output:
        directory("data/features/asvspoof"),
    params:
        seed=param("seed"),
        asvspoof__features=param("asvspoof.features"),
        asvspoof__on_bad_file=param("asvspoof.on_bad_file"),
    resources:
        mem_mb=8000,
        runtime=240,
        cpus_per_task=1,
    shell:
        "python -m repropipe asvspoof features"


rule asvspoof_train:
    input:
        "data/features/asvspoof",
        code("asvspoof"),
    output:
        directory("results/asvspoof/models"),
    params:
        device=param("device"),
        asvspoof__train=param("asvspoof.train"),
    resources:
        mem_mb=16000,
        runtime=720,
        cpus_per_task=4,
        gpu=1,  # one GPU on a cluster; `pipeline set-resources gpu=0` runs it on CPU nodes
    shell:
        "python -m repropipe asvspoof train"


rule asvspoof_evaluate:
    input:
        "data/features/asvspoof",
        "results/asvspoof/models",
        code("asvspoof"),
    output:
        "results/asvspoof/metrics.json",
        "results/asvspoof/section.json",
        directory("results/asvspoof/plots"),
        directory("results/asvspoof/figures"),
        directory("results/asvspoof/scores"),
    params:
        device=param("device"),
    resources:
        mem_mb=8000,
        runtime=60,
        cpus_per_task=1,
    shell:
        "python -m repropipe asvspoof evaluate"
