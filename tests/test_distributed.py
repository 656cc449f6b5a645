"""Data-parallel training, precision and CPU budgets (issue 14), on CPU with the gloo backend.

Two ranks started by torchrun train the tiny model of tests/_train_ddp.py to the same weights as
one process with the same global batch; a two-rank run killed mid-epoch resumes to exactly the
weights of an uninterrupted two-rank run; bf16 autocast runs on CPU; thread budgets reach torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repropipe import resources
from repropipe.io import torch_load
from repropipe.training import LoopConfig, Precision, fit, rank_batches, supervised_step

HERE = Path(__file__).parent
SCRIPT = str(HERE / "_train_ddp.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "REPROPIPE_THREADS"):
    ENV.pop(var, None)


def _run(tmp: Path, name: str, ranks: int, kill_at: int = 0, precision: str = "32") -> subprocess.CompletedProcess:
    args = [str(tmp / name), str(tmp / f"{name}.pt"), str(kill_at), precision]
    cmd = ([sys.executable, SCRIPT] if ranks == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), SCRIPT])
    return subprocess.run(cmd + args, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    for name, ranks in (("one", 1), ("two", 2)):
        res = _run(tmp, name, ranks)
        assert res.returncode == 0, res.stderr[-3000:]
    return tmp


def test_two_gloo_ranks_train_to_the_weights_of_one_process(runs):
    one, two = torch_load(runs / "one.pt"), torch_load(runs / "two.pt")
    assert one["world_size"] == 1 and two["world_size"] == 2
    for k in one["weights"]:
        assert torch.allclose(one["weights"][k], two["weights"][k], atol=1e-5, rtol=1e-5), k
    assert two["history"][-1]["loss"] < 0.8 * two["history"][0]["loss"]  # it trained: the comparison is not vacuous
    for a, b in zip(one["history"], two["history"]):  # per-epoch means of the whole batch's loss and accuracy
        assert a.keys() == b.keys()
        for k in a:
            assert abs(a[k] - b[k]) < 1e-5, (k, a[k], b[k])
    # only rank 0 wrote checkpoints and curves in the shared run directory
    assert (runs / "two/checkpoints/last.pt").exists() and (runs / "two/live").is_dir()
    assert not (runs / "two_rank1/checkpoints").exists() and not (runs / "two_rank1/live").exists()


def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_weights(runs, tmp_path):
    killed = _run(tmp_path, "k", 2, kill_at=14)  # checkpoints every 4 steps: resumes from step 12
    assert killed.returncode != 0
    assert torch_load(tmp_path / "k/checkpoints/last.pt")["global_step"] == 12
    resumed = _run(tmp_path, "k", 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = torch_load(tmp_path / "k.pt"), torch_load(runs / "two.pt")
    assert got["resumed"] == 12 and want["resumed"] is None
    for k in want["weights"]:
        assert torch.equal(got["weights"][k], want["weights"][k]), k
    assert got["history"] == want["history"]


def test_rank_shares_of_each_step_are_the_single_process_batch():
    order = list(range(23))
    one = rank_batches(order, 10, 0, 1)
    for world in (2, 3):
        shares = [rank_batches(order, 10, r, world) for r in range(world)]
        for step, (batch, n) in enumerate(one):
            got = sorted(i for r in range(world) for i in shares[r][step][0] if shares[r][step][1])
            assert got == sorted(batch) and all(s[step][1] == n for s in shares)
    # a last batch smaller than the world: the empty rank gets one item with weight 0
    assert rank_batches([5, 6, 7], 2, 1, 2)[-1] == ([7], 0) and rank_batches([5, 6, 7], 2, 0, 2)[-1] == ([7], 1)


def _tiny_fit(tmp: Path, precision: str) -> tuple[list[dict], list[torch.dtype]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    amp = Precision(precision, torch.device("cpu"))
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    step = supervised_step(model, opt, torch.nn.functional.cross_entropy, torch.device("cpu"), precision=amp)
    res = fit(step, torch.utils.data.TensorDataset(x, y), {"model": model, "optimizer": opt},
              LoopConfig(epochs=4, batch_size=16, progress=False, num_workers=0), tmp, precision=amp)
    assert torch_load(tmp / "checkpoints/last.pt")["state"]["precision"]["name"] == Precision.normalise(precision)
    return res.history, seen


def test_bf16_autocast_trains_on_cpu(tmp_path):
    history, dtypes = _tiny_fit(tmp_path / "bf16", "bf16")
    assert set(dtypes) == {torch.bfloat16}  # the forward ran in bfloat16
    assert history[-1]["loss"] < 0.7 * history[0]["loss"] and history[-1]["accuracy"] > 0.85
    h32, d32 = _tiny_fit(tmp_path / "f32", "32")
    assert set(d32) == {torch.float32} and abs(h32[-1]["loss"] - history[-1]["loss"]) < 0.05


def test_precision_names_are_checked():
    assert Precision.normalise(32) == "32" and Precision.normalise("bf16-mixed") == "bf16"
    assert Precision("16-mixed", torch.device("cpu")).scaler is not None
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize("env, want", [
    ({"REPROPIPE_THREADS": "3", "SLURM_CPUS_PER_TASK": "5", "OMP_NUM_THREADS": "7"}, (3, "REPROPIPE_THREADS")),
    ({"SLURM_CPUS_PER_TASK": "5", "OMP_NUM_THREADS": "7"}, (5, "SLURM_CPUS_PER_TASK")),
    ({"OMP_NUM_THREADS": "7"}, (7, "OMP_NUM_THREADS")),
    ({}, (None, "all usable cores")),
    ({"REPROPIPE_THREADS": "0"}, (None, "REPROPIPE_THREADS=0")),
])
def test_cpu_budget_follows_the_orchestrator(monkeypatch, env, want):
    for var in ("REPROPIPE_THREADS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    n, source = resources.cpu_threads()
    assert source == want[1] and n == (want[0] or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_budget_reaches_torch_in_a_stage_process(threads):
    """A fresh process, as a stage runs: OMP_NUM_THREADS as Snakemake sets it, torch's count follows it."""
    code = "from repropipe import resources; import torch; resources.use_threads(); print(torch.get_num_threads())"
    env = {**ENV, "OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": threads}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == threads
    assert resources.data_workers(2) == 0 and resources.data_workers(8) == 2 and resources.data_workers(64) == 8


