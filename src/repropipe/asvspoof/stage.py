"""The ASVspoof 2019 LA stages: download -> features -> train -> evaluate.

Heavy imports stay inside the stage functions so the CLI and the stage registry stay instant.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from repropipe import io
from repropipe.asvspoof import bench as _bench  # noqa: F401  (registers `asvspoof bench-features`)
from repropipe.asvspoof import recipe as _recipe  # noqa: F401  (registers `asvspoof recipe-args`)
from repropipe.stages import Plot, StageContext, stage

log = logging.getLogger("repropipe.asvspoof")

RAW = "data/raw/asvspoof"
FEAT = "data/features/asvspoof"
OUT = "results/asvspoof"
MODELS = f"{OUT}/models"
CONTROL = "lfcc_lcnn_shuffled_labels"  # the shuffled-label control run's name in every output


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

    p = ctx.params["asvspoof"]
    with io.atomic_dir(RAW) as tmp:  # the directory appears complete or not at all
        if p["source"] == "real":
            # LA.zip lives in real.cache_dir (not a tracked output: DVC would copy 7 GB into its cache and
            # delete it before every re-run); the output is a small source.json pointing at it
            data.download_real(p["real"], tmp, on_bad=p["on_bad_file"])
        else:
            from repropipe import resources
            from repropipe.asvspoof.synth import write_synthetic

            resources.use_threads()
            write_synthetic(tmp, p["synthetic"], ctx.seed)
    ctx.record_units(utterances=sum(len(data.read_protocol(data.open_source(RAW), s, on_bad="skip")) for s in data.SPLITS))


@stage(
    "asvspoof_features", branch="asvspoof", step="features",
    help="Extract LFCC and log-mel features from every listed FLAC into a few shards per split.",
    params=("seed", "asvspoof.features", "asvspoof.on_bad_file"),
    deps=(RAW,),
    outs=(FEAT,),
    resources={"mem_mb": 8000, "runtime": 240, "threads": 4},
)
def features(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.asvspoof import data
    from repropipe.asvspoof.evaluate import parse_asv_scores
    from repropipe.asvspoof.features import FeatureConfig, extract_split

    processes, source_of = resources.cpu_threads()  # one single-threaded process per CPU: byte-identical shards
    log.info("event=features processes=%d from=%s", processes, source_of)
    p = ctx.params["asvspoof"]
    fp = p["features"]
    on_bad = p["on_bad_file"]
    source = data.open_source(RAW)
    cfg = FeatureConfig.from_params(fp)
    kinds = tuple(fp["kinds"])
    with io.atomic_dir(FEAT) as tmp:
        bad: list[data.BadItem] = []
        frames = []
        for split in data.SPLITS:
            df = data.read_protocol(source, split, on_bad=on_bad, bad=bad)
            if split != "train":
                df = data.balanced_subset(df, fp.get("max_per_class"), ctx.seed).reset_index(drop=True)
            frames.append(extract_split(source, df, split, tmp, cfg, kinds, shard_size=int(fp["shard_size"]),
                                        on_bad=on_bad, bad=bad, protocol=source.where(data.protocol_path(split)),
                                        processes=processes))
            log.info("event=features split=%s utterances=%d", split, len(frames[-1]))
        import pandas as pd

        index = pd.concat(frames, ignore_index=True)
        ctx.record_units(utterances=len(index))
        with io.atomic_path(tmp / "index.parquet") as t:
            index.to_parquet(t, index=False)
        for split, rel in data.ASV_SCORES.items():
            if source.exists(rel):
                raw = source.read_bytes(rel)
                parse_asv_scores(raw, name=source.where(rel), split=split)  # a bad file stops here, named
                io.atomic_write_bytes(tmp / f"asv_scores.{split}.txt", raw)
        io.atomic_write_json(tmp / "manifest.json", {
            "data_source": data.data_source_of(RAW), "source": source.description, "config": fp,
            "counts": {s: int((index.split == s).sum()) for s in data.SPLITS},
            "skipped": [b.as_dict() for b in bad],
        })


@stage(
    "asvspoof_train", branch="asvspoof", step="train",
    help="Train every countermeasure listed in asvspoof.train.models, once per seed, with the shared loop.",
    params=("device", "asvspoof.train"),
    deps=(FEAT,),
    outs=(MODELS,),
    resources={"mem_mb": 16000, "runtime": 720, "threads": 4, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.asvspoof import data
    from repropipe.asvspoof.train import run_dir_of, train_one
    from repropipe.training import rank_zero_resumable, select_device, write_train_provenance

    resources.srun_relaunch()  # a SLURM job of several tasks: one rank per task
    resources.use_threads(workers=True)
    p = ctx.params["asvspoof"]["train"]
    device = select_device(ctx.params["device"])
    cache: dict[str, Any] = {}
    runs = []
    # a killed run resumes from its checkpoints; under torchrun/srun only rank 0 publishes
    with rank_zero_resumable(ctx, MODELS, device) as work:
        for name in p["models"]:
            for seed in p["seeds"]:
                s = train_one(name, int(seed), p, Path(FEAT), run_dir_of(work, name, int(seed)), device, cache)
                runs.append({"model": name, "seed": int(seed), "dir": str(run_dir_of(Path(MODELS), name, int(seed))),
                             "selected_dev_eer": s["selected_dev_eer"], "control": False})
        if p["shuffled_label_control"]:
            # one lfcc_lcnn run on shuffled training labels, reported beside the real models: it must stay near chance
            seed = int(p["seeds"][0])
            s = train_one("lfcc_lcnn", seed, p, Path(FEAT), run_dir_of(work, CONTROL, seed), device, cache,
                          shuffle_labels=True)
            runs.append({"model": CONTROL, "seed": seed, "dir": str(run_dir_of(Path(MODELS), CONTROL, seed)),
                         "selected_dev_eer": s["selected_dev_eer"], "control": True})
        io.atomic_write_json(work / "manifest.json", {"runs": runs, "device": str(device)})
        write_train_provenance(ctx, work, data_source=io.read_json(f"{FEAT}/manifest.json", "missing")["data_source"],
                               device=device, precision=p.get("precision", "32"))


@stage(
    "asvspoof_evaluate", branch="asvspoof", step="evaluate",
    help="Score dev and eval with every trained model, any published weights named in asvspoof.evaluate.pretrained, "
         "and the LFCC-GMM baseline; EER overall and per attack with 95 % bootstrap intervals, paired tests against "
         "LFCC-GMM, DET, histograms, report section.",
    params=("seed", "device", "asvspoof.evaluate"),
    deps=(FEAT, MODELS),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures",
          f"{OUT}/scores"),
    resources={"mem_mb": 8000, "runtime": 60, "threads": 1},
    plots=(Plot("asvspoof eval EER per attack", f"{OUT}/plots/per_attack_eer.csv", x="eer", y="attack",
                template="bar_horizontal", series="model"),
           Plot("asvspoof training", f"{OUT}/plots/training.csv", x="epoch", y="dev_eer", series="run")),
)
def evaluate(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.asvspoof.section import evaluate_all

    resources.use_threads()
    evaluate_all(ctx, FEAT, MODELS, OUT, pretrained=ctx.params["asvspoof"]["evaluate"]["pretrained"])
    ctx.record_units(utterances=sum(n for s, n in io.read_json(f"{FEAT}/manifest.json", "missing")["counts"].items() if s != "train"))
