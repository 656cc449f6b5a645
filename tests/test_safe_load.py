"""No load runs code: a .pt that arrives by `dvc pull`, a shared results folder or a resume directory
may carry a pickle payload; every place the pipeline reads a .pt refuses it, names the file, and the
payload never runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from repropipe.io import DataError, atomic_torch_save

SRC = Path(__file__).resolve().parents[1] / "src/repropipe"


class Payload:
    """Unpickling this calls os.makedirs(marker): the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def plant(path: Path, marker: Path, wrap=lambda p: p) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(Payload(marker)), path)
    return path


def _sites():
    """(name, file to plant, how to wrap the payload, call that loads it) for every load site."""
    from repropipe import training
    from repropipe.asvspoof import features as asv_features, train as asv_train
    from repropipe.eeg import evaluate as eeg_evaluate, train as eeg_train
    from repropipe.gan import features as gan_features, train as gan_train
    from repropipe.gan.config import ModelConfig
    from repropipe.speaker import features as sp_features, train as sp_train

    cpu = torch.device("cpu")
    return [
        ("training checkpoint (resume)", "run/checkpoints/last.pt", lambda p: {"format": p},
         lambda d: training.load_checkpoint(d / "run/checkpoints/last.pt", {})),
        ("gan trained checkpoint", "ckpt.pt", lambda p: p,
         lambda d: gan_train.load_trained(d / "ckpt.pt", ModelConfig("wgan_gp_64_generator", "wgan_gp_64_critic",
                                                                     nz=8, ngf=16, ndf=16), cpu)),
        ("eeg model.pt", "model.pt", lambda p: {"model": p}, lambda d: eeg_evaluate.load_run(d / "model.pt", cpu)),
        ("asvspoof model.pt", "run/model.pt", lambda p: {"w": p}, lambda d: asv_train.load_trained(d / "run", cpu)),
        ("speaker model.pt", "run/model.pt", lambda p: {"name": p}, lambda d: sp_train.load_model(d / "run", cpu)),
        ("speaker feature shard", "shard.pt", lambda p: p, lambda d: sp_features.load_shard(d / "shard.pt")),
        ("eeg feature chunks", "feat/chunks.pt", lambda p: {"x": p}, lambda d: eeg_train.load_features(d / "feat")),
        ("asvspoof feature shard", "feat/lfcc/train-000.pt", lambda p: p,
         lambda d: asv_features.load_features(d / "feat", "train", "lfcc")),
        ("gan feature shard", "feat/train-000.pt", lambda p: p, lambda d: gan_features.load_split(d / "feat", "train")),
    ]


SITES = _sites()


@pytest.mark.parametrize("site", SITES, ids=[s[0] for s in SITES])
def test_a_planted_payload_does_not_run_and_the_error_names_the_file(tmp_path, site, monkeypatch):
    name, rel, wrap, load = site
    marker = tmp_path / "PAYLOAD_RAN"
    planted = plant(tmp_path / rel, marker, wrap)
    # feature loaders also read an index beside the shards: give them one that lists the planted file
    if name == "asvspoof feature shard":
        import pandas as pd

        pd.DataFrame({"split": ["train"], "shard": [0], "row": [0], "utt": ["u"], "label": [0]}).to_parquet(
            tmp_path / "feat/index.parquet")
    if name == "gan feature shard":
        from repropipe.io import atomic_write_json

        atomic_write_json(tmp_path / "feat/index.json", {"splits": {"train": {"shards": ["train-000.pt"], "count": 1}}})
    if name == "asvspoof model.pt":
        from repropipe.io import atomic_write_json

        atomic_write_json(tmp_path / "run/summary.json", {"model": "lfcc_lcnn", "n_features": 60})
    if name == "eeg feature chunks":
        import pandas as pd

        pd.DataFrame({"subject": [1]}).to_parquet(tmp_path / "feat/index.parquet")
    with pytest.raises(Exception) as err:
        load(tmp_path)
    assert not marker.exists(), f"{name}: loading {planted} ran the payload"
    assert isinstance(err.value, (DataError, ValueError)), f"{name}: {type(err.value).__name__}: {err.value}"
    assert str(planted) in str(err.value) or planted.name in str(err.value), f"{name}: {err.value}"


def test_every_torch_load_in_the_package_goes_through_the_safe_reader():
    """One way to read a .pt: repropipe.io.torch_load (weights_only=True). A new torch.load elsewhere fails here."""
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name != "io.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\btorch\.load\(", line) and "weights_only=True" not in line]
    assert offenders == []


def test_saved_bytes_do_not_depend_on_the_file_name(tmp_path):
    """torch.save(obj, path) writes the path's name into the archive; ours does not, so equal objects give equal files."""
    obj = {"w": torch.arange(6.0).reshape(2, 3), "meta": [1, "a"]}
    a = atomic_torch_save(tmp_path / "a.pt", obj).read_bytes()
    b = atomic_torch_save(tmp_path / "sub/other-name.pt", obj).read_bytes()
    assert a == b
    torch.save(obj, tmp_path / "plain.pt")
    assert (tmp_path / "plain.pt").read_bytes() != a  # the reason atomic_torch_save exists
