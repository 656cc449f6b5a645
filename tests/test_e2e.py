"""The whole pipeline at test scale through both orchestrators, from a clean checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_PARAMS, copy_project

pytestmark = pytest.mark.e2e

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(cwd: Path, *cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    if ok and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def check_outputs(root: Path) -> None:
    html = (root / "results/report.html").read_text()
    assert "QR orthogonalization layer" in html and html.count("data:image/png;base64,") >= 2
    metrics = json.loads((root / "results/qr/metrics.json").read_text())
    prov = metrics["provenance"]
    assert prov["git"]["revision"] != "unknown" and prov["seed"] == 0 and prov["device"] == "cpu"
    assert {"params_hash", "inputs_fingerprint", "packages", "data_source"} <= set(prov)
    rows = {(r["method"], r["m"], r["n"]): r for r in metrics["grid"]}
    assert rows[("memory_efficient", 64, 8)]["saved_bytes"] == (64 * 8 + 8 * 8) * 8
    assert all(r["grad_rel_diff"] < 1e-10 for r in rows.values())
    assert (root / "results/qr/plots/saved_bytes.csv").read_text().startswith("method,m,n,saved_bytes")
    check_asvspoof(root, html)


def check_asvspoof(root: Path, html: str) -> None:
    assert "Voice anti-spoofing: ASVspoof 2019 LA" in html and "1.92 %" in html and "SYNTHETIC DATA" in html
    metrics = json.loads((root / "results/asvspoof/metrics.json").read_text())
    assert metrics["provenance"]["data_source"] == "synthetic"
    tiny = TINY_PARAMS["asvspoof"]
    assert set(metrics["models"]) == set(tiny["train"]["models"])
    for name, m in metrics["models"].items():
        assert 0.0 <= m["eval_eer_mean"] <= 1.0
        assert set(m["per_attack_eer_mean"]) == {f"A{i:02d}" for i in range(7, 20)}
        for split in ("dev", "eval"):
            lines = (root / f"results/asvspoof/scores/{name}_seed0.{split}.txt").read_text().splitlines()
            assert len(lines) == tiny["synthetic"]["utterances"][split]
            utt, system, key, score = lines[0].split()
            assert key in ("bonafide", "spoof") and float(score) == float(score)
    assert metrics["counts"] == tiny["synthetic"]["utterances"] and metrics["skipped"] == 0
    assert (root / "results/asvspoof/plots/per_attack_eer.csv").read_text().startswith("model,attack,eer")
    assert len(list((root / "results/asvspoof/figures").glob("*.png"))) == 5
    shards = sorted(p.name for p in (root / "data/features/asvspoof/lfcc").iterdir())
    assert shards == ["dev-000.pt", "eval-000.pt", "train-000.pt", "train-001.pt"]


def test_dvc_repro_builds_everything_then_does_nothing(tmp_path):
    root = copy_project(tmp_path / "proj")
    run(root, "dvc", "repro")
    check_outputs(root)
    second = run(root, "dvc", "repro")
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    assert "up to date" in run(root, "dvc", "status").stdout.lower()
    # a params key only the report reads re-runs the report alone
    params = dict(TINY_PARAMS, report={"title": "retitled"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(root, "dvc", "repro")
    assert "Running stage 'report'" in third.stdout and "Running stage 'qr_benchmark'" not in third.stdout
    assert "<title>retitled</title>" in (root / "results/report.html").read_text()
    shown = run(root, "dvc", "metrics", "show", "--json").stdout
    assert "time_ratio/fast" in shown


def test_snakemake_builds_everything_then_does_nothing(tmp_path):
    root = copy_project(tmp_path / "proj")
    run(root, "snakemake", "--cores", "2", "results/report.html")
    check_outputs(root)
    dry = run(root, "snakemake", "-n", "results/report.html")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    params = dict(TINY_PARAMS, report={"title": "retitled"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = run(root, "snakemake", "-n", "results/report.html")
    out = dry.stdout + dry.stderr
    assert "rule report:" in out and "rule qr_benchmark:" not in out


@pytest.mark.parametrize("tool", [("dvc", "repro"), ("snakemake", "--cores", "1", "results/report.html")])
def test_invalid_params_stop_before_any_stage(tmp_path, tool):
    params = json.loads(json.dumps(TINY_PARAMS))
    params["qr"]["repeats"] = "three"
    root = copy_project(tmp_path / "proj", params)
    res = run(root, *tool, ok=False)
    assert res.returncode != 0
    assert "key 'qr.repeats'" in res.stdout + res.stderr
    assert not (root / "results").exists()
