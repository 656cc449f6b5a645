"""The stage registry: what each `python -m repropipe <branch> <step>` reads, writes and runs.

This registry is the one declaration of the DAG: dvc.yaml and workflow/rules/<branch>.smk are
generated from it (`python -m repropipe pipeline write-dag`; tests/test_dag.py fails when they are
stale). A stage declares its data inputs; the project code it executes is computed from its imports
(:mod:`repropipe.codedeps`) and added to its inputs in both tools. A stage function receives only the
params keys it declares, so the params hash in its provenance covers everything it read.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repropipe import codedeps, costs, io, params as params_mod, provenance, resources

log = logging.getLogger("repropipe")

# Training work in progress lives here, outside every declared output (git-ignored, not a DVC out).
RESUME_ROOT = Path(".repropipe/resume")


DEFAULT_RESOURCES = {"mem_mb": 2000, "runtime": 30, "threads": 1, "gpu": 0}


@dataclass(frozen=True)
class Plot:
    """A `dvc plots` definition: one CSV, x and y columns, and the column whose values are separate lines."""

    title: str
    file: str
    x: str
    y: str | tuple[str, ...]
    template: str = "linear"
    series: str | None = None  # e.g. "model": one line per model (custom template .dvc/plots/<template>_by_<series>.json)


@dataclass(frozen=True)
class Stage:
    name: str
    branch: str
    step: str
    help: str
    params: tuple[str, ...]
    deps: tuple[str, ...]  # data inputs; the code it runs is added (see `code`)
    outs: tuple[str, ...]
    run: Callable[["StageContext"], None]
    resources: dict[str, int] = field(default_factory=dict)  # mem_mb, runtime (min), threads, gpu
    plots: tuple[Plot, ...] = ()
    noisy: tuple[str, ...] = ()  # outs that hold timings or memory: not expected to repeat byte for byte

    @property
    def cmd(self) -> str:
        return f"python -m repropipe {self.branch} {self.step}"

    @functools.cached_property
    def code(self) -> tuple[str, ...]:
        """Every project source file this stage executes (its import closure)."""
        return codedeps.stage_code(self.run)

    @property
    def all_deps(self) -> tuple[str, ...]:
        return tuple(self.deps) + self.code

    @property
    def metrics(self) -> tuple[str, ...]:
        """Outs that `dvc metrics show` reads."""
        return tuple(o for o in self.outs if Path(o).name in ("metrics.json", "timings.json"))

    @property
    def resource(self) -> dict[str, int]:
        return {**DEFAULT_RESOURCES, **self.resources}


@dataclass
class StageContext:
    stage: Stage
    params: dict[str, Any]
    params_file: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    def provenance(self, *, data_source: str, device: str, seed: int | None = None) -> dict[str, Any]:
        selected = params_mod.select(self.params, self.stage.params)
        return {
            "stage": self.stage.name,
            "command": self.stage.cmd,
            "git": provenance.git_revision(),
            "params_file": str(self.params_file),  # params.yaml, or Snakemake's effective config
            "params_keys": list(self.stage.params),
            "params_hash": io.params_hash(selected),
            "inputs": list(self.stage.all_deps),
            "inputs_fingerprint": io.fingerprint(self.stage.all_deps),
            "packages": provenance.package_versions(),
            "device": device,
            # a stage that is not a train stage computes in float32 in the process it was started in; train
            # stages add how they ran over these (training.run_record: world size, launcher, precision, threads)
            "world_size": resources.world().world_size,
            "precision": "32",
            "seed": self.seed if seed is None else seed,
            "data_source": data_source,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        }

    @contextmanager
    def resumable(self, out: str | os.PathLike[str]) -> Iterator[Path]:
        """Build the directory output ``out`` in a work directory that survives a killed run.

        Both dvc and snakemake delete a stage's outputs before running it again, so checkpoints
        kept inside an output are gone exactly when a resume needs them. The stage writes into
        the yielded directory instead (``.repropipe/resume/<stage>/<out>``), where ``fit`` finds
        its checkpoints after a kill; when the block succeeds the directory is copied into place
        atomically. The work directory is keyed by the params the stage reads and a fingerprint
        of its inputs (code included): work left by other params, data or code is wiped, never
        resumed. ``run_stage`` removes the stage's work once the stage has succeeded.
        """
        work = RESUME_ROOT / self.stage.name / Path(out)
        key = {"params": io.params_hash(self.params), "inputs": io.fingerprint(self.stage.all_deps)}
        marker = work / "resume_key.json"
        if work.exists():
            same = marker.exists() and json.loads(marker.read_text()) == key
            log.info("stage=%s event=%s work=%s", self.stage.name, "resume_work" if same else "stale_work_wiped", work)
            if not same:
                shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(marker, key)
        yield work
        with io.atomic_dir(out) as tmp:
            shutil.copytree(work, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(marker.name))

    def record_units(self, **counts: int) -> None:
        """Work this stage did (``utterances=N``, ``images=N``, ``files=N``; several calls add up).

        It goes into ``results/costs/<stage>.json`` with the measured time, so the report can give a
        cost per unit and project it to the full datasets.
        """
        costs.record_units(**counts)

    def write_metrics(self, path: str | os.PathLike[str], metrics: dict[str, Any], *, data_source: str,
                      device: str, seed: int | None = None) -> Path:
        """The one metrics writer: the numbers in ``path``, the rest of ``metrics`` in ``details.json`` and where
        they came from in ``provenance.json`` beside it.

        `dvc metrics show` and `dvc exp show` make a column of every key of metrics.json, flattening nested
        dicts and showing strings, so metrics.json keeps only the flat numbers (one column per model and
        metric) and the ``data_source`` label that says whether they came from synthetic data. Nested
        results (per run, per attack, intervals with their tests), lists and labels go to details.json,
        which says the same ``data_source``. The file names are fixed: :func:`register` declares
        details.json beside every metrics.json out.
        """
        if "provenance" in metrics:
            raise ValueError("'provenance' is reserved: it is written to provenance.json")
        path = Path(path)
        if path.name != "metrics.json":
            raise ValueError(f"{path}: the metrics file is named metrics.json (details.json is written beside it)")
        numbers = {k: v for k, v in metrics.items() if is_metric(v)}
        details = {k: v for k, v in metrics.items() if k not in numbers}
        io.atomic_write_json(path.with_name(DETAILS), {**details, "data_source": data_source})
        io.atomic_write_json(path.with_name("provenance.json"),
                             self.provenance(data_source=data_source, device=device, seed=seed))
        return io.atomic_write_json(path, {**numbers, "data_source": data_source})


#: What the metrics writer puts beside metrics.json: everything an evaluation returned that is not a flat number.
DETAILS = "details.json"


def is_metric(value: Any) -> bool:
    """A value `dvc metrics show` lists as one number: int, float or bool (not None, a string or a container)."""
    return isinstance(value, (int, float))


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add ``stage`` to the registry, with its cost file (``results/costs/<name>.json``) as a noisy output
    and ``details.json`` beside each metrics.json.

    Every stage's cost is measured by :func:`run_stage` whichever tool runs it, and every metrics.json is
    written by :meth:`StageContext.write_metrics`, which writes details.json with it, so both files are
    declared here, once, rather than in each ``@stage``.
    """
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} registered twice")
    cost = costs.path_of(stage.name)
    if cost not in stage.outs:
        stage = dataclasses.replace(stage, outs=(*stage.outs, cost), noisy=(*stage.noisy, cost))
    details = tuple(str(Path(o).with_name(DETAILS)) for o in stage.outs if Path(o).name == "metrics.json")
    if missing := tuple(d for d in details if d not in stage.outs):
        stage = dataclasses.replace(stage, outs=(*stage.outs, *missing))
    STAGES[stage.name] = stage
    return stage


