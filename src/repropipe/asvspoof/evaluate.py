"""Scoring and metrics: score files, EER overall and per attack, accuracies, min t-DCF when ASV scores exist,
95 % intervals and paired tests against the LFCC-GMM reference; :func:`evaluate_all` is the evaluate stage's
computation (it writes the score files and metrics.json; figures.py and section.py draw and describe its result).

Convention throughout: higher score = more bona fide; bona fide is the target class of
:func:`repropipe.metrics.compute_eer`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repropipe import io, stats
from repropipe.asvspoof.data import read_asv_scores
from repropipe.metrics import compute_eer, det_curve

if TYPE_CHECKING:
    import torch

    from repropipe.asvspoof.config import EvaluateConfig, PretrainedConfig
    from repropipe.stages import StageContext

log = logging.getLogger("repropipe.asvspoof.evaluate")


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction correct when ``score >= threshold`` is called bona fide."""
    return float(((scores >= threshold).astype(int) == labels).mean())


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The best accuracy over every threshold (an oracle on this set) and that threshold."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # accepting the top i utterances: correct = bona fide among them + spoof outside them
    tp = np.concatenate([[0], np.cumsum(y)])
    tn = (len(y) - y.sum()) - np.concatenate([[0], np.cumsum(1 - y)])
    # only cut between distinct scores
    valid = np.concatenate([[True], s[1:] != s[:-1], [True]])
    acc = np.where(valid, (tp + tn) / len(y), -1)
    i = int(np.argmax(acc))
    thr = float(s[i - 1]) if i > 0 else float(np.nextafter(s[0], np.inf))
    return float(acc[i]), thr


def eer_by_attack(scores: np.ndarray, index: Any) -> dict[str, float]:
    """EER of bona fide against each spoofing system alone."""
    bona = scores[index.label.to_numpy() == 1]
    out = {}
    for system in sorted(index.system_id[index.label == 0].unique()):
        spoof = scores[(index.system_id == system).to_numpy() & (index.label == 0).to_numpy()]
        out[system] = compute_eer(bona, spoof)[0]
    return out


def summarize(scores: np.ndarray, index: Any) -> dict[str, Any]:
    labels = index.label.to_numpy()
    eer, thr = compute_eer(scores[labels == 1], scores[labels == 0])
    best_acc, best_thr = best_accuracy(scores, labels)
    return {"eer": eer, "eer_threshold": thr, "accuracy_at_eer_threshold": accuracy_at(scores, labels, thr),
            "best_accuracy": best_acc, "best_accuracy_threshold": best_thr, "per_attack_eer": eer_by_attack(scores, index)}


def score_file_text(scores: np.ndarray, index: Any) -> str:
    """The usual CM score file: ``utt_id system_id key score`` per line."""
    return "".join(f"{u} {s} {k} {v:.6f}\n" for u, s, k, v in zip(index.utt_id, index.system_id, index.key, scores))


# --------------------------------------------------------------------------- min t-DCF (ASVspoof 2019)


# The ASVspoof 2019 cost model (evaluation plan; evaluate_tDCF_asvspoof19.py of the organisers' t-DCF package):
# P_spoof = 0.05, P_tar = 0.95 * 0.99, P_non = 0.95 * 0.01; C_miss_asv = C_miss_cm = 1, C_fa_asv = C_fa_cm = 10.
COST_MODEL = {"Pspoof": 0.05, "Ptar": 0.95 * 0.99, "Pnon": 0.95 * 0.01,
              "Cmiss_asv": 1.0, "Cfa_asv": 10.0, "Cmiss_cm": 1.0, "Cfa_cm": 10.0}


