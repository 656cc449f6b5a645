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
    "report": {"title": "repropipe test report"},
    "asvspoof": {
        "source": "synthetic", "on_bad_file": "error",
        "real": {"url": "https://datashare.ed.ac.uk/bitstream/handle/10283/3336/LA.zip", "md5": None,
                 "cache_dir": "data/cache/asvspoof", "archive": None, "root": None},
        "synthetic": {"utterances": {"train": 30, "dev": 12, "eval": 16}, "speakers": {"train": 3, "dev": 2, "eval": 3},
                      "bonafide_fraction": 0.2, "seconds": [0.4, 0.6]},
        "features": {"kinds": ["lfcc", "mel"], "seconds": 0.5, "n_lfcc": 20, "n_mels": 80, "n_fft": 512,
                     "shard_size": 16, "max_per_class": None},
        "train": {"models": ["lfcc_lcnn", "lfcc_lcnn_ocsoftmax", "mel_resnet18"], "seeds": [0], "epochs": 1,
                  "batch_size": 16, "lr": 0.001, "weight_decay": 0.0001, "imbalance": "weighted_loss",
                  "select_on_dev": True, "checkpoint_every": 50,
                  "augment": {"gain_db": 0, "noise_std": 0, "spec_freq_mask": 0, "spec_time_mask": 0}},
    },
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
