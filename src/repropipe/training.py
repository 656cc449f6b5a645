"""The one training loop, with device choice, seeding, checkpoints, resume and logging.

Every branch trains through :func:`fit`. The branch supplies a ``step_fn`` that does one
optimisation step on a batch (forward, backward, optimiser step; a GAN does its critic and
generator updates there) and returns scalar metrics; the loop owns everything around it:

* data order: epoch ``e`` visits the dataset in a permutation drawn from a generator seeded by
  ``(seed, e)``, independent of the global RNG, so a resumed run can skip exactly the batches it
  already saw;
* checkpoints: every ``checkpoint_every`` steps and at each epoch end, one file
  (``<run_dir>/checkpoints/last.pt``) holding every module, optimiser and scheduler state, the RNG
  states and the position in the data, written atomically;
* resume: when that file exists the loop continues from it, and a run killed at any point ends
  with the same weights as one that was never interrupted (CPU);
* logging: per-step and per-epoch metrics through dvclive, a tqdm bar, structured log lines, and
  (in the log line only, being a timing) the fraction of each epoch's step time spent waiting for data.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from repropipe.io import atomic_torch_save, torch_load

log = logging.getLogger("repropipe.training")

CHECKPOINT_NAME = "last.pt"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU; decided at run time, never at import."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was requested in params.yaml but no CUDA device is available")
        return torch.device("cuda")
    if preference != "auto":
        raise ValueError(f"device must be auto, cpu or cuda, got {preference!r}")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain containers, so checkpoints load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 1
    num_workers: int = 0
    drop_last: bool = False
    progress: bool = True


@dataclass
class FitResult:
    history: list[dict[str, float]]
    global_step: int
    resumed_from_step: int | None
    checkpoint: Path


@dataclass
class _Position:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_sums: dict[str, float] = field(default_factory=dict)  # running sums of the current epoch
    epoch_count: int = 0


def save_checkpoint(path: Path, state: dict[str, Stateful], pos: _Position, extra: dict[str, Any] | None = None) -> None:
    """The one checkpoint format: every stateful object, RNG states, and the position in the data."""
    payload = {
        "format": "repropipe-checkpoint-v1",
        "state": {name: obj.state_dict() for name, obj in state.items()},
        "rng": _rng_state(),
        "epoch": pos.epoch,
        "step_in_epoch": pos.step_in_epoch,
        "global_step": pos.global_step,
        "history": pos.history,
        "epoch_sums": pos.epoch_sums,
        "epoch_count": pos.epoch_count,
        "extra": extra or {},
    }
    atomic_torch_save(path, payload)


def load_checkpoint(path: Path, state: dict[str, Stateful], map_location: torch.device | str = "cpu") -> _Position:
    payload = torch_load(path, map_location=map_location)  # weights_only: a checkpoint never runs code
    if not isinstance(payload, dict) or payload.get("format") != "repropipe-checkpoint-v1":
        raise ValueError(f"{path}: not a repropipe checkpoint (format key missing or unknown)")
    missing = set(state) - set(payload["state"])
    if missing:
        raise ValueError(f"{path}: checkpoint lacks state for {sorted(missing)}")
    for name, obj in state.items():
        obj.load_state_dict(payload["state"][name])
    _set_rng_state(payload["rng"])
    return _Position(payload["epoch"], payload["step_in_epoch"], payload["global_step"], payload["history"],
                     payload["epoch_sums"], payload["epoch_count"])


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The permutation epoch ``epoch`` visits; a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class _Logger:
    """dvclive for curves, plain log lines for humans and cluster logs."""

    def __init__(self, run_dir: Path, resume: bool) -> None:
        from dvclive import Live

        self.live = Live(dir=str(run_dir / "live"), resume=resume, save_dvc_exp=False, dvcyaml=None,
                         report=None, monitor_system=False)

    def log(self, step: int, metrics: dict[str, float], prefix: str) -> None:
        self.live.step = step
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.live.log_metric(f"{prefix}/{k}", float(v))

    def close(self) -> None:
        self.live.make_summary()
        self.live.end()


def fit(
    step_fn: Callable[[Any], dict[str, float]],
    dataset: Dataset,
    state: dict[str, Stateful],
    cfg: LoopConfig,
    run_dir: str | os.PathLike[str],
    *,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    epoch_end: Callable[[int], dict[str, float]] | None = None,
    callbacks: Iterable[Callable[[int, dict[str, float]], None]] = (),
    device: torch.device | None = None,
) -> FitResult:
    """Train for ``cfg.epochs`` epochs, resuming from ``run_dir`` when a checkpoint is there.

    ``state`` names every object whose state must survive a kill (modules, optimisers,
    schedulers, GradScalers). ``epoch_end(epoch)`` may return validation metrics; they are
    logged and kept in the history. ``callbacks`` get ``(global_step, step_metrics)`` after every
    step, before any checkpoint written at that step.
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / CHECKPOINT_NAME
    device = device or torch.device("cpu")
    seed_everything(cfg.seed)
    pos = _Position()
    resumed_from = None
    if ckpt.exists():
        pos = load_checkpoint(ckpt, state, map_location=device)
        resumed_from = pos.global_step
        log.info("event=resume checkpoint=%s global_step=%d epoch=%d", ckpt, pos.global_step, pos.epoch)
    logger = _Logger(run_dir, resume=resumed_from is not None)
    n = len(dataset)
    callbacks = list(callbacks)
    try:
        while pos.epoch < cfg.epochs:
            order = epoch_order(n, cfg.seed, pos.epoch)
            if cfg.drop_last:
                order = order[: (n // cfg.batch_size) * cfg.batch_size]
            remaining = order[pos.step_in_epoch * cfg.batch_size:]
            loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=remaining, num_workers=cfg.num_workers,
                                collate_fn=collate_fn, generator=torch.Generator().manual_seed(cfg.seed + pos.epoch))
            steps_total = math.ceil(len(order) / cfg.batch_size)
            wait = busy = 0.0
            bar = tqdm(total=steps_total, initial=pos.step_in_epoch, desc=f"epoch {pos.epoch}",
                       disable=not cfg.progress, leave=False)
            it = iter(loader)
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                metrics = step_fn(batch)
                t2 = time.perf_counter()
                wait, busy = wait + (t1 - t0), busy + (t2 - t1)
                pos.step_in_epoch += 1
                pos.global_step += 1
                pos.epoch_count += 1
                for k, v in metrics.items():
                    pos.epoch_sums[k] = pos.epoch_sums.get(k, 0.0) + float(v)
                if pos.global_step % cfg.log_every == 0:
                    logger.log(pos.global_step, metrics, "train/step")
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
                # callbacks (sample grids) first: a checkpoint covers a step only once its side outputs exist,
                # so a kill in between re-runs the step's callbacks on resume rather than losing them
                for cb in callbacks:
                    cb(pos.global_step, metrics)
                if cfg.checkpoint_every and pos.global_step % cfg.checkpoint_every == 0:
                    save_checkpoint(ckpt, state, pos)
            bar.close()
            epoch_metrics = {k: v / max(pos.epoch_count, 1) for k, v in pos.epoch_sums.items()}
            # a timing: logged for people, kept out of the history, curves and checkpoints, which repeat byte for byte
            wait_fraction = wait / (wait + busy) if wait + busy > 0 else 0.0
            if epoch_end is not None:
                epoch_metrics.update(epoch_end(pos.epoch))
            epoch_metrics["epoch"] = pos.epoch
            pos.history.append(epoch_metrics)
            logger.log(pos.global_step, epoch_metrics, "train/epoch")
            log.info("event=epoch_end epoch=%d step=%d data_wait_fraction=%.3f %s", pos.epoch, pos.global_step,
                     wait_fraction, " ".join(f"{k}={v:.5g}" for k, v in epoch_metrics.items()))
            pos.epoch += 1
            pos.step_in_epoch = 0
            pos.epoch_sums, pos.epoch_count = {}, 0
            save_checkpoint(ckpt, state, pos)
    finally:
        logger.close()
    return FitResult(pos.history, pos.global_step, resumed_from, ckpt)


def supervised_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device,
                    scheduler: Any | None = None,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Callable[[Any], dict[str, float]]:
    """The common ``step_fn``: (inputs, targets) batch, one loss, one optimiser step.

    ``transform`` (label-preserving augmentation) is applied to the inputs on the device, before
    the forward pass; it must draw its randomness from a generator kept in the loop's ``state``
    so that a resumed run augments exactly as an uninterrupted one.
    """

    def step(batch: Any) -> dict[str, float]:
        x, y = batch
        x, y = x.to(device), y.to(device)
        if transform is not None:
            x = transform(x)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        metrics = {"loss": float(loss.detach())}
        if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
            metrics["accuracy"] = float((out.argmax(1) == y).float().mean())
        return metrics

    return step