def asv_eer_threshold(tar: np.ndarray, non: np.ndarray) -> tuple[float, float]:
    """ASV EER and the threshold the official t-DCF code fixes the ASV at.

    As ``compute_eer`` of the organisers' ``eval_metrics.py``: sort all trials (stable, targets
    first among equal scores); at threshold k-th sorted score the first k trials are rejected;
    take the point where |FRR - FAR| is smallest, EER = (FRR + FAR) / 2 there; the threshold is that
    score (below all scores, minus 0.001, for k = 0). Reproduced exactly, so C1 and C2 of
    :func:`min_tdcf` equal the official ones on the official ASV scores.
    """
    tar, non = np.asarray(tar, np.float64), np.asarray(non, np.float64)
    scores = np.concatenate([tar, non])
    order = np.argsort(scores, kind="mergesort")
    is_tar = np.concatenate([np.ones(tar.size), np.zeros(non.size)])[order]
    frr = np.concatenate([[0.0], np.cumsum(is_tar) / tar.size])
    far = np.concatenate([[1.0], (non.size - np.cumsum(1 - is_tar)) / non.size])
    thr = np.concatenate([[scores[order[0]] - 0.001], scores[order]])
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(thr[i])


def asv_error_rates(asv: dict[str, np.ndarray]) -> dict[str, float]:
    """The ASV operating point of the t-DCF: EER threshold, P_fa, P_miss, P_miss_spoof (official rules:
    a trial is accepted when ``score >= threshold``)."""
    eer, thr = asv_eer_threshold(asv["target"], asv["nontarget"])
    return {"eer": eer, "threshold": thr,
            "pfa": float(np.mean(asv["nontarget"] >= thr)),
            "pmiss": float(np.mean(asv["target"] < thr)),
            "pmiss_spoof": float(np.mean(asv["spoof"] < thr))}


def min_tdcf(bona_cm: np.ndarray, spoof_cm: np.ndarray, asv: dict[str, np.ndarray]) -> float:
    """Normalised minimum tandem DCF, ASVspoof 2019 formulation and cost model (:data:`COST_MODEL`).

    As the organisers' ``compute_tDCF`` (Kinnunen et al., Odyssey 2018; ASVspoof 2019 evaluation
    plan): the ASV is fixed at its EER threshold (:func:`asv_error_rates`), then
    ``C1 = P_tar (C_miss_cm - C_miss_asv P_miss_asv) - P_non C_fa_asv P_fa_asv``,
    ``C2 = C_fa_cm P_spoof (1 - P_miss_spoof_asv)``, and
    ``min over CM thresholds s of (C1 P_miss_cm(s) + C2 P_fa_cm(s)) / min(C1, C2)``.
    One difference: the CM thresholds are the distinct scores (tied scores are accepted or rejected
    together, :func:`repropipe.metrics.det_curve`); the official DET also visits points between tied
    scores that no threshold reaches, so with ties in the CM scores it can come out lower. Without
    ties the two are equal (tested). NaN when C1 or C2 is not positive (no meaningful t-DCF).
    """
    c1, c2 = tdcf_costs(asv)
    if c1 <= 0 or c2 <= 0:
        return float("nan")
    frr, far, _ = det_curve(bona_cm, spoof_cm)
    return float(np.min((c1 * frr + c2 * far) / min(c1, c2)))


def tdcf_costs(asv: dict[str, np.ndarray]) -> tuple[float, float]:
    """C1 and C2 of :func:`min_tdcf` (the ASV fixed at its EER threshold)."""
    m = COST_MODEL
    r = asv_error_rates(asv)
    c1 = m["Ptar"] * (m["Cmiss_cm"] - m["Cmiss_asv"] * r["pmiss"]) - m["Pnon"] * m["Cfa_asv"] * r["pfa"]
    c2 = m["Cfa_cm"] * m["Pspoof"] * (1 - r["pmiss_spoof"])
    return float(c1), float(c2)


# --------------------------------------------------------------------------- the evaluate stage


CONTROL_WHAT = ("lfcc_lcnn trained on randomly shuffled training labels (same recipe, same data, one seed): "
                "a model that cannot learn the task.")
PUBLISHED = "published"  # the "seed" of a run scored with the authors' published weights
PRETRAINED_SUFFIX = "_pretrained"
REFERENCE = "lfcc_gmm"  # the classical baseline (repropipe.asvspoof.baseline) every model is tested against
GMM_WHAT = ("LFCC-GMM: one 64-component diagonal GaussianMixture per class on the LFCC frames (with deltas) of the "
            "training utterances, score = mean frame log-likelihood ratio (the organisers' classical baseline, "
            "demo-sized); fitted once with the stage seed.")


