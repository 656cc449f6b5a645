"""Stages of the speaker branch: download -> features -> train -> evaluate.

Each stage reads its typed params (repropipe.speaker.config) and calls data, features, train, evaluate,
figures and section. Heavy imports (torch, matplotlib) happen inside the stage functions so the CLI stays
instant.
"""

from __future__ import annotations

from repropipe.stages import Plot, StageContext, stage
from repropipe.recipes import recipe_cli

recipe_cli("speaker")  # `python -m repropipe speaker recipe-args conf/speaker/paper.yaml`: DVC -S arguments

RAW = "data/raw/speaker"
FEATURES = "data/features/speaker"
OUT = "results/speaker"
MODELS = f"{OUT}/models"


@stage(
    "speaker_download", branch="speaker", step="download",
    help="Fetch the HW4 VoxCeleb data (Kaggle, a local HW4 folder or a VoxCeleb1 wav tree) or synthesize it, "
         "in the HW4 layout (metadata.json, mapping.json, testdata.json, uttr-*.pt).",
    params=("seed", "speaker.source", "speaker.synthetic", "speaker.real"),
    deps=(),
    outs=(RAW,),
    resources={"mem_mb": 4000, "runtime": 600, "threads": 1},
)
def download(ctx: StageContext) -> None:
    from repropipe.speaker.config import RealConfig, SyntheticConfig
    from repropipe.speaker.data import data_root, obtain, read_dataset

    obtain(RAW, ctx.params["speaker"]["source"], ctx.seed, synthetic=SyntheticConfig.of(ctx.params),
           real=RealConfig.of(ctx.params))
    ctx.record_units(utterances=len(read_dataset(data_root(RAW)).utterances))


@stage(
    "speaker_features", branch="speaker", step="features",
    help="Validate every uttr-*.pt, split speakers and utterances (train/val/verify/test) and pack mel shards.",
    params=("seed", "speaker.features"),
    deps=(RAW,),
    outs=(FEATURES,),
    resources={"mem_mb": 16000, "runtime": 120, "threads": 1},
)
def features(ctx: StageContext) -> None:
    from repropipe import io
    from repropipe.speaker.config import FeaturesConfig
    from repropipe.speaker.features import build

    cfg = FeaturesConfig.of(ctx.params)
    with io.atomic_dir(FEATURES) as tmp:  # nothing half-written survives a failure
        build(RAW, tmp, cfg.verify_speakers, cfg.val_fraction, ctx.seed)
    ctx.record_units(utterances=sum(io.read_json(f"{FEATURES}/manifest.json", "missing")["counts"].values()))


@stage(
    "speaker_train", branch="speaker", step="train",
    help="Train every model in speaker.models on random segment_len crops (checkpoints, resume, dvclive).",
    params=("seed", "device", "speaker.models", "speaker.model", "speaker.ecapa", "speaker.train", "speaker.triplet"),
    deps=(FEATURES,),
    outs=(MODELS,),
    resources={"mem_mb": 16000, "runtime": 720, "threads": 4, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    from pathlib import Path

    from repropipe import resources
    from repropipe.speaker.config import Training
    from repropipe.speaker.features import read_manifest
    from repropipe.speaker.train import setup_torch, train_all
    from repropipe.training import rank_zero_resumable, write_train_provenance

    resources.srun_relaunch()  # a SLURM job of several tasks: one rank per task
    cfg = Training.of(ctx.params)
    device = setup_torch(ctx.seed, ctx.params["device"], workers=True)
    # a killed run resumes from its checkpoints; under torchrun/srun only rank 0 publishes
    with rank_zero_resumable(ctx, MODELS, device) as work:
        train_all(list(ctx.params["speaker"]["models"]), Path(FEATURES), work, cfg, ctx.seed, device)
        write_train_provenance(ctx, work, data_source=read_manifest(Path(FEATURES))["data_source"],
                               device=device, precision=cfg.train.precision)


@stage(
    "speaker_evaluate", branch="speaker", step="evaluate",
    help="Identification accuracy, testdata.json predictions (Id,Category), verification EER and top-k enrolment "
         "scoring for every trained model; metrics, plots, figures and the report section.",
    params=("seed", "device", "speaker.models", "speaker.evaluate"),
    deps=(FEATURES, MODELS),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures", f"{OUT}/predictions"),
    resources={"mem_mb": 16000, "runtime": 60, "threads": 1},
    plots=(Plot("speaker held-out accuracy", f"{OUT}/plots/training.csv", x="epoch", y="val_accuracy",
                series="model"),
           Plot("speaker DET", f"{OUT}/plots/det.csv", x="far", y="frr", series="model")),
)
def evaluate(ctx: StageContext) -> None:
    from repropipe.speaker import figures, section
    from repropipe.speaker.config import EvaluateConfig
    from repropipe.speaker.evaluate import evaluate_all, metrics
    from repropipe.speaker.train import setup_torch

    cfg = EvaluateConfig.of(ctx.params)
    device = setup_torch(ctx.seed, ctx.params["device"])
    ev = evaluate_all(FEATURES, MODELS, OUT, list(ctx.params["speaker"]["models"]), cfg, ctx.seed, device)
    figures.write_all(ev, OUT)
    ctx.write_metrics(f"{OUT}/metrics.json", metrics(ev), data_source=ev.manifest["data_source"], device=str(device))
    section.build(ev).write(f"{OUT}/section.json")
    ctx.record_units(utterances=sum(n for split, n in ev.manifest["counts"].items() if split in ("test", "verify")))
