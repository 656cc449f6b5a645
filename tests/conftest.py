from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Every stage of every test build runs on one CPU (src/repropipe/resources.py): outputs are byte-identical for a
# given thread count, and left alone the two tools would give a stage different counts (dvc: every core; Snakemake:
# the rule's threads, scaled to --cores), which the DVC-vs-Snakemake byte comparison must not depend on.
os.environ.setdefault("REPROPIPE_THREADS", "1")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
# fixed commit dates: two copies of the same files are the same commit, so provenance.json can repeat byte for byte
GIT_ENV = {"GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}

# The pipeline at test scale: every stage runs, each in seconds.
TINY_PARAMS = {
    "seed": 0,
    "device": "cpu",
    "qr": {"dtype": "float64", "threads": 1, "m": [32, 64], "n": [4, 8], "repeats": 1,
           "methods": ["torch.linalg.qr", "mgs_autograd", "qr_class", "memory_efficient", "fast"]},
    "speaker": {
        "source": "synthetic",
        "synthetic": {"n_speakers": 6, "utts_per_speaker": 6, "min_len": 24, "max_len": 48, "n_test": 4, "noise": 1.0},
        "real": {"from": "kaggle", "hw4_dir": None, "wav_dir": None, "wav_test_fraction": 0.05,
                 "cache_dir": "data/cache/speaker"},
        "features": {"verify_speakers": 2, "val_fraction": 0.2},
        "models": ["speaker_hw4_baseline", "speaker_conformer", "speaker_attn_pool", "speaker_am_softmax",
                   "speaker_conformer_sap_am", "speaker_triplet", "speaker_ecapa_tdnn"],
        "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "ff_dim": 32, "conv_kernel": 5, "dropout": 0.1,
                  "am_scale": 30.0, "am_margin": 0.2},
        "ecapa": {"channels": 16, "mfa_channels": 48, "attention_channels": 8, "se_channels": 8, "res2net_scale": 4,
                  "emb_dim": 16, "aam_scale": 30.0, "aam_margin": 0.2},
        "train": {"segment_len": 32, "batch_size": 8, "epochs": 1, "lr": 0.002, "weight_decay": 0.0001,
                  "warmup_steps": 2, "checkpoint_every": 0,
                  "specaugment": {"enabled": True, "freq_mask": 4, "time_mask": 4}},
        "triplet": {"channels": 16, "emb_dim": 16, "margin": 0.3, "lr": 0.002, "epochs": 1, "autoencoder_epochs": 1},
        "evaluate": {"batch_size": 8, "max_trials": 1000, "top_k": 5},
    },
    "eeg": {
        "source": "synthetic", "subjects": [1, 2, 3], "runs": [4], "local_dir": None, "cache_dir": "data/cache/eeg",
        "exclude_known_bad": True, "on_bad": "error", "evaluation": "cross_subject", "within_subject_folds": 2,
        "synthetic": {"duration_s": 40, "effect": 0.5},
        "features": {"l_freq": 7.0, "h_freq": 30.0, "tmin": -1.0, "tmax": 4.0, "chunk": 160, "overlap": 80},
        "split": {"val_subjects": 1, "test_subjects": 1},
        "train": {"runs": ["transformer", "linformer", "transformer_low", "simclr_low"], "epochs": 1,
                  "max_low_label_epochs": 1, "batch_size": 16, "lr": 0.001, "weight_decay": 0.01,
                  "label_fraction": 0.5, "checkpoint_every": 0, "augment": True,
                  "transformer": {"token_len": 16, "d_model": 16, "heads": 2, "layers": 1, "ff": 32, "dropout": 0.1, "spatial": 8},
                  "linformer": {"k": 4, "proj_len": 8},
                  "simclr": {"pretrain_epochs": 1, "tau": 0.1, "lr": 0.001, "finetune_lr": 0.001, "emb": 8,
                             "proj_dim": 8, "hidden": 16, "channels_per_chunk": 2, "finetune_epochs": 1},
                  "eegnet": {"F1": 4, "D": 2, "F2": 8, "kernel_1": 32, "kernel_2": 8, "dropout": 0.25,
                             "epochs": None}},
        "evaluate": {"windows": [160, 320], "bench_tokens": [8, 32], "repeats": 1},
    },
    "gan": {
        "source": "synthetic",
        "data": {"num_images": 40, "archive": None, "partition": None, "root": None,
                 "cache_dir": "data/cache/gan", "verify_md5": True},
        "features": {"crop": 178, "size": 64, "shard_size": 16, "on_bad_image": "error"},
        "model": {"generator": "wgan_gp_64_generator", "critic": "wgan_gp_64_critic", "nz": 128, "ngf": 16, "ndf": 16},
        "train": {"epochs": 1, "batch_size": 4, "n_dis": 2, "lr": 0.0002, "beta1": 0.0, "beta2": 0.9,
                  "gp_scale": 10.0, "checkpoint_every": 2, "sample_every": 2},
        "fidelity": {"feature_extractor_weights_path": None, "real_split": "train", "num_real": 32},
        "evaluate": {"num_samples": 24, "kid_subset_size": 12,
                     "isir": {"iterations": 2, "particles": 3, "batch_size": 32},
                     "calibration": {"split": "valid", "num_images": 0}},
    },
    "report": {"title": "repropipe test report"},
    "asvspoof": {
        "source": "synthetic", "on_bad_file": "error",
        "real": {"url": "https://datashare.ed.ac.uk/bitstream/handle/10283/3336/LA.zip", "md5": None,
                 "cache_dir": "data/cache/asvspoof", "archive": None, "root": None,
                 "expect_official_counts": True},
        "synthetic": {"utterances": {"train": 30, "dev": 12, "eval": 16}, "speakers": {"train": 3, "dev": 2, "eval": 3},
                      "bonafide_fraction": 0.2, "seconds": [0.4, 0.6]},
        "features": {"kinds": ["lfcc", "mel"], "seconds": 0.5, "n_lfcc": 20, "n_mels": 80, "n_fft": 512,
                     "shard_size": 16, "max_per_class": None},
        "train": {"models": ["lfcc_lcnn", "lfcc_lcnn_ocsoftmax", "mel_resnet18"], "seeds": [0], "epochs": 1,
                  "batch_size": 16, "lr": 0.001, "weight_decay": 0.0001, "per_model": None,
                  "imbalance": "weighted_loss", "select_on_dev": True, "shuffled_label_control": True,
                  "checkpoint_every": 50,
                  "augment": {"gain_db": 0, "noise_std": 0, "spec_freq_mask": 0, "spec_time_mask": 0}},
        "evaluate": {"pretrained": {"aasist": None, "aasist_l": None}},
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
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True, env={**os.environ, **GIT_ENV})
    return dest


def run(cwd: Path, *cmd: str, ok: bool = True, env: dict | None = None,
        timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if ok and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def git(cwd: Path, *args: str) -> str:
    res = run(cwd, "git", "-c", "user.email=t@t", "-c", "user.name=t", *args, env=GIT_ENV)
    return res.stdout + res.stderr


def output_md5s(root: Path, outs: list[str] | None = None) -> dict[str, str]:
    """md5 of every file under every declared output (all stages' outs by default), by relative path."""
    if outs is None:
        from repropipe.stages import load_all

        outs = sorted({o for st in load_all().values() for o in st.outs})
    found = {}
    for out in outs:
        p = root / out
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            if f.name == ".snakemake_timestamp":  # Snakemake's own marker in directory outputs
                continue
            found[str(f.relative_to(root))] = hashlib.md5(f.read_bytes()).hexdigest()
    return found


def branch_results(root: Path, branch: str) -> dict:
    """A branch's results/<branch>/metrics.json and details.json as one dict, once the split is checked.

    metrics.json holds only what `dvc metrics show` lists as one number per column (flat numbers, and the
    data_source label); the nested detail and the other labels are in details.json beside it.
    """
    metrics = json.loads((root / f"results/{branch}/metrics.json").read_text())
    details = json.loads((root / f"results/{branch}/details.json").read_text())
    not_numbers = {k: type(v).__name__ for k, v in metrics.items()
                   if k != "data_source" and not isinstance(v, (int, float))}
    assert not not_numbers, f"results/{branch}/metrics.json holds more than numbers: {not_numbers}"
    assert details["data_source"] == metrics["data_source"] and not set(details) & (set(metrics) - {"data_source"})
    return {**details, **metrics}


def clone_built(src: Path, dest: Path) -> Path:
    """A private copy of a built project (outputs, DVC cache, Snakemake metadata) for a test that changes it."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


# The test-scale pipeline, built once per session by each tool and shared (read-only) by every test that needs
# a finished run; a test that changes a project works on `clone_built(...)` of it.
@pytest.fixture(scope="session")
def dvc_built(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("dvc") / "proj")
    run(root, "dvc", "repro", env={"REPROPIPE_RECORD_IMPORTS": str(root / ".repropipe/imports")})
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pipeline run")
    return root


@pytest.fixture(scope="session")
def smk_built(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("smk") / "proj")
    run(root, "snakemake", "--cores", "2", "results/report.html",
        env={"REPROPIPE_RECORD_IMPORTS": str(root / ".repropipe/imports")})
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "proj")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A stage run in-process sets torch's thread count; the next test must not inherit it (float sums differ)."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _project_loggers_enabled():
    """Some libraries configure logging with disable_existing_loggers=True when imported; our log lines must
    still reach caplog (tests read them) whatever a previous test imported."""
    import logging

    logging.disable(logging.NOTSET)
    for name in list(logging.root.manager.loggerDict):
        if name == "repropipe" or name.startswith("repropipe."):
            logger = logging.getLogger(name)
            logger.disabled, logger.propagate = False, True
            logger.setLevel(logging.NOTSET)
    yield
