"""How many CPUs a stage may use, and which rank of a data-parallel run it is.

Every stage asks :func:`cpu_threads` (through :func:`use_threads`) instead of pinning itself, so it
uses exactly the CPUs its orchestrator gave it. The sources, first match wins:

1. ``REPROPIPE_THREADS`` (environment): an explicit count per process; ``0`` means every core this
   process may run on, shared among the ranks on this node. This is the knob for ``dvc repro``,
   which sets nothing: ``REPROPIPE_THREADS=8 dvc repro``.
2. ``SLURM_CPUS_PER_TASK``: what the SLURM job (or job step) was given per task.
3. ``OMP_NUM_THREADS``: Snakemake sets it to the rule's ``threads:`` (scaled down to ``--cores``);
   torchrun sets it to 1 per worker unless it is already set.
4. Otherwise every core in this process's CPU affinity mask, divided among the local ranks.

Why an environment variable and not a params key for DVC runs: a params key would have to be read
by every stage (each stage's params are part of its cache key), so changing it would re-run the
whole pipeline, and it would make ``params.yaml`` differ between a laptop and a cluster node for
the same experiment. The thread count is a property of the machine, like the device; the results
of a stage are byte-identical for a given thread count (tests/test_reproducible.py runs both
builds with the same count), and train stages record the count they ran with in their
``provenance.json``.

Data-parallel runs (:func:`world`) are recognised from torchrun's variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) or, when
those are absent, from an ``srun`` job step's (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``,
``SLURM_LOCALID``, ``SLURM_STEP_TASKS_PER_NODE``, ``SLURM_STEP_NODELIST``).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger("repropipe.resources")

ENV_THREADS = "REPROPIPE_THREADS"
_RELAUNCHED = "REPROPIPE_SRUN_RELAUNCHED"


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "none"  # none | torchrun | srun

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


def _tasks_on_node(spec: str, node_id: int) -> int:
    """Tasks on node ``node_id`` from SLURM's compressed list, e.g. ``2(x3),1`` -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"SLURM tasks-per-node {spec!r}: expected entries like 2 or 2(x3)")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_id] if node_id < len(counts) else counts[-1]


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[03-05,07]`` -> ``node03``), via scontrol when there."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no scontrol on this node: parse the list ourselves, below
    m = re.match(r"([^\[,]+)(?:\[([^\],-]+))?", nodelist)
    if not m:
        raise ValueError(f"SLURM node list {nodelist!r}: cannot find the first host")
    return m.group(1) + (m.group(2) or "")


def world() -> World:
    """The data-parallel layout this process was started in (torchrun first, then an srun step)."""
    ws = _int_env("WORLD_SIZE")
    if ws is not None:
        return World(rank=_int_env("RANK") or 0, world_size=ws, local_rank=_int_env("LOCAL_RANK") or 0,
                     local_world_size=_int_env("LOCAL_WORLD_SIZE") or 1,
                     master_addr=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                     master_port=_int_env("MASTER_PORT") or 29500, launcher="torchrun")
    ntasks = _int_env("SLURM_STEP_NUM_TASKS")  # set in an srun step only, never in the batch script
    if ntasks is not None and ntasks > 1:
        node = _int_env("SLURM_NODEID") or 0
        per_node = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE") or str(ntasks)
        job = _int_env("SLURM_JOB_ID") or 0
        return World(rank=_int_env("SLURM_PROCID") or 0, world_size=ntasks, local_rank=_int_env("SLURM_LOCALID") or 0,
                     local_world_size=_tasks_on_node(per_node, node),
                     master_addr=os.environ.get("MASTER_ADDR") or _first_host(
                         os.environ.get("SLURM_STEP_NODELIST") or os.environ["SLURM_JOB_NODELIST"]),
                     master_port=_int_env("MASTER_PORT") or 20000 + job % 20000, launcher="srun")
    return World()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: a cgroup or taskset limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_threads() -> tuple[int, str]:
    """(threads for this process, which variable decided it); see the module docstring for the order."""
    local = world().local_world_size
    explicit = _int_env(ENV_THREADS)
    if explicit is not None:
        if explicit < 0:
            raise ValueError(f"{ENV_THREADS}={explicit}: expected 0 (all cores) or a positive count")
        if explicit > 0:
            return explicit, ENV_THREADS
        return max(1, usable_cores() // local), f"{ENV_THREADS}=0"
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        n = _int_env(name)
        if n is not None and n > 0:
            return n, name
    return max(1, usable_cores() // local), "all usable cores"


def data_workers(threads: int) -> int:
    """DataLoader worker processes for a budget of ``threads`` CPUs: one per four, at most eight.

    Every dataset here is in memory (decoded shards), so a worker saves little per batch and
    costs a process; below four CPUs the CPUs are worth more to the model's kernels.
    """
    return min(8, threads // 4)


_BLAS_LIMIT: list[object] = []  # the active threadpoolctl limit (kept alive for the process)


def _limit_blas(n: int) -> None:
    """numpy/scipy's BLAS and OpenMP pools (scikit-learn's GMM, LDA, CSP) follow the same budget as torch.

    Under DVC nothing else limits them, under Snakemake OPENBLAS_NUM_THREADS does: without this the same
    stage gives last-digit float differences depending on which tool ran it.
    """
    from threadpoolctl import threadpool_limits

    _BLAS_LIMIT[:] = [threadpool_limits(limits=n)]


def use_threads(*, workers: bool = False) -> tuple[int, int]:
    """Give torch this process's CPUs; returns (torch threads, DataLoader workers).

    With ``workers`` a share of the budget is set aside for DataLoader workers (each runs with
    one thread, as torch sets in every worker) and torch gets the rest.
    """
    import torch

    n, source = cpu_threads()
    nw = data_workers(n) if workers else 0
    torch_threads = max(1, n - nw)
    torch.set_num_threads(torch_threads)
    _limit_blas(torch_threads)
    log.info("event=threads threads=%d source=%s torch_threads=%d data_workers=%d", n, source, torch_threads, nw)
    return torch_threads, nw


def srun_relaunch(argv: list[str] | None = None) -> None:
    """Inside a SLURM allocation of several tasks but not yet in a job step of them: re-run under srun.

    Snakemake's SLURM executor runs a rule with resource ``mpi`` in the batch script itself, one
    process, expecting the rule's command to call srun; the generated rules call
    ``python -m repropipe ...`` directly, so the stage does it: it replaces this process by
    ``srun --ntasks=$SLURM_NTASKS python -m repropipe <same arguments>``, one rank per task.
    Returns (doing nothing) everywhere else.
    """
    ntasks = _int_env("SLURM_NTASKS") or 1
    if (ntasks <= 1 or os.environ.get(_RELAUNCHED) or _int_env("WORLD_SIZE") is not None
            or (_int_env("SLURM_STEP_NUM_TASKS") or 0) > 1):
        return
    args = sys.argv[1:] if argv is None else argv
    cpus = _int_env("SLURM_CPUS_PER_TASK")  # srun (Slurm >= 22.05) does not inherit sbatch's --cpus-per-task
    cmd = ["srun", f"--ntasks={ntasks}", *([f"--cpus-per-task={cpus}"] if cpus else []), "--kill-on-bad-exit=1",
           sys.executable, "-m", "repropipe", *args]
    log.info("event=srun_relaunch ntasks=%d cmd=%s", ntasks, " ".join(cmd))
    os.environ[_RELAUNCHED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("srun", cmd)
