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
from repropipe.recipes import recipe_cli

log = logging.getLogger("repropipe.eeg")
recipe_cli("eeg")  # `python -m repropipe eeg recipe-args conf/eeg/paper.yaml`: DVC -S arguments

RAW = "data/raw/eeg"
FEAT = "data/features/eeg"
OUT = "results/eeg"
ANCHOR = ("Anchor: EEGNet, cross-subject, two classes (left/right imagined fist), PhysioNet EEG MMI: 82.43 % "
          "accuracy. Numbers here are on held-out subjects.")


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

    p = ctx.params["eeg"]
    subjects = [int(s) for s in p["subjects"]]
    if p["source"] == "real" and p["exclude_known_bad"]:
        dropped = sorted(set(subjects) & set(data.KNOWN_BAD_SUBJECTS))
        subjects = [s for s in subjects if s not in data.KNOWN_BAD_SUBJECTS]
        if dropped:
            log.info("eeg_download event=exclude subjects=%s reason=known_bad_recordings", dropped)
    with io.atomic_dir(RAW) as tmp:  # built whole, so no stale recording survives and a failure keeps the old one
        if p["source"] == "real":
            files = data.download_real(tmp, subjects, list(p["runs"]), p["local_dir"], cache_dir=p["cache_dir"])
        else:
            sp = p["synthetic"]
            files = data.synthesize(tmp, subjects, list(p["runs"]), ctx.seed, float(sp["duration_s"]),
                                    float(sp["effect"]))
        data.write_manifest(tmp, files, p["source"])
    log.info("eeg_download event=done source=%s files=%d", p["source"], len(files))


