"""Training: supervised runs through repropipe.training.fit, and SimCLR pretraining + fine-tuning.

Runs (``eeg.train.runs``):
  transformer       eeg_transformer, every training label
  linformer         eeg_linformer, every training label
  transformer_low   eeg_transformer, ``label_fraction`` of the training trials
  simclr_low        eeg_simclr: NT-Xent pretraining on every training chunk (labels unused), then
                    fine-tuning the classifier (and encoder) on the same ``label_fraction`` of trials
  eegnet            eegnet (torcheeg's EEGNet, sizes from ``eeg.train.eegnet``), every training label,
                    for ``eeg.train.eegnet.epochs`` epochs (null: ``eeg.train.epochs``)

Each run keeps the weights of its best validation epoch (macro F1) and writes
``results/eeg/models/<run>/model.pt`` (weights, config, history) beside its checkpoints.
Low-label runs train for as many optimiser steps as full-label ones (epochs / fraction, capped by
``max_low_label_epochs``; SimCLR fine-tuning also by ``simclr.finetune_epochs``). With ``augment``
every supervised batch is amplitude-scaled, time-shifted and noised (augment.augment_batch).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from repropipe.io import DataError, atomic_torch_save, torch_load
from repropipe.eeg import models as _eeg_models  # noqa: F401  (registers the EEG models by name)
from repropipe.eeg.config import SimclrConfig, TrainConfig
from repropipe.models import build_model
from repropipe.training import LoopConfig, Precision, fit, seed_everything, supervised_step, to_device

log = logging.getLogger("repropipe.eeg")

FEATURES = Path("data/features/eeg")
RUN_MODEL = {"transformer": "eeg_transformer", "linformer": "eeg_linformer",
             "transformer_low": "eeg_transformer", "simclr_low": "eeg_simclr", "eegnet": "eegnet"}


class Chunks(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i].float(), self.y[i]


def load_features(root: Path = FEATURES) -> tuple[torch.Tensor, pd.DataFrame, list[str]]:
    path = root / "chunks.pt"
    if not path.exists():
        raise DataError(path, "missing; run `python -m repropipe eeg features` first")
    try:
        blob = torch_load(path)
        x = blob["x"]
    except Exception as exc:  # truncated, foreign or not a dict with "x": name the file
        raise DataError(path, f"not an eeg_features chunk file ({type(exc).__name__}: {exc})") from exc
    ipath = root / "index.parquet"
    if not ipath.exists():
        raise DataError(ipath, "missing; run `python -m repropipe eeg features` first")
    try:
        index = pd.read_parquet(ipath)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends
        raise DataError(ipath, f"not a readable parquet index ({type(exc).__name__}: {exc})") from exc
    missing = {"subject", "run", "trial", "label", "chunk", "split"} - set(index.columns)
    if missing:
        raise DataError(ipath, f"index lacks columns {sorted(missing)}; run `python -m repropipe eeg features` again")
    if len(index) != len(x):
        raise DataError(path, f"{len(blob['x'])} chunks but index.parquet has {len(index)} rows")
    return blob["x"], index, list(blob["ch_names"])


def label_subset(index: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over rows: a seeded, class-stratified ``fraction`` of training *trials*
    (all chunks of a chosen trial come along, none of an unchosen one)."""
    train = index[index.split == "train"]
    trials = train.groupby(["subject", "run", "trial"], sort=True).label.first().reset_index()
    rng = np.random.default_rng([seed, 23])
    keep = []
    for _, g in trials.groupby("label", sort=True):
        n = max(1, int(round(fraction * len(g))))
        keep.append(g.iloc[rng.permutation(len(g))[:n]])
    chosen = pd.concat(keep)
    key = set(map(tuple, chosen[["subject", "run", "trial"]].to_numpy().tolist()))
    return np.array([(s, r, t) in key and sp == "train" for s, r, t, sp in
                     index[["subject", "run", "trial", "split"]].itertuples(index=False)])


