"""The ASVspoof 2019 LA stages: download -> features -> train -> evaluate.

Each stage reads its typed params (asvspoof/config.py) and hands them to data/synth, features, train,
evaluate, figures and section; nothing else lives here. Heavy imports stay inside the stage functions so
the CLI and the stage registry stay instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repropipe import io
from repropipe.asvspoof import bench as _bench  # noqa: F401  (registers `asvspoof bench-features`)
from repropipe.asvspoof import recipe as _recipe  # noqa: F401  (registers `asvspoof recipe-args`)
from repropipe.stages import Plot, StageContext, stage

RAW = "data/raw/asvspoof"
FEATURES = "data/features/asvspoof"
OUT = "results/asvspoof"
MODELS = f"{OUT}/models"


@stage(
    "asvspoof_download", branch="asvspoof", step="download",
    help="Download ASVspoof 2019 LA (source: real) or write the synthetic stand-in in the real layout.",
    params=("seed", "asvspoof.source", "asvspoof.real", "asvspoof.synthetic", "asvspoof.on_bad_file"),
    deps=(),  # its code is data.py and synth.py (computed): a model change must not re-download
    outs=(RAW,),
    resources={"mem_mb": 4000, "runtime": 240, "threads": 1},
)
def download(ctx: StageContext) -> None:
    from repropipe.asvspoof import data
    from repropipe.asvspoof.config import RealConfig, SyntheticConfig

    branch = ctx.params["asvspoof"]
    with io.atomic_dir(RAW) as tmp:  # the directory appears complete or not at all
        if branch["source"] == "real":
            # LA.zip lives in real.cache_dir (not a tracked output: DVC would copy 7 GB into its cache and
            # delete it before every re-run); the output is a small source.json pointing at it
            data.download_real(RealConfig.of(ctx.params), tmp, on_bad=branch["on_bad_file"])
        else:
            from repropipe import resources
            from repropipe.asvspoof.synth import write_synthetic

            resources.use_threads()
            write_synthetic(tmp, SyntheticConfig.of(ctx.params), ctx.seed)
    source = data.open_source(RAW)
    ctx.record_units(utterances=sum(len(data.read_protocol(source, s, on_bad="skip")) for s in data.SPLITS))


@stage(
    "asvspoof_features", branch="asvspoof", step="features",
    help="Extract LFCC and log-mel features from every listed FLAC into a few shards per split.",
    params=("seed", "asvspoof.features", "asvspoof.on_bad_file"),
    deps=(RAW,),
    outs=(FEATURES,),
    resources={"mem_mb": 8000, "runtime": 240, "threads": 4},
)
def features(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.asvspoof.config import FeaturesConfig
    from repropipe.asvspoof.features import write_features

    processes, source_of = resources.cpu_threads()  # one single-threaded process per CPU: byte-identical shards
    with io.atomic_dir(FEATURES) as tmp:
        write_features(RAW, tmp, FeaturesConfig.of(ctx.params), seed=ctx.seed,
                       on_bad=ctx.params["asvspoof"]["on_bad_file"], processes=processes, processes_from=source_of)
    ctx.record_units(utterances=sum(io.read_json(f"{FEATURES}/manifest.json", "missing")["counts"].values()))


@stage(
    "asvspoof_train", branch="asvspoof", step="train",
    help="Train every countermeasure listed in asvspoof.train.models, once per seed, with the shared loop.",
    params=("device", "asvspoof.train"),
    deps=(FEATURES,),
    outs=(MODELS,),
    resources={"mem_mb": 16000, "runtime": 720, "threads": 4, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.asvspoof.config import TrainConfig
    from repropipe.asvspoof.train import CONTROL, run_dir_of, train_one
    from repropipe.training import rank_zero_resumable, select_device, write_train_provenance

    resources.srun_relaunch()  # a SLURM job of several tasks: one rank per task
    resources.use_threads(workers=True)
    cfg = TrainConfig.of(ctx.params)
    device = select_device(ctx.params["device"])
    cache: dict[str, Any] = {}
    runs = []
    # a killed run resumes from its checkpoints; under torchrun/srun only rank 0 publishes
    with rank_zero_resumable(ctx, MODELS, device) as work:
        for name in cfg.models:
            for seed in cfg.seeds:
                s = train_one(name, seed, cfg, Path(FEATURES), run_dir_of(work, name, seed), device, cache)
                runs.append({"model": name, "seed": seed, "dir": str(run_dir_of(Path(MODELS), name, seed)),
                             "selected_dev_eer": s["selected_dev_eer"], "control": False})
        if cfg.shuffled_label_control:
            # one lfcc_lcnn run on shuffled training labels, reported beside the real models: it must stay near chance
            seed = cfg.seeds[0]
            s = train_one("lfcc_lcnn", seed, cfg, Path(FEATURES), run_dir_of(work, CONTROL, seed), device, cache,
                          shuffle_labels=True)
            runs.append({"model": CONTROL, "seed": seed, "dir": str(run_dir_of(Path(MODELS), CONTROL, seed)),
                         "selected_dev_eer": s["selected_dev_eer"], "control": True})
        io.atomic_write_json(work / "manifest.json", {"runs": runs, "device": str(device)})
        data_source = io.read_json(f"{FEATURES}/manifest.json", "missing")["data_source"]
        write_train_provenance(ctx, work, data_source=data_source, device=device, precision=cfg.precision)


@stage(
    "asvspoof_evaluate", branch="asvspoof", step="evaluate",
    help="Score dev and eval with every trained model, any published weights named in asvspoof.evaluate.pretrained, "
         "and the LFCC-GMM baseline; EER overall and per attack with 95 % bootstrap intervals, paired tests against "
         "LFCC-GMM, DET, histograms, report section.",
    params=("seed", "device", "asvspoof.evaluate"),
    deps=(FEATURES, MODELS),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures",
          f"{OUT}/scores"),
    resources={"mem_mb": 8000, "runtime": 60, "threads": 1},
    plots=(Plot("asvspoof eval EER per attack", f"{OUT}/plots/per_attack_eer.csv", x="eer", y="attack",
                template="bar_horizontal", series="model"),
           Plot("asvspoof training", f"{OUT}/plots/training.csv", x="epoch", y="dev_eer", series="run")),
)
def evaluate(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.asvspoof import figures, section
    from repropipe.asvspoof.config import EvaluateConfig
    from repropipe.asvspoof.evaluate import evaluate_all, print_summary
    from repropipe.training import select_device

    resources.use_threads()
    device = select_device(ctx.params["device"])
    result = evaluate_all(ctx, EvaluateConfig.of(ctx.params), device, FEATURES, MODELS, OUT)
    ctx.record_units(utterances=sum(n for s, n in result.manifest["counts"].items() if s != "train"))
    figures.write_plots(result, OUT)
    section.build(result, figures.write_figures(result, OUT)).write(f"{OUT}/section.json")
    print_summary(result)
