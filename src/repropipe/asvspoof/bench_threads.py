"""`python -m repropipe asvspoof bench-threads` (registered in bench.py): the stages' own work at 1 and 2 CPUs."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def run(args: Any) -> int:
    """The stages' own functions, as each stage runs them on a budget of n CPUs.

    Features: :func:`write_features` with ``processes=n``, the stage's own function (n
    single-threaded workers in one pool for all splits). Train: :func:`repropipe.asvspoof.train.train_one` with
    ``torch.set_num_threads(n)`` and no DataLoader workers (``resources.data_workers(n)`` is 0 below
    four CPUs), as ``asvspoof_train`` does; each pass trains from scratch in a fresh directory. The
    data are the synthetic set of ``--params`` (``--utterances`` scales its split counts), written once to a temporary directory (not timed).
    Process start-up and imports are not timed. Budgets are timed in turns (1, 2, 1, 2, ...) after
    one untimed warm-up each, so a change in the machine's load hits both alike; the load average
    is printed because on a shared machine the ratio says as much about the neighbours as the code.
    """
    import dataclasses
    import logging

    import torch

    from repropipe import params as params_mod
    from repropipe.asvspoof import data
    from repropipe.asvspoof.config import FeaturesConfig, TrainConfig
    from repropipe.asvspoof.features import write_features
    from repropipe.asvspoof.synth import write_synthetic
    from repropipe.asvspoof.train import train_one
    from repropipe.resources import usable_cores

    logging.getLogger("repropipe").setLevel(logging.WARNING)
    budgets = [int(t) for t in str(args.threads).split(",") if t]
    params = params_mod.load_params(args.params)
    features_cfg = FeaturesConfig.of(params)
    train_cfg = dataclasses.replace(TrainConfig.of(params), epochs=args.epochs, checkpoint_every=0, per_model=None,
                                    precision="32")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic(root / "raw", synthetic_config(params, args.utterances), seed=0, progress=False)
        src = data.open_source(root / "raw")
        n_utt = sum(len(data.read_protocol(src, s)) for s in data.SPLITS)
        runs = 0

        def features(n: int) -> Path:
            nonlocal runs
            runs += 1
            out = root / f"feat{runs}"
            torch.set_num_threads(1)
            write_features(root / "raw", out, features_cfg, seed=0, on_bad="error", processes=n, progress=False)
            return out

        feat_dir = features(1)

        def train(n: int) -> None:
            nonlocal runs
            runs += 1
            torch.set_num_threads(n)
            with contextlib.redirect_stderr(io.StringIO()):  # the training loop's progress bars
                train_one(args.model, 0, train_cfg, feat_dir, root / f"run{runs}", torch.device("cpu"), {})

        load0 = os.getloadavg()[0]
        for n in budgets:  # warm-up
            features(n)
            train(n)
        times: dict[tuple[str, int], list[float]] = {}
        cpu: dict[int, list[tuple[float, float]]] = {}  # features: (this process's, its workers') CPU seconds
        for _ in range(max(1, args.repeats)):
            for n in budgets:
                for name, fn in (("features", features), ("train", train)):
                    t0, c0 = time.perf_counter(), _cpu_seconds()
                    fn(n)
                    times.setdefault((name, n), []).append(time.perf_counter() - t0)
                    if name == "features":
                        cpu.setdefault(n, []).append(tuple(b - a for a, b in zip(c0, _cpu_seconds())))
        load1 = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    base = budgets[0]
    print(f"bench-threads: asvspoof synthetic set of {args.params} ({n_utt} utterances), {args.model} "
          f"{args.epochs} epoch(s); {usable_cores()} usable cores; median of {max(1, args.repeats)} interleaved passes; "
          f"load average {load0:.2f} -> {load1:.2f}")
    print(f"  {'stage':10s} " + " ".join(f"{f'{n} CPU s':>9s}" for n in budgets)
          + " " + " ".join(f"{f'x{n}/x{base}':>8s}" for n in budgets[1:]))
    for name, goal in (("features", 1.8), ("train", 1.4)):
        ratios = [med[(name, base)] / med[(name, n)] for n in budgets[1:]]
        print(f"  {name:10s} " + " ".join(f"{med[(name, n)]:9.2f}" for n in budgets) + " "
              + " ".join(f"{r:8.2f}" for r in ratios) + f"   (goal at 2 CPUs: >= {goal}x)")
    print("  features CPU seconds per pass (medians; they depend little on the load): "
          + "; ".join(f"{n} CPU: parent {statistics.median(c[0] for c in cpu[n]):.2f}, "
                      f"workers {statistics.median(c[1] for c in cpu[n]):.2f}" for n in budgets))
    return 0


def _cpu_seconds() -> tuple[float, float]:
    """User + system CPU of this process (all its threads) and of its finished child processes (pool workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def synthetic_config(params: dict[str, Any], utterances: int | None) -> Any:
    """The params' synthetic set, or one of about ``utterances`` utterances split in the same proportions."""
    import dataclasses

    from repropipe.asvspoof.config import SplitCounts, SyntheticConfig

    cfg = SyntheticConfig.of(params)
    if utterances is None:
        return cfg
    counts = dataclasses.asdict(cfg.utterances)
    total = sum(counts.values())
    scaled = {k: max(1, round(v * utterances / total)) for k, v in counts.items()}
    return dataclasses.replace(cfg, utterances=SplitCounts(**scaled))
