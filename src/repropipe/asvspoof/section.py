"""The evaluate stage's body: score every trained run, write metrics, score files, plots, figures, section."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from repropipe import io, stats
from repropipe.asvspoof import figures
from repropipe.asvspoof.evaluate import (asv_error_rates, min_tdcf, read_asv_scores, score_file_text, summarize,
                                         tdcf_costs)
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
REFERENCE = "lfcc_gmm"  # the classical baseline (repropipe.asvspoof.baseline) every model is tested against
GMM_WHAT = ("LFCC-GMM: one 64-component diagonal GaussianMixture per class on the LFCC frames (with deltas) of the "
            "training utterances, score = mean frame log-likelihood ratio (the organisers' classical baseline, "
            "demo-sized); fitted once with the stage seed.")


def _gmm_baseline(ctx: StageContext, feat_dir: str, feats: dict[tuple[str, str], Any],
                  asv: dict[str, dict[str, np.ndarray]], out: str) -> tuple[dict[str, Any], np.ndarray] | None:
    """Fit and score the LFCC-GMM reference; None when the features hold no LFCC."""
    from repropipe.asvspoof import baseline
    from repropipe.asvspoof.features import load_features

    if not (Path(feat_dir) / "lfcc").is_dir():
        log.warning("event=no_reference reason=no_lfcc_features")
        return None
    x, index = load_features(feat_dir, "train", "lfcc")
    gmm = baseline.fit(x, index.label.to_numpy(), ctx.seed)
    row: dict[str, Any] = {"model": REFERENCE, "seed": ctx.seed, "selected_epoch": None, "control": False,
                           "baseline": True}
    s_eval = np.zeros(0)
    for split in ("dev", "eval"):
        key = (split, "lfcc")
        if key not in feats:
            feats[key] = load_features(feat_dir, split, "lfcc")
        x, index = feats[key]
        s = baseline.score(gmm, x)
        io.atomic_write_text(f"{out}/scores/{REFERENCE}_seed{ctx.seed}.{split}.txt", score_file_text(s, index))
        m = summarize(s, index)
        lab = index.label.to_numpy()
        m["min_tdcf"] = min_tdcf(s[lab == 1], s[lab == 0], asv[split]) if split in asv else "not available"
        row[split] = m
        s_eval = s
    log.info("event=scored model=%s dev_eer=%.4f eval_eer=%.4f", REFERENCE, row["dev"]["eer"], row["eval"]["eer"])
    return row, s_eval


def _uncertainty(per_model: dict[str, Any], scores_eval: dict[tuple[str, int], np.ndarray], index: Any,
                 asv_eval: dict[str, np.ndarray] | None, reference: str | None, seed: int) -> dict[str, Any]:
    """95 % intervals of each model's eval EER (mean over its seeds), min t-DCF and per-attack EER, and the
    paired bootstrap test of each model against ``reference``: eval utterances resampled two-stage by
    speaker (speakers, then their utterances; NII's eval_conf_inter.py with speakers as conditions),
    the same replicates for every model."""
    lab = index.label.to_numpy() == 1
    spk = index.speaker_id.to_numpy()
    names = list(per_model)
    sets = {m: [stats.ScoreSet(scores_eval[(m, s)], lab) for s in per_model[m]["seeds"]] for m in names}
    rs = stats.Resampler(len(lab), seed=seed, name="asvspoof/eval", clusters=spk)
    out: dict[str, Any] = {m: {} for m in names}
    eer_boot = rs.run(lambda w: np.stack([np.mean([s.eer(w) for s in sets[m]], 0) for m in names], 1))
    cis, tests = stats.compare_columns({m: per_model[m]["eval_eer_mean"] for m in names}, eer_boot, reference or "")
    for m in names:
        out[m]["eer_mean"] = {**cis[m], **({"vs_reference": {**tests[m], "test": "paired bootstrap over speakers"}}
                                           if m in tests else {})}
    if asv_eval is not None and all("eval_min_tdcf_mean" in per_model[m] for m in names):
        c1, c2 = tdcf_costs(asv_eval)
        if c1 > 0 and c2 > 0:
            def tdcf(s: stats.ScoreSet, w: np.ndarray) -> np.ndarray:
                frr, far = s.det(w)
                return np.min((c1 * frr + c2 * far) / min(c1, c2), axis=1)

            boot = rs.run(lambda w: np.stack([np.mean([tdcf(s, w) for s in sets[m]], 0) for m in names], 1))
            cis, tests = stats.compare_columns({m: per_model[m]["eval_min_tdcf_mean"] for m in names}, boot,
                                               reference or "")
            for m in names:
                out[m]["min_tdcf_mean"] = {**cis[m], **({"vs_reference": {**tests[m],
                                                                          "test": "paired bootstrap over speakers"}}
                                                        if m in tests else {})}
    systems = index.system_id.to_numpy()
    for a in sorted(set(systems[~lab])):
        keep = lab | (systems == a)
        sub = {m: [stats.ScoreSet(scores_eval[(m, s)][keep], lab[keep]) for s in per_model[m]["seeds"]] for m in names}
        boot = stats.Resampler(int(keep.sum()), seed=seed, name=f"asvspoof/eval/{a}", clusters=spk[keep]).run(
            lambda w: np.stack([np.mean([s.eer(w) for s in sub[m]], 0) for m in names], 1))
        for i, m in enumerate(names):
            out[m].setdefault("per_attack_eer", {})[str(a)] = stats.with_interval(
                per_model[m]["per_attack_eer_mean"][a], boot[:, i])
    return out


def _verdicts(per_model: dict[str, Any], unc: dict[str, Any], reference: str) -> list[str]:
    """In words: which models do not beat the classical baseline on eval EER."""
    tie, worse, beat = [], [], []
    for m, v in per_model.items():
        t = unc.get(m, {}).get("eer_mean", {}).get("vs_reference")
        if m == reference or v["control"] or t is None:
            continue
        (beat if t["significant"] and t["diff"] < 0 else worse if t["significant"] else tie).append(m)
    out = []
    if tie:
        out.append(f"{', '.join(tie)}: eval EER not significantly different from the {reference} baseline; these "
                   "models do not beat the baseline on this evaluation set.")
    if worse:
        out.append(f"{', '.join(worse)}: eval EER significantly higher than the {reference} baseline.")
    if beat:
        out.append(f"{', '.join(beat)}: eval EER significantly lower than the {reference} baseline.")
    return out


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
    gmm_row = _gmm_baseline(ctx, feat_dir, feats, asv, out)
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
    if gmm_row is not None:
        row, s = gmm_row
        results.append(row)
        scores_eval[(REFERENCE, row["seed"])] = s

    # every feature kind holds the same utterances in the same order (one index), so any eval index will do
    eval_index = next(v[1] for k, v in feats.items() if k[0] == "eval")
    per_model = _aggregate(results)
    reference = REFERENCE if gmm_row is not None else None
    unc = _uncertainty(per_model, scores_eval, eval_index, asv.get("eval"), reference, ctx.seed)
    flat: dict[str, Any] = {}
    for m, u in unc.items():
        for key in ("eer_mean", "min_tdcf_mean"):
            if key in u:
                flat[f"{key}_ci_low/{m}"] = u[key]["ci_low"]
                flat[f"{key}_ci_high/{m}"] = u[key]["ci_high"]
                if "vs_reference" in u[key]:
                    flat[f"{key}_diff_vs_ref/{m}"] = u[key]["vs_reference"]["diff"]
                    flat[f"{key}_p_vs_ref/{m}"] = u[key]["vs_reference"]["p_value"]
    metrics = {
        # the deep models (and the control) as before; the classical reference apart, as EEG's csp_lda
        "models": {m: v for m, v in per_model.items() if m != reference},
        "runs": [r for r in results if not r.get("baseline")],
        "baselines": {m: {**v, "what": GMM_WHAT, "runs": [r for r in results if r["model"] == m]}
                      for m, v in per_model.items() if m == reference},
        **{f"eer_mean/{m}": v["eval_eer_mean"] for m, v in per_model.items()},
        **{f"eer_std/{m}": v["eval_eer_std"] for m, v in per_model.items()},
        **{f"min_tdcf_mean/{m}": v["eval_min_tdcf_mean"] for m, v in per_model.items() if "eval_min_tdcf_mean" in v},
        **flat, "reference": reference, "uncertainty": unc,
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
    _section(results, per_model, manifest, data_source, figs, metrics["asv"], unc, reference).write(
        f"{out}/section.json")
    print("\nasvspoof eval EER (mean +- std over seeds):")
    for m, v in per_model.items():
        u = unc[m]["eer_mean"]
        print(f"  {m:26s} {100 * v['eval_eer_mean']:6.2f} % +- {100 * v['eval_eer_std']:.2f}"
              f"  95 % CI [{100 * u['ci_low']:.2f}, {100 * u['ci_high']:.2f}]"
              + (f"  vs {reference}: {stats.fmt_test(u['vs_reference'], 2, 100)}" if "vs_reference" in u else "")
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
             figs: list[Figure], asv: dict[str, dict[str, float]], unc: dict[str, Any] | None = None,
             reference: str | None = None) -> Section:
    unc = unc or {}
    have_asv = "eval" in asv
    tdcf = (lambda r: round(r["eval"]["min_tdcf"], 4)) if have_asv else (lambda r: "not available")

    def ci(m: str, key: str, scale: float, digits: int) -> str:
        u = unc.get(m, {}).get(key)
        return f" [{u['ci_low'] * scale:.{digits}f}, {u['ci_high'] * scale:.{digits}f}]" if u else ""

    def versus(m: str, key: str, scale: float, digits: int) -> str:
        if m == reference:
            return "reference"
        return stats.fmt_test(unc.get(m, {}).get(key, {}).get("vs_reference"), digits, scale) if reference else ""

    rows = [[_label(r["model"], r.get("control", False)), r["seed"], _pct(r["dev"]["eer"]), _pct(r["eval"]["eer"]),
             round(r["eval"]["accuracy_at_eer_threshold"], 4), round(r["eval"]["best_accuracy"], 4), tdcf(r), "", ""]
            for r in results]
    rows += [[f"{m} (mean ± std{', reference' if m == reference else ''})", ",".join(map(str, v["seeds"])),
              _pct(v["dev_eer_mean"]),
              f"{_pct(v['eval_eer_mean'])} ± {_pct(v['eval_eer_std'])}{ci(m, 'eer_mean', 100, 2)}", "", "",
              (f"{v['eval_min_tdcf_mean']:.4f} ± {v['eval_min_tdcf_std']:.4f}{ci(m, 'min_tdcf_mean', 1, 4)}"
               if "eval_min_tdcf_mean" in v else ""),
              versus(m, "eer_mean", 100, 2), versus(m, "min_tdcf_mean", 1, 4) if have_asv else ""]
             for m, v in per_model.items() if not v["control"] and not m.endswith(PRETRAINED_SUFFIX)]
    ref_cols = ([f"eval EER minus {reference} (points) [95 % CI], test", f"min t-DCF minus {reference}, test"]
                if reference else ["vs reference", "vs reference (min t-DCF)"])
    main = Table(title="Countermeasure EER (%) per model and seed; eval attacks are unseen in training. Mean rows: "
                       "mean ± std over seeds [95 % bootstrap interval over eval speakers and utterances]",
                 columns=["model", "seed", "dev EER (%)", "eval EER (%)", "accuracy at EER threshold",
                          "best accuracy (oracle threshold)", "min t-DCF (eval)"] + ref_cols,
                 rows=rows, anchor=ANCHOR)
    attacks = sorted({a for v in per_model.values() for a in v["per_attack_eer_mean"]})
    def attack_cell(m: str, a: str) -> Any:
        u = unc.get(m, {}).get("per_attack_eer", {}).get(a)
        if u is None:
            return _pct(per_model[m]["per_attack_eer_mean"].get(a, float("nan")))
        return stats.fmt_ci(u["value"], u["ci_low"], u["ci_high"], digits=1, scale=100)

    per_attack = Table(title="Eval EER (%) per attack system (mean over seeds) [95 % bootstrap interval]",
                       columns=["attack"] + [_label(m, v["control"]) for m, v in per_model.items()],
                       rows=[[a] + [attack_cell(m, a) for m in per_model] for a in attacks],
                       anchor="On the real set A17 (waveform filtering VC) is the hardest attack for LFCC-LCNN "
                              "systems; compare shapes, not values, on synthetic data.")
    notes = [f"Utterances scored: {manifest['counts']}. Source: {manifest['source']}."]
    if reference:
        notes.append(f"Reference row {reference}: {GMM_WHAT} Intervals: 95 % percentile bootstrap (1000 replicates) "
                     "resampling eval speakers, then their utterances (NII's eval_conf_inter.py with speakers as "
                     "conditions); a model with several seeds is resampled as the mean of its seeds' EERs. Each model "
                     f"is tested against {reference} by a paired bootstrap of the difference on the same replicates; "
                     "significant when the interval of the difference excludes 0.")
        notes += _verdicts(per_model, unc, reference)
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