class Best:
    """Keeps the best validation weights; Stateful, so it survives a kill and resume."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.score, self.epoch, self.weights = model, -math.inf, -1, copy.deepcopy(model.state_dict())

    def offer(self, score: float, epoch: int) -> None:
        if score > self.score:
            self.score, self.epoch, self.weights = score, epoch, copy.deepcopy(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.score, self.epoch, self.weights = s["score"], s["epoch"], s["weights"]


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 256,
            log_probs: bool = False) -> torch.Tensor:
    """Log-probabilities [N, 2] for chunks x (model outputs logits or log-probs)."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        o = model(x[i:i + batch].float().to(device))
        out.append((o if log_probs else o.log_softmax(1)).cpu())
    return torch.cat(out) if out else torch.zeros(0, 2)


def _val_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                 log_probs: bool) -> dict[str, float]:
    from sklearn.metrics import f1_score

    lp = predict(model, x, device, log_probs=log_probs)
    pred = lp.argmax(1).numpy()
    return {"val_loss": float(F.nll_loss(lp, y)), "val_accuracy": float((pred == y.numpy()).mean()),
            "val_f1": float(f1_score(y.numpy(), pred, average="macro"))}


def _model_kwargs(run: str, tp: TrainConfig, ch_names: list[str], n_samples: int) -> dict[str, Any]:
    if run == "eegnet":  # a fixed-length network: it is built for the chunk length it trains on
        sizes = {k: v for k, v in dataclasses.asdict(tp.eegnet).items() if k != "epochs"}
        return dict(sizes, num_electrodes=len(ch_names), chunk_size=n_samples)
    if run.startswith("simclr"):
        s = tp.simclr
        return {"ch_names": ch_names, "emb": s.emb, "proj_dim": s.proj_dim, "hidden": s.hidden}
    kw = dict(dataclasses.asdict(tp.transformer), n_channels=len(ch_names))
    if run == "linformer":
        kw.update(linformer_k=tp.linformer.k, proj_len=tp.linformer.proj_len)
    return kw


def _supervised(run: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor],
                epochs: int, tp: TrainConfig, seed: int, device: torch.device, run_dir: Path, log_probs: bool,
                lr: float) -> tuple[Best, list[dict[str, float]]]:
    from repropipe.eeg.augment import augment_batch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=tp.weight_decay)
    best = Best(model)
    loss_fn = F.nll_loss if log_probs else F.cross_entropy
    g = torch.Generator().manual_seed(seed + 202)

    amp = Precision(tp.precision, device)
    step = supervised_step(model, opt, loss_fn, device,
                           transform=(lambda xb: augment_batch(xb, g)) if tp.augment else None, precision=amp)

    def epoch_end(epoch: int) -> dict[str, float]:
        m = _val_metrics(model, val[0], val[1], device, log_probs)
        best.offer(m["val_f1"], epoch)
        return m

    cfg = LoopConfig(epochs=epochs, batch_size=tp.batch_size, seed=seed, checkpoint_every=tp.checkpoint_every,
                     log_every=10)
    res = fit(step, Chunks(x, y), {"model": model, "optimizer": opt, "best": best, "gen": _GenState(g)}, cfg, run_dir,
              epoch_end=epoch_end, device=device, precision=amp)
    log.info("eeg_train event=run_done run=%s best_epoch=%d best_val_f1=%.4f", run, best.epoch, best.score)
    return best, res.history


class _Unlabelled(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i].float()


def pretrain_simclr(model: torch.nn.Module, x: torch.Tensor, sp: SimclrConfig, tp: TrainConfig, seed: int,
                    device: torch.device, run_dir: Path) -> list[dict[str, float]]:
    """NT-Xent over two augmented views of single (recombined) channels drawn from each chunk."""
    from repropipe.eeg.augment import random_view
    from repropipe.eeg.models import nt_xent

    params = list(model.encoder.parameters()) + list(model.projector.parameters())
    opt = torch.optim.AdamW(params, lr=sp.lr, weight_decay=tp.weight_decay)
    g = torch.Generator().manual_seed(seed + 101)
    amp = Precision(tp.precision, device)

    def step(batch: torch.Tensor) -> dict[str, float]:
        model.train()
        with torch.no_grad():
            allc = model.recombine(to_device(batch, device))  # [B, C_all, T]
            pick = torch.randint(0, allc.shape[1], (allc.shape[0], sp.channels_per_chunk), generator=g).to(device)
            seg = torch.gather(allc, 1, pick[..., None].expand(-1, -1, allc.shape[2])).flatten(0, 1)  # [B*k, T]
            v1, v2 = random_view(seg, g), random_view(seg, g)
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            z1, z2 = model.project(v1).float(), model.project(v2).float()
        loss = nt_xent(z1, z2, sp.tau)
        amp.backward(loss)
        amp.step(opt)
        return {"ntxent": float(loss.detach())}

    cfg = LoopConfig(epochs=sp.pretrain_epochs, batch_size=tp.batch_size, seed=seed,
                     checkpoint_every=tp.checkpoint_every, log_every=10, drop_last=True)
    return fit(step, _Unlabelled(x), {"model": model, "optimizer": opt, "gen": _GenState(g)}, cfg, run_dir,
               device=device, precision=amp).history


