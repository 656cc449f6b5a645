"""Training countermeasures through the shared loop (:func:`repropipe.training.fit`).

One run per (model, seed) under ``results/asvspoof/models/<model>/seed<k>/``: the loop's
checkpoints (resume after a kill), dvclive curves, ``model.pt`` (the weights chosen on dev EER,
or the last ones), ``norm.pt`` (per-dimension feature mean and std of the training set) and
``summary.json`` (history, dev EER per epoch).

Raw-waveform models (AASIST, AASIST-L) read the ``wave`` feature kind: the 16-bit samples of the
same fixed-length crop, stored as int16 and scaled to [-1, 1) here; they are not normalised or
feature-augmented (:func:`model_input`). Their norm.pt holds an identity (mean 0, std 1).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from repropipe.asvspoof.features import load_features
from repropipe.asvspoof.models import FEATURE_OF, HEAD_OF, TWO_CLASS_HEADS
from repropipe.io import atomic_path, atomic_write_json, atomic_torch_save, torch_load
from repropipe.metrics import compute_eer
from repropipe.models import build_model
from repropipe.training import LoopConfig, Precision, fit, to_device

if TYPE_CHECKING:
    from repropipe.asvspoof.config import AugmentConfig, TrainConfig

log = logging.getLogger("repropipe.asvspoof.train")


class FeatureDataset(Dataset):
    """(stored row, label) pairs over the feature tensor held in memory (float16 features or int16 waveforms).

    Rows stay in their stored dtype here; :func:`model_input` turns a batch into what the model reads.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray | None = None) -> None:
        self.x, self.y = x, y
        self.indices = np.arange(len(x)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        return self.x[j], self.y[j]


def balanced_indices(labels: np.ndarray, seed: int) -> np.ndarray:
    """``weighted_sampler``: len(labels) draws with replacement, each class drawn equally often."""
    counts = np.bincount(labels, minlength=2).astype(float)
    w = 1.0 / counts[labels]
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.as_tensor(w / w.sum()), len(labels), replacement=True, generator=g).numpy()


def normalizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature-dimension mean and std over utterances and frames (training set only)."""
    xf = x.float()
    return xf.mean(dim=(0, 2)), xf.std(dim=(0, 2)).clamp_min(1e-3)


PCM_SCALE = 32768.0  # int16 sample -> float in [-1, 1), as soundfile reads a PCM_16 FLAC


def model_input(rows: torch.Tensor, kind: str, norm: tuple[torch.Tensor, torch.Tensor],
                device: torch.device) -> torch.Tensor:
    """A batch of stored rows -> the model's input: (B, samples) waveform for ``wave``, else the
    normalised (B, 1, F, T) feature map."""
    if kind == "wave":
        return rows.to(device).float() / PCM_SCALE
    return normalize(rows.to(device).float()[:, None], norm)


def normalize(x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mean, std = norm
    return (x - mean.to(x.device)[None, None, :, None]) / std.to(x.device)[None, None, :, None]


def augment(x: torch.Tensor, aug: AugmentConfig) -> torch.Tensor:
    """Feature-domain augmentation (features are precomputed), drawn from the global RNG the loop restores.

    ``gain_db``: a per-utterance offset on the (normalised) level of every bin, standing in for a
    gain change; ``noise_std``: additive Gaussian noise on the features; ``spec_freq_mask`` /
    ``spec_time_mask``: SpecAugment masks of up to that many bins / frames. 0 turns each off.
    """
    b = x.shape[0]
    if aug.gain_db:
        x = x + (torch.rand(b, 1, 1, 1) * 2 - 1).to(x.device) * aug.gain_db / 10.0
    if aug.noise_std:
        x = x + torch.randn(x.shape).to(x.device) * aug.noise_std
    for axis, width in ((2, aug.spec_freq_mask), (3, aug.spec_time_mask)):
        if width:
            size = x.shape[axis]
            w = torch.randint(0, width + 1, (b,))
            start = (torch.rand(b) * (size - w).clamp_min(1)).long()
            ar = torch.arange(size)
            mask = (ar[None, :] >= start[:, None]) & (ar[None, :] < (start + w)[:, None])
            shape = [b, 1, 1, 1]
            shape[axis] = size
            x = x.masked_fill(mask.view(shape).to(x.device), 0.0)
    return x


@torch.no_grad()
def score(model: torch.nn.Module, x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor], device: torch.device,
          batch_size: int | None = None, kind: str = "lfcc") -> np.ndarray:
    """Scores (higher = bona fide) for every utterance of ``x`` (N, F, T) or (N, samples), in order.

    Waveform models score 8 utterances at a time (a 4 s AASIST activation map is ~60 MB each).
    """
    model.eval()
    batch_size = batch_size or (8 if kind == "wave" else 64)
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(model_input(x[i:i + batch_size], kind, norm, device)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def run_dir_of(models_dir: Path, name: str, seed: int) -> Path:
    return models_dir / name / f"seed{seed}"


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                   steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, str]:
    """The learning-rate schedule of ``cfg`` and when it steps (``"step"`` or ``"epoch"``).

    ``constant``: none. ``cosine``: AASIST's (clovaai/aasist utils.py): per optimiser step, from
    ``lr`` down to ``lr_min`` over all ``epochs * steps_per_epoch`` steps. ``step``: NII's
    ``--lr-scheduler-type 1`` (StepLR): multiply by ``lr_gamma`` every ``lr_step_epochs`` epochs.
    """
    kind = cfg.lr_schedule
    if kind == "constant":
        return None, "step"
    if kind == "cosine":
        total = max(cfg.epochs * steps_per_epoch, 1)
        floor = cfg.lr_min / cfg.lr

        def factor(step: int) -> float:
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(step / total * math.pi))
        return torch.optim.lr_scheduler.LambdaLR(opt, factor), "step"
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma), "epoch"
    raise ValueError(f"lr_schedule must be constant, cosine or step, got {kind!r}")


CONTROL = "lfcc_lcnn_shuffled_labels"  # the shuffled-label control run's name in every output


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The training labels in a seeded random order: same class counts, no link to the audio."""
    rng = np.random.default_rng([seed, 404])
    return labels[rng.permutation(len(labels))]


