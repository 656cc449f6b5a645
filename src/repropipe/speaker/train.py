"""Training of every speaker model through the shared loop (repropipe.training.fit).

Training sees random ``segment_len``-frame crops (HW4 uses 128) so batches are cheap and every
epoch sees different parts of each utterance; evaluation sees whole utterances with padding masks.
Classifiers (the HW4 ablation, sizes from ``speaker.model``; ECAPA-TDNN, sizes from
``speaker.ecapa``): cross-entropy (AM- and AAM-softmax logits carry the margin at the target),
AdamW, linear warmup then cosine decay, SpecAugment (torchaudio frequency and time masks). The triplet
embedder: batch-all triplet loss on cosine similarities of L2-normalised embeddings, optionally
starting from the encoder of a conv autoencoder trained on the same crops without labels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from repropipe.io import atomic_path, atomic_write_json, atomic_torch_save, torch_load
from repropipe.models import build_model
from repropipe.speaker.config import SpecAugmentConfig, TrainConfig, Training, TripletConfig
from repropipe.speaker.features import Shard
from repropipe.speaker.models import CLASSIFIERS
from repropipe.training import LoopConfig, Precision, fit, to_device

log = logging.getLogger("repropipe.speaker")


def random_crop(x: torch.Tensor, segment_len: int) -> torch.Tensor:
    """A random window of ``segment_len`` frames (the whole utterance when it is shorter)."""
    if x.shape[0] <= segment_len:
        return x
    start = int(torch.randint(0, x.shape[0] - segment_len + 1, (1,)))
    return x[start:start + segment_len]


def pad_batch(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad to the longest sequence; lengths tell the models where padding starts."""
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


class CropDataset(Dataset):
    def __init__(self, shard: Shard, segment_len: int) -> None:
        self.shard, self.segment_len = shard, segment_len

    def __len__(self) -> int:
        return len(self.shard)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return random_crop(self.shard.utterance(i), self.segment_len), int(self.shard.labels[i])


