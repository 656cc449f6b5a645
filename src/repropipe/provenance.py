"""What every metrics.json records about where its numbers came from."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from typing import Any

PACKAGES = ("repropipe", "torch", "torchvision", "torchaudio", "numpy", "scikit-learn", "pandas",
            "torch-fidelity", "mne", "dvc", "snakemake")


def git_revision() -> dict[str, Any]:
    """HEAD and whether tracked files differ from it; 'unknown' outside a git checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return {"revision": rev, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"revision": "unknown", "dirty": None}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
