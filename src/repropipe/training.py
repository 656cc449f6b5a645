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
  (in the log line only, being a timing) the fraction of each epoch's step time spent waiting for data;
* per-item randomness: item ``i`` of epoch ``e`` is fetched with torch's RNG seeded by ``(seed, e, i)``
  (and the caller's RNG state restored afterwards), so random crops do not depend on DataLoader
  workers, on how the batch is split over ranks, or on where a run was resumed;
* data parallelism: started by torchrun or srun with WORLD_SIZE > 1, every rank builds the same
  model, takes its share of each global batch of ``batch_size`` items (item ``j`` of a global batch
  goes to rank ``j % world_size``, as a DistributedSampler deals them), and before every optimiser
  step the gradients are all-reduced, weighted by each rank's share of the batch, so the update
  equals the single-process one on the whole batch (up to float rounding); step metrics are
  averaged the same way. Rank 0 writes checkpoints and curves; other ranks read rank 0's
  checkpoint on resume. Ranks above 0 draw their random numbers from a stream reseeded from
  ``(seed, rank, step)`` at every step, so a resumed multi-rank run repeats an uninterrupted one;
* precision (:class:`Precision`): ``32``, ``bf16`` (autocast) or ``16-mixed`` (autocast + GradScaler),
  the scaler's state checkpointed with the rest.

Not covered by the gradient all-reduce: BatchNorm statistics (per rank, over the rank's share of
the batch) and losses that compare items within a batch (triplet, contrastive) see each rank's
share only; such models train correctly but not bit-for-bit like one process.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from repropipe import costs, io, resources
from repropipe.io import atomic_torch_save, torch_load

log = logging.getLogger("repropipe.training")

CHECKPOINT_NAME = "last.pt"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU; decided at run time, never at import.

    In a data-parallel run each rank takes the GPU of its local rank (``cuda:<LOCAL_RANK>``).
    """
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was requested in params.yaml but no CUDA device is available")
    elif preference != "auto":
        raise ValueError(f"device must be auto, cpu or cuda, got {preference!r}")
    elif not torch.cuda.is_available():
        return torch.device("cpu")
    w = resources.world()
    if not w.distributed:
        return torch.device("cuda")
    visible = torch.cuda.device_count()
    if visible == 1:  # SLURM bound one GPU to each task (--gpus-per-task, --ntasks-per-gpu): it is this rank's
        index = 0
    elif w.local_rank < visible:
        index = w.local_rank
    else:
        raise RuntimeError(f"local rank {w.local_rank} but only {visible} CUDA devices visible: start one rank per GPU")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


# ----------------------------------------------------------------------------- data parallelism


def init_distributed(device: torch.device) -> resources.World:
    """Join the process group of a torchrun/srun launch (once per process); nccl on CUDA, gloo on CPU."""
    import torch.distributed as dist

    w = resources.world()
    if w.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{w.master_addr}:{w.master_port}", rank=w.rank,
                                world_size=w.world_size)
        log.info("event=process_group backend=%s rank=%d world_size=%d launcher=%s", backend, w.rank, w.world_size,
                 w.launcher)
    return w


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_record(precision: str, device: torch.device) -> dict[str, Any]:
    """What a train stage adds to its provenance: how it was run (not what it computed)."""
    w = resources.world()
    threads, source = resources.cpu_threads()
    return {"world_size": w.world_size, "launcher": w.launcher, "precision": Precision.normalise(precision),
            "threads": threads, "threads_source": source, "device_type": device.type}


def write_train_provenance(ctx: Any, work: Path, *, data_source: str, device: torch.device, precision: str) -> Path:
    """``<work>/provenance.json``: the stage's provenance plus how it ran (world size, precision, threads).

    Train stages write no metrics.json, so this is where their provenance lives; it uses the
    stage context's own record (``ctx.provenance``) and adds :func:`run_record`.
    """
    return io.atomic_write_json(work / "provenance.json", {**ctx.provenance(data_source=data_source, device=str(device)),
                                                           **run_record(precision, device)})


@contextmanager
def rank_zero_resumable(ctx: Any, out: str | os.PathLike[str], device: torch.device) -> Iterator[Path]:
    """``ctx.resumable(out)`` on rank 0; on other ranks a private scratch directory, discarded.

    Every rank runs the same training code, including the files it writes beside its
    checkpoints (best models, summaries, sample grids), so no branch code needs a rank test; only
    rank 0's copy is published, once every rank has finished. Other ranks wait at barriers for
    rank 0 to prepare its work directory (stale work wiped) and to publish the output, so no rank
    returns (and lets ``run_stage`` clean up) while rank 0 still copies.
    """
    w = resources.world()
    if not w.distributed:
        with ctx.resumable(out) as work:
            yield work
        return
    from repropipe.stages import RESUME_ROOT

    init_distributed(device)
    if w.is_main:
        with ctx.resumable(out) as work:
            barrier()  # the work directory is ready: others may read its checkpoints
            yield work
            barrier()  # every rank has finished training
        barrier()  # published
        return
    barrier()
    shadow = RESUME_ROOT / ctx.stage.name / f"rank{w.rank}" / Path(out)
    key = {"params": io.params_hash(ctx.params), "inputs": io.fingerprint(ctx.stage.all_deps)}
    marker = shadow.parent / f"{shadow.name}.resume_key.json"
    if shadow.exists() and not (marker.exists() and io.read_json(marker, "missing") == key):
        shutil.rmtree(shadow)
    shadow.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(marker, key)
    yield shadow
    barrier()
    barrier()


class _GradSync:
    """All-reduce the gradients of every optimiser in ``state`` just before it steps.

    A step pre-hook rather than a DDP wrapper: it works for any ``step_fn`` (a GAN updates two
    models, several times per loop step), keeps state_dict keys unchanged, and lets each rank's
    gradient be weighted by its share of the global batch (a ragged last batch stays exact).
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.weight = 1.0
        self.skip: set[int] = set()  # optimisers whose gradients Precision.step already reduced
        self.handles = [opt.register_step_pre_hook(self._pre_step) for opt in optimizers]

    def _pre_step(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if id(opt) not in self.skip:
            self.reduce(opt)

    def reduce(self, opt: torch.optim.Optimizer) -> None:
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        by_type: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for g in grads:
            by_type.setdefault((g.dtype, g.device), []).append(g)
        for bucket in by_type.values():
            flat = _flatten_dense_tensors(bucket).mul_(self.weight)
            dist.all_reduce(flat)
            for g, r in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                g.copy_(r)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


_SYNC: _GradSync | None = None  # the active fit's gradient sync (Precision.step uses it)


# ----------------------------------------------------------------------------- precision


class Precision:
    """One of ``32``, ``bf16`` (autocast to bfloat16) or ``16-mixed`` (autocast to float16 + GradScaler).

    A ``step_fn`` runs its forward pass under :meth:`autocast` and calls :meth:`backward` and
    :meth:`step` instead of ``loss.backward()`` and ``optimizer.step()``; the loop calls
    :meth:`update` once per loop step and checkpoints the scaler. bf16 needs no scaler (its
    exponent range is float32's); float16's gradients underflow without one.
    """

    NAMES = ("32", "bf16", "16-mixed")

    def __init__(self, precision: str | int, device: torch.device) -> None:
        self.name = self.normalise(precision)
        self.device_type = device.type
        self.dtype = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}[self.name]
        if self.dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("precision bf16: this CUDA device has no bfloat16 support; use 16-mixed or 32")
        self.scaler = torch.amp.GradScaler(device.type) if self.name == "16-mixed" else None

    @classmethod
    def normalise(cls, precision: str | int) -> str:
        name = {"32-true": "32", "16": "16-mixed", "bf16-mixed": "bf16"}.get(str(precision), str(precision))
        if name not in cls.NAMES:
            raise ValueError(f"precision must be one of {', '.join(cls.NAMES)}, got {precision!r}")
        return name

    def autocast(self) -> Any:
        return torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        sync = _SYNC
        if sync is not None:
            # reduce before the scaler looks for inf/nan, so every rank skips (or takes) the same steps
            sync.reduce(optimizer)
            sync.skip.add(id(optimizer))
        try:
            self.scaler.step(optimizer)
        finally:
            if sync is not None:
                sync.skip.discard(id(optimizer))

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint was trained with precision {state.get('name')!r}, not {self.name!r}")
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (in tuples, lists or dicts) to ``device``; asynchronous from pinned memory on CUDA."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


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
    num_workers: int | None = None  # None: resources.data_workers(the stage's CPU budget)
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


class _SeededItems(Dataset):
    """Item ``i`` fetched with torch's RNG seeded by (seed, epoch, i); the caller's RNG state restored."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.base = dataset, (seed * 1_000_003 + epoch) * 1_000_000_007

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.base + int(i)) % (2**63 - 1))
            return self.dataset[i]


def _reseed_rank(seed: int, rank: int, step: int) -> None:
    """Ranks above 0: a random stream that is a function of (seed, rank, step), so resume repeats it."""
    s = (seed * 1_000_003 + rank) * 1_000_000_007 + step
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s % (2**63 - 1))


def rank_batches(order: list[int], batch_size: int, rank: int, world_size: int) -> list[tuple[list[int], int]]:
    """This rank's share of each global batch of ``order``, with the global batch's size.

    Item ``j`` of a global batch goes to rank ``j % world_size`` (DistributedSampler's dealing), so
    the ranks' shares of a step together are exactly the single-process batch. A rank left with
    nothing (a last batch smaller than the world) gets the batch's first item with weight 0, so it
    still takes part in every all-reduce.
    """
    out = []
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        mine = batch[rank::world_size]
        out.append((mine, len(batch)) if mine else ([batch[0]], 0))
    return out


def _broadcast_str(value: str, device: torch.device) -> str:
    """Rank 0's string on every rank (a uint8 tensor, nothing unpickled)."""
    import torch.distributed as dist

    dev = device if device.type == "cuda" else torch.device("cpu")
    n = torch.tensor([len(value.encode())], dtype=torch.int64, device=dev)
    dist.broadcast(n, 0)
    if int(n) == 0:
        return ""
    buf = torch.zeros(int(n), dtype=torch.uint8, device=dev)
    if dist.get_rank() == 0:
        buf.copy_(torch.frombuffer(bytearray(value.encode()), dtype=torch.uint8))
    dist.broadcast(buf, 0)
    return bytes(buf.cpu().tolist()).decode()


def _broadcast_modules(state: dict[str, Stateful], buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers on every rank: the replicas start (and stay) identical.

    After every step only the buffers (BatchNorm running statistics, computed on each rank's share)
    are sent, as DistributedDataParallel does by default.
    """
    import torch.distributed as dist

    for obj in state.values():
        if isinstance(obj, torch.nn.Module):
            tensors = list(obj.buffers()) if buffers_only else list(obj.parameters()) + list(obj.buffers())
            for t in tensors:
                dist.broadcast(t.data, 0)


def _reduce_metrics(metrics: dict[str, float], weight: float, device: torch.device) -> dict[str, float]:
    """Each rank's step metrics weighted by its share of the batch, summed: the whole batch's mean."""
    import torch.distributed as dist

    keys = sorted(metrics)
    dev = device if device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([float(metrics[k]) * weight for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))


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
    precision: Precision | None = None,
) -> FitResult:
    """Train for ``cfg.epochs`` epochs, resuming from ``run_dir`` when a checkpoint is there.

    ``state`` names every object whose state must survive a kill (modules, optimisers,
    schedulers). ``precision`` is the :class:`Precision` the ``step_fn`` uses (its scaler is
    checkpointed and updated here). ``epoch_end(epoch)`` may return validation metrics; they are
    logged and kept in the history. ``callbacks`` get ``(global_step, step_metrics)`` after every
    step, before any checkpoint written at that step. In a data-parallel run every rank calls
    ``fit`` with the same arguments (its own ``run_dir``: see :func:`rank_zero_resumable`);
    ``epoch_end`` and callbacks run on every rank, so whatever they change stays identical.
    """
    global _SYNC
    run_dir = Path(run_dir)
    device = device or torch.device("cpu")
    state = dict(state)
    if precision is not None:
        state["precision"] = precision
    w = init_distributed(device)
    main = w.is_main
    ckpt = run_dir / "checkpoints" / CHECKPOINT_NAME
    seed_everything(cfg.seed)
    if w.distributed and cfg.batch_size < w.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} < world size {w.world_size}: every rank needs a share")
    pos = _Position()
    resumed_from = None
    source = ckpt
    if w.distributed:
        shared = _broadcast_str(str(ckpt.resolve()) if main and ckpt.exists() else "", device)
        source = Path(shared) if shared else None
    elif not ckpt.exists():
        source = None
    if source is not None:
        pos = load_checkpoint(source, state, map_location=device)
        resumed_from = pos.global_step
        log.info("event=resume checkpoint=%s global_step=%d epoch=%d", source, pos.global_step, pos.epoch)
    sync = None
    if w.distributed:
        _broadcast_modules(state)
        sync = _GradSync([o for o in state.values() if isinstance(o, torch.optim.Optimizer)])
        _SYNC = sync
    logger = _Logger(run_dir, resume=resumed_from is not None) if main else None
    n = len(dataset)
    callbacks = list(callbacks)
    workers = cfg.num_workers if cfg.num_workers is not None else resources.data_workers(resources.cpu_threads()[0])
    examples = 0  # items of the global batches this call trained on (the stage's cost per example)
    try:
        while pos.epoch < cfg.epochs:
            order = epoch_order(n, cfg.seed, pos.epoch)
            if cfg.drop_last:
                order = order[: (n // cfg.batch_size) * cfg.batch_size]
            batches = rank_batches(order, cfg.batch_size, w.rank, w.world_size)
            remaining = batches[pos.step_in_epoch:]
            loader = DataLoader(_SeededItems(dataset, cfg.seed, pos.epoch), batch_sampler=[b for b, _ in remaining],
                                num_workers=workers, collate_fn=collate_fn, pin_memory=device.type == "cuda",
                                # its own generator: creating a loader (as a resume does mid-epoch) draws a base
                                # seed, which must not come from the global RNG the step functions use
                                generator=torch.Generator().manual_seed(cfg.seed + pos.epoch))
            steps_total = len(batches)
            wait = busy = 0.0
            bar = tqdm(total=steps_total, initial=pos.step_in_epoch, desc=f"epoch {pos.epoch}",
                       disable=not (cfg.progress and main), leave=False)
            it = iter(loader)
            for _mine, global_n in remaining:
                t0 = time.perf_counter()
                batch = next(it)
                t1 = time.perf_counter()
                weight = (len(_mine) / global_n) if global_n else 0.0
                if w.distributed and not main:
                    _reseed_rank(cfg.seed, w.rank, pos.global_step)
                if sync is not None:
                    sync.weight = weight
                metrics = step_fn(batch)
                if precision is not None:
                    precision.update()
                if w.distributed:
                    metrics = _reduce_metrics(metrics, weight, device)
                    _broadcast_modules(state, buffers_only=True)
                t2 = time.perf_counter()
                wait, busy = wait + (t1 - t0), busy + (t2 - t1)
                pos.step_in_epoch += 1
                pos.global_step += 1
                examples += global_n
                pos.epoch_count += 1
                for k, v in metrics.items():
                    pos.epoch_sums[k] = pos.epoch_sums.get(k, 0.0) + float(v)
                if logger is not None and pos.global_step % cfg.log_every == 0:
                    logger.log(pos.global_step, metrics, "train/step")
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
                # callbacks (sample grids) first: a checkpoint covers a step only once its side outputs exist,
                # so a kill in between re-runs the step's callbacks on resume rather than losing them
                for cb in callbacks:
                    cb(pos.global_step, metrics)
                if cfg.checkpoint_every and pos.global_step % cfg.checkpoint_every == 0:
                    _checkpoint(ckpt, state, pos, main)
            bar.close()
            epoch_metrics = {k: v / max(pos.epoch_count, 1) for k, v in pos.epoch_sums.items()}
            # a timing: logged for people, kept out of the history, curves and checkpoints, which repeat byte for byte
            wait_fraction = wait / (wait + busy) if wait + busy > 0 else 0.0
            if epoch_end is not None:
                epoch_metrics.update(epoch_end(pos.epoch))
            epoch_metrics["epoch"] = pos.epoch
            pos.history.append(epoch_metrics)
            if logger is not None:
                logger.log(pos.global_step, epoch_metrics, "train/epoch")
            log.info("event=epoch_end epoch=%d step=%d data_wait_fraction=%.3f data_workers=%d %s", pos.epoch,
                     pos.global_step, wait_fraction, workers, " ".join(f"{k}={v:.5g}" for k, v in epoch_metrics.items()))
            pos.epoch += 1
            pos.step_in_epoch = 0
            pos.epoch_sums, pos.epoch_count = {}, 0
            _checkpoint(ckpt, state, pos, main)
    finally:
        if logger is not None:
            logger.close()
        if sync is not None:
            sync.close()
            _SYNC = None
    costs.record_units(steps=pos.global_step - (resumed_from or 0), examples=examples)
    barrier()
    return FitResult(pos.history, pos.global_step, resumed_from, ckpt)


def _checkpoint(path: Path, state: dict[str, Stateful], pos: _Position, main: bool) -> None:
    """Rank 0 writes; the others wait until it has, so a resume never finds a half-written step."""
    if main:
        save_checkpoint(path, state, pos)
    barrier()


def supervised_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device,
                    scheduler: Any | None = None,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    precision: Precision | None = None) -> Callable[[Any], dict[str, float]]:
    """The common ``step_fn``: (inputs, targets) batch, one loss, one optimiser step.

    ``transform`` (label-preserving augmentation) is applied to the inputs on the device, before
    the forward pass; it must draw its randomness from a generator kept in the loop's ``state``
    so that a resumed run augments exactly as an uninterrupted one. ``precision`` (pass the same
    object to :func:`fit`) runs the forward pass and loss under autocast.
    """
    amp = precision or Precision("32", device)

    def step(batch: Any) -> dict[str, float]:
        x, y = to_device(batch, device)
        if transform is not None:
            x = transform(x)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with amp.autocast():
            out = model(x)
            loss = loss_fn(out, y)
        amp.backward(loss)
        amp.step(optimizer)
        if scheduler is not None:
            scheduler.step()
        metrics = {"loss": float(loss.detach())}
        if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
            metrics["accuracy"] = float((out.argmax(1) == y).float().mean())
        return metrics

    return step
