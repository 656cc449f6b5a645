"""EEG stages: eeg_download -> eeg_features -> eeg_train -> eeg_evaluate.

Each stage reads its typed config (repropipe.eeg.config) and calls data / features / train /
evaluate / figures / section. Heavy imports (mne, torch, pandas, matplotlib) stay inside the
functions so the CLI is instant.
"""

from __future__ import annotations

from repropipe.stages import Plot, StageContext, stage
from repropipe.recipes import recipe_cli

recipe_cli("eeg")  # `python -m repropipe eeg recipe-args conf/eeg/paper.yaml`: DVC -S arguments

RAW = "data/raw/eeg"
FEATURES = "data/features/eeg"
OUT = "results/eeg"
MODELS = "results/eeg/models"


@stage(
    "eeg_download", branch="eeg", step="download",
    help="Fetch PhysioNet EEG MMI runs 4/8/12 (source: real) or write synthetic EDF+ files in the same layout.",
    params=("seed", "eeg.source", "eeg.subjects", "eeg.runs", "eeg.local_dir", "eeg.cache_dir", "eeg.exclude_known_bad",
            "eeg.synthetic"),
    deps=(),
    outs=(RAW,),
    resources={"mem_mb": 4000, "runtime": 240, "threads": 1},
)
def download(ctx: StageContext) -> None:
    from repropipe import io
    from repropipe.eeg import data
    from repropipe.eeg.config import DownloadConfig

    cfg = DownloadConfig.of(ctx.params)
    with io.atomic_dir(RAW) as tmp:  # built whole, so no stale recording survives and a failure keeps the old one
        files = data.write_raw(tmp, cfg, ctx.seed)
    ctx.record_units(files=len(files))


@stage(
    "eeg_features", branch="eeg", step="features",
    help="Band-pass 7-30 Hz, epoch -1..4 s around T1/T2, chunk, normalise per channel, split by subject "
         "(cross_subject) or into stratified folds of each subject's trials (within_subject).",
    params=("seed", "eeg.on_bad", "eeg.features", "eeg.split", "eeg.evaluation", "eeg.within_subject_folds"),
    deps=(RAW,),
    outs=(FEATURES,),
    resources={"mem_mb": 8000, "runtime": 60, "threads": 1},
)
def features(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.eeg import data, features as feat
    from repropipe.eeg.config import FeaturesStageConfig

    resources.use_threads()
    cfg = FeaturesStageConfig.of(ctx.params)
    source, subjects, runs = data.read_manifest(RAW)
    x, index, ch_names, skipped = feat.build(RAW, subjects, runs, cfg.features, cfg.split, ctx.seed, cfg.on_bad,
                                             evaluation=cfg.evaluation, folds=cfg.within_subject_folds)
    feat.write(FEATURES, x, index, ch_names, skipped, source, cfg)
    ctx.record_units(files=len(subjects) * len(runs) - len(skipped), chunks=len(index))  # skipped: left-out EDFs


@stage(
    "eeg_train", branch="eeg", step="train",
    help="Train the EEG Transformer, its Linformer variant, SimCLR (pretrain + fine-tune) and EEGNet-8,2 (torcheeg) "
         "on the training subjects (cross_subject) or once per fold of every subject's trials (within_subject).",
    params=("seed", "device", "eeg.train"),
    deps=(FEATURES,),
    outs=(MODELS,),
    resources={"mem_mb": 8000, "runtime": 240, "threads": 2, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    from pathlib import Path

    from repropipe import resources
    from repropipe.eeg.config import TrainConfig
    from repropipe.eeg.features import protocol, read_meta
    from repropipe.eeg.train import load_features, train_all
    from repropipe.training import rank_zero_resumable, select_device, write_train_provenance

    resources.srun_relaunch()  # a SLURM job of several tasks: one rank per task
    resources.use_threads(workers=True)
    cfg = TrainConfig.of(ctx.params)
    device = select_device(ctx.params["device"])
    x, index, ch_names = load_features(Path(FEATURES))
    meta = read_meta(FEATURES)
    # a killed run resumes from its checkpoints; under torchrun/srun only rank 0 publishes
    with rank_zero_resumable(ctx, MODELS, device) as work:
        train_all(x, index, ch_names, cfg, *protocol(meta), ctx.seed, device, work)
        write_train_provenance(ctx, work, data_source=str(meta["source"]), device=device, precision=cfg.precision)


@stage(
    "eeg_evaluate", branch="eeg", step="evaluate",
    help="Post-cue chunk and trial macro F1 / accuracy (trial accuracy with a 95 % subject-bootstrap interval), "
         "pre-cue sanity scores, confusion, per-subject accuracy, the CSP + LDA baseline; Transformer vs Linformer "
         "benchmark.",
    params=("seed", "device", "eeg.evaluate"),
    deps=(FEATURES, MODELS),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures",
          f"{OUT}/timings.json", f"{OUT}/timings"),
    noisy=(f"{OUT}/section.json", f"{OUT}/timings.json", f"{OUT}/timings"),  # inference times; the section shows them
    resources={"mem_mb": 8000, "runtime": 60, "threads": 1},
    plots=(Plot("eeg loss curves", f"{OUT}/plots/loss_curves.csv", x="epoch", y="loss", series="run"),
           Plot("eeg validation loss", f"{OUT}/plots/loss_curves.csv", x="epoch", y="val_loss", series="run"),
           Plot("eeg inference time", f"{OUT}/timings/benchmark_time.csv", x="tokens", y="seconds", template="scatter",
                series="run")),
)
def evaluate(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.eeg import evaluate as ev, figures, section
    from repropipe.eeg.config import EvaluateConfig
    from repropipe.training import select_device

    cfg = EvaluateConfig.of(ctx.params)
    resources.use_threads()
    device = select_device(ctx.params["device"])
    res = ev.evaluate_all(FEATURES, MODELS, cfg, device, ctx.seed)
    ctx.record_units(chunks=res.n_tested)
    figures.write_plot_csvs(res, OUT)
    figs = figures.write_figures(res, OUT)
    ctx.write_metrics(f"{OUT}/metrics.json", ev.metrics(res), data_source=res.data_source, device=str(device.type))
    ev.write_timings(res, f"{OUT}/timings.json")
    section.build(res, figs).write(f"{OUT}/section.json")
    ev.print_summary(res)
