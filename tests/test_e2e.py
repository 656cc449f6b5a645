"""The whole pipeline at test scale through both orchestrators, from a clean checkout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import TINY_PARAMS, branch_results, clone_built, copy_project, run

pytestmark = pytest.mark.e2e


def check_outputs(root: Path) -> None:
    html = (root / "results/report.html").read_text()
    assert "QR orthogonalization layer" in html and html.count("data:image/png;base64,") >= 2
    metrics = branch_results(root, "qr")
    prov = json.loads((root / "results/qr/provenance.json").read_text())
    assert prov["git"]["revision"] != "unknown" and prov["seed"] == 0 and prov["device"] == "cpu"
    assert {"params_hash", "inputs_fingerprint", "packages", "data_source"} <= set(prov)
    rows = {(r["method"], r["m"], r["n"]): r for r in metrics["grid"]}
    assert rows[("memory_efficient", 64, 8)]["saved_bytes"] == (64 * 8 + 8 * 8) * 8
    assert all(r["grad_rel_diff"] < 1e-10 for r in rows.values())
    assert (root / "results/qr/plots/saved_bytes.csv").read_text().startswith("method,m,n,saved_bytes")
    timings = json.loads((root / "results/qr/timings.json").read_text())
    assert timings["time_ratio/fast"] > 0 and "time_ratio/fast" not in metrics  # measured apart from exact numbers
    assert all("time_s" not in r for r in metrics["grid"])
    check_speaker(root, html)
    check_eeg_outputs(root, html)
    check_gan_outputs(root, html)
    check_asvspoof(root, html)


def check_speaker(root: Path, html: str) -> None:
    assert "Speaker identification and verification" in html and "SYNTHETIC DATA" in html
    sp = branch_results(root, "speaker")
    assert sp["data_source"].startswith("synthetic")
    models = TINY_PARAMS["speaker"]["models"]
    assert set(sp["models"]) == set(models)
    for m in sp["models"].values():
        assert 0.0 <= m["verification_eer"] <= 1.0 and 0.0 <= m["identification_accuracy"] <= 1.0
        assert m["verification_target_trials"] > 0 and m["verification_nontarget_trials"] > 0
    csv = (root / "results/speaker/predictions/speaker_hw4_baseline.csv").read_text().splitlines()
    assert csv[0] == "Id,Category" and len(csv) == 1 + TINY_PARAMS["speaker"]["synthetic"]["n_test"]
    assert all(re.fullmatch(r"id\d{5}", row.split(",")[1]) for row in csv[1:])  # VoxCeleb speaker ids
    section = json.loads((root / "results/speaker/section.json").read_text())
    assert section["synthetic"] and "0.93175" in section["tables"][0]["anchor"]
    assert (root / "results/speaker/figures/det.png").stat().st_size > 1000
    assert (root / "results/speaker/plots/training.csv").read_text().startswith("model,epoch,loss,val_accuracy")


def check_eeg_outputs(root: Path, html: str) -> None:
    assert "EEG motor imagery" in html and "82.43" in html
    eeg = branch_results(root, "eeg")
    assert eeg["data_source"] == "synthetic"
    assert set(eeg["runs"]) == {"transformer", "linformer", "transformer_low", "simclr_low"}
    for r in eeg["runs"].values():
        assert 0.0 <= r["chunk"]["macro_f1"] <= 1.0 and sum(map(sum, r["chunk"]["confusion"])) == r["n_chunks"] > 0
        assert set(r["per_subject_accuracy"]) == {str(s) for s in eeg["subjects_by_split"]["test"]}
    assert set(json.loads((root / "results/eeg/timings.json").read_text())["time_by_tokens"]) == {
        "transformer", "linformer"}
    section = json.loads((root / "results/eeg/section.json").read_text())
    assert section["synthetic"] is True and "82.43" in section["tables"][0]["anchor"]
    for fig in ("figures/loss_curves", "figures/confusion", "timings/benchmark"):
        assert (root / f"results/eeg/{fig}.png").stat().st_size > 1000
    assert (root / "results/eeg/plots/loss_curves.csv").read_text().startswith("run,phase,epoch,loss,val_loss")
    assert (root / "results/eeg/models/simclr_low/model.pt").exists()


def check_gan_outputs(root: Path, html: str) -> None:
    assert "WGAN-GP 64x64 with I-SIR" in html and "NOT comparable to published" in html
    gan = branch_results(root, "gan")
    assert gan["data_source"] == "synthetic" and gan["comparable_to_published"] is False
    assert gan["fid/trained"] > 0 and gan["fid/untrained"] > 0
    changed = (root / "results/gan/plots/isir_changed.csv").read_text().splitlines()
    assert len(changed) == 1 + 2  # header and the 2 I-SIR iterations
    assert float(changed[-1].split(",")[1]) == gan["isir_changed_fraction/last_iteration"]
    assert (root / "results/gan/real_stats/meta.json").exists()
    assert (root / "results/gan/plots/train_curves.csv").read_text().startswith("step,loss_D,loss_G,loss_GP")
    assert len(list((root / "results/gan/figures").glob("*.png"))) == 5


def check_asvspoof(root: Path, html: str) -> None:
    assert "Voice anti-spoofing: ASVspoof 2019 LA" in html and "1.92 %" in html and "SYNTHETIC DATA" in html
    metrics = branch_results(root, "asvspoof")
    assert metrics["data_source"] == "synthetic"
    tiny = TINY_PARAMS["asvspoof"]
    # the shuffled-label control is trained, scored and reported beside the real models, labelled as a control
    control = "lfcc_lcnn_shuffled_labels"
    assert set(metrics["models"]) == set(tiny["train"]["models"]) | {control}
    assert metrics["models"][control]["control"] and not any(
        m["control"] for n, m in metrics["models"].items() if n != control)
    assert set(metrics["controls"]) == {control} and metrics["controls"][control]["expected"] == "near 0.5"
    assert "CONTROL: shuffled train labels" in html and f"eer_mean/{control}" in metrics
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


def test_dvc_repro_builds_everything_then_does_nothing(dvc_built, tmp_path):
    check_outputs(dvc_built)
    second = run(dvc_built, "dvc", "repro")
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    assert "up to date" in run(dvc_built, "dvc", "status").stdout.lower()
    # a params key only the report reads re-runs the report alone
    root = clone_built(dvc_built, tmp_path / "proj")
    params = dict(TINY_PARAMS, report={"title": "retitled"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(root, "dvc", "repro")
    assert "Running stage 'report'" in third.stdout and "Running stage 'qr_benchmark'" not in third.stdout
    assert "<title>retitled</title>" in (root / "results/report.html").read_text()


def test_snakemake_builds_everything_then_does_nothing(smk_built, tmp_path):
    check_outputs(smk_built)
    dry = run(smk_built, "snakemake", "-n", "results/report.html")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert (smk_built / "logs/report.log").exists() and (smk_built / "benchmarks/gan_train.tsv").exists()
    # Snakemake's own report: runtimes, provenance and every stage's figures, with captions
    report = tmp_path / "snakemake-report.html"
    run(smk_built, "snakemake", "--report", str(report))
    html = report.read_text()
    assert "saved_bytes.png" in html and "confusion.png" in html and "Assemble results/report.html" in html
    root = clone_built(smk_built, tmp_path / "proj")
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
