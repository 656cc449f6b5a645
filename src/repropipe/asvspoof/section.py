"""The ASVspoof section of the report (tables, notes, verdict sentences), built from the evaluate stage's result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repropipe import stats
from repropipe.asvspoof.evaluate import CONTROL_WHAT, GMM_WHAT, PRETRAINED_SUFFIX, pct
from repropipe.report.section import AnchorRow, Figure, Section, Table, anchor_table

if TYPE_CHECKING:
    from repropipe.asvspoof.evaluate import Evaluation

ANCHOR = ("Published anchors, real ASVspoof 2019 LA eval set: LFCC-GMM, the challenge baseline, 8.09 % EER, min "
          "t-DCF 0.2116; LFCC-LCNN-LSTM-sum with P2SGrad (NII; Wang & Yamagishi 2021, 'A comparative study on recent "
          "neural spoofing countermeasures') 1.92 % EER, the best of six training runs (range 1.92-3.10 %), the "
          "system registered here as lfcc_lcnn_lstmsum_p2s, not lfcc_lcnn (whose back end differs); AASIST 0.83 % "
          "EER, min t-DCF 0.0275, and AASIST-L 0.99 %, 0.0309 (Jung et al. 2022, the authors' released models). "
          "Mean and spread are over training seeds, since seed alone moves EER on this task.")
PUBLISHED_ON = "real ASVspoof 2019 LA eval"
# model -> (what it is, published eval EER (%), published min t-DCF or None, published by, which statistic);
# the numbers of ANCHOR, for the anchor table
PUBLISHED: dict[str, tuple[str, float, float | None, str, str]] = {
    "lfcc_gmm": ("LFCC-GMM, the challenge baseline (512-component GMMs there, demo-sized mixtures here)", 8.09,
                 0.2116, "ASVspoof 2019 organisers (baseline B2)", "the baseline's published result"),
    "lfcc_lcnn_lstmsum_p2s": ("LFCC-LCNN-LSTM-sum-P2SGrad", 1.92, None,
                              "NII, Wang & Yamagishi 2021", "best of six training runs; range 1.92-3.10 %"),
    "aasist": ("AASIST", 0.83, 0.0275, "Jung et al. 2022", "the authors' released model"),
    "aasist_l": ("AASIST-L", 0.99, 0.0309, "Jung et al. 2022", "the authors' released model"),
}


def build(ev: Evaluation, figs: list[Figure]) -> Section:
    """The ASVspoof section of the report: per-run and per-model EER table, per-attack table, notes, verdicts."""
    results, per_model, manifest, data_source = ev.results, ev.per_model, ev.manifest, ev.data_source
    asv, unc, reference = ev.asv, ev.unc, ev.reference
    have_asv = "eval" in asv
    tdcf = (lambda r: round(r["eval"]["min_tdcf"], 4)) if have_asv else (lambda r: "not available")

    def ci(m: str, key: str, scale: float, digits: int) -> str:
        u = unc.get(m, {}).get(key)
        return f" [{u['ci_low'] * scale:.{digits}f}, {u['ci_high'] * scale:.{digits}f}]" if u else ""

    def versus(m: str, key: str, scale: float, digits: int) -> str:
        if m == reference:
            return "reference"
        return stats.fmt_test(unc.get(m, {}).get(key, {}).get("vs_reference"), digits, scale) if reference else ""

    rows = [[_label(r["model"], r.get("control", False)), r["seed"], pct(r["dev"]["eer"]), pct(r["eval"]["eer"]),
             round(r["eval"]["accuracy_at_eer_threshold"], 4), round(r["eval"]["best_accuracy"], 4), tdcf(r), "", ""]
            for r in results]
    rows += [[f"{m} (mean ± std{', reference' if m == reference else ''})", ",".join(map(str, v["seeds"])),
              pct(v["dev_eer_mean"]),
              f"{pct(v['eval_eer_mean'])} ± {pct(v['eval_eer_std'])}{ci(m, 'eer_mean', 100, 2)}", "", "",
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
            return pct(per_model[m]["per_attack_eer_mean"].get(a, float("nan")))
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
                     f"ASV EER {pct(a['eer'])} %, P_fa {pct(a['pfa'])} %, P_miss {pct(a['pmiss'])} %, "
                     f"spoofs accepted {pct(1 - a['pmiss_spoof'])} %.")
    else:
        notes.append("min t-DCF: not available (the ASV scores of the real set, ASVspoof2019.LA.asv.*.scores.txt, "
                     "are not part of this data).")
    data = ("synthetic stand-in for ASVspoof 2019 LA (source-filter voices; spoofs through vocoder-like artifacts)"
            if data_source == "synthetic" else f"ASVspoof 2019 LA ({manifest['source']})")
    anchors = anchor_table(anchor_rows(ev), synthetic=data_source == "synthetic",
                           data=f"the eval partition of the {data}",
                           anchor="Measured: eval EER (mean over this run's seeds) and min t-DCF with 95 % bootstrap "
                                  "intervals, as in the tables above. Published: the authors' numbers, copied, not "
                                  "measured by this pipeline.")
    return Section(
        branch="asvspoof", title="Voice anti-spoofing: ASVspoof 2019 LA",
        summary="Bona fide versus spoofed (TTS/VC) speech, scored by equal error rate on the evaluation partition, "
                "whose attack systems are unseen in training. LFCC-LCNN with a sigmoid/BCE head and with a one-class "
                "softmax head, and a log-mel ResNet18, each trained with several seeds.",
        data_source=data, synthetic=data_source == "synthetic", tables=[main, per_attack, anchors], figures=figs,
        notes=notes)


def anchor_rows(ev: Evaluation) -> list[AnchorRow]:
    """Each anchor system of :data:`PUBLISHED` as run here (trained, and scored with the authors' weights when
    ``asvspoof.evaluate.pretrained`` named them), eval EER and, where published, min t-DCF."""
    out = []
    for model, (what, eer, tdcf, source, statistic) in PUBLISHED.items():
        for name in (model, f"{model}{PRETRAINED_SUFFIX}"):
            if name != model and name not in ev.per_model:
                continue  # the authors' weights appear only when the evaluate stage was given them
            system = f"{_label(name, False)}: {what}"
            out.append(_anchor_row(ev, name, system, "eval EER (%)", eer, source, statistic, 100, 2))
            if tdcf is not None:
                out.append(_anchor_row(ev, name, system, "min t-DCF (eval)", tdcf, source, statistic, 1, 4))
    return out


def _anchor_row(ev: Evaluation, name: str, system: str, metric: str, published: float, source: str,
                statistic: str, scale: float, digits: int) -> AnchorRow:
    """One anchor row: this run's mean over seeds of ``name`` with its interval, or why there is none."""
    eer = metric.startswith("eval EER")
    v = ev.per_model.get(name)
    measured: float | str | None = None
    ci, how = None, ""
    if v is not None:
        key, unc_key = ("eval_eer_mean", "eer_mean") if eer else ("eval_min_tdcf_mean", "min_tdcf_mean")
        measured = v[key] * scale if key in v else "not available (no ASV scores in this data)"
        u = ev.unc.get(name, {}).get(unc_key)
        ci = (u["ci_low"] * scale, u["ci_high"] * scale) if u and key in v else None
        seeds = v["seeds"]
        how = ("authors' weights, scored here" if name.endswith(PRETRAINED_SUFFIX) else
               f"mean of {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}")
    return AnchorRow(system=system, metric=metric, measured=measured, measured_ci=ci, published=published,
                     published_on=PUBLISHED_ON, source=source, statistic=statistic, digits=digits, measured_as=how)


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
