"""The EEG report section: the results table beside the EEGNet anchor, per-subject accuracy, the
benchmark times, and verdict sentences on each run against the CSP + LDA baseline.

Built from :class:`repropipe.eeg.evaluate.Results`; no scoring here.
"""

from __future__ import annotations

from typing import Any

from repropipe.eeg.evaluate import ANCHOR_ACCURACY, REFERENCE, Results
from repropipe.report.section import AnchorRow, Figure, Section, Table, anchor_table

ANCHOR = (f"Anchor: EEGNet, cross-subject, two classes (left/right imagined fist), PhysioNet EEG MMI: "
          f"{100 * ANCHOR_ACCURACY:.2f} % accuracy (Wang et al. 2020, MeMeA, 5 folds of 21 unseen subjects). "
          "Numbers here are on held-out subjects.")
ANCHOR_ON = ("real PhysioNet EEG MMI, cross-subject, two classes (left/right imagined fist; runs 4/8/12, 105 "
             "subjects, 3 s from the cue, 64 channels at 160 Hz)")
ANCHOR_SOURCE = ("Wang, Hersche, Toemekce, Kaya, Magno & Benini 2020, 'An Accurate EEGNet-based Motor-Imagery "
                 "BCI for Low-Power Edge Computing', IEEE MeMeA (arXiv:2004.00077)")
ANCHOR_STATISTIC = ("mean over 5 subject-disjoint folds (21 subjects each) of the held-out accuracy after the last "
                    "of 100 epochs (their 'global validation'); their EEGNet (main_global.py): kernel 128, dropout 0.2")


def build(res: Results, figures: list[Figure]) -> Section:
    """The section eeg_evaluate writes to results/eeg/section.json."""
    return _section(res.every, res.bench, res.meta, res.data_source, res.synthetic, figures, res.protocol, res.folds,
                    res.vs_ref)


def _section(results: dict[str, Any], bench: dict[str, Any], meta: dict[str, Any], data_source: str, synthetic: bool,
             figures: list[Figure], protocol: str = "cross_subject", folds: int = 0,
             vs_ref: dict[str, Any] | None = None) -> Section:
    from repropipe import stats

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
    anchor_row = ["EEGNet (published anchor, cross-subject)", "all", "", ANCHOR_ACCURACY, "", "", "", "", ""] + (
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
        data_source=data_source, synthetic=synthetic,
        tables=tables + [anchors_table(results, data_source, synthetic, within, subjects)], figures=figures,
        notes=_verdicts(results, vs_ref) + ([f"{meta['n_skipped']} recording(s) skipped as bad input."]
                                            if meta["n_skipped"] else []),
    )


def anchors_table(results: dict[str, Any], data_source: str, synthetic: bool, within: bool,
                  subjects: list[str]) -> Table:
    """The eegnet run's accuracy in this run (trial and chunk) beside EEGNet's published cross-subject accuracy."""
    r = results.get("eegnet")
    rows = [AnchorRow(system="eegnet: EEGNet-8,2 (torcheeg), trained here", metric=f"{level} accuracy{suffix}",
                      measured=None if r is None else r[level]["accuracy"],
                      measured_ci=(r[level]["ci_low"], r[level]["ci_high"]) if r and "ci_low" in r[level] else None,
                      published=ANCHOR_ACCURACY, published_on=ANCHOR_ON, source=ANCHOR_SOURCE,
                      statistic=ANCHOR_STATISTIC, digits=4)
            for level, suffix in (("trial", ""), ("chunk", " (post-cue)"))]
    protocol = (f"within-subject cross-validation over subjects {[int(s) for s in subjects]}" if within else
                f"held-out subjects {[int(s) for s in subjects]}")
    return anchor_table(rows, synthetic=synthetic, data=f"{data_source} data, {protocol}",
                        caveats=["This run is within-subject; the published anchor is cross-subject: not comparable"]
                        if within else [])


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
