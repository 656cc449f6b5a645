"""The gan stages: download, features, train, real statistics, evaluate.

Each stage reads its params as typed configs (gan/config.py) and calls data, features, train,
fidelity, evaluate, figures and section. Heavy imports (torch, torch-fidelity, PIL, matplotlib)
happen inside the stages so that the CLI and the stage registry stay instant.
"""

from __future__ import annotations

import logging

from repropipe import io
from repropipe.stages import Plot, StageContext, stage
from repropipe.recipes import recipe_cli

log = logging.getLogger("repropipe.gan")
recipe_cli("gan")  # `python -m repropipe gan recipe-args conf/gan/paper.yaml`: DVC -S arguments

RAW = "data/raw/gan"
FEATURES = "data/features/gan"
OUT = "results/gan"
MODELS = f"{OUT}/models"


@stage(
    "gan_download", branch="gan", step="download",
    help="Point at CelebA (img_align_celeba.zip + list_eval_partition.txt, fetched once into gan.data.cache_dir "
         "or read in place) with a small source.json, or write synthetic faces as a zip in the same layout.",
    params=("seed", "gan.source", "gan.data"),
    deps=(),
    outs=(RAW,),
    resources={"mem_mb": 4000, "runtime": 600, "threads": 1},
)
def download(ctx: StageContext) -> None:
    from repropipe.gan import data
    from repropipe.gan.config import DataConfig

    cfg = DataConfig.of(ctx.params)
    with io.atomic_dir(RAW) as tmp:  # the whole folder appears at once
        if ctx.params["gan"]["source"] == "synthetic":
            data.synthesize(tmp, cfg.num_images, ctx.seed)
        else:
            # the 1.4 GB zip stays in gan.data.cache_dir (not a tracked output: DVC would copy it into its
            # cache and delete it before every re-run); the output is a small source.json pointing at it
            data.download_real(tmp, cfg)
    ctx.record_units(images=len(data.read_partition(data.open_source(RAW).partition)))


@stage(
    "gan_features", branch="gan", step="features",
    help="Center crop 178, resize to 64, write uint8 tensor shards per split.",
    params=("gan.features",),
    deps=(RAW,),
    outs=(FEATURES,),
    resources={"mem_mb": 16000, "runtime": 240, "threads": 1},
)
def features(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.gan.config import FeaturesConfig
    from repropipe.gan.features import build_shards

    resources.use_threads()
    cfg = FeaturesConfig.of(ctx.params)
    with io.atomic_dir(FEATURES) as tmp:
        index = build_shards(RAW, tmp, cfg.crop, cfg.size, cfg.shard_size, cfg.on_bad_image)
    ctx.record_units(images=sum(s["count"] for s in index["splits"].values()))


@stage(
    "gan_train", branch="gan", step="train",
    help="Train the WGAN-GP 64 generator and critic (checkpoints, resume, sample grids).",
    params=("seed", "device", "gan.model", "gan.train"),
    deps=(FEATURES,),
    outs=(MODELS,),
    resources={"mem_mb": 16000, "runtime": 1440, "threads": 4, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.gan import features as feats, train as tr
    from repropipe.gan.config import ModelConfig, TrainConfig
    from repropipe.training import rank_zero_resumable, select_device, write_train_provenance

    resources.srun_relaunch()  # a SLURM job of several tasks: one rank per task
    resources.use_threads(workers=True)
    model, cfg = ModelConfig.of(ctx.params), TrainConfig.of(ctx.params)
    device = select_device(ctx.params["device"])
    images = feats.load_split(FEATURES, "train")
    # a killed run resumes from its checkpoint; under torchrun/srun only rank 0 publishes
    with rank_zero_resumable(ctx, MODELS, device) as work:
        res = tr.train(images, tr.model_dir(work, model), model, cfg, ctx.seed, device)
        write_train_provenance(ctx, work, data_source=feats.read_index(FEATURES)["source"].get("source", "unknown"),
                               device=device, precision=cfg.precision)
    log.info("stage=gan_train event=done steps=%d resumed_from=%s", res["global_step"], res["resumed_from_step"])


@stage(
    "gan_real_stats", branch="gan", step="real-stats",
    help="Compute torch-fidelity features and FID statistics of the real images once (cached for evaluate).",
    params=("device", "gan.fidelity"),
    deps=(FEATURES,),
    outs=(f"{OUT}/real_stats",),
    resources={"mem_mb": 16000, "runtime": 120, "threads": 4, "gpu": 1},
)
def real_stats(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.gan import features as feats, fidelity
    from repropipe.gan.config import FidelityConfig
    from repropipe.training import select_device

    resources.use_threads()
    cfg = FidelityConfig.of(ctx.params)
    device = select_device(ctx.params["device"])
    settings = fidelity.extractor_settings(cfg.feature_extractor_weights_path)
    images = feats.load_split(FEATURES, cfg.real_split, cfg.num_real)
    source = feats.read_index(FEATURES)["source"]
    with io.atomic_dir(f"{OUT}/real_stats") as tmp:
        fidelity.cache_real_statistics(images, tmp, settings, device.type == "cuda",
                                       {"real_split": cfg.real_split, "data_source": source.get("source", "unknown")})
    ctx.record_units(images=len(images))


@stage(
    "gan_evaluate", branch="gan", step="evaluate",
    help="Calibrate the critic on held-out images (a, b of log r = a D + b); FID/KID of the trained (and an untrained) "
         "generator, plain and with I-SIR (raw and calibrated critic); grids, curves, report section.",
    params=("seed", "device", "gan.model", "gan.evaluate"),
    deps=(FEATURES, MODELS, f"{OUT}/real_stats"),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures"),
    resources={"mem_mb": 16000, "runtime": 120, "threads": 4, "gpu": 1},
    plots=(Plot("gan training losses", f"{OUT}/plots/train_curves.csv", x="step", y=("loss_D", "loss_G", "wasserstein")),
           Plot("gan I-SIR moves", f"{OUT}/plots/isir_changed.csv", x="iteration",
                y=("changed_fraction", "changed_fraction_uncalibrated"))),
)
def evaluate(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.gan import evaluate as ev, figures, section
    from repropipe.gan.config import EvaluateConfig, ModelConfig
    from repropipe.gan.train import model_dir
    from repropipe.training import select_device

    resources.use_threads()
    model, cfg = ModelConfig.of(ctx.params), EvaluateConfig.of(ctx.params)
    device = select_device(ctx.params["device"])
    res = ev.evaluate(model_dir(MODELS, model), f"{OUT}/real_stats", FEATURES, model, cfg, ctx.seed, device)
    ctx.write_metrics(f"{OUT}/metrics.json", ev.metrics(res), data_source=res.source, device=device.type)
    figures.write_plots(res, f"{OUT}/plots")
    figures.write_figures(res, f"{OUT}/figures")
    section.build(res).write(f"{OUT}/section.json")
    ctx.record_units(images=cfg.num_samples)  # generated per FID/KID estimate
