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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repropipe.metrics import compute_eer


@dataclass
class Trials:
    target: np.ndarray
    nontarget: np.ndarray


def pair_trials(emb: torch.Tensor, labels: torch.Tensor, max_trials: int, seed: int) -> Trials:
    """Cosine score of every unordered pair (i < j), or a seeded sample of ``max_trials`` of them."""
    e = F.normalize(emb.double(), dim=1)
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    if len(i) > max_trials:
        keep = torch.randperm(len(i), generator=torch.Generator().manual_seed(seed))[:max_trials].sort().values
        i, j = i[keep], j[keep]
    scores = (e[i] * e[j]).sum(1).numpy()
    same = (labels[i] == labels[j]).numpy()
    return Trials(scores[same], scores[~same])


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
    return Trials(scores[claimed].numpy(), scores[~claimed].numpy())


def eer_summary(trials: Trials) -> dict[str, float]:
    eer, thr = compute_eer(trials.target, trials.nontarget)
    return {"eer": eer, "threshold": thr, "n_target": int(trials.target.size), "n_nontarget": int(trials.nontarget.size)}


def predictions_csv(names: list[str], pred: torch.Tensor, classes: list[str]) -> str:
    """The HW4 submission format: header ``Id,Category``, one row per testdata.json utterance."""
    rows = ["Id,Category"] + [f"{n},{classes[int(k)]}" for n, k in zip(names, pred)]
    return "\n".join(rows) + "\n"


def evaluate_model(model: torch.nn.Module, is_classifier: bool, shards: dict[str, Any], classes: list[str],
                   device: torch.device, p: dict[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Numbers for one model, plus the raw material for plots (trials, predictions)."""
    from repropipe.speaker.train import centroids, embed_shard

    bs = p["batch_size"]
    val, test, ver, train = shards["val"], shards["test"], shards["verify"], shards["train"]
    if is_classifier:
        def predict(shard: Any) -> torch.Tensor:
            return embed_shard(model, shard, device, bs, logits=True).argmax(1)
    else:
        c = centroids(F.normalize(embed_shard(model, train, device, bs), dim=1), train.labels, len(classes))

        def predict(shard: Any) -> torch.Tensor:
            return (F.normalize(embed_shard(model, shard, device, bs), dim=1) @ c.T).argmax(1)

    out: dict[str, Any] = {}
    if len(val):
        out["identification_accuracy"] = float((predict(val) == val.labels).float().mean())
    test_pred = predict(test) if len(test) else torch.zeros(0, dtype=torch.int64)
    emb = embed_shard(model, ver, device, bs)
    pairs = pair_trials(emb, ver.labels, p["max_trials"], seed)
    enrol = enrolment_trials(emb, ver.labels, p["top_k"], seed)
    pv, ev = eer_summary(pairs), eer_summary(enrol)
    out.update({"verification_eer": pv["eer"], "verification_threshold": pv["threshold"],
                "verification_target_trials": pv["n_target"], "verification_nontarget_trials": pv["n_nontarget"],
                "enrolment_eer": ev["eer"], "enrolment_threshold": ev["threshold"],
                "enrolment_target_trials": ev["n_target"], "enrolment_nontarget_trials": ev["n_nontarget"]})
    return out, {"pairs": pairs, "enrol": enrol, "test_pred": test_pred}