def stage(name: str, *, branch: str, step: str, help: str, params: tuple[str, ...], deps: tuple[str, ...],
          outs: tuple[str, ...], resources: dict[str, int] | None = None, plots: tuple[Plot, ...] = (),
          noisy: tuple[str, ...] = ()) -> Callable[[Callable[[StageContext], None]], Callable[[StageContext], None]]:
    """Register a stage. ``deps`` are its data inputs only: the code it runs is found from its imports."""
    for what, value in (("deps", deps), ("outs", outs), ("params", params), ("noisy", noisy)):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"stage {name!r}: {what} must be a tuple of strings, got {value!r}")
    bad = [d for d in deps if d.startswith("src/")]
    if bad:
        raise ValueError(f"stage {name!r}: code dependencies are computed, do not declare {bad}")
    missing = [o for o in noisy if o not in outs]
    if missing:
        raise ValueError(f"stage {name!r}: noisy outputs {missing} are not among its outs")

    def deco(fn: Callable[[StageContext], None]) -> Callable[[StageContext], None]:
        register(Stage(name, branch, step, help, params, deps, outs, fn, dict(resources or {}), tuple(plots),
                       tuple(noisy)))
        return fn
    return deco


@dataclass(frozen=True)
class Tool:
    """A command that is not a pipeline stage (a benchmark, a checker): `python -m repropipe <branch> <step>`."""

    branch: str
    step: str
    help: str
    arguments: Callable[[Any], None]  # adds options to its argparse parser
    run: Callable[[Any], int | None]  # gets the parsed arguments; returns an exit status


