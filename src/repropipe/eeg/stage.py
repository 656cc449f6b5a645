"""EEG stages: eeg_download -> eeg_features -> eeg_train -> eeg_evaluate.

Heavy imports (mne, torch, pandas, matplotlib) stay inside the functions so the CLI is instant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from repropipe import io
from repropipe.stages import Plot, StageContext, stage

log = logging.getLogger("repropipe.eeg")

RAW = "data/raw/eeg"
FEAT = "data/features/eeg"
OUT = "results/eeg"
ANCHOR = ("Anchor: EEGNet, cross-subject, two classes (left/right imagined fist), PhysioNet EEG MMI: 82.43 % "
          "accuracy. Numbers here are on held-out subjects.")


@stage(
    "eeg_download", branch="eeg", step="download",
    help="Fetch PhysioNet EEG MMI runs 4/8/12 (source: real) or write synthetic EDF+ files in the same layout.",
    params=("seed", "eeg.source", "eeg.subjects", "eeg.runs", "eeg.local_dir", "eeg.exclude_known_bad", "eeg.synthetic"),
    deps=(),
    outs=(RAW,),
    resources={"mem_mb": 4000, "runtime": 240, "threads": 1},
)
def download(ctx: StageContext) -> None:
    from repropipe import io
    from repropipe.eeg import data

    p = ctx.params["eeg"]
    subjects = [int(s) for s in p["subjects"]]
    if p["source"] == "real" and p["exclude_known_bad"]:
        dropped = sorted(set(subjects) & set(data.KNOWN_BAD_SUBJECTS))
        subjects = [s for s in subjects if s not in data.KNOWN_BAD_SUBJECTS]
        if dropped:
            log.info("eeg_download event=exclude subjects=%s reason=known_bad_recordings", dropped)
    with io.atomic_dir(RAW) as tmp:  # built whole, so no stale recording survives and a failure keeps the old one
        if p["source"] == "real":
            files = data.download_real(tmp, subjects, list(p["runs"]), p["local_dir"])
        else:
            sp = p["synthetic"]
            files = data.synthesize(tmp, subjects, list(p["runs"]), ctx.seed, float(sp["duration_s"]),
                                    float(sp["effect"]))
        data.write_manifest(tmp, files, p["source"])
    log.info("eeg_download event=done source=%s files=%d", p["source"], len(files))


@stage(
    "eeg_features", branch="eeg", step="features",
    help="Band-pass 7-30 Hz, epoch -1..4 s around T1/T2, chunk, normalise per channel, split by subject.",
    params=("seed", "eeg.on_bad", "eeg.features", "eeg.split"),
    deps=(RAW,),
    outs=(FEAT,),
    resources={"mem_mb": 8000, "runtime": 60, "threads": 1},
)
def features(ctx: StageContext) -> None:
    import torch

    from repropipe.eeg import features as feat

    p = ctx.params["eeg"]
    manifest_path = Path(RAW) / "manifest.json"
    if not manifest_path.exists():
        raise io.DataError(manifest_path, "missing; run `python -m repropipe eeg download` first")
    manifest = json.loads(manifest_path.read_text())
    pairs = sorted({_subject_run(f["path"]) for f in manifest["files"]})
    subjects = sorted({s for s, _ in pairs})
    runs = sorted({r for _, r in pairs})
    x, index, ch_names, skipped = feat.build(RAW, subjects, runs, p["features"], p["split"], ctx.seed, p["on_bad"])
    io.atomic_torch_save(f"{FEAT}/chunks.pt", {"x": torch.from_numpy(x), "ch_names": ch_names})
    with io.atomic_path(f"{FEAT}/index.parquet") as tmp:
        index.to_parquet(tmp, index=False)
    io.atomic_write_json(f"{FEAT}/meta.json", {
        "source": manifest["source"], "ch_names": ch_names, "sfreq": 160.0, "features": p["features"],
        "skipped": skipped, "n_skipped": len(skipped), "n_chunks": len(index),
        "n_trials": int(index.groupby(["subject", "run", "trial"]).ngroups),
        "subjects_by_split": {k: sorted(map(int, g.subject.unique())) for k, g in index.groupby("split")},
    })
    log.info("eeg_features event=done chunks=%d shape=%s skipped=%d", len(index), list(x.shape), len(skipped))


def _subject_run(rel: str) -> tuple[int, int]:
    name = Path(rel).stem  # S001R04
    return int(name[1:4]), int(name[5:7])


@stage(
    "eeg_train", branch="eeg", step="train",
    help="Train the EEG Transformer, its Linformer variant, and SimCLR (pretrain + fine-tune) on the training subjects.",
    params=("seed", "device", "eeg.train"),
    deps=(FEAT,),
    outs=(f"{OUT}/models",),
    resources={"mem_mb": 8000, "runtime": 240, "threads": 2, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    import torch

    from repropipe.eeg.train import load_features, train_run
    from repropipe.training import select_device

    tp = ctx.params["eeg"]["train"]
    torch.set_num_threads(int(tp["threads"]))
    device = select_device(ctx.params["device"])
    x, index, ch_names = load_features()
    with ctx.resumable(f"{OUT}/models") as work:  # a killed run resumes from its checkpoints
        for run in tp["runs"]:
            path = train_run(run, x, index, ch_names, tp, ctx.seed, device, work)
            log.info("eeg_train event=trained run=%s path=%s", run, path)


@stage(
    "eeg_evaluate", branch="eeg", step="evaluate",
    help="Macro F1, accuracy, confusion, per-subject accuracy on held-out subjects; Transformer vs Linformer benchmark.",
    params=("seed", "device", "eeg.evaluate"),
    deps=(FEAT, f"{OUT}/models"),
    outs=(f"{OUT}/metrics.json", f"{OUT}/provenance.json", f"{OUT}/section.json", f"{OUT}/plots", f"{OUT}/figures"),
    resources={"mem_mb": 8000, "runtime": 60, "threads": 1},
    plots=(Plot("eeg loss curves", f"{OUT}/plots/loss_curves.csv", x="epoch", y="loss", series="run"),
           Plot("eeg validation loss", f"{OUT}/plots/loss_curves.csv", x="epoch", y="val_loss", series="run"),
           Plot("eeg inference time", f"{OUT}/plots/benchmark_time.csv", x="tokens", y="seconds", template="scatter",
                series="run")),
)
def evaluate(ctx: StageContext) -> None:
    import pandas as pd
    import torch

    from repropipe.eeg import evaluate as ev
    from repropipe.eeg.train import load_features, predict
    from repropipe.training import select_device

    ep = ctx.params["eeg"]["evaluate"]
    torch.set_num_threads(int(ep["threads"]))
    device = select_device(ctx.params["device"])
    meta = json.loads(Path(f"{FEAT}/meta.json").read_text())
    x, index, ch_names = load_features()
    test = index[index.split == "test"]
    xt = x[torch.tensor(test.index.to_numpy().copy())]
    runs = sorted(p.name for p in Path(f"{OUT}/models").iterdir() if (p / "model.pt").exists())
    if not runs:
        raise io.DataError(f"{OUT}/models", "no trained model.pt found; run `python -m repropipe eeg train`")
    results: dict[str, Any] = {}
    curves, models = [], {}
    for run in runs:
        model, blob = ev.load_run(Path(f"{OUT}/models/{run}/model.pt"), device)
        models[run] = (model, blob)
        lp = predict(model, xt, device, log_probs=blob["log_probs"])
        results[run] = ev.evaluate_run(lp, test.reset_index(drop=True))
        results[run].update(best_epoch=blob["best_epoch"], best_val_f1=blob["best_val_f1"],
                            n_train_chunks=blob["n_train_chunks"], epochs=blob["epochs"])
        for h in blob["history"]:
            curves.append({"run": run, "phase": "train", "epoch": int(h["epoch"]), "loss": h.get("loss"),
                           "val_loss": h.get("val_loss"), "val_f1": h.get("val_f1")})
        for h in blob["pretrain_history"]:
            curves.append({"run": run, "phase": "pretrain", "epoch": int(h["epoch"]), "loss": h.get("ntxent"),
                           "val_loss": None, "val_f1": None})
    bench = _benchmark(models, x, index, meta, ep, device, ctx.seed)
    source = meta["source"]
    data_source = "synthetic" if source == "synthetic" else "real (PhysioNet EEG MMI)"
    _write_plots(results, pd.DataFrame(curves), bench)
    figures = _figures(results, pd.DataFrame(curves), bench)
    headline = {f"{run}/macro_f1": r["chunk"]["macro_f1"] for run, r in results.items()}
    headline.update({f"{run}/accuracy": r["chunk"]["accuracy"] for run, r in results.items()})
    headline.update({f"{run}/trial_accuracy": r["trial"]["accuracy"] for run, r in results.items()})
    ctx.write_metrics(f"{OUT}/metrics.json", {
        **headline, "runs": results, "benchmark": bench, "n_skipped_recordings": meta["n_skipped"],
        "subjects_by_split": meta["subjects_by_split"], "anchor_eegnet_accuracy": 0.8243,
    }, data_source=data_source, device=str(device.type))
    _section(results, bench, meta, data_source, source == "synthetic", figures).write(f"{OUT}/section.json")
    print("\neeg_evaluate on held-out subjects", meta["subjects_by_split"].get("test"))
    for run, r in results.items():
        print(f"  {run:16s} chunk F1 {r['chunk']['macro_f1']:.3f} acc {r['chunk']['accuracy']:.3f} | "
              f"trial F1 {r['trial']['macro_f1']:.3f} acc {r['trial']['accuracy']:.3f}")
    _print_benchmark(bench)


def _benchmark(models: dict[str, Any], x: Any, index: Any, meta: dict[str, Any], ep: dict[str, Any], device: Any,
               seed: int) -> dict[str, Any]:
    """Quadratic Transformer vs Linformer: accuracy on growing post-cue windows, time on growing sequences."""
    from repropipe.eeg import evaluate as ev

    f = meta["features"]
    pair = [r for r in ("transformer", "linformer") if r in models]
    out: dict[str, Any] = {"accuracy_by_window": {}, "time_by_tokens": {}}
    if not pair:
        return out
    test = index[index.split == "test"]
    chunk, overlap = int(f["chunk"]), int(f["overlap"])
    if 0 < chunk and overlap < chunk and len(test):
        trials, labels, _ = ev.reassemble_trials(x, test, chunk, overlap)
        onset = int(round(-float(f["tmin"]) * 160))
        for run in pair:
            out["accuracy_by_window"][run] = ev.accuracy_by_window(models[run][0], trials, labels, onset,
                                                                   list(ep["windows"]), device)
    for run in pair:
        model, blob = models[run]
        out["time_by_tokens"][run] = ev.inference_time(model, len(meta["ch_names"]), int(blob["kwargs"]["token_len"]),
                                                       list(ep["bench_tokens"]), device, int(ep["repeats"]), seed)
    return out


def _print_benchmark(bench: dict[str, Any]) -> None:
    t = bench.get("time_by_tokens", {})
    if t:
        runs = sorted(t)
        print("\nTransformer vs Linformer, inference time of one sequence (s):")
        print("  tokens " + " ".join(f"{r:>12s}" for r in runs))
        for n in sorted({int(k) for r in runs for k in t[r]}):
            print(f"  {n:6d} " + " ".join(f"{t[r].get(n, float('nan')):12.5f}" for r in runs))
    a = bench.get("accuracy_by_window", {})
    if a:
        runs = sorted(a)
        print("Accuracy on held-out trials by post-cue window (samples at 160 Hz):")
        for w in sorted({int(k) for r in runs for k in a[r]}):
            print(f"  {w:6d} " + " ".join(f"{r}={a[r].get(w, float('nan')):.3f}" for r in runs))


def _write_plots(results: dict[str, Any], curves: Any, bench: dict[str, Any]) -> None:
    import pandas as pd

    io.atomic_write_text(f"{OUT}/plots/loss_curves.csv", curves.to_csv(index=False))
    rows = [{"run": r, "subject": s, "accuracy": a} for r, v in results.items()
            for s, a in v["per_subject_accuracy"].items()]
    io.atomic_write_text(f"{OUT}/plots/per_subject_accuracy.csv", pd.DataFrame(rows).to_csv(index=False))
    rows = [{"run": r, "tokens": n, "seconds": s} for r, v in bench["time_by_tokens"].items() for n, s in v.items()]
    io.atomic_write_text(f"{OUT}/plots/benchmark_time.csv",
                         pd.DataFrame(rows, columns=["run", "tokens", "seconds"]).to_csv(index=False))
    rows = [{"run": r, "window": w, "accuracy": a} for r, v in bench["accuracy_by_window"].items() for w, a in v.items()]
    io.atomic_write_text(f"{OUT}/plots/benchmark_accuracy.csv",
                         pd.DataFrame(rows, columns=["run", "window", "accuracy"]).to_csv(index=False))


def _figures(results: dict[str, Any], curves: Any, bench: dict[str, Any]) -> list[Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repropipe.plotting import save_figure
    from repropipe.report.section import Figure

    runs = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for run in runs:
        c = curves[(curves.run == run) & (curves.phase == "train")] if len(curves) else curves
        if len(c):
            axes[0].plot(c.epoch, c.loss, marker="o", label=f"{run} train")
            axes[0].plot(c.epoch, c.val_loss, ls="--", marker="x", label=f"{run} val")
        p = curves[(curves.run == run) & (curves.phase == "pretrain")] if len(curves) else curves
        if len(p):
            axes[1].plot(p.epoch, p.loss, marker="o", label=f"{run} NT-Xent")
    axes[0].set(xlabel="epoch", ylabel="NLL", title="Supervised loss (train / validation)")
    axes[1].set(xlabel="epoch", ylabel="NT-Xent", title="SimCLR pretraining loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/figures/loss_curves.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(runs), figsize=(2.6 * len(runs), 2.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        cm = results[run]["chunk"]["confusion"]
        ax.imshow(cm, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(cm[i][j]), ha="center", va="center")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["left", "right"], yticklabels=["left", "right"],
               xlabel="predicted", ylabel="true", title=run)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/figures/confusion.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for run, v in bench["time_by_tokens"].items():
        ns = sorted(int(k) for k in v)
        axes[0].loglog(ns, [v[n] if n in v else v[str(n)] for n in ns], marker="o", label=run)
    for run, v in bench["accuracy_by_window"].items():
        ws = sorted(int(k) for k in v)
        axes[1].plot([w / 160 for w in ws], [v[w] if w in v else v[str(w)] for w in ws], marker="o", label=run)
    axes[0].set(xlabel="tokens", ylabel="seconds per sequence", title="Inference time as the sequence grows")
    axes[1].set(xlabel="window after cue (s)", ylabel="accuracy", title="Held-out accuracy by window length")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, f"{OUT}/figures/benchmark.png")
    plt.close(fig)
    return [
        Figure("figures/loss_curves.png", "Training and validation loss per epoch for each run; right, the SimCLR "
               "NT-Xent loss during contrastive pretraining."),
        Figure("figures/confusion.png", "Chunk-level confusion matrices on the held-out subjects."),
        Figure("figures/benchmark.png", "Quadratic attention vs Linformer: median inference time of one sequence as "
               "the token count grows (log-log), and held-out trial accuracy on growing windows after the cue."),
    ]


def _section(results: dict[str, Any], bench: dict[str, Any], meta: dict[str, Any], data_source: str, synthetic: bool,
             figures: list[Any]) -> Any:
    from repropipe.report.section import Section, Table

    main = Table(
        title=f"Left vs right imagined fist on held-out subjects {meta['subjects_by_split'].get('test')}",
        columns=["run", "training labels", "chunk macro F1", "chunk accuracy", "trial macro F1", "trial accuracy",
                 "best epoch (val F1)"],
        rows=[[run, r["n_train_chunks"], r["chunk"]["macro_f1"], r["chunk"]["accuracy"], r["trial"]["macro_f1"],
               r["trial"]["accuracy"], f"{r['best_epoch']} ({r['best_val_f1']:.3f})"] for run, r in results.items()]
        + [["EEGNet (published anchor)", "all", "", 0.8243, "", "", ""]],
        anchor=ANCHOR,
    )
    subjects = sorted({s for r in results.values() for s in r["per_subject_accuracy"]}, key=int)
    per_subject = Table(
        title="Per-subject chunk accuracy (held-out subjects)", columns=["run"] + [f"S{int(s):03d}" for s in subjects],
        rows=[[run] + [r["per_subject_accuracy"].get(s) for s in subjects] for run, r in results.items()],
    )
    tables = [main, per_subject]
    t = bench.get("time_by_tokens", {})
    if t:
        runs = sorted(t)
        ns = sorted({int(k) for r in runs for k in t[r]})
        tables.append(Table(title="Inference time of one sequence (s) by token count",
                            columns=["tokens"] + runs, rows=[[n] + [t[r].get(n) for r in runs] for n in ns],
                            anchor="Linformer (Wang et al. 2020) projects keys/values to k rows: O(n k) vs O(n^2)."))
    return Section(
        branch="eeg", title="EEG motor imagery: Transformer, Linformer and SimCLR (PhysioNet EEG MMI)",
        summary="64-channel EEG, runs 4/8/12, band-passed 7-30 Hz, epochs -1..4 s around the cue cut into 1 s chunks, "
                "classified left vs right fist imagery; subjects in the test split were never seen in training. "
                "'_low' runs use only a fraction of the training labels (SimCLR pretrains on all training chunks "
                "without labels first).",
        data_source=data_source, synthetic=synthetic, tables=tables, figures=figures,
        notes=[f"{meta['n_skipped']} recording(s) skipped as bad input."] if meta["n_skipped"] else [],
    )