def test_world_from_an_srun_step(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: parse the node list ourselves
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "6")
    monkeypatch.setenv("SLURM_PROCID", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODEID", "2")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2(x2),2")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[07-09]")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    w = resources.world()
    assert (w.rank, w.world_size, w.local_rank, w.local_world_size, w.master_addr, w.master_port, w.launcher) == \
        (4, 6, 1, 2, "gpu07", 20000 + 123456 % 20000, "srun")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")  # a one-task step (Snakemake's `srun -n1`): not distributed
    assert not resources.world().distributed


@pytest.mark.e2e
def test_torchrun_runs_a_train_stage_on_two_ranks_in_bf16_and_rank_0_publishes(tmp_path, monkeypatch):
    """`torchrun --standalone --nproc_per_node 2 -m repropipe eeg train` on a test-scale project (precision bf16):
    one published output, its provenance says world size 2 and bf16, and eeg evaluate reads it."""
    import copy
    import json

    from conftest import TINY_PARAMS, copy_project
    from repropipe.stages import STAGES, load_all, run_stage

    params = copy.deepcopy(TINY_PARAMS)
    params["eeg"]["train"].update(runs=["transformer", "simclr_low"], precision="bf16")
    project = copy_project(tmp_path / "proj", params)
    load_all()
    monkeypatch.chdir(project)
    for step in ("download", "features"):
        run_stage(STAGES[f"eeg_{step}"], project / "params.yaml")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "repropipe", "eeg", "train"], cwd=project, env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stderr.count("event=process_group backend=gloo") == 2
    models = project / "results/eeg/models"
    prov = json.loads((models / "provenance.json").read_text())
    assert (prov["world_size"], prov["precision"], prov["launcher"], prov["stage"]) == (2, "bf16", "torchrun", "eeg_train")
    assert (models / "transformer/model.pt").exists() and (models / "simclr_low/model.pt").exists()
    assert not list(models.rglob("rank1")) and not (project / ".repropipe/resume/eeg_train").exists()
    run_stage(STAGES["eeg_evaluate"], project / "params.yaml")
    assert json.loads((project / "results/eeg/metrics.json").read_text())["transformer/accuracy"] >= 0.0
