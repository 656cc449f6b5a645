"""The pipeline on a real single-node SLURM cluster (scripts/slurm-cluster.sh) through the slurm profile.

Every stage must run as its own SLURM job: each stage has a completed job whose comment names its rule
(the plugin's `rule_<name>`), and every metrics.json records the job id of the job that wrote it.
The cluster is stopped afterwards, pass or fail, and no daemon or job step it started may be left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"
DAEMONS = {"slurmctld", "slurmd", "slurmstepd", "munged"}
# This machine's cluster has no accounting (no sacct): poll squeue; check the first status soon.
LOCAL_CLUSTER = ["--slurm-status-command", "squeue", "--slurm-no-account",
                 "--slurm-init-seconds-before-status-checks", "2"]


def _daemon_pids() -> set[tuple[int, str]]:
    """(pid, name) of every SLURM or munge process now running, read from /proc."""
    found = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in DAEMONS:
            found.add((int(comm.parent.name), name))
    return found


def _cluster(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=900)


@pytest.fixture
def slurm_cluster():
    if os.geteuid() != 0 or (shutil.which("slurmctld") is None and shutil.which("apt-get") is None):
        reason = "starting a SLURM cluster needs root and either slurm-wlm installed or apt-get"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    before = _daemon_pids()
    try:
        started = _cluster("start")
        assert started.returncode == 0, f"slurm-cluster.sh start failed:\n{started.stdout}\n{started.stderr}"
        yield
    finally:
        stopped = _cluster("stop")
        left = _daemon_pids() - before
        assert stopped.returncode == 0, f"slurm-cluster.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert not left, f"processes left behind after stop: {sorted(left)}"


def _jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still remembers (MinJobAge keeps finished ones): id -> name, comment, state."""
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%j|%k|%T"],
                         capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        jid, name, comment, state = line.strip().split("|", 3)
        jobs[jid] = {"name": name, "comment": comment, "state": state}
    return jobs


def test_every_stage_runs_as_a_slurm_job(tmp_path, slurm_cluster):
    root = copy_project(tmp_path / "proj")
    stages = json.loads(subprocess.run([sys.executable, "-m", "repropipe", "pipeline", "stages", "--json"], cwd=root, env=ENV,
                                       capture_output=True, text=True, check=True).stdout)
    cpu_only = subprocess.run([sys.executable, "-m", "repropipe", "pipeline", "set-resources", "gpu=0",
                               "cpus_per_task=1", "mem_mb=1000"], cwd=root,
                              env=ENV, capture_output=True, text=True, check=True).stdout.split()
    known = set(_jobs())
    res = subprocess.run(["snakemake", "results/report.html", "--profile", "workflow/profiles/slurm",
                          *LOCAL_CLUSTER, *cpu_only], cwd=root, env=ENV, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, f"snakemake on SLURM failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    assert (root / "results/report.html").stat().st_size > 0

    ours = {jid: j for jid, j in _jobs().items() if jid not in known}
    by_rule = {j["comment"].removeprefix("rule_").split("_wildcards_")[0]: jid for jid, j in ours.items()}
    assert set(by_rule) == set(stages), f"SLURM jobs {sorted(by_rule)} != stages {sorted(stages)}"
    assert all(j["state"] == "COMPLETED" for j in ours.values()), ours

    provs = sorted((root / "results").glob("*/provenance.json"))
    assert provs, "no stage wrote a provenance.json"
    for path in provs:
        prov = json.loads(path.read_text())
        assert prov["slurm_job_id"] == by_rule[prov["stage"]], f"{path}: {prov['slurm_job_id']!r}"

    dry = subprocess.run(["snakemake", "-n", "results/report.html"], cwd=root, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert "Nothing to be done" in dry.stdout + dry.stderr
