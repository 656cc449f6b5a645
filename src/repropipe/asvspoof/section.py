"""The evaluate stage's body: score every trained run, write metrics, score files, plots, figures, section."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from repropipe import io
from repropipe.asvspoof import figures
from repropipe.asvspoof.evaluate import asv_error_rates, min_tdcf, read_asv_scores, score_file_text, summarize
from repropipe.asvspoof.features import load_features
from repropipe.report.section import Figure, Section, Table
from repropipe.stages import StageContext

log = logging.getLogger("repropipe.asvspoof.evaluate")

ANCHOR = ("Published anchors, real ASVspoof 2019 LA eval set: LFCC-LCNN 1.92 % EER (best single LFCC-LCNN "
          "system, Wang & Yamagishi 2021, 'A comparative study on recent neural spoofing countermeasures'); "
          "AASIST 0.83 % EER, min t-DCF 0.0275, and AASIST-L 0.99 %, 0.0309 (Jung et al. 2022, the authors' released models). Mean and spread are over training seeds, since seed alone "
          "moves EER on this task.")


CONTROL_WHAT = ("lfcc_lcnn trained on randomly shuffled training labels (same recipe, same data, one seed): "
                "a model that cannot learn the task.")


PUBLISHED = "published"  # the "seed" of a run scored with the authors' published weights
PRETRAINED_SUFFIX = "_pretrained"


def _label(model: str, control: bool) -> str:
    if model.endswith(PRETRAINED_SUFFIX):
        return f"{model[: -len(PRETRAINED_SUFFIX)]} (authors' published weights, not trained here)"
    return f"{model} (CONTROL: shuffled train labels)" if control else model


def load_pretrained_runs(pretrained: dict[str, str | None] | None, kinds: list[str]) -> list[dict[str, Any]]:
    """The published models named in ``asvspoof.evaluate.pretrained``, loaded (strictly) and described.

    Each needs the ``wave`` features (raw waveform input); a missing file is a DataError naming it.
    """
    import hashlib

    from repropipe.asvspoof.models import FEATURE_OF, load_pretrained_aasist
    from repropipe.io import DataError

    out = []
    for name, path in (pretrained or {}).items():
        if not path:
            continue
        kind = FEATURE_OF[name]
        if kind not in kinds:
            raise ValueError(f"asvspoof.evaluate.pretrained.{name} scores the raw waveform: add {kind!r} to "
                             f"asvspoof.features.kinds (now {kinds})")
        if not Path(path).is_file():
            raise DataError(path, f"asvspoof.evaluate.pretrained.{name}: no such file (the authors' weights, "
                                  "e.g. AASIST.pth of clovaai/aasist)")
        model = load_pretrained_aasist(path, variant=name)
        out.append({"model": f"{name}{PRETRAINED_SUFFIX}", "net": model, "feature": kind, "path": str(path),
                    "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()})
    return out


def _pct(v: float) -> float:
    return round(100.0 * v, 2)


def evaluate_all(ctx: StageContext, feat_dir: str, models_dir: str, out: str,
                 pretrained: dict[str, str | None] | None = None) -> None:
    """Score every trained run, and every published model of ``pretrained`` (name -> weights file), on dev and eval."""
    import torch

    from repropipe.asvspoof.train import identity_norm, load_trained, score
    from repropipe.training import select_device

    device = select_device(ctx.params["device"])
    manifest = json.loads((Path(feat_dir) / "manifest.json").read_text())
    runs = json.loads((Path(models_dir) / "manifest.json").read_text())["runs"]
    data_source = manifest["data_source"]
    # the organisers' ASV scores, copied (and checked) by the features stage when the data has them
    asv = {s: read_asv_scores(Path(feat_dir) / f"asv_scores.{s}.txt", split=s) for s in ("dev", "eval")
           if (Path(feat_dir) / f"asv_scores.{s}.txt").exists()}
    feats: dict[tuple[str, str], Any] = {}
    results: list[dict[str, Any]] = []
    scores_eval: dict[tuple[str, int], np.ndarray] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    published = load_pretrained_runs(pretrained, list(manifest["config"]["kinds"]))
    jobs = [(run, None) for run in runs] + [({"model": p["model"], "seed": PUBLISHED}, p) for p in published]
    for run, pub in jobs:
        if pub is None:
            model, norm, summary = load_trained(Path(run["dir"]), device)
        else:  # the authors' weights: nothing was trained, so no epoch and no history
            model, norm = pub["net"].to(device), identity_norm()
            summary = {"feature": pub["feature"], "selected_epoch": None, "history": []}
        kind = summary["feature"]
        row: dict[str, Any] = {"model": run["model"], "seed": run["seed"], "selected_epoch": summary["selected_epoch"],
                               "control": bool(run.get("control", False))}
        if pub is not None:
            row["weights"] = {"path": pub["path"], "sha256": pub["sha256"]}
        for split in ("dev", "eval"):
            key = (split, kind)
            if key not in feats:
                feats[key] = load_features(feat_dir, split, kind)
            x, index = feats[key]
            s = score(model, x, norm, device, kind=kind)
            tag = run["model"] if pub is not None else f"{run['model']}_seed{run['seed']}"
            io.atomic_write_text(f"{out}/scores/{tag}.{split}.txt", score_file_text(s, index))
            m = summarize(s, index)
            lab = index.label.to_numpy()
            m["min_tdcf"] = min_tdcf(s[lab == 1], s[lab == 0], asv[split]) if split in asv else "not available"
            row[split] = m
            if split == "eval":
                scores_eval[(run["model"], run["seed"])] = s
        results.append(row)
        if pub is None:
            histories[f"{run['model']} seed {run['seed']}"] = summary["history"]
        log.info("event=scored model=%s seed=%s dev_eer=%.4f eval_eer=%.4f", run["model"], run["seed"],
                 row["dev"]["eer"], row["eval"]["eer"])
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # every feature kind holds the same utterances in the same order (one index), so any eval index will do
    eval_index = next(v[1] for k, v in feats.items() if k[0] == "eval")
    per_model = _aggregate(results)
    metrics = {
        "models": per_model,
        "runs": results,
        **{f"eer_mean/{m}": v["eval_eer_mean"] for m, v in per_model.items()},
        **{f"eer_std/{m}": v["eval_eer_std"] for m, v in per_model.items()},
        **{f"min_tdcf_mean/{m}": v["eval_min_tdcf_mean"] for m, v in per_model.items() if "eval_min_tdcf_mean" in v},
        # the ASV operating point every min t-DCF above is computed at (official rules, EER threshold)
        "asv": {s: asv_error_rates(a) for s, a in asv.items()},
        "controls": {m: {"what": CONTROL_WHAT, "eval_eer": v["eval_eer_mean"], "expected": "near 0.5"}
                     for m, v in per_model.items() if v["control"]},
        "counts": manifest["counts"],
        "skipped": len(manifest["skipped"]),
        "min_tdcf_available": bool(asv),
    }
    ctx.write_metrics(f"{out}/metrics.json", metrics, data_source=data_source, device=str(device))
    _plots(results, per_model, histories, out)
    figs = _figures(results, scores_eval, eval_index, histories, per_model)
    _section(results, per_model, manifest, data_source, figs, metrics["asv"]).write(f"{out}/section.json")
    print("\nasvspoof eval EER (mean +- std over seeds):")
    for m, v in per_model.items():
        print(f"  {m:26s} {100 * v['eval_eer_mean']:6.2f} % +- {100 * v['eval_eer_std']:.2f}"
              + ("   (control: shuffled train labels, expect ~50 %)" if v["control"] else ""))


def _aggregate(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == name]
        ev = np.array([r["eval"]["eer"] for r in rs])
        dv = np.array([r["dev"]["eer"] for r in rs])
        attacks = sorted(rs[0]["eval"]["per_attack_eer"])
        out[name] = {
            "control": bool(rs[0].get("control", False)),
            "seeds": [r["seed"] for r in rs],
            "eval_eer_mean": float(ev.mean()), "eval_eer_std": float(ev.std(ddof=1)) if len(ev) > 1 else 0.0,
            "dev_eer_mean": float(dv.mean()),
            "per_attack_eer_mean": {a: float(np.mean([r["eval"]["per_attack_eer"][a] for r in rs])) for a in attacks},
        }
        tdcf = [r["eval"]["min_tdcf"] for r in rs]
        if all(isinstance(t, float) for t in tdcf):  # a number wherever the ASV scores exist
            out[name]["eval_min_tdcf_mean"] = float(np.mean(tdcf))
            out[name]["eval_min_tdcf_std"] = float(np.std(tdcf, ddof=1)) if len(tdcf) > 1 else 0.0
    return out


def _plots(results: list[dict[str, Any]], per_model: dict[str, Any], histories: dict[str, Any], out: str) -> None:
    lines = ["model,seed,dev_eer,eval_eer,accuracy_at_eer_threshold,best_accuracy"]
    lines += [f"{r['model']},{r['seed']},{r['dev']['eer']:.6f},{r['eval']['eer']:.6f},"
              f"{r['eval']['accuracy_at_eer_threshold']:.6f},{r['eval']['best_accuracy']:.6f}" for r in results]
    io.atomic_write_text(f"{out}/plots/eer.csv", "\n".join(lines) + "\n")
    lines = ["model,attack,eer"]
    lines += [f"{m},{a},{e:.6f}" for m, v in per_model.items() for a, e in v["per_attack_eer_mean"].items()]
    io.atomic_write_text(f"{out}/plots/per_attack_eer.csv", "\n".join(lines) + "\n")
    lines = ["run,epoch,loss,accuracy,dev_eer"]
    lines += [f"{k.replace(' ', '_')},{h['epoch']},{h.get('loss', float('nan')):.6f},{h.get('accuracy', float('nan')):.6f},"
              f"{h.get('dev_eer', float('nan')):.6f}" for k, hist in histories.items() for h in hist]
    io.atomic_write_text(f"{out}/plots/training.csv", "\n".join(lines) + "\n")


def _figures(results: list[dict[str, Any]], scores_eval: dict[tuple[str, int], np.ndarray], index: Any,
             histories: dict[str, Any], per_model: dict[str, Any]) -> list[Figure]:
    lab = index.label.to_numpy()
    first = {}
    for r in results:  # the first seed of each model for the per-model panels
        first.setdefault(r["model"], r)
    curves = {f"{m} seed {r['seed']} (EER {_pct(r['eval']['eer'])} %)": (scores_eval[(m, r['seed'])][lab == 1],
                                                                        scores_eval[(m, r['seed'])][lab == 0])
              for m, r in first.items()}
    hist = {f"{m} seed {r['seed']}": (scores_eval[(m, r['seed'])][lab == 1], scores_eval[(m, r['seed'])][lab == 0],
                                      r["eval"]["eer_threshold"]) for m, r in first.items()}
    return [
        Figure(figures.det(curves), "DET curves on the eval partition (first seed of each model); normal-deviate axes."),
        Figure(figures.histograms(hist), "Eval score distributions per class with the EER threshold."),
        Figure(figures.thresholds({k: v[:2] for k, v in hist.items()}),
               "Threshold analysis: bona fide rejected and spoofs accepted as the threshold moves."),
        Figure(figures.per_attack({m: v["per_attack_eer_mean"] for m, v in per_model.items()}),
               "EER of bona fide against each eval attack alone (mean over seeds); eval attacks are unseen in training."),
        Figure(figures.training(histories), "Training loss and dev EER per epoch, every model and seed."),
    ]


def _section(results: list[dict[str, Any]], per_model: dict[str, Any], manifest: dict[str, Any], data_source: str,
             figs: list[Figure], asv: dict[str, dict[str, float]]) -> Section:
    have_asv = "eval" in asv
    tdcf = (lambda r: round(r["eval"]["min_tdcf"], 4)) if have_asv else (lambda r: "not available")
    rows = [[_label(r["model"], r.get("control", False)), r["seed"], _pct(r["dev"]["eer"]), _pct(r["eval"]["eer"]),
             round(r["eval"]["accuracy_at_eer_threshold"], 4), round(r["eval"]["best_accuracy"], 4), tdcf(r)]
            for r in results]
    rows += [[f"{m} (mean ± std)", ",".join(map(str, v["seeds"])), _pct(v["dev_eer_mean"]),
              f"{_pct(v['eval_eer_mean'])} ± {_pct(v['eval_eer_std'])}", "", "",
              f"{v['eval_min_tdcf_mean']:.4f} ± {v['eval_min_tdcf_std']:.4f}" if "eval_min_tdcf_mean" in v else ""]
             for m, v in per_model.items() if not v["control"] and not m.endswith(PRETRAINED_SUFFIX)]
    main = Table(title="Countermeasure EER (%) per model and seed; eval attacks are unseen in training",
                 columns=["model", "seed", "dev EER (%)", "eval EER (%)", "accuracy at EER threshold",
                          "best accuracy (oracle threshold)", "min t-DCF (eval)"],
                 rows=rows, anchor=ANCHOR)
    attacks = sorted({a for v in per_model.values() for a in v["per_attack_eer_mean"]})
    per_attack = Table(title="Eval EER (%) per attack system (mean over seeds)", columns=["attack"] + [_label(m, v["control"]) for m, v in per_model.items()],
                       rows=[[a] + [_pct(v["per_attack_eer_mean"].get(a, float("nan"))) for v in per_model.values()]
                             for a in attacks],
                       anchor="On the real set A17 (waveform filtering VC) is the hardest attack for LFCC-LCNN "
                              "systems; compare shapes, not values, on synthetic data.")
    notes = [f"Utterances scored: {manifest['counts']}. Source: {manifest['source']}."]
    if any(v["control"] for v in per_model.values()):
        notes.append(f"Rows marked CONTROL: {CONTROL_WHAT} Its eval EER should stay near 50 %; far below would mean "
                     "something other than the audio (order, length, a leak) carries the label.")
    for r in results:
        if "weights" in r:
            notes.append(f"{_label(r['model'], False)}: {r['weights']['path']} (sha256 {r['weights']['sha256'][:16]}...), "
                         "scored on the first-crop waveform of the features stage, as the authors' evaluation does "
                         f"(64,600 samples in their recipe; {manifest['config']['seconds']} s here).")
    skipped = manifest["skipped"]
    if skipped:
        notes.append(f"{len(skipped)} bad input item(s) skipped (on_bad_file: skip): "
                     + "; ".join(f"{b['where']}{':' + str(b['line']) if b['line'] else ''} ({b['reason']})"
                                 for b in skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
    else:
        notes.append("No input was skipped.")
    if have_asv:
        a = asv["eval"]
        notes.append(f"min t-DCF: ASVspoof 2019 cost model (P_spoof 0.05, C_fa 10), the organisers' ASV scores"
                     f"{' (synthetic here)' if data_source == 'synthetic' else ''} fixed at their EER threshold: "
                     f"ASV EER {_pct(a['eer'])} %, P_fa {_pct(a['pfa'])} %, P_miss {_pct(a['pmiss'])} %, "
                     f"spoofs accepted {_pct(1 - a['pmiss_spoof'])} %.")
    else:
        notes.append("min t-DCF: not available (the ASV scores of the real set, ASVspoof2019.LA.asv.*.scores.txt, "
                     "are not part of this data).")
    return Section(
        branch="asvspoof", title="Voice anti-spoofing: ASVspoof 2019 LA",
        summary="Bona fide versus spoofed (TTS/VC) speech, scored by equal error rate on the evaluation partition, "
                "whose attack systems are unseen in training. LFCC-LCNN with a sigmoid/BCE head and with a one-class "
                "softmax head, and a log-mel ResNet18, each trained with several seeds.",
        data_source=("synthetic stand-in for ASVspoof 2019 LA (source-filter voices; spoofs through vocoder-like "
                     "artifacts)" if data_source == "synthetic" else f"ASVspoof 2019 LA ({manifest['source']})"),
        synthetic=data_source == "synthetic", tables=[main, per_attack], figures=figs, notes=notes)
