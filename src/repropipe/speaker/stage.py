"""Stages of the speaker branch: download -> features -> train -> evaluate.

Heavy imports (torch, matplotlib) happen inside the stage functions so the CLI stays instant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from repropipe import io
from repropipe.stages import Plot, StageContext, stage
from repropipe.recipes import recipe_cli

log = logging.getLogger("repropipe.speaker")
recipe_cli("speaker")  # `python -m repropipe speaker recipe-args conf/speaker/paper.yaml`: DVC -S arguments

RAW = "data/raw/speaker"
FEATURES = "data/features/speaker"
OUT = "results/speaker"
MODELS_DIR = f"{OUT}/models"

# Published anchors (NTU ML2023 Spring HW4, 600 VoxCeleb2 speakers, Kaggle public leaderboard accuracy).
ANCHOR = ("HW4 anchors (real data, 600 speakers, Kaggle public accuracy): boss baseline 0.93175; a Conformer "
          "with one linear head reached 0.955. Sample code (Transformer + mean pooling) scores about 0.6-0.7 "
          "at its default 70k steps.")
REFERENCE = "speaker_hw4_baseline"  # every other model is tested against the course's baseline
LABELS = {
    "speaker_hw4_baseline": "baseline (Transformer, mean pool, linear)",
    "speaker_conformer": "+Conformer",
    "speaker_attn_pool": "+attention pooling",
    "speaker_am_softmax": "+AM-softmax",
    "speaker_conformer_sap_am": "all (Conformer + attention pooling + AM-softmax)",
    "speaker_triplet": "triplet conv1d embedding (nearest centroid)",
    "speaker_ecapa_tdnn": "ECAPA-TDNN (speechbrain) + AAM-softmax",
}
# encoder, pooling and head of the models outside the HW4 ablation
ARCH = {"speaker_triplet": {"encoder": "conv1d", "pooling": "mean", "head": "-"},
        "speaker_ecapa_tdnn": {"encoder": "ECAPA-TDNN (SE-Res2Net TDNN)", "pooling": "attentive statistics",
                               "head": "AAM-softmax"}}


def _torch_setup(ctx: StageContext, workers: bool = False) -> Any:
    from repropipe import resources
    from repropipe.training import seed_everything, select_device

    resources.use_threads(workers=workers)
    seed_everything(ctx.seed)
    return select_device(ctx.params["device"])


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
    from repropipe.speaker.data import obtain

    p = ctx.params["speaker"]
    desc = obtain(RAW, p, ctx.seed)
    log.info("stage=speaker_download event=done data_source=%r", desc)


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
    from repropipe.speaker.features import build

    p = ctx.params["speaker"]["features"]
    with io.atomic_dir(FEATURES) as tmp:  # nothing half-written survives a failure
        manifest = build(RAW, tmp, p["verify_speakers"], p["val_fraction"], ctx.seed)
    log.info("stage=speaker_features event=done counts=%s", manifest["counts"])


@stage(
    "speaker_train", branch="speaker", step="train",
    help="Train every model in speaker.models on random segment_len crops (checkpoints, resume, dvclive).",
    params=("seed", "device", "speaker.models", "speaker.model", "speaker.ecapa", "speaker.train", "speaker.triplet"),
    deps=(FEATURES,),
    outs=(MODELS_DIR,),
    resources={"mem_mb": 16000, "runtime": 720, "threads": 4, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.speaker.features import read_manifest
    from repropipe.speaker.train import train_all
    from repropipe.training import rank_zero_resumable, write_train_provenance

    resources.srun_relaunch()  # a SLURM job of several tasks: one rank per task
    device = _torch_setup(ctx, workers=True)
    p = ctx.params["speaker"]
    # a killed run resumes from its checkpoints; under torchrun/srun only rank 0 publishes
    with rank_zero_resumable(ctx, MODELS_DIR, device) as work:
        train_all(list(p["models"]), Path(FEATURES), work, p, ctx.seed, device)
        write_train_provenance(ctx, work, data_source=read_manifest(Path(FEATURES))["data_source"],
                               device=device, precision=p["train"].get("precision", "32"))


def _det_figure(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from repropipe.metrics import det_curve
    from repropipe.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    ticks = [0.01, 0.02, 0.05, 0.1, 0.2, 0.4]
    for name, r in results.items():
        frr, far, _ = det_curve(r["pairs"].target, r["pairs"].nontarget)
        clip = lambda v: norm.ppf(v.clip(1e-4, 1 - 1e-4))  # noqa: E731
        ax.plot(clip(far), clip(frr), label=f"{name} (EER {r['metrics']['verification_eer']:.3f})")
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlim(norm.ppf(0.005), norm.ppf(0.6))
    ax.set_ylim(norm.ppf(0.005), norm.ppf(0.6))
    ax.plot([-5, 5], [-5, 5], color="grey", lw=0.6, ls=":")
    ax.set_xlabel("false acceptance rate")
    ax.set_ylabel("false rejection rate")
    ax.set_title("Verification DET (cosine, held-out speakers)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, f"{OUT}/figures/det.png")
    plt.close(fig)


def _curves_figure(histories: dict[str, list[dict[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repropipe.plotting import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, hist in histories.items():
        ep = [h["epoch"] + 1 for h in hist]
        a.plot(ep, [h.get("loss", float("nan")) for h in hist], marker=".", label=name)
        b.plot(ep, [h.get("val_accuracy", float("nan")) for h in hist], marker=".", label=name)
    a.set_xlabel("epoch")
    a.set_ylabel("training loss (epoch mean)")
    a.set_yscale("log")
    b.set_xlabel("epoch")
    b.set_ylabel("held-out identification accuracy")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    b.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/figures/training_curves.png")
    plt.close(fig)


def _plot_csvs(results: dict[str, Any], histories: dict[str, list[dict[str, float]]]) -> None:
    import numpy as np

    from repropipe.metrics import det_curve

    lines = ["model,far,frr"]
    for name, r in results.items():
        frr, far, _ = det_curve(r["pairs"].target, r["pairs"].nontarget)
        keep = np.unique(np.linspace(0, len(far) - 1, min(len(far), 200)).astype(int))
        lines += [f"{name},{far[k]:.6g},{frr[k]:.6g}" for k in keep]
    io.atomic_write_text(f"{OUT}/plots/det.csv", "\n".join(lines) + "\n")
    lines = ["model,epoch,loss,val_accuracy"]
    for name, hist in histories.items():
        lines += [f"{name},{h['epoch']},{h.get('loss', '')},{h.get('val_accuracy', '')}" for h in hist]
    io.atomic_write_text(f"{OUT}/plots/training.csv", "\n".join(lines) + "\n")


@stage(
    "speaker_evaluate", branch="speaker", step="evaluate",
    help="Identification accuracy, testdata.json predictions (Id,Category), verification EER and top-k enrolment "
         "scoring for every trained model; metrics, plots, figures and the report section.",
    params=("seed", "device", "speaker.models", "speaker.evaluate"),
    deps=(FEATURES, MODELS_DIR),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures", f"{OUT}/predictions"),
    resources={"mem_mb": 16000, "runtime": 60, "threads": 1},
    plots=(Plot("speaker held-out accuracy", f"{OUT}/plots/training.csv", x="epoch", y="val_accuracy",
                series="model"),
           Plot("speaker DET", f"{OUT}/plots/det.csv", x="far", y="frr", series="model")),
)
def evaluate(ctx: StageContext) -> None:
    from repropipe.report.section import Figure, Section, Table
    from repropipe import stats
    from repropipe.speaker.evaluate import evaluate_model, predictions_csv, uncertainty
    from repropipe.speaker.features import SPLITS, load_shard, read_manifest
    from repropipe.speaker.models import ABLATION, CLASSIFIERS
    from repropipe.speaker.train import load_model

    device = _torch_setup(ctx)
    p = ctx.params["speaker"]
    manifest = read_manifest(FEATURES)
    shards = {s: load_shard(Path(FEATURES) / f"{s}.pt") for s in SPLITS}
    classes = manifest["classes"]
    results, histories = {}, {}
    for name in p["models"]:
        run_dir = Path(MODELS_DIR) / name
        model = load_model(run_dir, device)
        metrics, raw = evaluate_model(model, name in CLASSIFIERS, shards, classes, device, p["evaluate"], ctx.seed)
        io.atomic_write_text(f"{OUT}/predictions/{name}.csv",
                             predictions_csv(shards["test"].names, raw["test_pred"], classes))
        results[name] = {"metrics": metrics, **raw}
        histories[name] = json.loads((run_dir / "history.json").read_text())
        log.info("stage=speaker_evaluate model=%s %s", name,
                 " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))

    _plot_csvs(results, histories)
    _det_figure(results)
    _curves_figure(histories)
    chance = 1.0 / len(classes)
    per_model = {n: r["metrics"] for n, r in results.items()}
    reference = REFERENCE if REFERENCE in per_model else next(iter(per_model))
    unc = uncertainty(results, per_model, reference, ctx.seed)
    flat: dict[str, Any] = {}
    for n, u in unc.items():
        for key, v in u.items():
            flat[f"{key}/{n}"] = v["value"]
            flat[f"{key}_ci_low/{n}"] = v["ci_low"]
            flat[f"{key}_ci_high/{n}"] = v["ci_high"]
            if "vs_reference" in v:
                flat[f"{key}_diff_vs_ref/{n}"] = v["vs_reference"]["diff"]
                flat[f"{key}_p_vs_ref/{n}"] = v["vs_reference"]["p_value"]
            if "mcnemar" in v.get("vs_reference", {}):
                flat[f"{key}_mcnemar_p_vs_ref/{n}"] = v["vs_reference"]["mcnemar"]["p_value"]
    ctx.write_metrics(f"{OUT}/metrics.json", {
        **flat, "reference": reference, "uncertainty": unc,
        "models": per_model, "n_classes": len(classes), "chance_accuracy": chance,
        "n_verify_speakers": len(manifest["verify_speakers"]), "counts": manifest["counts"],
    }, data_source=manifest["data_source"], device=str(device))

    def ci(name: str, key: str) -> str:
        v = unc[name].get(key)
        return stats.fmt_ci(v["value"], v["ci_low"], v["ci_high"]) if v else "n/a"

    def test(name: str, key: str) -> str:
        v = unc[name].get(key, {})
        if name == reference:
            return "reference"
        s = stats.fmt_test(v.get("vs_reference"))
        if "mcnemar" in v.get("vs_reference", {}):
            s += f"; McNemar p={v['vs_reference']['mcnemar']['p_value']:.3g}"
        return s

    def cfg(name: str, key: str) -> str:
        return {**ARCH, **ABLATION}.get(name, {}).get(key, "-")

    ablation = Table(
        title=f"Identification ({len(classes)} speakers, chance {chance:.3f}) and verification "
              f"({len(manifest['verify_speakers'])} unseen speakers)",
        columns=["model", "encoder", "pooling", "head", "id. accuracy [95 % CI]", "verification EER [95 % CI]",
                 "top-5 enrolment EER [95 % CI]"],
        rows=[[LABELS.get(n, n), cfg(n, "encoder"), cfg(n, "pooling"), cfg(n, "head"),
               ci(n, "identification_accuracy"), ci(n, "verification_eer"), ci(n, "enrolment_eer")]
              for n in per_model],
        anchor=ANCHOR,
    )
    versus = Table(
        title=f"Each model minus the reference {LABELS.get(reference, reference)} [95 % CI], paired tests on the same "
              "utterances and trials",
        columns=["model", "id. accuracy difference", "verification EER difference", "enrolment EER difference"],
        rows=[[LABELS.get(n, n)] + [test(n, k) for k in ("identification_accuracy", "verification_eer", "enrolment_eer")]
              for n in per_model],
        anchor="Paired bootstrap: speakers resampled (1000 replicates), the same replicates for every model; a "
               "difference is significant when its 95 % interval excludes 0. Identification also gets the exact "
               "McNemar test on the same utterances.",
    )
    trials = Table(
        title="Verification trials and thresholds (cosine score; accept when score >= threshold)",
        columns=["model", "target trials", "non-target trials", "EER threshold", "enrolment EER threshold"],
        rows=[[n, m["verification_target_trials"], m["verification_nontarget_trials"], m["verification_threshold"],
               m["enrolment_threshold"]] for n, m in per_model.items()],
    )
    synthetic = bool(manifest.get("synthetic"))
    notes = _verdicts(unc, reference) + [f"Predictions for testdata.json in the HW4 CSV format (Id,Category): results/speaker/predictions/"
             f"<model>.csv ({manifest['counts']['test']} utterances)."]
    if synthetic:
        notes.append("Synthetic speakers differ by spectral envelope, a low-band ripple and speaking rate; "
                     "utterances add speaker-independent phoneme patterns, channel tilt and noise.")
    Section(
        branch="speaker", title="Speaker identification and verification (VoxCeleb, HW4 format)",
        summary="HW4 ablation: the course's Transformer baseline, a Conformer encoder, self-attention pooling and an "
                "AM-softmax head, plus a triplet-loss conv1d embedding and ECAPA-TDNN (Desplanques et al. 2020, "
                "speechbrain's implementation, AAM-softmax with margin 0.2 and scale 30; demo-sized channels, the "
                "demo's crops and schedule, not the paper's). Trained on random segment crops, evaluated "
                "on whole utterances with padding masks. Verification uses cosine scores on speakers never seen in "
                "training; enrolment scoring takes the mean of the top-5 cosine scores against a speaker's "
                "enrolment utterances.",
        data_source=manifest["data_source"], synthetic=synthetic, tables=[ablation, versus, trials],
        figures=[Figure("figures/det.png", "Verification DET curves (normal-deviate axes) of every model's cosine "
                        "scores on held-out speakers."),
                 Figure("figures/training_curves.png", "Training loss and held-out identification accuracy per "
                        "epoch.")],
        notes=notes,
    ).write(f"{OUT}/section.json")


def _verdicts(unc: dict[str, dict[str, Any]], reference: str) -> list[str]:
    """In words: where a model does not beat the reference (higher accuracy, lower EER, significantly)."""
    out = []
    for key, what, better in (("identification_accuracy", "identification accuracy", 1),
                              ("verification_eer", "verification EER", -1), ("enrolment_eer", "enrolment EER", -1)):
        tie, worse = [], []
        for n, u in unc.items():
            t = u.get(key, {}).get("vs_reference")
            if n == reference or t is None:
                continue
            if not t["significant"]:
                tie.append(LABELS.get(n, n))
            elif t["diff"] * better < 0:
                worse.append(LABELS.get(n, n))
        ref = LABELS.get(reference, reference)
        if tie:
            out.append(f"{what}: {'; '.join(tie)} do(es) not beat the reference {ref} (difference not significant, "
                       "paired bootstrap over speakers, 95 %).")
        if worse:
            out.append(f"{what}: {'; '.join(worse)} significantly worse than the reference {ref}.")
    return out
