"""The command line a person types: --version, a readable stage table, checked log levels, `pipeline clean`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import repropipe

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repropipe", *args], cwd=cwd, capture_output=True, text=True)


def test_version_and_branch_help():
    assert cli("--version").stdout.strip() == f"repropipe {repropipe.__version__}"
    helptext = cli("--help").stdout
    assert "ASVspoof 2019 LA anti-spoofing" in helptext and "pipeline" in helptext


def test_step_help_prints_percent_signs_literally():
    """A docstring with '95 %' once made argparse print its own internals in `repropipe eeg --help`."""
    from repropipe.stages import STAGES, TOOLS, load_all

    load_all()
    branches = sorted({s.branch for s in [*STAGES.values(), *TOOLS.values()]})
    assert any("%" in s.help for s in STAGES.values())  # the case this test guards
    for branch in branches:
        out = cli(branch, "--help")
        assert out.returncode == 0, out.stderr
        assert "option_strings" not in out.stdout and "%%" not in out.stdout, branch


def test_stage_table_is_readable_and_json_on_request():
    import json

    table = cli("pipeline", "stages").stdout.splitlines()
    assert table[0].split()[:2] == ["stage", "command"] and any(line.startswith("asvspoof_train ") for line in table)
    data = json.loads(cli("pipeline", "stages", "--json").stdout)
    assert "src/repropipe/training.py" in data["asvspoof_train"]["code"]


def test_an_unknown_log_level_is_refused():
    res = cli("--log-level", "LOUD", "qr", "benchmark")
    assert res.returncode == 2 and "invalid choice: 'LOUD'" in res.stderr


def test_pipeline_clean_removes_left_over_training_work(tmp_path):
    work = tmp_path / ".repropipe/resume/gan_train/results/gan/models"
    work.mkdir(parents=True)
    (work / "last.pt").write_bytes(b"x")
    res = cli("pipeline", "clean", cwd=tmp_path)
    assert res.returncode == 0 and "gan_train" in res.stdout
    assert not (tmp_path / ".repropipe/resume").exists()
    assert "nothing to remove" in cli("pipeline", "clean", cwd=tmp_path).stdout


def test_demo_results_lists_every_headline_number_with_its_commit(tmp_path):
    import json

    d = tmp_path / "results/qr"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"saved_bytes/fast": 4608, "eer": 0.125, "grid": [1], "ok": True,
                                                "data_source": "none"}))
    (d / "provenance.json").write_text(json.dumps({"git": {"revision": "abc123def4567890", "dirty": False},
                                                  "device": "cpu", "seed": 0}))
    (d / "timings.json").write_text(json.dumps({"time_ratio/fast": 0.85}))
    res = cli("pipeline", "demo-results", "--out", "out.md", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "out.md").read_text()
    assert "commit `abc123def456`" in text and "| `saved_bytes/fast` | 4608 |" in text and "| `eer` | 0.125 |" in text
    assert "`grid`" not in text and "`ok`" not in text and "`time_ratio/fast` 0.85" in text
    assert cli("pipeline", "demo-results", cwd=tmp_path / "results").returncode == 1  # no results there
