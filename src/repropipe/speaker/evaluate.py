"""Identification, test predictions, verification EER and enrolment scoring for every trained model.

* Identification: accuracy on the held-out utterances of the training speakers (val shard), whole
  utterances with padding masks. Classifiers use their head; the triplet embedder has none, so it
  identifies by the nearest speaker centroid of its training embeddings (cosine).
* Predictions: testdata.json's utterances in the course CSV format (``Id,Category``).
* Verification: every pair of utterances of the held-out speakers (sampled down to ``max_trials``),
  scored by the cosine of their embeddings (the classifier's pooled vector, the triplet
  embedding); EER with the shared ``repropipe.metrics.compute_eer``.
* Enrolment: each held-out speaker's utterances split into enrolment and test halves; a test
  utterance scores against a claimed speaker as the mean of its top-k cosine scores with that
  speaker's enrolment embeddings; accept when the score clears a threshold (EER threshold reported).
* Uncertainty (:func:`uncertainty`): 95 % bootstrap intervals and paired tests against the reference
  model. Identification resamples speakers, then their utterances; verification and enrolment trials
  each join two speakers, so speakers are resampled and a trial counts as often as the product of its
  two speakers' draws (utterances of one speaker are not independent trials).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repropipe import io
from repropipe.metrics import compute_eer
from repropipe.speaker.config import EvaluateConfig

log = logging.getLogger("repropipe.speaker")

REFERENCE = "speaker_hw4_baseline"  # every other model is tested against the course's baseline


@dataclass
class Trials:
    target: np.ndarray
    nontarget: np.ndarray
    # every trial in a fixed order, for the bootstrap: score, same-speaker flag, the two speakers it joins
    scores: np.ndarray | None = None
    is_target: np.ndarray | None = None
    speakers: np.ndarray | None = None  # [n, 2]


def pair_trials(emb: torch.Tensor, labels: torch.Tensor, max_trials: int, seed: int) -> Trials:
    """Cosine score of every unordered pair (i < j), or a seeded sample of ``max_trials`` of them."""
    e = F.normalize(emb.double(), dim=1)
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    if len(i) > max_trials:
        keep = torch.randperm(len(i), generator=torch.Generator().manual_seed(seed))[:max_trials].sort().values
        i, j = i[keep], j[keep]
    scores = (e[i] * e[j]).sum(1).numpy()
    same = (labels[i] == labels[j]).numpy()
    return Trials(scores[same], scores[~same], scores, same, torch.stack([labels[i], labels[j]], 1).numpy())


def enrolment_trials(emb: torch.Tensor, labels: torch.Tensor, top_k: int, seed: int) -> Trials:
    """Mean of the top-k cosine scores against each claimed speaker's enrolment set (see module doc)."""
    e = F.normalize(emb.double(), dim=1)
    g = torch.Generator().manual_seed(seed + 1)
    enrol_idx, test_idx = [], []
    speakers = sorted(set(labels.tolist()))
    for s in speakers:
        idx = (labels == s).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        half = max(1, len(idx) // 2)
        enrol_idx.append(idx[:half])
        test_idx.append(idx[half:])
    tests = torch.cat(test_idx)
    if len(tests) == 0:
        raise ValueError("enrolment scoring needs at least 2 utterances for some held-out speaker")
    scores = torch.empty(len(tests), len(speakers), dtype=torch.float64)
    for k, idx in enumerate(enrol_idx):
        sim = e[tests] @ e[idx].T
        scores[:, k] = sim.topk(min(top_k, len(idx)), dim=1).values.mean(1)
    claimed = torch.tensor(speakers)[None, :] == labels[tests][:, None]
    pairs = torch.stack(torch.broadcast_tensors(labels[tests][:, None], torch.tensor(speakers)[None, :]), -1)
    return Trials(scores[claimed].numpy(), scores[~claimed].numpy(), scores.flatten().numpy(),
                  claimed.flatten().numpy(), pairs.reshape(-1, 2).numpy())


def eer_summary(trials: Trials) -> dict[str, float]:
    eer, thr = compute_eer(trials.target, trials.nontarget)
    return {"eer": eer, "threshold": thr, "n_target": int(trials.target.size), "n_nontarget": int(trials.nontarget.size)}


def predictions_csv(names: list[str], pred: torch.Tensor, classes: list[str]) -> str:
    """The HW4 submission format: header ``Id,Category``, one row per testdata.json utterance."""
    rows = ["Id,Category"] + [f"{n},{classes[int(k)]}" for n, k in zip(names, pred)]
    return "\n".join(rows) + "\n"


def evaluate_model(model: torch.nn.Module, is_classifier: bool, shards: dict[str, Any], classes: list[str],
                   device: torch.device, cfg: EvaluateConfig, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Numbers for one model, plus the raw material for plots (trials, predictions)."""
    from repropipe.speaker.train import centroids, embed_shard

    bs = cfg.batch_size
    val, test, ver, train = shards["val"], shards["test"], shards["verify"], shards["train"]
    if is_classifier:
        def predict(shard: Any) -> torch.Tensor:
            return embed_shard(model, shard, device, bs, logits=True).argmax(1)
    else:
        c = centroids(F.normalize(embed_shard(model, train, device, bs), dim=1), train.labels, len(classes))

        def predict(shard: Any) -> torch.Tensor:
            return (F.normalize(embed_shard(model, shard, device, bs), dim=1) @ c.T).argmax(1)

    out: dict[str, Any] = {}
    id_correct = np.zeros(0, bool)
    if len(val):
        id_correct = (predict(val) == val.labels).numpy()
        out["identification_accuracy"] = float(id_correct.mean())
    test_pred = predict(test) if len(test) else torch.zeros(0, dtype=torch.int64)
    emb = embed_shard(model, ver, device, bs)
    pairs = pair_trials(emb, ver.labels, cfg.max_trials, seed)
    enrol = enrolment_trials(emb, ver.labels, cfg.top_k, seed)
    pv, ev = eer_summary(pairs), eer_summary(enrol)
    out.update({"verification_eer": pv["eer"], "verification_threshold": pv["threshold"],
                "verification_target_trials": pv["n_target"], "verification_nontarget_trials": pv["n_nontarget"],
                "enrolment_eer": ev["eer"], "enrolment_threshold": ev["threshold"],
                "enrolment_target_trials": ev["n_target"], "enrolment_nontarget_trials": ev["n_nontarget"]})
    return out, {"pairs": pairs, "enrol": enrol, "test_pred": test_pred,
                 "id": (val.labels.numpy() if len(val) else np.zeros(0, int), id_correct)}


def uncertainty(raw: dict[str, dict[str, Any]], points: dict[str, dict[str, Any]], reference: str, seed: int,
                ) -> dict[str, dict[str, Any]]:
    """Intervals for identification accuracy, verification EER and enrolment EER of every model, and
    paired bootstrap tests (same replicates for every model) against ``reference``, plus exact McNemar
    for identification. ``raw``: per model, what :func:`evaluate_model` returned second."""
    from repropipe import stats

    names = list(raw)
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    first = raw[names[0]]
    for key, trials_of in (("verification_eer", "pairs"), ("enrolment_eer", "enrol")):
        ts = [raw[n][trials_of] for n in names]
        for t in ts:
            if not np.array_equal(t.speakers, ts[0].speakers) or not np.array_equal(t.is_target, ts[0].is_target):
                raise ValueError(f"{key}: models were scored on different trials")
        sets = [stats.ScoreSet(t.scores, t.is_target) for t in ts]
        boot = stats.Resampler(len(ts[0].scores), seed=seed, name=f"speaker/{key}", clusters=ts[0].speakers).run(
            lambda w: np.stack([s.eer(w) for s in sets], 1))
        cis, tests = stats.compare_columns({n: points[n][key] for n in names}, boot, reference)
        for n in names:
            out[n][key] = {**cis[n], **({"vs_reference": {**tests[n], "test": "paired bootstrap over speakers"}}
                                        if n in tests else {})}
    spk, _ = first["id"]
    if len(spk):
        corr = np.stack([raw[n]["id"][1] for n in names], 1).astype(float)
        boot = stats.Resampler(len(spk), seed=seed, name="speaker/identification", clusters=spk).run(
            lambda w: (w @ corr) / w.sum(1, keepdims=True))
        cis, tests = stats.compare_columns({n: float(corr[:, i].mean()) for i, n in enumerate(names)}, boot,
                                           reference)
        r = names.index(reference) if reference in names else None
        for i, n in enumerate(names):
            entry: dict[str, Any] = dict(cis[n])
            if n in tests and r is not None:
                entry["vs_reference"] = {**tests[n], "test": "paired bootstrap over speakers",
                                         "mcnemar": stats.mcnemar_exact(corr[:, i], corr[:, r])}
            out[n]["identification_accuracy"] = entry
    return out


@dataclass
class Evaluation:
    """Every trained model scored on the same shards, trials and bootstrap replicates."""

    manifest: dict[str, Any]             # data/features/speaker/manifest.json
    results: dict[str, dict[str, Any]]   # per model: {"metrics": ..., and evaluate_model's raw material}
    histories: dict[str, list[dict[str, float]]]  # per model: its history.json (one entry per epoch)
    reference: str                       # the model every other one is tested against
    uncertainty: dict[str, dict[str, Any]]  # per model and metric: interval, and the test against the reference

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def per_model(self) -> dict[str, dict[str, Any]]:
        return {n: r["metrics"] for n, r in self.results.items()}

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)


def evaluate_all(features: str | Path, models_dir: str | Path, out: str | Path, models: list[str], cfg: EvaluateConfig,
                 seed: int, device: torch.device) -> Evaluation:
    """Score every model in ``models``, write its testdata.json predictions under ``out``/predictions, and
    compute the intervals and paired tests against :data:`REFERENCE` (the first model when it was not trained)."""
    from repropipe.speaker.features import SPLITS, load_shard, read_manifest
    from repropipe.speaker.models import CLASSIFIERS
    from repropipe.speaker.train import load_model

    manifest = read_manifest(features)
    shards = {s: load_shard(Path(features) / f"{s}.pt") for s in SPLITS}
    classes = manifest["classes"]
    results, histories = {}, {}
    for name in models:
        run_dir = Path(models_dir) / name
        model = load_model(run_dir, device)
        metrics, raw = evaluate_model(model, name in CLASSIFIERS, shards, classes, device, cfg, seed)
        io.atomic_write_text(Path(out) / "predictions" / f"{name}.csv",
                             predictions_csv(shards["test"].names, raw["test_pred"], classes))
        results[name] = {"metrics": metrics, **raw}
        histories[name] = json.loads((run_dir / "history.json").read_text())
        log.info("stage=speaker_evaluate model=%s %s", name,
                 " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    per_model = {n: r["metrics"] for n, r in results.items()}
    reference = REFERENCE if REFERENCE in per_model else next(iter(per_model))
    return Evaluation(manifest, results, histories, reference, uncertainty(results, per_model, reference, seed))


def metrics(ev: Evaluation) -> dict[str, Any]:
    """One flat key per model and number (metrics.json, what `dvc metrics show` lists), then the nested detail
    (details.json: ``write_metrics`` puts every value that is not a number there)."""
    flat: dict[str, Any] = {}
    for n, u in ev.uncertainty.items():
        for key, v in u.items():
            flat[f"{key}/{n}"] = v["value"]
            flat[f"{key}_ci_low/{n}"] = v["ci_low"]
            flat[f"{key}_ci_high/{n}"] = v["ci_high"]
            if "vs_reference" in v:
                flat[f"{key}_diff_vs_ref/{n}"] = v["vs_reference"]["diff"]
                flat[f"{key}_p_vs_ref/{n}"] = v["vs_reference"]["p_value"]
            if "mcnemar" in v.get("vs_reference", {}):
                flat[f"{key}_mcnemar_p_vs_ref/{n}"] = v["vs_reference"]["mcnemar"]["p_value"]
    return {
        **flat, "reference": ev.reference, "uncertainty": ev.uncertainty,
        "models": ev.per_model, "n_classes": len(ev.classes), "chance_accuracy": ev.chance,
        "n_verify_speakers": len(ev.manifest["verify_speakers"]), "counts": ev.manifest["counts"],
    }