def collate_crops(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, lengths = pad_batch([x for x, _ in items])
    return x, lengths, torch.tensor([y for _, y in items], dtype=torch.int64)


class TripletDataset(Dataset):
    """Item i: a crop of utterance i and a crop of another utterance of the same speaker."""

    def __init__(self, shard: Shard, segment_len: int) -> None:
        self.shard, self.segment_len = shard, segment_len
        self.by_label: dict[int, list[int]] = {}
        for i, y in enumerate(shard.labels.tolist()):
            self.by_label.setdefault(y, []).append(i)

    def __len__(self) -> int:
        return len(self.shard)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        y = int(self.shard.labels[i])
        same = [j for j in self.by_label[y] if j != i] or [i]
        j = same[int(torch.randint(0, len(same), (1,)))]
        return (random_crop(self.shard.utterance(i), self.segment_len),
                random_crop(self.shard.utterance(j), self.segment_len), y)


def collate_triplets(items: list[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, ...]:
    a, la = pad_batch([a for a, _, _ in items])
    p, lp = pad_batch([p for _, p, _ in items])
    return a, la, p, lp, torch.tensor([y for _, _, y in items], dtype=torch.int64)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-all triplet loss on cosine similarities of L2-normalised embeddings.

    Every (anchor i, its positive, negative e_j with y_j != y_i; e_j from anchors and positives)
    gives relu(margin + cos(a_i, e_j) - cos(a_i, p_i)); the mean is over the triplets that still
    violate the margin. Batch-all is used rather than batch-hard, which collapsed every embedding
    to one point on the synthetic data.
    """
    emb = torch.cat([anchor, positive])
    lab = torch.cat([labels, labels])
    neg = labels[:, None] != lab[None, :]
    pos_sim = (anchor * positive).sum(1, keepdim=True)
    viol = F.relu(margin + anchor @ emb.T - pos_sim)[neg]
    active = viol > 1e-12
    if not active.any():
        return (anchor.sum() + positive.sum()) * 0.0
    return viol[active].mean()


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total`` (the HW4 schedule)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def embed_shard(model: torch.nn.Module, shard: Shard, device: torch.device, batch_size: int,
                logits: bool = False) -> torch.Tensor:
    """Whole utterances, length-sorted into padded batches; rows in shard order."""
    model.eval()
    order = sorted(range(len(shard)), key=shard.length)
    out: list[torch.Tensor | None] = [None] * len(shard)
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        x, lengths = pad_batch([shard.utterance(i) for i in idx])
        x, lengths = x.to(device), lengths.to(device)
        y = model(x, lengths) if logits else model.embed(x, lengths)
        for i, row in zip(idx, y.float().cpu()):
            out[i] = row
    return torch.stack(out) if out else torch.zeros(0)  # type: ignore[arg-type]


def _specaugment(cfg: SpecAugmentConfig) -> torch.nn.Module:
    import torchaudio

    return torch.nn.Sequential(torchaudio.transforms.FrequencyMasking(cfg.freq_mask, iid_masks=True),
                               torchaudio.transforms.TimeMasking(cfg.time_mask, iid_masks=True))


def _drop_last(n: int, batch_size: int) -> bool:
    """Drop a ragged last batch (a batch of one breaks BatchNorm) unless it is the only one."""
    return n > batch_size


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size if _drop_last(n, batch_size) else math.ceil(n / batch_size)


def _loop(cfg: TrainConfig, epochs: int, seed: int, n: int) -> LoopConfig:
    return LoopConfig(epochs=epochs, batch_size=cfg.batch_size, seed=seed, checkpoint_every=cfg.checkpoint_every,
                      drop_last=_drop_last(n, cfg.batch_size), progress=True)


def save_model(run_dir: Path, name: str, model: torch.nn.Module, kwargs: dict[str, Any], history: list[dict]) -> None:
    atomic_torch_save(run_dir / "model.pt", {"name": name, "kwargs": kwargs, "state_dict": model.state_dict()})
    atomic_write_json(run_dir / "history.json", history)


def load_model(run_dir: Path, device: torch.device) -> torch.nn.Module:
    from repropipe.io import DataError

    path = run_dir / "model.pt"
    if not path.exists():
        raise DataError(path, "missing: run `python -m repropipe speaker train` first")
    d = torch_load(path)
    model = build_model(d["name"], **d["kwargs"])
    model.load_state_dict(d["state_dict"])
    return model.to(device).eval()


def train_classifier(name: str, train: Shard, val: Shard, n_classes: int, cfg: Training, seed: int,
                     device: torch.device, run_dir: Path) -> list[dict[str, float]]:
    tp = cfg.train
    sizes = cfg.ecapa if name == "speaker_ecapa_tdnn" else cfg.model
    kwargs = {**dataclasses.asdict(sizes), "n_classes": n_classes, "n_mels": int(train.mels.shape[1])}
    torch.manual_seed(seed)
    model = build_model(name, **kwargs).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    steps = tp.epochs * steps_per_epoch(len(train), tp.batch_size)
    sched = warmup_cosine(opt, min(tp.warmup_steps, steps // 2), steps)
    augment = _specaugment(tp.specaugment).to(device) if tp.specaugment.enabled else None

    amp = Precision(tp.precision, device)

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        x, lengths, y = to_device(batch, device)
        model.train()
        if augment is not None:
            x = augment(x.transpose(1, 2)).transpose(1, 2)
        with amp.autocast():
            logits = model(x, lengths, labels=y).float()
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        amp.backward(loss)
        amp.step(opt)
        sched.step()
        return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean()),
                "lr": sched.get_last_lr()[0]}

    def epoch_end(_epoch: int) -> dict[str, float]:
        if len(val) == 0:
            return {}
        pred = embed_shard(model, val, device, tp.batch_size, logits=True).argmax(1)
        return {"val_accuracy": float((pred == val.labels).float().mean())}

    res = fit(step, CropDataset(train, tp.segment_len), {"model": model, "optimizer": opt, "scheduler": sched},
              _loop(tp, tp.epochs, seed, len(train)), run_dir, collate_fn=collate_crops, epoch_end=epoch_end, device=device,
              precision=amp)
    save_model(run_dir, name, model, kwargs, res.history)
    return res.history


def pretrain_autoencoder(train: Shard, tp: TrainConfig, trp: TripletConfig, seed: int, device: torch.device,
                         run_dir: Path) -> torch.nn.Module:
    kwargs = {"channels": trp.channels, "n_mels": int(train.mels.shape[1])}
    torch.manual_seed(seed)
    ae = build_model("speaker_conv_autoencoder", **kwargs).to(device)
    opt = torch.optim.AdamW(ae.parameters(), lr=trp.lr)

    amp = Precision(tp.precision, device)

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        x = to_device(batch[0], device)
        ae.train()
        with amp.autocast():
            loss = F.mse_loss(ae(x).float(), x)
        opt.zero_grad(set_to_none=True)
        amp.backward(loss)
        amp.step(opt)
        return {"loss": float(loss.detach())}

    res = fit(step, CropDataset(train, tp.segment_len), {"model": ae, "optimizer": opt},
              _loop(tp, trp.autoencoder_epochs, seed, len(train)), run_dir, collate_fn=collate_crops, device=device,
              precision=amp)
    save_model(run_dir, "speaker_conv_autoencoder", ae, kwargs, res.history)
    return ae


def train_triplet(train: Shard, val: Shard, tp: TrainConfig, trp: TripletConfig, seed: int, device: torch.device,
                  run_dir: Path) -> list[dict[str, float]]:
    kwargs = {"channels": trp.channels, "emb_dim": trp.emb_dim, "n_mels": int(train.mels.shape[1])}
    torch.manual_seed(seed)
    model = build_model("speaker_triplet", **kwargs).to(device)
    if trp.autoencoder_epochs > 0:
        ae = pretrain_autoencoder(train, tp, trp, seed, device, run_dir / "autoencoder")
        model.encoder.load_state_dict(ae.encoder.state_dict())
        log.info("event=triplet_init_from_autoencoder epochs=%d", trp.autoencoder_epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=trp.lr, weight_decay=tp.weight_decay)
    steps = trp.epochs * steps_per_epoch(len(train), tp.batch_size)
    sched = warmup_cosine(opt, min(tp.warmup_steps, steps // 2), steps)

    amp = Precision(tp.precision, device)

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        a, la, p, lp, y = to_device(batch, device)
        model.train()
        with amp.autocast():
            loss = triplet_loss(model(a, la).float(), model(p, lp).float(), y, trp.margin)
        opt.zero_grad(set_to_none=True)
        amp.backward(loss)
        amp.step(opt)
        sched.step()
        return {"loss": float(loss.detach()), "lr": sched.get_last_lr()[0]}

    def epoch_end(_epoch: int) -> dict[str, float]:
        if len(val) == 0:
            return {}
        tr = embed_shard(model, train, device, tp.batch_size)
        return {"val_accuracy": centroid_accuracy(tr, train.labels, embed_shard(model, val, device, tp.batch_size),
                                                  val.labels)}

    res = fit(step, TripletDataset(train, tp.segment_len), {"model": model, "optimizer": opt, "scheduler": sched},
              _loop(tp, trp.epochs, seed, len(train)), run_dir, collate_fn=collate_triplets, epoch_end=epoch_end,
              device=device, precision=amp)
    save_model(run_dir, "speaker_triplet", model, kwargs, res.history)
    return res.history


def centroids(emb: torch.Tensor, labels: torch.Tensor, n: int | None = None) -> torch.Tensor:
    n = int(labels.max()) + 1 if n is None else n
    c = torch.zeros(n, emb.shape[1]).index_add_(0, labels, emb)
    return F.normalize(c, dim=1)


def centroid_accuracy(train_emb: torch.Tensor, train_labels: torch.Tensor, emb: torch.Tensor,
                      labels: torch.Tensor) -> float:
    """Identification by the nearest speaker centroid (cosine), for models without a class head."""
    c = centroids(F.normalize(train_emb, dim=1), train_labels)
    return float(((F.normalize(emb, dim=1) @ c.T).argmax(1) == labels).float().mean())


def train_all(models: list[str], features: Path, out: Path, cfg: Training, seed: int,
              device: torch.device) -> dict[str, Any]:
    from repropipe.speaker.features import load_shard, read_manifest

    manifest = read_manifest(features)
    train, val = load_shard(features / "train.pt"), load_shard(features / "val.pt")
    summary = {}
    for name in models:
        run_dir = out / name
        log.info("event=train model=%s utterances=%d classes=%d device=%s", name, len(train),
                 len(manifest["classes"]), device)
        if name in CLASSIFIERS:
            hist = train_classifier(name, train, val, len(manifest["classes"]), cfg, seed, device, run_dir)
        elif name == "speaker_triplet":
            hist = train_triplet(train, val, cfg.train, cfg.triplet, seed, device, run_dir)
        else:
            raise ValueError(f"speaker.models: unknown model {name!r}")
        summary[name] = hist[-1] if hist else {}
    atomic_write_json(out / "summary.json", summary)
    return summary


def setup_torch(seed: int, device: str, *, workers: bool = False) -> torch.device:
    """This process's share of the CPUs, every RNG seeded, and the device params ask for (auto, cpu or cuda)."""
    from repropipe import resources
    from repropipe.training import seed_everything, select_device

    resources.use_threads(workers=workers)
    seed_everything(seed)
    return select_device(device)