@dataclass
class Evaluation:
    """What the evaluate stage computed: every scored run, the per-model summary, the eval scores and the
    uncertainty, i.e. everything figures.py and section.py need (they compute nothing themselves)."""

    results: list[dict[str, Any]]  # one row per (model, seed) scored, the LFCC-GMM reference last
    per_model: dict[str, dict[str, Any]]  # mean and spread over seeds (:func:`_aggregate`)
    scores_eval: dict[tuple[str, Any], np.ndarray]  # (model, seed) -> eval scores, in eval_index order
    eval_index: Any  # the eval utterances (pandas, one row per score)
    histories: dict[str, list[dict[str, float]]]  # "<model> seed <k>" -> training history
    unc: dict[str, Any]  # 95 % intervals and tests (:func:`_uncertainty`)
    reference: str | None  # REFERENCE when the LFCC-GMM was fitted
    asv: dict[str, dict[str, float]]  # split -> the ASV operating point of the min t-DCF
    manifest: dict[str, Any]  # the features stage's manifest
    data_source: str


def pct(v: float) -> float:
    """A rate in percent, 2 decimals (tables, legends)."""
    return round(100.0 * v, 2)


def evaluate_all(ctx: StageContext, cfg: EvaluateConfig, device: torch.device, feat_dir: str, models_dir: str,
                 out: str) -> Evaluation:
    """Score every trained run, every published model of ``cfg.pretrained`` and the LFCC-GMM on dev and eval;
    write ``out/scores/*.txt`` and ``out/metrics.json``."""
    manifest = json.loads((Path(feat_dir) / "manifest.json").read_text())
    runs = json.loads((Path(models_dir) / "manifest.json").read_text())["runs"]
    # the organisers' ASV scores, copied (and checked) by the features stage when the data has them
    asv = {s: read_asv_scores(Path(feat_dir) / f"asv_scores.{s}.txt", split=s) for s in ("dev", "eval")
           if (Path(feat_dir) / f"asv_scores.{s}.txt").exists()}
    feats: dict[tuple[str, str], Any] = {}
    gmm_row = _gmm_baseline(ctx.seed, feat_dir, feats, asv, out)
    published = load_pretrained_runs(cfg.pretrained, list(manifest["config"]["kinds"]))
    results, scores_eval, histories = _score_runs(runs, published, feat_dir, feats, asv, device, out)
    if gmm_row is not None:
        row, s = gmm_row
        results.append(row)
        scores_eval[(REFERENCE, row["seed"])] = s

    # every feature kind holds the same utterances in the same order (one index), so any eval index will do
    eval_index = next(v[1] for k, v in feats.items() if k[0] == "eval")
    per_model = _aggregate(results)
    reference = REFERENCE if gmm_row is not None else None
    unc = _uncertainty(per_model, scores_eval, eval_index, asv.get("eval"), reference, ctx.seed)
    ev = Evaluation(results=results, per_model=per_model, scores_eval=scores_eval, eval_index=eval_index,
                    histories=histories, unc=unc, reference=reference,
                    asv={s: asv_error_rates(a) for s, a in asv.items()}, manifest=manifest,
                    data_source=manifest["data_source"])
    ctx.write_metrics(f"{out}/metrics.json", _metrics(ev), data_source=ev.data_source, device=str(device))
    return ev


def _score_runs(runs: list[dict[str, Any]], published: list[dict[str, Any]], feat_dir: str,
                feats: dict[tuple[str, str], Any], asv: dict[str, dict[str, np.ndarray]], device: torch.device,
                out: str) -> tuple[list[dict[str, Any]], dict[tuple[str, Any], np.ndarray], dict[str, Any]]:
    """Score the trained runs, then the published models, on dev and eval: result rows, eval scores, histories."""
    import torch

    from repropipe.asvspoof.features import load_features
    from repropipe.asvspoof.train import identity_norm, load_trained, score

    results: list[dict[str, Any]] = []
    scores_eval: dict[tuple[str, Any], np.ndarray] = {}
    histories: dict[str, list[dict[str, float]]] = {}
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
    return results, scores_eval, histories


