"""What a stage run cost: measured by ``run_stage`` for every stage, the same way under DVC and Snakemake.

Snakemake's ``benchmark:`` files exist only under Snakemake and are not inputs of any rule, so the
report could not read them without reading undeclared files. Instead :func:`repropipe.stages.run_stage`
wraps every stage in :func:`measure` and writes ``results/costs/<stage>.json``, which the registry
declares as a noisy output of that stage (a measurement: never expected to repeat byte for byte) and
the report stage declares as an input.

A stage says how much work it did with :func:`record_units` (through ``ctx.record_units``, or from
library code such as the training loop, which has no context): counts of utterances, images, EDF
files, optimiser steps, examples. The report divides the wall time by them to get a cost per unit
and projects it to the full datasets.

Wall time covers the stage function, including the heavy imports stages do inside it (torch: seconds),
but not the interpreter's start-up. CPU time is user +
system of this process and of its children that have been waited for (feature worker pools,
DataLoader workers). Max RSS is the largest resident set of any one of those processes
(``getrusage``), not their sum.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repropipe import io

COSTS_DIR = "results/costs"
_ACTIVE: list["Meter"] = []  # the meter of the stage running in this process (at most one)


def path_of(stage_name: str) -> str:
    """The cost file of one stage (a declared output of it, an input of the report)."""
    return f"{COSTS_DIR}/{stage_name}.json"


@dataclass(frozen=True)
class Cost:
    """One stage run's cost: the contents of ``results/costs/<stage>.json``."""

    stage: str
    wall_s: float
    cpu_s: float  # user + system, this process and its waited-for children
    max_rss_mb: float  # the largest single process, MiB
    threads: int  # the CPU budget repropipe.resources gave this process
    threads_source: str
    world_size: int = 1  # ranks of a data-parallel run (costs are rank 0's)
    units: dict[str, int] = field(default_factory=dict)

    def per_unit(self) -> dict[str, float]:
        """Wall seconds per unit of work, for every unit the stage recorded (zero counts left out)."""
        return {k: self.wall_s / n for k, n in self.units.items() if n > 0}

    def write(self, path: str | Path) -> Path:
        return io.atomic_write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> "Cost":
        """A cost file, checked field by field; a DataError naming the file and the field otherwise."""
        raw = io.read_json(path, f"missing: run the stage {Path(path).stem!r} first")
        if not isinstance(raw, dict):
            raise io.DataError(path, f"expected a JSON object with the fields {_FIELDS}, got {type(raw).__name__}")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise io.DataError(path, f"not a stage cost file: missing {missing} (expected the fields {_FIELDS})")
        for key in ("wall_s", "cpu_s", "max_rss_mb"):
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise io.DataError(path, f"{key}: expected a finite number >= 0, got {v!r}")
        for key in ("threads", "world_size"):
            v = raw.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise io.DataError(path, f"{key}: expected an integer >= 1, got {v!r}")
        units = raw.get("units", {})
        if not isinstance(units, dict) or not all(
                isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for k, n in units.items()):
            raise io.DataError(path, f"units: expected {{name: count >= 0}}, got {units!r}")
        if not isinstance(raw["stage"], str) or not isinstance(raw["threads_source"], str):
            raise io.DataError(path, "stage and threads_source: expected strings")
        return cls(stage=raw["stage"], wall_s=float(raw["wall_s"]), cpu_s=float(raw["cpu_s"]),
                   max_rss_mb=float(raw["max_rss_mb"]), threads=raw["threads"], threads_source=raw["threads_source"],
                   world_size=raw.get("world_size", 1), units=dict(units))


_FIELDS = [f for f in Cost.__dataclass_fields__]
_REQUIRED = ["stage", "wall_s", "cpu_s", "max_rss_mb", "threads", "threads_source"]


def _rss_mb(kilo_or_bytes: int) -> float:
    """ru_maxrss is KiB on Linux, bytes on macOS."""
    return kilo_or_bytes / (1024 * 1024 if sys.platform == "darwin" else 1024)


@dataclass
class Meter:
    """Counts the units of work of the running stage; :func:`measure` turns it into a :class:`Cost`."""

    stage: str
    units: dict[str, int] = field(default_factory=dict)
    cost: Cost | None = None  # set when the measured block ends

    def record(self, **counts: int) -> None:
        for name, n in counts.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"stage {self.stage}: unit count {name}={n!r} must be an integer >= 0")
            self.units[name] = self.units.get(name, 0) + n


def record_units(**counts: int) -> None:
    """Add work done to the running stage's cost (several calls add up); a no-op outside a stage run.

    For code below a stage that has no context (the training loop records ``steps`` and ``examples``).
    """
    if _ACTIVE:
        _ACTIVE[-1].record(**counts)


@contextmanager
def measure(stage: str) -> Iterator[Meter]:
    """Measure the block (one stage function) and leave the result in ``meter.cost``."""
    from repropipe import resources

    threads, source = resources.cpu_threads()
    world_size = resources.world().world_size
    meter = Meter(stage)
    self0, children0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    _ACTIVE.append(meter)
    try:
        yield meter
    finally:
        _ACTIVE.remove(meter)
    wall = time.perf_counter() - t0
    self1, children1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(b, f) - getattr(a, f) for a, b in ((self0, self1), (children0, children1))
              for f in ("ru_utime", "ru_stime"))
    meter.cost = Cost(stage=stage, wall_s=round(wall, 3), cpu_s=round(cpu, 3),
                      max_rss_mb=round(_rss_mb(max(self1.ru_maxrss, children1.ru_maxrss)), 1),
                      threads=threads, threads_source=source, world_size=world_size, units=dict(meter.units))
