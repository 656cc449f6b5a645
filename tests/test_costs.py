"""Stage costs: every stage run is measured by run_stage the same way under any tool, into a declared noisy output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repropipe import costs
from repropipe.stages import Stage, load_all, run_stage

ROOT = Path(__file__).resolve().parents[1]

CHILD = "b = bytearray(160 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\ns = 0\nfor i in range(2 * 10**6): s += i"


def _project(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "workflow/schemas", tmp_path / "workflow/schemas")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")


def test_a_stage_run_writes_its_cost_with_children_units_and_threads(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch)
    monkeypatch.setenv("REPROPIPE_THREADS", "3")

    def work(ctx):
        subprocess.run([sys.executable, "-c", CHILD], check=True)  # CPU and memory of a child count
        ctx.record_units(utterances=3)
        costs.record_units(utterances=2, steps=7)  # library code without a context adds to the same stage

    run_stage(Stage("tiny", "demo", "run", "h", ("seed",), (), ("results/tiny/out.json",), work), "params.yaml")
    doc = json.loads(Path("results/costs/tiny.json").read_text())
    assert set(doc) == {"stage", "wall_s", "cpu_s", "max_rss_mb", "threads", "threads_source", "world_size", "units"}
    assert doc["stage"] == "tiny" and doc["units"] == {"utterances": 5, "steps": 7}
    assert doc["threads"] == 3 and doc["threads_source"] == "REPROPIPE_THREADS" and doc["world_size"] == 1
    assert doc["cpu_s"] > 0.05 and doc["wall_s"] >= doc["cpu_s"] * 0.5  # the child's CPU time is counted
    assert doc["max_rss_mb"] >= 160  # the child's 160 MiB
    cost = costs.Cost.read("results/costs/tiny.json")
    assert cost.per_unit() == {"utterances": doc["wall_s"] / 5, "steps": doc["wall_s"] / 7}
    costs.record_units(utterances=1)  # outside a stage run: ignored, not an error


def test_a_failed_stage_leaves_no_cost_file(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch)

    def boom(ctx):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_stage(Stage("bad", "demo", "run", "h", ("seed",), (), ("results/bad/out.json",), boom), "params.yaml")
    assert not Path("results/costs/bad.json").exists()
    assert costs._ACTIVE == []


def test_every_registered_stage_declares_its_cost_file_as_a_noisy_output():
    stages = load_all()
    for name, st in stages.items():
        assert costs.path_of(name) in st.outs and costs.path_of(name) in st.noisy, name
    dvc = (ROOT / "dvc.yaml").read_text()
    assert all(f"- {costs.path_of(n)}\n" in dvc for n in stages)


def test_record_units_rejects_non_counts():
    m = costs.Meter("x")
    with pytest.raises(ValueError, match="x: unit count utterances=1.5"):
        m.record(utterances=1.5)
    with pytest.raises(ValueError):
        m.record(steps=-1)