TOOLS: dict[str, Tool] = {}


def tool(branch: str, step: str, *, help: str,
         arguments: Callable[[Any], None] = lambda parser: None) -> Callable[[Callable[[Any], int | None]], Callable[[Any], int | None]]:
    def deco(fn: Callable[[Any], int | None]) -> Callable[[Any], int | None]:
        TOOLS[f"{branch} {step}"] = Tool(branch, step, help, arguments, fn)
        return fn
    return deco


def load_branch(branch: str) -> dict[str, Stage]:
    """Import one branch's stage module: running a stage executes no other branch's code."""
    if importlib.util.find_spec(f"repropipe.{branch}.stage") is None:
        return STAGES
    importlib.import_module(f"repropipe.{branch}.stage")
    return STAGES


def load_all() -> dict[str, Stage]:
    """Import every branch's ``stage`` module (``repropipe/<branch>/stage.py``) so the registry is complete.

    A branch plugs in by having that module; stage modules keep heavy imports inside their
    functions so this stays fast.
    """
    import pkgutil

    import repropipe

    for info in pkgutil.iter_modules(repropipe.__path__):
        if info.ispkg and importlib.util.find_spec(f"repropipe.{info.name}.stage") is not None:
            importlib.import_module(f"repropipe.{info.name}.stage")
    return STAGES


def _nested(selected: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in selected.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _record_imports(st: Stage) -> None:
    """With REPROPIPE_RECORD_IMPORTS=<dir>, list the project files this run executed (audits ``Stage.code``)."""
    import sys

    where = os.environ.get("REPROPIPE_RECORD_IMPORTS")
    if not where:
        return
    root = codedeps.SRC_ROOT.parent
    # only our own modules: touching others' attributes can trigger lazy imports (speechbrain's)
    mods = [m for name, m in list(sys.modules.items()) if name == "repropipe" or name.startswith("repropipe.")]
    files = sorted(str(Path(f).resolve().relative_to(root)) for f in (vars(m).get("__file__") for m in mods)
                   if f and Path(f).resolve().is_relative_to(codedeps.SRC_ROOT))
    io.atomic_write_json(Path(where) / f"{st.name}.json", files)


def run_stage(st: Stage, params_file: str | os.PathLike[str] = params_mod.DEFAULT_PARAMS) -> None:
    all_params = params_mod.load_params(params_file)
    io.check_writable(st.outs)  # before any work, not after an hour of training
    ctx = StageContext(st, _nested(params_mod.select(all_params, st.params)), Path(params_file))
    log.info("stage=%s event=start params_file=%s params=%s", st.name, params_file, ",".join(st.params))
    with costs.measure(st.name) as meter:
        st.run(ctx)
    shutil.rmtree(RESUME_ROOT / st.name, ignore_errors=True)  # finished: nothing left to resume
    _record_imports(st)
    if resources.world().is_main:  # every rank measured the same steps; rank 0 publishes, as for every output
        meter.cost.write(costs.path_of(st.name))
    log.info("stage=%s event=done outs=%s", st.name, ",".join(st.outs))