class _GenState:
    def __init__(self, g: torch.Generator) -> None:
        self.g = g

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.g.get_state()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.g.set_state(s["state"])


def train_run(run: str, x: torch.Tensor, index: pd.DataFrame, ch_names: list[str], tp: TrainConfig, seed: int,
              device: torch.device, out_root: Path, subdir: str = "") -> Path:
    """Train ``run`` on ``index.split == "train"`` (selecting the epoch on "val") into
    ``out_root/<run>/<subdir>/model.pt``; ``subdir`` is the within-subject fold ("" for cross-subject)."""
    seed_everything(seed)
    low = run.endswith("_low")
    mask = label_subset(index, tp.label_fraction, seed) if low else (index.split == "train").to_numpy()
    val = (index.split == "val").to_numpy().copy()
    if not val.any():
        val = (index.split == "train").to_numpy().copy()  # no val subjects (tiny runs): select on train
    mask, val = torch.from_numpy(np.asarray(mask).copy()), torch.from_numpy(val)
    y = torch.tensor(index.label.to_numpy().copy(), dtype=torch.long)
    model = build_model(RUN_MODEL[run], **_model_kwargs(run, tp, ch_names, int(x.shape[-1]))).to(device)
    run_dir = out_root / run / subdir if subdir else out_root / run
    epochs = tp.epochs
    if run == "eegnet" and tp.eegnet.epochs is not None:
        epochs = tp.eegnet.epochs  # on CPU an EEGNet step costs about ten Transformer steps
    if low:
        epochs = min(int(math.ceil(epochs / tp.label_fraction)), tp.max_low_label_epochs)
    log_probs = run.startswith("simclr")
    if log_probs:
        epochs = min(epochs, tp.simclr.finetune_epochs)
    pre_history: list[dict[str, float]] = []
    if log_probs:
        pre_history = pretrain_simclr(model, x[(index.split == "train").to_numpy().copy()], tp.simclr, tp, seed, device,
                                      run_dir / "pretrain")
    lr = tp.simclr.finetune_lr if log_probs else tp.lr
    best, history = _supervised(run, model, x[mask], y[mask], (x[val], y[val]), epochs, tp, seed, device,
                                run_dir / "finetune" if log_probs else run_dir, log_probs, lr)
    path = run_dir / "model.pt"
    atomic_torch_save(path, {"run": run, "model": RUN_MODEL[run], "kwargs": _model_kwargs(run, tp, ch_names, int(x.shape[-1])),
                             "weights": best.weights, "best_epoch": best.epoch, "best_val_f1": best.score,
                             "history": history, "pretrain_history": pre_history, "log_probs": log_probs,
                             "n_train_chunks": int(mask.sum()), "epochs": epochs})
    return path


def model_dirs(protocol: str, folds: int) -> list[str]:
    """Where each run's model(s) live under results/eeg/models/<run>/: '' (cross_subject) or fold<f>."""
    return [""] if protocol == "cross_subject" else [f"fold{f}" for f in range(folds)]


def train_all(x: torch.Tensor, index: pd.DataFrame, ch_names: list[str], tp: TrainConfig, protocol: str, folds: int,
              seed: int, device: torch.device, out_root: Path) -> None:
    """Every configured run, once (cross_subject) or once per within-subject fold, into ``out_root``."""
    from repropipe.eeg.features import fold_split

    for sub in model_dirs(protocol, folds):
        idx = index
        if sub:
            idx = index.copy()
            idx["split"] = fold_split(index, int(sub[4:]), folds)
        for run in tp.runs:
            path = train_run(run, x, idx, ch_names, tp, seed, device, out_root, subdir=sub)
            log.info("eeg_train event=trained run=%s path=%s", run, path)
