from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# The pipeline at test scale: every stage runs, each in seconds.
TINY_PARAMS = {
    "seed": 0,
    "device": "cpu",
    "qr": {"dtype": "float64", "threads": 1, "m": [32, 64], "n": [4, 8], "repeats": 1,
           "methods": ["torch.linalg.qr", "mgs_autograd", "qr_class", "memory_efficient", "fast"]},
    "gan": {
        "source": "synthetic",
        "data": {"num_images": 40, "archive": None, "partition": None},
        "features": {"crop": 178, "size": 64, "shard_size": 16, "on_bad_image": "error"},
        "model": {"generator": "wgan_gp_64_generator", "critic": "wgan_gp_64_critic", "nz": 128, "ngf": 16, "ndf": 16},
        "train": {"epochs": 1, "batch_size": 4, "n_dis": 2, "lr": 0.0002, "beta1": 0.0, "beta2": 0.9,
                  "gp_scale": 10.0, "checkpoint_every": 2, "sample_every": 2},
        "fidelity": {"feature_extractor_weights_path": None, "real_split": "train", "num_real": 32},
        "evaluate": {"num_samples": 24, "kid_subset_size": 12,
                     "isir": {"iterations": 2, "particles": 3, "batch_size": 32}},
    },
    "report": {"title": "repropipe test report"},
}


def copy_project(dest: Path, params: dict | None = None) -> Path:
    """A clean checkout of the tracked files (plus untracked, not ignored) as its own git repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if rel == "dvc.lock":  # the developer's own run; a clean checkout has none
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "params.yaml").write_text(yaml.safe_dump(params or TINY_PARAMS, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "test checkout"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "proj")
