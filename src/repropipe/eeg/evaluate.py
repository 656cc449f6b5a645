"""Evaluation on held-out data (subjects, or folds of each subject's trials) and the benchmark.

Scores measure the task: chunk-level macro F1 / accuracy use only windows that start at or after
the cue (``start_s >= 0``); windows that end at or before the cue are scored apart (``pre_cue``), a
sanity check that must stay near chance since nothing in them tells left from right; windows across
the cue are in neither. Trial-level scores average a trial's post-cue log-probabilities and carry a
95 % bootstrap interval clustered by subject (trials of one subject are not independent), as do the
chunk scores (:mod:`repropipe.stats`). Plus the
classical baseline (CSP + LDA on the same chunks) and, for the two Transformers, accuracy on windows
of growing length after the cue and inference time as the token sequence grows.

:func:`evaluate_all` runs all of it for the eeg_evaluate stage; :func:`metrics` is what it writes to
metrics.json (the measured times go to timings.json apart, so metrics.json repeats byte for byte).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from repropipe import io
from repropipe.io import torch_load
from repropipe.eeg import models as _eeg_models  # noqa: F401  (registers the EEG models by name)
from repropipe.eeg.config import EvaluateConfig
from repropipe.models import build_model


def load_run(path: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    from repropipe.io import DataError

    try:
        blob = torch_load(path, map_location=device)  # weights_only: a pulled model.pt cannot run code
    except DataError:
        raise
    except Exception as exc:  # a foreign file: name it
        raise DataError(path, f"not a readable EEG model checkpoint ({type(exc).__name__}: {exc})") from exc
    model = build_model(blob["model"], **blob["kwargs"]).to(device)
    model.load_state_dict(blob["weights"])
    model.eval()
    return model, blob


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {"macro_f1": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)),
            "accuracy": float(accuracy_score(y, pred)),
            "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist()}


def _with_ci(scored: dict[str, Any], y: np.ndarray, pred: np.ndarray, subjects: np.ndarray, seed: int,
             name: str) -> dict[str, Any]:
    """Add 95 % intervals of accuracy and macro F1, resampling subjects and then their items
    (:class:`repropipe.stats.Resampler`; one subject: its items only)."""
    from repropipe import stats

    if not len(y):
        return {**scored, "ci": "none (no items)"}
    boot = stats.Resampler(len(y), seed=seed, name=name, clusters=subjects).run(
        lambda w: np.stack([stats.accuracy(y == pred, w), stats.macro_f1(y, pred, w)], 1))
    (lo, hi), (flo, fhi) = stats.interval(boot[:, 0]), stats.interval(boot[:, 1])
    return {**scored, "ci_low": lo, "ci_high": hi, "macro_f1_ci_low": flo, "macro_f1_ci_high": fhi,
            "ci": "95 % percentile bootstrap, subjects then their items resampled"}


def evaluate_run(lp: torch.Tensor, test: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """``lp`` log-probs [N, 2] for the rows of ``test`` (in order); ``test`` has start_s/end_s when
    the features are chunked around the cue (older indexes without them count every chunk)."""
    lp = lp.float()
    y = test.label.to_numpy()
    pred = lp.argmax(1).numpy()
    if "start_s" in test:
        post = (test.start_s.to_numpy() >= -1e-9)
        pre = (test.end_s.to_numpy() <= 1e-9)
    else:
        post, pre = np.ones(len(test), bool), np.zeros(len(test), bool)
    if not post.any():  # whole epochs (chunk: 0) span the cue: score them whole
        post = np.ones(len(test), bool)
    subj = test.subject.to_numpy()
    out: dict[str, Any] = {"chunk": _with_ci(scores(y[post], pred[post]), y[post], pred[post], subj[post], seed,
                                             "eeg/chunk"),
                           "all_chunks": scores(y, pred),
                           "n_chunks": int(post.sum()), "n_pre_cue_chunks": int(pre.sum())}
    if pre.any():
        out["pre_cue"] = scores(y[pre], pred[pre])
    df = test[["subject", "run", "trial", "label"]].copy()
    df["lp0"], df["lp1"], df["correct"] = lp[:, 0].numpy(), lp[:, 1].numpy(), pred == y
    dp = df[post]
    trials = dp.groupby(["subject", "run", "trial"], sort=True).agg(label=("label", "first"), lp0=("lp0", "mean"),
                                                                    lp1=("lp1", "mean")).reset_index()
    tpred = (trials.lp1 > trials.lp0).astype(int).to_numpy()
    ty = trials.label.to_numpy()
    out["trial"] = _with_ci(scores(ty, tpred), ty, tpred, trials.subject.to_numpy(), seed, "eeg/trial")
    tcorrect = tpred == ty
    out["per_subject_accuracy"] = {str(s): float(g.correct.mean()) for s, g in dp.groupby("subject", sort=True)}
    per_subject_trial = {str(s): float(c.mean()) for s, c in
                         pd.Series(tcorrect).groupby(trials.subject.to_numpy(), sort=True)}
    out["per_subject_trial_accuracy"] = per_subject_trial
    out["subject_mean_accuracy"] = float(np.mean(list(out["per_subject_accuracy"].values())))
    out["subject_mean_trial_accuracy"] = float(np.mean(list(per_subject_trial.values())))
    out["n_trials"] = int(len(trials))
    # per-item outcomes for the paired tests against the baseline (the stage drops them before writing)
    out["_items"] = {"chunk": (subj[post], y[post] == pred[post]), "trial": (trials.subject.to_numpy(), tcorrect)}
    return out


CSP_COMPONENTS = 4


def csp_lda_log_proba(x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor) -> torch.Tensor:
    """The classical baseline: ``mne.decoding.CSP`` (4 components, log-variance features) + scikit-learn
    LDA, fitted on the training chunks (the same band-passed, normalised chunks the deep models get);
    log-probabilities [N, 2] for the test chunks."""
    from mne.decoding import CSP
    from mne.utils import use_log_level
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline

    if len(np.unique(y_train)) < 2:
        raise ValueError("CSP + LDA needs training chunks of both classes")
    clf = make_pipeline(CSP(n_components=CSP_COMPONENTS, log=True, norm_trace=False),
                        LinearDiscriminantAnalysis())
    with use_log_level("warning"):  # CSP logs its rank estimate and covariances at INFO
        clf.fit(x_train.double().numpy(), y_train)
        lp = clf.predict_log_proba(x_test.double().numpy())
    return torch.from_numpy(lp[:, np.searchsorted(clf.classes_, [0, 1])]).float()


def reassemble_trials(x: torch.Tensor, index: pd.DataFrame, chunk: int, overlap: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Rebuild whole trials [n, C, T] from overlapping chunks (chunk c starts at c * (chunk - overlap))."""
    hop = chunk - overlap
    groups = index.groupby(["subject", "run", "trial"], sort=True)
    out, labels, subjects = [], [], []
    for (s, _, _), g in groups:
        g = g.sort_values("chunk")
        pieces = [x[i] for i in g.index]
        length = hop * (len(pieces) - 1) + chunk
        full = torch.zeros(x.shape[1], length, dtype=torch.float32)
        for c, p in zip(g.chunk, pieces):
            full[:, c * hop:c * hop + chunk] = p.float()
        out.append(full)
        labels.append(int(g.label.iloc[0]))
        subjects.append(int(s))
    return torch.stack(out), np.array(labels), np.array(subjects)


