"""Versioning with DVC: the default remote, a fresh clone getting every output back, experiments, metrics, plots.

One project is built once (`dvc repro`, dvc.lock committed) and shared by the tests below, in order.
The default remote in .dvc/config is a directory beside the checkout, so the clone (a sibling of
the project) pulls from it with no configuration at all.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import clone_built, git, run as _run

pytestmark = pytest.mark.e2e


def run(cwd: Path, *cmd: str) -> str:
    res = _run(cwd, *cmd)
    return res.stdout + res.stderr


def output_files(root: Path, outs: list[str]) -> dict[str, bytes]:
    """Every file under every declared output, by path relative to the project."""
    files = {}
    for out in outs:
        p = root / out
        for f in ([p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []):
            files[str(f.relative_to(root))] = f.read_bytes()
    return files


@pytest.fixture(scope="module")
def built(dvc_built, tmp_path_factory, request) -> Iterator[tuple[Path, list[str]]]:
    """A private copy of the session's `dvc repro` project (these tests push, pull and run experiments in it).

    With its remote it grows to 1 GB, so it is removed when the module ends, as pytest removes a passing test's
    tmp_path (`tmp_path_retention_policy`), unless a test failed meanwhile.
    """
    from repropipe.stages import load_all

    failed_before = request.session.testsfailed
    root = clone_built(dvc_built, tmp_path_factory.mktemp("dvcx") / "proj")
    outs = sorted({o for s in load_all().values() for o in s.outs})
    yield root, outs
    if request.session.testsfailed == failed_before:
        shutil.rmtree(root.parent, ignore_errors=True)


def test_push_then_fresh_clone_pulls_every_output_byte_for_byte(built):
    root, outs = built
    built_files = output_files(root, outs)
    assert "results/report.html" in built_files and len(built_files) >= len(outs)
    run(root, "dvc", "push")
    remote = root.parent / "repropipe-dvc-remote"
    assert remote.is_dir() and any(remote.rglob("*")), "the default remote is the directory beside the checkout"

    clone = root.parent / "clone"
    run(root.parent, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "results").exists()
    run(clone, "dvc", "pull")
    assert output_files(clone, outs) == built_files
    assert "Data and pipelines are up to date" in run(clone, "dvc", "status")
    assert "Data and pipelines are up to date" in run(root, "dvc", "status")


def test_experiments_sweep_a_learning_rate_and_show_metrics_and_plots(built, tmp_path):
    """Two `dvc exp run -S` on the GAN's learning rate (its train stage is the cheapest at test scale):
    only the stages that read `gan.train` and their descendants re-run, and `dvc exp show` lists both
    learning rates with their own metrics."""
    root, _ = built
    lrs = {"lr-5e-4": 0.0005, "lr-2e-3": 0.002}  # both differ from the test-scale 0.0002
    for name, lr in lrs.items():
        out = run(root, "dvc", "exp", "run", "-n", name, "-S", f"gan.train.lr={lr}")
        for stage in ("gan_train", "gan_evaluate", "report"):
            assert f"Running stage '{stage}'" in out, stage
        for stage in ("gan_download", "gan_features", "gan_real_stats", "speaker_train", "qr_benchmark"):
            assert f"Running stage '{stage}'" not in out, stage

    shown = json.loads(run(root, "dvc", "exp", "show", "--json"))
    exps = {rev["name"]: rev["data"] for base in shown for exp in (base.get("experiments") or [])
            for rev in exp["revs"]}
    assert set(lrs) <= set(exps)
    gan = {}
    for name, lr in lrs.items():
        assert exps[name]["params"]["params.yaml"]["data"]["gan"]["train"]["lr"] == lr
        gan[name] = exps[name]["metrics"]["results/gan/metrics.json"]["data"]
    a, b = (gan[n] for n in lrs)
    assert a["fid/trained"] != b["fid/trained"] and a["kid/trained"] != b["kid/trained"]  # the lr changed the model
    assert a["fid/untrained"] == b["fid/untrained"]  # the untrained baseline does not depend on it

    table = run(root, "dvc", "metrics", "show")
    assert "results/qr/metrics.json" in table and "saved_bytes/memory_efficient" in table
    assert "results/qr/timings.json" in table and "time_ratio/fast" in table  # measured numbers in their own file
    shown = run(root, "dvc", "metrics", "show", "--json")
    assert "provenance" not in shown and "params_hash" not in shown and "inputs_fingerprint" not in shown

    plots = json.loads(run(root, "dvc", "plots", "show", "--json"))["data"]
    assert {"qr saved bytes", "qr time ratio"} <= set(plots)
    values = plots["qr saved bytes"][0]["content"]["data"]["values"]
    assert any(v["method"] == "memory_efficient" and v["m"] == "64" and v["n"] == "8" for v in values)
    # one line per method / model: the series field colours the plot
    for title, field in (("qr saved bytes", "method"), ("speaker held-out accuracy", "model"),
                         ("asvspoof eval EER per attack", "model"), ("eeg loss curves", "run")):
        spec = plots[title][0]["content"]
        assert spec["encoding"]["color"]["field"] == field, title
        assert len({v[field] for v in spec["data"]["values"]}) > 1, title
    run(root, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "qr saved bytes" in html and "qr time ratio" in html
