import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repropipe.training import epoch_order, load_checkpoint, select_device

HERE = Path(__file__).parent


def train(run_dir, kill_at, out):
    return subprocess.run([sys.executable, str(HERE / "_train_tiny.py"), str(run_dir), str(kill_at), str(out)],
                          capture_output=True, text=True)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    done = train(tmp_path / "straight", -1, tmp_path / "straight.pt")
    assert done.returncode == 0, done.stderr
    killed = train(tmp_path / "killed", 17, tmp_path / "never.pt")  # mid-epoch 1, two steps after a checkpoint
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()
    resumed = train(tmp_path / "killed", -1, tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "straight.pt", weights_only=True), torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert b["resumed"] == 15 and a["resumed"] is None
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    assert a["history"] == b["history"]


def test_a_kill_at_a_checkpoint_step_never_loses_that_step_s_side_outputs(tmp_path):
    """Callbacks (sample grids) run before the checkpoint of their step: killed in between, the resumed run
    repeats the step and writes its grid; it never resumes past a step whose grid is missing."""
    killed = train(tmp_path / "run", 15, tmp_path / "never.pt")  # dies in a callback of checkpoint step 15
    assert killed.returncode == -signal.SIGKILL
    resumed = train(tmp_path / "run", -1, tmp_path / "done.pt")
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(tmp_path / "done.pt", weights_only=True)["resumed"] == 12
    grids = sorted(int(p.stem) for p in (tmp_path / "run/grids").iterdir())
    assert grids == list(range(3, 40 + 1, 3))  # 4 epochs x 10 steps


def test_two_runs_give_identical_metrics_and_history_is_complete(tmp_path):
    r1 = train(tmp_path / "a", -1, tmp_path / "a.pt")
    r2 = train(tmp_path / "b", -1, tmp_path / "b.pt")
    assert r1.returncode == 0 and r2.returncode == 0
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["history"] == b["history"]
    assert [h["epoch"] for h in a["history"]] == [0, 1, 2, 3]
    assert all("data_wait_fraction" not in h for h in a["history"])  # a timing: logged, never in the history
    assert a["history"][-1]["loss"] < a["history"][0]["loss"]
    # dvclive curves, per step and per epoch
    assert (tmp_path / "a/live/plots/metrics/train/step/loss.tsv").exists()
    assert (tmp_path / "a/live/plots/metrics/train/epoch/loss.tsv").exists()


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert epoch_order(20, 1, 3) == epoch_order(20, 1, 3)
    assert epoch_order(20, 1, 3) != epoch_order(20, 1, 4)
    assert sorted(epoch_order(20, 1, 3)) == list(range(20))


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(bad)):
        load_checkpoint(bad, {})


def test_device_choice():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            select_device("cuda")
