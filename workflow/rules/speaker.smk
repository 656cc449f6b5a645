rule speaker_download:
    input:
        code("speaker"),
    output:
        directory("data/raw/speaker"),
    params:
        seed=param("seed"),
        speaker__source=param("speaker.source"),
        speaker__synthetic=param("speaker.synthetic"),
        speaker__real=param("speaker.real"),
    resources:
        mem_mb=4000,
        runtime=600,
        cpus_per_task=1,
    shell:
        "python -m repropipe speaker download"


rule speaker_features:
    input:
        "data/raw/speaker",
        code("speaker"),
    output:
        directory("data/features/speaker"),
    params:
        seed=param("seed"),
        speaker__features=param("speaker.features"),
    resources:
        mem_mb=16000,
        runtime=120,
        cpus_per_task=1,
    shell:
        "python -m repropipe speaker features"


rule speaker_train:
    input:
        "data/features/speaker",
        code("speaker"),
    output:
        directory("results/speaker/models"),
    params:
        seed=param("seed"),
        device=param("device"),
        speaker__models=param("speaker.models"),
        speaker__model=param("speaker.model"),
        speaker__train=param("speaker.train"),
        speaker__triplet=param("speaker.triplet"),
    resources:
        mem_mb=16000,
        runtime=720,
        cpus_per_task=4,
        gpu=1,  # one GPU on a cluster; `pipeline set-resources gpu=0` runs it on CPU nodes
    shell:
        "python -m repropipe speaker train"


rule speaker_evaluate:
    input:
        "data/features/speaker",
        "results/speaker/models",
        code("speaker"),
    output:
        "results/speaker/metrics.json",
        "results/speaker/section.json",
        directory("results/speaker/plots"),
        directory("results/speaker/figures"),
        directory("results/speaker/predictions"),
    params:
        seed=param("seed"),
        device=param("device"),
        speaker__models=param("speaker.models"),
        speaker__evaluate=param("speaker.evaluate"),
    resources:
        mem_mb=16000,
        runtime=60,
        cpus_per_task=1,
    shell:
        "python -m repropipe speaker evaluate"
