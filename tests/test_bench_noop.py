"""The no-op bench: its stand-in project mirrors the pipeline's outputs, and both tools report a no-op."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from repropipe import bench_noop


def test_plan_mirrors_what_the_real_stages_declare():
    plan = {p["name"]: p for p in bench_noop._plan(1.0, "archive")}
    # archive-backed datasets: the raw output is one source.json; features a few shards + index
    assert {n: plan[n]["raw_files"] for n in ("asvspoof", "speaker", "gan")} == {"asvspoof": 1, "speaker": 1, "gan": 1}
    assert plan["asvspoof"]["n"] == 121_461 and plan["gan"]["n"] == 202_599
    assert plan["asvspoof"]["feature_files"] == (13 + 13 + 35) * 2 + 2  # shards of 2048 per split and kind
    assert plan["gan"]["feature_files"] == 20 + 3 + 3 + 1  # shards of 8192 per split + index.json
    assert plan["speaker"]["feature_files"] == 5 and plan["speaker"]["cache_tree"]  # Kaggle extraction in the cache
    assert plan["eeg"]["raw"] == "tree" and plan["eeg"]["raw_files"] == 328  # 327 EDFs + manifest.json, as stored
    tree = {p["name"]: p for p in bench_noop._plan(1.0, "tree")}
    assert tree["gan"]["raw_files"] == 202_599 and tree["gan"]["feature_files"] == plan["gan"]["feature_files"]


def test_dvc_and_snakemake_declare_the_same_stages(tmp_path: Path):
    plan = bench_noop._plan(0.001, "archive")
    bench_noop.write_project(tmp_path, plan)
    dvc = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    smk = (tmp_path / "Snakefile").read_text()
    for name, stage in dvc.items():
        assert f"rule {name}:" in smk and f'shell: "{stage["cmd"]}"' in smk
    assert "data/cache/gan" in dvc["raw_gan"]["cmd"] and dvc["raw_gan"]["outs"] == ["data/raw/gan"]


@pytest.mark.e2e  # ~1 min: dominated by snakemake's start-up, paid five times
def test_bench_at_a_tiny_scale_reports_a_noop_for_both_tools(tmp_path: Path, capsys):
    [res] = bench_noop.main(scale=0.0005, workdir=str(tmp_path), keep=True, layout="archive", repeats=1)
    # main raises unless `snakemake -n` said "Nothing to be done" and `dvc status` "up to date"
    assert res["snakemake_noop_s"] > 0 and res["dvc_noop_s"] > 0
    root = tmp_path / "archive"
    for name, n in (("asvspoof", 61), ("speaker", 31), ("gan", 101)):
        raw = [p.name for p in (root / "data/raw" / name).iterdir() if p.name != ".snakemake_timestamp"]
        assert raw == ["source.json"]
        with zipfile.ZipFile(root / "data/cache" / name / f"{name}.zip") as zf:
            assert len(zf.namelist()) == n
        index = json.loads((root / "data/features" / name / "index0.json").read_text())
        assert index["examples"] == n  # the features stage read the archive's listing
    assert len(list((root / "data/raw/eeg").rglob("*.edf"))) == 1
    out = capsys.readouterr().out
    assert "archive" in out and "snakemake -n" in out and "dvc status" in out and "<5 s" in out
