"""Stage-level resume: a train stage killed mid-run picks up from its checkpoint on the next run,
even though dvc and snakemake delete the stage's outputs before running it again."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from repropipe.stages import RESUME_ROOT, load_all, run_stage

HERE = Path(__file__).parent
MODELS = Path("results/gan/models")
CKPT = MODELS / "wgan_gp_64_generator/checkpoints/last.pt"


def _kill_mid_training(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    return subprocess.run([sys.executable, str(HERE / "_kill_after_checkpoint.py"), "gan", "train"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def gan_ready(project: Path, monkeypatch) -> Path:
    monkeypatch.chdir(project)
    stages = load_all()
    for name in ("gan_download", "gan_features"):
        run_stage(stages[name], project / "params.yaml")
    return project


def test_killed_train_stage_resumes_to_the_same_weights(gan_ready: Path, caplog):
    stages = load_all()
    run_stage(stages["gan_train"], gan_ready / "params.yaml")
    straight = torch.load(CKPT, weights_only=True)
    assert not (RESUME_ROOT / "gan_train").exists()  # a finished stage leaves no work behind
    shutil.rmtree(MODELS)

    killed = _kill_mid_training(gan_ready)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not MODELS.exists()  # never a half-written output
    work = RESUME_ROOT / "gan_train" / CKPT
    assert torch.load(work, weights_only=True)["global_step"] == 2

    with caplog.at_level(logging.INFO):
        run_stage(stages["gan_train"], gan_ready / "params.yaml")
    assert "event=resume checkpoint=" in caplog.text
    resumed = torch.load(CKPT, weights_only=True)
    assert resumed["global_step"] == straight["global_step"] == 4
    for net in ("G", "D"):
        for k, v in straight["state"][net].items():
            assert torch.equal(v, resumed["state"][net][k]), (net, k)
    assert not (RESUME_ROOT / "gan_train").exists()


def test_work_left_by_other_params_is_wiped_not_resumed(gan_ready: Path, caplog):
    killed = _kill_mid_training(gan_ready)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    params = yaml.safe_load((gan_ready / "params.yaml").read_text())
    params["gan"]["train"]["lr"] = 0.0005
    (gan_ready / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    with caplog.at_level(logging.INFO):
        run_stage(load_all()["gan_train"], gan_ready / "params.yaml")
    assert "event=stale_work_wiped" in caplog.text
    assert "event=resume checkpoint=" not in caplog.text
    assert torch.load(CKPT, weights_only=True)["global_step"] == 4