def _metrics(ev: Evaluation) -> dict[str, Any]:
    """Flat keys for `dvc metrics` (metrics.json); per model, per run, the reference apart, intervals, controls
    (details.json: ``write_metrics`` puts every value that is not a number there)."""
    per_model, unc, reference, results = ev.per_model, ev.unc, ev.reference, ev.results
    flat: dict[str, Any] = {}
    for m, u in unc.items():
        for key in ("eer_mean", "min_tdcf_mean"):
            if key in u:
                flat[f"{key}_ci_low/{m}"] = u[key]["ci_low"]
                flat[f"{key}_ci_high/{m}"] = u[key]["ci_high"]
                if "vs_reference" in u[key]:
                    flat[f"{key}_diff_vs_ref/{m}"] = u[key]["vs_reference"]["diff"]
                    flat[f"{key}_p_vs_ref/{m}"] = u[key]["vs_reference"]["p_value"]
    return {
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
        "asv": ev.asv,
        "controls": {m: {"what": CONTROL_WHAT, "eval_eer": v["eval_eer_mean"], "expected": "near 0.5"}
                     for m, v in per_model.items() if v["control"]},
        "counts": ev.manifest["counts"],
        "skipped": len(ev.manifest["skipped"]),
        "min_tdcf_available": bool(ev.asv),
    }


def print_summary(ev: Evaluation) -> None:
    """Eval EER per model on the console: mean and spread over seeds, interval, test against the reference."""
    per_model, unc, reference = ev.per_model, ev.unc, ev.reference
    print("\nasvspoof eval EER (mean +- std over seeds):")
    for m, v in per_model.items():
        u = unc[m]["eer_mean"]
        print(f"  {m:26s} {100 * v['eval_eer_mean']:6.2f} % +- {100 * v['eval_eer_std']:.2f}"
              f"  95 % CI [{100 * u['ci_low']:.2f}, {100 * u['ci_high']:.2f}]"
              + (f"  vs {reference}: {stats.fmt_test(u['vs_reference'], 2, 100)}" if "vs_reference" in u else "")
              + ("   (control: shuffled train labels, expect ~50 %)" if v["control"] else ""))


def _gmm_baseline(seed: int, feat_dir: str, feats: dict[tuple[str, str], Any],
                  asv: dict[str, dict[str, np.ndarray]], out: str) -> tuple[dict[str, Any], np.ndarray] | None:
    """Fit and score the LFCC-GMM reference; None when the features hold no LFCC."""
    from repropipe.asvspoof import baseline
    from repropipe.asvspoof.features import load_features

    if not (Path(feat_dir) / "lfcc").is_dir():
        log.warning("event=no_reference reason=no_lfcc_features")
        return None
    x, index = load_features(feat_dir, "train", "lfcc")
    gmm = baseline.fit(x, index.label.to_numpy(), seed)
    row: dict[str, Any] = {"model": REFERENCE, "seed": seed, "selected_epoch": None, "control": False,
                           "baseline": True}
    s_eval = np.zeros(0)
    for split in ("dev", "eval"):
        key = (split, "lfcc")
        if key not in feats:
            feats[key] = load_features(feat_dir, split, "lfcc")
        x, index = feats[key]
        s = baseline.score(gmm, x)
        io.atomic_write_text(f"{out}/scores/{REFERENCE}_seed{seed}.{split}.txt", score_file_text(s, index))
        m = summarize(s, index)
        lab = index.label.to_numpy()
        m["min_tdcf"] = min_tdcf(s[lab == 1], s[lab == 0], asv[split]) if split in asv else "not available"
        row[split] = m
        s_eval = s
    log.info("event=scored model=%s dev_eer=%.4f eval_eer=%.4f", REFERENCE, row["dev"]["eer"], row["eval"]["eer"])
    return row, s_eval


def load_pretrained_runs(pretrained: PretrainedConfig, kinds: list[str]) -> list[dict[str, Any]]:
    """The published models named in ``asvspoof.evaluate.pretrained``, loaded (strictly) and described.

    Each needs the ``wave`` features (raw waveform input); a missing file is a DataError naming it.
    """
    import hashlib

    from repropipe.asvspoof.models import FEATURE_OF, load_pretrained_aasist
    from repropipe.io import DataError

    out = []
    for name, path in pretrained.named().items():
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


def _aggregate(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: mean and spread over its seeds of dev and eval EER, per-attack EER and min t-DCF."""
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