@stage(
    "eeg_features", branch="eeg", step="features",
    help="Band-pass 7-30 Hz, epoch -1..4 s around T1/T2, chunk, normalise per channel, split by subject "
         "(cross_subject) or into stratified folds of each subject's trials (within_subject).",
    params=("seed", "eeg.on_bad", "eeg.features", "eeg.split", "eeg.evaluation", "eeg.within_subject_folds"),
    deps=(RAW,),
    outs=(FEAT,),
    resources={"mem_mb": 8000, "runtime": 60, "threads": 1},
)
def features(ctx: StageContext) -> None:
    import torch

    from repropipe import resources
    from repropipe.eeg import features as feat

    resources.use_threads()

    p = ctx.params["eeg"]
    manifest_path = Path(RAW) / "manifest.json"
    manifest = io.read_json(manifest_path, "missing; run `python -m repropipe eeg download` first")
    try:
        pairs = sorted({_subject_run(f["path"]) for f in manifest["files"]})
        source = str(manifest["source"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise io.DataError(manifest_path, f"not an eeg_download manifest ({type(exc).__name__}: {exc})") from exc
    subjects = sorted({s for s, _ in pairs})
    runs = sorted({r for _, r in pairs})
    protocol, folds = p["evaluation"], int(p["within_subject_folds"])
    x, index, ch_names, skipped = feat.build(RAW, subjects, runs, p["features"], p["split"], ctx.seed, p["on_bad"],
                                             evaluation=protocol, folds=folds)
    io.atomic_torch_save(f"{FEAT}/chunks.pt", {"x": torch.from_numpy(x), "ch_names": ch_names})
    with io.atomic_path(f"{FEAT}/index.parquet") as tmp:
        index.to_parquet(tmp, index=False)
    io.atomic_write_json(f"{FEAT}/meta.json", {
        "source": source, "ch_names": ch_names, "sfreq": 160.0, "features": p["features"],
        "evaluation": {"protocol": protocol, "folds": folds if protocol == "within_subject" else None},
        "skipped": skipped, "n_skipped": len(skipped), "n_chunks": len(index),
        "n_trials": int(index.groupby(["subject", "run", "trial"]).ngroups),
        "subjects_by_split": {k: sorted(map(int, g.subject.unique())) for k, g in index.groupby("split")},
    })
    log.info("eeg_features event=done chunks=%d shape=%s skipped=%d", len(index), list(x.shape), len(skipped))


def _subject_run(rel: str) -> tuple[int, int]:
    name = Path(rel).stem  # S001R04
    if len(name) != 7 or name[0] != "S" or name[4] != "R":
        raise ValueError(f"{rel!r} is not a PhysioNet run name (SxxxRyy.edf)")
    return int(name[1:4]), int(name[5:7])


def _protocol(meta: dict[str, Any]) -> tuple[str, int]:
    ev = meta.get("evaluation") or {}
    return str(ev.get("protocol", "cross_subject")), int(ev.get("folds") or 0)


def _model_dirs(protocol: str, folds: int) -> list[str]:
    """Where each run's model(s) live under results/eeg/models/<run>/: '' (cross_subject) or fold<f>."""
    return [""] if protocol == "cross_subject" else [f"fold{f}" for f in range(folds)]


@stage(
    "eeg_train", branch="eeg", step="train",
    help="Train the EEG Transformer, its Linformer variant, SimCLR (pretrain + fine-tune) and EEGNet-8,2 (torcheeg) "
         "on the training subjects (cross_subject) or once per fold of every subject's trials (within_subject).",
    params=("seed", "device", "eeg.train"),
    deps=(FEAT,),
    outs=(f"{OUT}/models",),
    resources={"mem_mb": 8000, "runtime": 240, "threads": 2, "gpu": 1},
)
def train(ctx: StageContext) -> None:
    from repropipe import resources
    from repropipe.eeg.train import load_features, train_run
    from repropipe.training import rank_zero_resumable, select_device, write_train_provenance

    resources.srun_relaunch()  # a SLURM job of several tasks: one rank per task
    resources.use_threads(workers=True)
    tp = ctx.params["eeg"]["train"]
    device = select_device(ctx.params["device"])
    from repropipe.eeg.features import fold_split

    x, index, ch_names = load_features()
    protocol, folds = _protocol(io.read_json(f"{FEAT}/meta.json", "missing; run `python -m repropipe eeg features`"))
    # a killed run resumes from its checkpoints; under torchrun/srun only rank 0 publishes
    with rank_zero_resumable(ctx, f"{OUT}/models", device) as work:
        for sub in _model_dirs(protocol, folds):
            idx = index
            if sub:
                idx = index.copy()
                idx["split"] = fold_split(index, int(sub[4:]), folds)
            for run in tp["runs"]:
                path = train_run(run, x, idx, ch_names, tp, ctx.seed, device, work, subdir=sub)
                log.info("eeg_train event=trained run=%s path=%s", run, path)
        meta = io.read_json(f"{FEAT}/meta.json", "missing; run `python -m repropipe eeg features`")
        write_train_provenance(ctx, work, data_source=str(meta["source"]), device=device,
                               precision=tp.get("precision", "32"))


@stage(
    "eeg_evaluate", branch="eeg", step="evaluate",
    help="Post-cue chunk and trial macro F1 / accuracy (trial accuracy with a 95 % subject-bootstrap interval), "
         "pre-cue sanity scores, confusion, per-subject accuracy, the CSP + LDA baseline; Transformer vs Linformer "
         "benchmark.",
    params=("seed", "device", "eeg.evaluate"),
    deps=(FEAT, f"{OUT}/models"),
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
    import numpy as np
    import pandas as pd
    import torch

    from repropipe.eeg import evaluate as ev
    from repropipe.eeg.features import fold_split
    from repropipe.eeg.train import load_features, predict
    from repropipe.training import select_device

    from repropipe import resources

    ep = ctx.params["eeg"]["evaluate"]
    resources.use_threads()
    device = select_device(ctx.params["device"])
    meta = io.read_json(f"{FEAT}/meta.json", "missing; run `python -m repropipe eeg features`")
    x, index, ch_names = load_features()
    protocol, folds = _protocol(meta)
    subs = _model_dirs(protocol, folds)
    splits = {sub: (fold_split(index, int(sub[4:]), folds) if sub else index.split.to_numpy()) for sub in subs}
    models_dir = Path(f"{OUT}/models")
    runs = sorted(p.name for p in models_dir.iterdir() if p.is_dir() and all((p / sub / "model.pt").exists()
                                                                              for sub in subs)) \
        if models_dir.is_dir() else []
    if not runs:
        raise io.DataError(models_dir, f"no trained model.pt found (protocol {protocol}); run `python -m repropipe eeg "
                                       "train`")
    tested = np.zeros(len(index), bool)
    for sub in subs:
        tested |= splits[sub] == "test"
    test = index[tested].reset_index(drop=True)
    results: dict[str, Any] = {}
    curves, models = [], {}
    for run in runs:
        lp_all = torch.zeros(len(index), 2)
        blobs = []
        for sub in subs:
            rows = np.flatnonzero(splits[sub] == "test")
            model, blob = ev.load_run(models_dir / run / sub / "model.pt", device)
            lp_all[rows] = predict(model, x[torch.from_numpy(rows)], device, log_probs=blob["log_probs"])
            blobs.append(blob)
            if sub == subs[0]:
                models[run] = (model, blob)
        results[run] = ev.evaluate_run(lp_all[torch.from_numpy(np.flatnonzero(tested))], test, ctx.seed)
        results[run].update(best_epoch=blobs[0]["best_epoch"], best_val_f1=blobs[0]["best_val_f1"],
                            n_train_chunks=blobs[0]["n_train_chunks"], epochs=blobs[0]["epochs"])
        if len(blobs) > 1:
            results[run]["best_epoch_by_fold"] = [int(b["best_epoch"]) for b in blobs]
        for h in blobs[0]["history"]:
            curves.append({"run": run, "phase": "train", "epoch": int(h["epoch"]), "loss": h.get("loss"),
                           "val_loss": h.get("val_loss"), "val_f1": h.get("val_f1")})
        for h in blobs[0]["pretrain_history"]:
            curves.append({"run": run, "phase": "pretrain", "epoch": int(h["epoch"]), "loss": h.get("ntxent"),
                           "val_loss": None, "val_f1": None})
    baselines = {REFERENCE: _csp_lda(x, index, splits, tested, protocol, ctx.seed)}
    bench_test = index[splits[subs[0]] == "test"]
    bench = _benchmark(models, x, bench_test, meta, ep, device, ctx.seed)
    source = meta["source"]
    data_source = "synthetic" if source == "synthetic" else "real (PhysioNet EEG MMI)"
    every = {**results, **baselines}
    vs_ref = _vs_reference(every, REFERENCE, ctx.seed)
    _write_plots(every, pd.DataFrame(curves), bench)
    figures = _figures(every, pd.DataFrame(curves), bench)
    headline: dict[str, Any] = {}
    for run, r in every.items():
        for level, prefix in (("chunk", ""), ("trial", "trial_")):  # accuracy and F1 with their intervals
            s = r[level]
            headline[f"{run}/{prefix}accuracy"] = s["accuracy"]
            headline[f"{run}/{prefix}accuracy_ci_low"] = s["ci_low"]
            headline[f"{run}/{prefix}accuracy_ci_high"] = s["ci_high"]
            for key in ("macro_f1", "macro_f1_ci_low", "macro_f1_ci_high"):
                headline[f"{run}/{prefix}{key}"] = s[key]
        if run in vs_ref:
            t = vs_ref[run]["trial"]
            headline[f"{run}/trial_accuracy_diff_vs_{REFERENCE}"] = t["diff"]
            headline[f"{run}/trial_accuracy_p_vs_{REFERENCE}"] = t["p_value"]
            headline[f"{run}/trial_accuracy_mcnemar_p_vs_{REFERENCE}"] = t["mcnemar"]["p_value"]
            headline[f"{run}/accuracy_diff_vs_{REFERENCE}"] = vs_ref[run]["chunk"]["diff"]
            headline[f"{run}/accuracy_p_vs_{REFERENCE}"] = vs_ref[run]["chunk"]["p_value"]
        if "pre_cue" in r:
            headline[f"{run}/pre_cue_accuracy"] = r["pre_cue"]["accuracy"]
        if protocol == "within_subject":
            headline[f"{run}/subject_mean_trial_accuracy"] = r["subject_mean_trial_accuracy"]
    ctx.write_metrics(f"{OUT}/metrics.json", {
        **headline, "runs": results, "baselines": baselines, "reference": REFERENCE, "vs_reference": vs_ref,
        "benchmark": {"accuracy_by_window": bench["accuracy_by_window"]}, "evaluation": protocol,
        "within_subject_folds": folds if protocol == "within_subject" else None,
        "n_skipped_recordings": meta["n_skipped"], "subjects_by_split": meta["subjects_by_split"],
        "anchor_eegnet_accuracy": 0.8243,
    }, data_source=data_source, device=str(device.type))
    # measured inference times apart from the exact numbers, so metrics.json repeats byte for byte
    io.atomic_write_json(f"{OUT}/timings.json", {"time_by_tokens": bench["time_by_tokens"]})
    _section(every, bench, meta, data_source, source == "synthetic", figures, protocol, folds, vs_ref).write(
        f"{OUT}/section.json")
    where = (f"held-out subjects {meta['subjects_by_split'].get('test')}" if protocol == "cross_subject" else
             f"{folds}-fold within-subject, subjects {sorted(map(int, set(test.subject)))}")
    print(f"\neeg_evaluate ({where}); chunk scores on post-cue windows")
    for run, r in every.items():
        print(f"  {run:16s} chunk F1 {r['chunk']['macro_f1']:.3f} acc {r['chunk']['accuracy']:.3f} | "
              f"trial F1 {r['trial']['macro_f1']:.3f} acc {r['trial']['accuracy']:.3f} "
              f"[{r['trial']['ci_low']:.3f}, {r['trial']['ci_high']:.3f}] | pre-cue acc "
              f"{r.get('pre_cue', {}).get('accuracy', float('nan')):.3f}")
    _print_benchmark(bench)


REFERENCE = "csp_lda"  # the classical baseline every other run is tested against


def _vs_reference(every: dict[str, Any], reference: str, seed: int) -> dict[str, Any]:
    """Each run against the reference on the same held-out items: paired bootstrap of the accuracy
    difference (subjects, then their items, resampled; the same replicates as the intervals) and,
    for trials, the exact McNemar test. Pops the per-item outcomes so they are not written."""
    import numpy as np

    from repropipe import stats

    items = {run: r.pop("_items") for run, r in every.items()}
    out: dict[str, Any] = {}
    for level in ("chunk", "trial"):
        subj = items[reference][level][0]
        names = list(every)
        for n in names:
            if not np.array_equal(items[n][level][0], subj):
                raise ValueError(f"eeg_evaluate: {n} was scored on other {level}s than {reference}")
        if not len(subj):
            continue
        corr = np.stack([items[n][level][1] for n in names], 1).astype(float)
        boot = stats.Resampler(len(subj), seed=seed, name=f"eeg/{level}", clusters=subj).run(
            lambda w: (w @ corr) / w.sum(1, keepdims=True))
        _, tests = stats.compare_columns({n: float(corr[:, i].mean()) for i, n in enumerate(names)}, boot, reference)
        ref = names.index(reference)
        for n, t in tests.items():
            t["test"] = "paired bootstrap over subjects"
            if level == "trial":
                t["mcnemar"] = stats.mcnemar_exact(corr[:, names.index(n)], corr[:, ref])
            out.setdefault(n, {})[level] = t
    return out


def _csp_lda(x: Any, index: Any, splits: dict[str, Any], tested: Any, protocol: str, seed: int) -> dict[str, Any]:
    """CSP(4) + LDA beside the deep models on the same chunks and the same test rows: fitted on the
    training subjects (cross_subject), or per subject on its other folds (within_subject, as MOABB's
    within-session evaluation fits one pipeline per subject)."""
    import numpy as np
    import torch

    from repropipe.eeg import evaluate as ev

    y = index.label.to_numpy()
    lp = torch.zeros(len(index), 2)
    n_train = 0
    for sub, sp in splits.items():
        if protocol == "cross_subject":
            groups = [(sp == "train", sp == "test")]
        else:
            subj = index.subject.to_numpy()
            groups = [((subj == s) & (sp != "test"), (subj == s) & (sp == "test")) for s in np.unique(subj)]
        for tr, te in groups:
            if not te.any():
                continue
            tr_rows, te_rows = torch.from_numpy(np.flatnonzero(tr)), torch.from_numpy(np.flatnonzero(te))
            lp[te_rows] = ev.csp_lda_log_proba(x[tr_rows], y[tr], x[te_rows])
            n_train = max(n_train, int(tr.sum()))
    out = ev.evaluate_run(lp[torch.from_numpy(np.flatnonzero(tested))], index[tested].reset_index(drop=True), seed)
    out.update(n_train_chunks=n_train, components=ev.CSP_COMPONENTS,
               method="mne.decoding.CSP (4 components, log-variance) + sklearn LinearDiscriminantAnalysis")
    return out


def _benchmark(models: dict[str, Any], x: Any, test: Any, meta: dict[str, Any], ep: dict[str, Any], device: Any,
               seed: int) -> dict[str, Any]:
    """Quadratic Transformer vs Linformer: accuracy on growing post-cue windows, time on growing sequences."""
    from repropipe.eeg import evaluate as ev

    f = meta["features"]
    pair = [r for r in ("transformer", "linformer") if r in models]
    out: dict[str, Any] = {"accuracy_by_window": {}, "time_by_tokens": {}}
    if not pair:
        return out
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
    io.atomic_write_text(f"{OUT}/timings/benchmark_time.csv",
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
    save_figure(fig, f"{OUT}/timings/benchmark.png")  # it shows measured times
    plt.close(fig)
    return [
        Figure("figures/loss_curves.png", "Training and validation loss per epoch for each run; right, the SimCLR "
               "NT-Xent loss during contrastive pretraining."),
        Figure("figures/confusion.png", "Chunk-level confusion matrices on the held-out subjects."),
        Figure("timings/benchmark.png", "Quadratic attention vs Linformer: median inference time of one sequence as "
               "the token count grows (log-log), and held-out trial accuracy on growing windows after the cue."),
    ]


def _section(results: dict[str, Any], bench: dict[str, Any], meta: dict[str, Any], data_source: str, synthetic: bool,
             figures: list[Any], protocol: str = "cross_subject", folds: int = 0,
             vs_ref: dict[str, Any] | None = None) -> Any:
    from repropipe import stats
    from repropipe.report.section import Section, Table

    vs_ref = vs_ref or {}

    def ci(d: dict[str, Any], key: str = "accuracy", lo: str = "ci_low", hi: str = "ci_high") -> str:
        return stats.fmt_ci(d[key], d.get(lo, float("nan")), d.get(hi, float("nan")))

    def versus(run: str, level: str) -> str:
        t = vs_ref.get(run, {}).get(level)
        if t is None:
            return "reference" if run == REFERENCE else ""
        s = stats.fmt_test(t)
        if "mcnemar" in t:
            s += f"; McNemar p={t['mcnemar']['p_value']:.3g}"
        return s

    def best(r: dict[str, Any]) -> str:
        return f"{r['best_epoch']} ({r['best_val_f1']:.3f})" if "best_epoch" in r else "no epochs (closed form)"

    def trial(r: dict[str, Any]) -> str:
        return ci(r["trial"])

    within = protocol == "within_subject"
    subjects = sorted({s for r in results.values() for s in r["per_subject_accuracy"]}, key=int)
    if within:
        title = (f"Left vs right imagined fist, within-subject {folds}-fold cross-validation over each subject's "
                 f"trials (subjects {[int(s) for s in subjects]}; scores per subject, then averaged)")
    else:
        title = f"Left vs right imagined fist on held-out subjects {meta['subjects_by_split'].get('test')}"
    columns = ["run", "training chunks", "chunk macro F1 (post-cue) [95 % CI]", "chunk accuracy (post-cue) [95 % CI]",
               "pre-cue chunk accuracy (sanity, ~0.5)", "trial macro F1 [95 % CI]", "trial accuracy [95 % CI]",
               f"trial accuracy minus {REFERENCE} [95 % CI], test", f"chunk accuracy minus {REFERENCE} [95 % CI], test"]
    if within:
        columns.append("subject-mean trial accuracy")
    columns.append("best epoch (val F1)")
    rows = []
    for run, r in results.items():
        row = [run, r["n_train_chunks"], ci(r["chunk"], "macro_f1", "macro_f1_ci_low", "macro_f1_ci_high"),
               ci(r["chunk"]), r.get("pre_cue", {}).get("accuracy", ""),
               ci(r["trial"], "macro_f1", "macro_f1_ci_low", "macro_f1_ci_high"), trial(r), versus(run, "trial"),
               versus(run, "chunk")]
        if within:
            row.append(r["subject_mean_trial_accuracy"])
        rows.append(row + [best(r)])
    anchor_row = ["EEGNet (published anchor, cross-subject)", "all", "", 0.8243, "", "", "", "", ""] + (
        [""] if within else [])
    main = Table(title=title, columns=columns, rows=rows + [anchor_row + [""]],
                 anchor=ANCHOR + (" The anchor is cross-subject; within-subject numbers are not comparable with it."
                                  if within else ""))
    per_subject = Table(
        title="Per-subject trial accuracy" + (" (every subject, its own held-out folds)" if within else
                                              " (held-out subjects)"),
        columns=["run"] + [f"S{int(s):03d}" for s in subjects],
        rows=[[run] + [r["per_subject_trial_accuracy"].get(s) for s in subjects] for run, r in results.items()],
    )
    tables = [main, per_subject]
    t = bench.get("time_by_tokens", {})
    if t:
        runs = sorted(t)
        ns = sorted({int(k) for r in runs for k in t[r]})
        tables.append(Table(title="Inference time of one sequence (s) by token count",
                            columns=["tokens"] + runs, rows=[[n] + [t[r].get(n) for r in runs] for n in ns],
                            anchor="Linformer (Wang et al. 2020) projects keys/values to k rows: O(n k) vs O(n^2)."))
    split_words = (f"each subject's trials are split into {folds} stratified folds and every fold is scored by models "
                   f"that never saw its trials (but did see the subject's other folds)" if within else
                   "subjects in the test split were never seen in training")
    return Section(
        branch="eeg", title="EEG motor imagery: Transformer, Linformer, SimCLR and EEGNet (PhysioNet EEG MMI)",
        summary="64-channel EEG, runs 4/8/12, band-passed 7-30 Hz, epochs -1..4 s around the cue cut into 1 s chunks, "
                f"classified left vs right fist imagery; {split_words}. Chunk scores count only windows that start at "
                "or after the cue; windows wholly before it are scored apart as a sanity check (nothing in them tells "
                "left from right, so they should sit near 0.5). Trial scores average a trial's post-cue chunks; the "
                "interval resamples subjects (trials with one subject). 'csp_lda' is the classical baseline "
                "(mne.decoding.CSP, 4 components, + LDA) on the same chunks. 'eegnet' is EEGNet-8,2 (Lawhern et al. "
                "2018; torcheeg's implementation), the anchor's architecture, trained here on the same chunks with the "
                "same optimiser and epochs as the Transformers. '_low' runs use only a fraction of the "
                "training labels (SimCLR pretrains on all training chunks without labels first). Every interval is a "
                "95 % percentile bootstrap (1000 replicates) resampling subjects, then their trials or chunks; each "
                f"run is tested against {REFERENCE}: paired bootstrap of the accuracy difference on the same "
                "replicates, and the exact McNemar test on trials.",
        data_source=data_source, synthetic=synthetic, tables=tables, figures=figures,
        notes=_verdicts(results, vs_ref) + ([f"{meta['n_skipped']} recording(s) skipped as bad input."]
                                            if meta["n_skipped"] else []),
    )


def _verdicts(results: dict[str, Any], vs_ref: dict[str, Any]) -> list[str]:
    """In words: which runs beat the classical baseline on trial accuracy, and which do not."""
    beat, tie, worse = [], [], []
    for run in results:
        t = vs_ref.get(run, {}).get("trial")
        if t is None or run == REFERENCE:
            continue
        (beat if t["significant"] and t["diff"] > 0 else worse if t["significant"] else tie).append(run)
    out = []
    if tie:
        out.append(f"Not significantly different from the {REFERENCE} baseline on trial accuracy (paired bootstrap "
                   f"over subjects, 95 %): {', '.join(tie)}. These deep models do not beat the baseline here.")
    if worse:
        out.append(f"Significantly worse than the {REFERENCE} baseline on trial accuracy: {', '.join(worse)}.")
    if beat:
        out.append(f"Significantly better than the {REFERENCE} baseline on trial accuracy: {', '.join(beat)}.")
    return out