def train_one(name: str, seed: int, cfg: TrainConfig, feat_dir: Path, run_dir: Path, device: torch.device,
              cache: dict[str, Any], *, shuffle_labels: bool = False) -> dict[str, Any]:
    """Train model ``name`` with ``seed``; returns its summary (also written to ``summary.json``).

    ``shuffle_labels`` trains on randomly permuted training labels: a control that must stay near
    chance (EER 0.5) on eval; if it does not, something other than the audio carries the label.
    Settings are ``cfg``'s with ``per_model[name]`` laid over them (:meth:`TrainConfig.for_model`).
    """
    settings = cfg.for_model(name)
    kind = FEATURE_OF[name]
    if not (feat_dir / kind).is_dir():
        raise ValueError(f"model {name} reads the {kind!r} features, which asvspoof.features.kinds does not list "
                         f"(add {kind!r} there)")
    if kind not in cache:
        xtr, itr = load_features(feat_dir, "train", kind)
        xdv, idv = load_features(feat_dir, "dev", kind)
        cache[kind] = (xtr, itr, xdv, idv, identity_norm() if kind == "wave" else normalizer(xtr))
    xtr, itr, xdv, idv, norm = cache[kind]
    labels = np.array(itr.label.to_numpy())  # a writable copy
    if shuffle_labels:
        labels = shuffled_labels(labels, seed)
    ytr = torch.as_tensor(labels, dtype=torch.long)
    n_bona, n_spoof = int(labels.sum()), int(len(labels) - labels.sum())
    imbalance = settings.imbalance
    indices = balanced_indices(labels, seed) if imbalance == "weighted_sampler" else None
    pos_weight = n_spoof / max(n_bona, 1) if imbalance == "weighted_loss" else None
    dataset = FeatureDataset(xtr, ytr, indices)

    torch.manual_seed(seed)
    model = build_model(name, n_features=xtr.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched, sched_every = make_scheduler(opt, settings, math.ceil(len(dataset) / settings.batch_size))
    aug = settings.augment if kind != "wave" else None  # feature-domain augmentation: not for waveforms
    head = HEAD_OF[name]
    thr = 0.0 if head == "sigmoid" else 0.55

    amp = Precision(settings.precision, device)

    def step(batch: Any) -> dict[str, float]:
        xb, yb = batch
        xb, yb = model_input(xb, kind, norm, device), yb.to(device, non_blocking=True)
        if aug is not None:
            xb = augment(xb, aug)
        model.train()
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            out = model.logits(xb) if head in TWO_CLASS_HEADS else model(xb)  # the loss needs both logits
            loss = model.loss(out.float(), yb, pos_weight)
        amp.backward(loss)
        amp.step(opt)
        if sched is not None and sched_every == "step":
            sched.step()
        pred = out.detach().argmax(1) if head in TWO_CLASS_HEADS else (out.detach() > thr).long()
        return {"loss": float(loss.detach()), "accuracy": float((pred == yb).float().mean())}

    best_file = run_dir / "best.json"

    def epoch_end(epoch: int) -> dict[str, float]:
        if sched is not None and sched_every == "epoch":
            sched.step()
        s = score(model, xdv, norm, device, kind=kind)
        lab = idv.label.to_numpy()
        eer, _ = compute_eer(s[lab == 1], s[lab == 0])
        best = json.loads(best_file.read_text()) if best_file.exists() else {"dev_eer": float("inf")}
        if not settings.select_on_dev or eer <= best["dev_eer"]:
            atomic_torch_save(run_dir / "model.pt", model.state_dict())
            atomic_write_json(best_file, {"dev_eer": eer, "epoch": epoch})
        return {"dev_eer": eer}

    loop = LoopConfig(epochs=settings.epochs, batch_size=settings.batch_size, seed=seed,
                      checkpoint_every=settings.checkpoint_every, progress=True)
    state = {"model": model, "optimizer": opt, **({"scheduler": sched} if sched is not None else {})}
    res = fit(step, dataset, state, loop, run_dir, epoch_end=epoch_end, device=device, precision=amp)
    atomic_torch_save(run_dir / "norm.pt", {"mean": norm[0], "std": norm[1]})
    best = json.loads(best_file.read_text())
    summary = {"model": name, "seed": seed, "feature": kind, "n_features": int(xtr.shape[1]),
               "shuffled_labels": shuffle_labels, "lr": settings.lr, "epochs": settings.epochs,
               "batch_size": settings.batch_size, "lr_schedule": settings.lr_schedule,
               "train_bonafide": n_bona, "train_spoof": n_spoof, "imbalance": imbalance,
               "selected_epoch": best["epoch"], "selected_dev_eer": best["dev_eer"],
               "history": res.history, "params": sum(q.numel() for q in model.parameters())}
    atomic_write_json(run_dir / "summary.json", summary)
    log.info("event=trained model=%s seed=%d shuffled_labels=%s dev_eer=%.4f epoch=%d", name, seed, shuffle_labels,
             best["dev_eer"], best["epoch"])
    return summary


def identity_norm() -> tuple[torch.Tensor, torch.Tensor]:
    """The norm.pt of a waveform model: mean 0, std 1 (waveforms are used as read)."""
    return torch.zeros(1), torch.ones(1)


def load_trained(run_dir: Path, device: torch.device) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor], dict]:
    summary = json.loads((run_dir / "summary.json").read_text())
    model = build_model(summary["model"], n_features=summary["n_features"]).to(device)
    model.load_state_dict(torch_load(run_dir / "model.pt", map_location=device))
    norm = torch_load(run_dir / "norm.pt")
    return model, (norm["mean"], norm["std"]), summary