def accuracy_by_window(model: torch.nn.Module, trials: torch.Tensor, labels: np.ndarray, onset: int,
                       windows: list[int], device: torch.device) -> dict[int, float]:
    from repropipe.eeg.train import predict

    out = {}
    for w in windows:
        if onset + w > trials.shape[-1]:
            continue
        pred = predict(model, trials[:, :, onset:onset + w], device).argmax(1).numpy()
        out[w] = float((pred == labels).mean())
    return out


@torch.no_grad()
def inference_time(model: torch.nn.Module, n_channels: int, token_len: int, tokens: list[int], device: torch.device,
                   repeats: int, seed: int) -> dict[int, float]:
    """Median seconds of one forward pass on a single sequence of ``n`` tokens."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    model.eval()
    for n in tokens:
        x = torch.randn(1, n_channels, n * token_len, generator=g).to(device)
        model(x)  # warm-up
        ts = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        out[n] = statistics.median(ts)
    return out


REFERENCE = "csp_lda"  # the classical baseline every other run is tested against
# The published EEGNet anchor: 82.43 % two-class (left vs right imagined fist) "global validation" accuracy on
# PhysioNet EEG MMI, Wang, Hersche, Toemekce, Kaya, Magno & Benini, "An Accurate EEGNet-based Motor-Imagery
# Brain-Computer Interface for Low-Power Edge Computing", IEEE MeMeA 2020 (arXiv:2004.00077), abstract. Their
# code (github.com/MHersche/eegnet-based-embedded-bci, main_global.py at aeb59f6, get_data.py at 50d3197): runs
# 4/8/12, 105 subjects (88, 92, 100, 104 excluded), 3 s from cue onset, 64 channels at 160 Hz, unfiltered;
# sklearn KFold(5) without shuffling over trials stored subject by subject (21 whole subjects per fold, so test
# subjects are unseen); EEGNet with kernel 128, dropout 0.2, batch 16, 100 epochs, Adam with lr 1e-2/1e-3/1e-4
# steps at epochs 20 and 50; the number is the mean over the 5 folds of the held-out accuracy after the last epoch.
ANCHOR_ACCURACY = 0.8243


@dataclass
class Results:
    """Everything eeg_evaluate computed: the stage writes metrics from it, figures and the section draw it."""

    runs: dict[str, Any]  # deep models, by run name
    baselines: dict[str, Any]  # csp_lda
    vs_ref: dict[str, Any]  # each run tested against REFERENCE, by level
    curves: pd.DataFrame  # training and SimCLR pretraining curves, one row per run, phase and epoch
    bench: dict[str, Any]  # accuracy_by_window and (measured, noisy) time_by_tokens
    meta: dict[str, Any]  # data/features/eeg/meta.json
    protocol: str
    folds: int
    test_subjects: list[int]  # every subject with a scored item
    n_tested: int  # chunks scored (each run scores the same ones): the stage's unit of cost

    @property
    def every(self) -> dict[str, Any]:
        return {**self.runs, **self.baselines}

    @property
    def synthetic(self) -> bool:
        return self.meta["source"] == "synthetic"

    @property
    def data_source(self) -> str:
        return "synthetic" if self.synthetic else "real (PhysioNet EEG MMI)"


def evaluate_all(features: str | Path, models_dir: str | Path, cfg: EvaluateConfig, device: torch.device,
                 seed: int) -> Results:
    """Score every trained run and the CSP + LDA baseline on the held-out rows, test each against the
    baseline, and run the Transformer vs Linformer benchmark."""
    from repropipe.eeg.features import fold_split, protocol as protocol_of, read_meta
    from repropipe.eeg.train import load_features, model_dirs, predict

    meta = read_meta(features)
    x, index, _ = load_features(Path(features))
    protocol, folds = protocol_of(meta)
    subs = model_dirs(protocol, folds)
    splits = {sub: (fold_split(index, int(sub[4:]), folds) if sub else index.split.to_numpy()) for sub in subs}
    models_dir = Path(models_dir)
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
            model, blob = load_run(models_dir / run / sub / "model.pt", device)
            lp_all[rows] = predict(model, x[torch.from_numpy(rows)], device, log_probs=blob["log_probs"])
            blobs.append(blob)
            if sub == subs[0]:
                models[run] = (model, blob)
        results[run] = evaluate_run(lp_all[torch.from_numpy(np.flatnonzero(tested))], test, seed)
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
    baselines = {REFERENCE: csp_lda(x, index, splits, tested, protocol, seed)}
    bench = benchmark(models, x, index[splits[subs[0]] == "test"], meta, features, cfg, device, seed)
    vs_ref = vs_reference({**results, **baselines}, REFERENCE, seed)
    return Results(runs=results, baselines=baselines, vs_ref=vs_ref, curves=pd.DataFrame(curves), bench=bench,
                   meta=meta, protocol=protocol, folds=folds, test_subjects=sorted(map(int, set(test.subject))),
                   n_tested=int(tested.sum()))


def vs_reference(every: dict[str, Any], reference: str, seed: int) -> dict[str, Any]:
    """Each run against the reference on the same held-out items: paired bootstrap of the accuracy
    difference (subjects, then their items, resampled; the same replicates as the intervals) and,
    for trials, the exact McNemar test. Pops the per-item outcomes so they are not written."""
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


def csp_lda(x: torch.Tensor, index: pd.DataFrame, splits: dict[str, np.ndarray], tested: np.ndarray, protocol: str,
            seed: int) -> dict[str, Any]:
    """CSP(4) + LDA beside the deep models on the same chunks and the same test rows: fitted on the
    training subjects (cross_subject), or per subject on its other folds (within_subject, as MOABB's
    within-session evaluation fits one pipeline per subject)."""
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
            lp[te_rows] = csp_lda_log_proba(x[tr_rows], y[tr], x[te_rows])
            n_train = max(n_train, int(tr.sum()))
    out = evaluate_run(lp[torch.from_numpy(np.flatnonzero(tested))], index[tested].reset_index(drop=True), seed)
    out.update(n_train_chunks=n_train, components=CSP_COMPONENTS,
               method="mne.decoding.CSP (4 components, log-variance) + sklearn LinearDiscriminantAnalysis")
    return out


def benchmark(models: dict[str, Any], x: torch.Tensor, test: pd.DataFrame, meta: dict[str, Any],
              features: str | Path, cfg: EvaluateConfig, device: torch.device, seed: int) -> dict[str, Any]:
    """Quadratic Transformer vs Linformer: accuracy on growing post-cue windows, time on growing sequences."""
    from repropipe.eeg.features import feature_config

    fp = feature_config(meta, Path(features) / "meta.json")
    pair = [r for r in ("transformer", "linformer") if r in models]
    out: dict[str, Any] = {"accuracy_by_window": {}, "time_by_tokens": {}}
    if not pair:
        return out
    if 0 < fp.chunk and fp.overlap < fp.chunk and len(test):
        trials, labels, _ = reassemble_trials(x, test, fp.chunk, fp.overlap)
        onset = int(round(-fp.tmin * 160))
        for run in pair:
            out["accuracy_by_window"][run] = accuracy_by_window(models[run][0], trials, labels, onset,
                                                                list(cfg.windows), device)
    for run in pair:
        model, blob = models[run]
        out["time_by_tokens"][run] = inference_time(model, len(meta["ch_names"]), int(blob["kwargs"]["token_len"]),
                                                    list(cfg.bench_tokens), device, cfg.repeats, seed)
    return out


def metrics(res: Results) -> dict[str, Any]:
    """Headline numbers as flat ``<run>/<score>`` keys (metrics.json), then the full results (details.json:
    ``write_metrics`` puts every value that is not a number there)."""
    headline: dict[str, Any] = {}
    vs_ref = res.vs_ref
    for run, r in res.every.items():
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
        if res.protocol == "within_subject":
            headline[f"{run}/subject_mean_trial_accuracy"] = r["subject_mean_trial_accuracy"]
    within = res.protocol == "within_subject"
    return {
        **headline, "runs": res.runs, "baselines": res.baselines, "reference": REFERENCE, "vs_reference": vs_ref,
        "benchmark": {"accuracy_by_window": res.bench["accuracy_by_window"]}, "evaluation": res.protocol,
        "within_subject_folds": res.folds if within else None,
        "n_skipped_recordings": res.meta["n_skipped"], "subjects_by_split": res.meta["subjects_by_split"],
        "anchor_eegnet_accuracy": ANCHOR_ACCURACY,
    }


def write_timings(res: Results, path: str | Path) -> None:
    """The measured inference times, apart from metrics.json so that repeats byte for byte."""
    io.atomic_write_json(path, {"time_by_tokens": res.bench["time_by_tokens"]})


def print_summary(res: Results) -> None:
    """The scores and the benchmark on the terminal."""
    where = (f"held-out subjects {res.meta['subjects_by_split'].get('test')}" if res.protocol == "cross_subject" else
             f"{res.folds}-fold within-subject, subjects {res.test_subjects}")
    print(f"\neeg_evaluate ({where}); chunk scores on post-cue windows")
    for run, r in res.every.items():
        print(f"  {run:16s} chunk F1 {r['chunk']['macro_f1']:.3f} acc {r['chunk']['accuracy']:.3f} | "
              f"trial F1 {r['trial']['macro_f1']:.3f} acc {r['trial']['accuracy']:.3f} "
              f"[{r['trial']['ci_low']:.3f}, {r['trial']['ci_high']:.3f}] | pre-cue acc "
              f"{r.get('pre_cue', {}).get('accuracy', float('nan')):.3f}")
    t = res.bench.get("time_by_tokens", {})
    if t:
        runs = sorted(t)
        print("\nTransformer vs Linformer, inference time of one sequence (s):")
        print("  tokens " + " ".join(f"{r:>12s}" for r in runs))
        for n in sorted({int(k) for r in runs for k in t[r]}):
            print(f"  {n:6d} " + " ".join(f"{t[r].get(n, float('nan')):12.5f}" for r in runs))
    a = res.bench.get("accuracy_by_window", {})
    if a:
        runs = sorted(a)
        print("Accuracy on held-out trials by post-cue window (samples at 160 Hz):")
        for w in sorted({int(k) for r in runs for k in a[r]}):
            print(f"  {w:6d} " + " ".join(f"{r}={a[r].get(w, float('nan')):.3f}" for r in runs))
