"""ASVspoof 2019 LA with ``source: real``: a rehearsal of the real-data recipe on a tiny LA.zip.

The archive is built in the release's layout and formats (``LA/`` members; five-column CM protocols;
three-column ASV score files; 16 kHz 16-bit FLAC) from the synthetic writer's pieces, and the stages
run on it exactly as on the real LA.zip: ``asvspoof.real.archive`` points at it, nothing is fetched.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import TINY_PARAMS, branch_results, copy_project

CFG = {"utterances": {"train": 24, "dev": 12, "eval": 16}, "speakers": {"train": 3, "dev": 2, "eval": 3},
       "bonafide_fraction": 0.25, "seconds": [0.4, 0.6]}
MODELS = ["lfcc_lcnn", "lfcc_lcnn_ocsoftmax"]


def _la_zip(tmp: Path) -> Path:
    """A small LA.zip in the official layout (every member under LA/, deflated)."""
    from repropipe import config
    from repropipe.asvspoof.config import SyntheticConfig
    from repropipe.asvspoof.synth import write_synthetic, zip_la_tree

    tree = tmp / "tree"
    write_synthetic(tree, config.parse(SyntheticConfig, CFG), seed=3, progress=False)
    return zip_la_tree(tree, tmp / "download" / "LA.zip")


def _params(archive: Path) -> dict:
    p = copy.deepcopy(TINY_PARAMS)
    a = p["asvspoof"]
    a["source"] = "real"
    a["real"].update({"archive": str(archive), "url": "http://127.0.0.1:9/LA.zip", "expect_official_counts": False})
    a["train"].update({"models": MODELS, "seeds": [0], "epochs": 1, "shuffled_label_control": False})
    return p


def _stage(proj: Path, step: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(proj / "src")}
    res = subprocess.run([sys.executable, "-m", "repropipe", "asvspoof", step, "--params", "params.yaml"], cwd=proj,
                         env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert res.returncode == 0, f"asvspoof {step} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.e2e
def test_real_mode_rehearsal_from_a_local_la_zip(tmp_path):
    archive = _la_zip(tmp_path)
    proj = copy_project(tmp_path / "proj", _params(archive))
    took = {}
    for step in ("download", "features", "train", "evaluate"):
        t0 = time.perf_counter()
        _stage(proj, step)
        took[step] = time.perf_counter() - t0
    print("stage seconds:", {k: round(v, 1) for k, v in took.items()})

    raw = proj / "data/raw/asvspoof"
    assert sorted(p.name for p in raw.iterdir()) == ["source.json"]  # read in place: nothing extracted or copied
    src = json.loads((raw / "source.json").read_text())
    assert src["archive"] == str(archive.resolve()) and src["utterances"] == CFG["utterances"] and src["skipped"] == 0

    feat = json.loads((proj / "data/features/asvspoof/manifest.json").read_text())
    assert feat["data_source"] == "real" and str(archive.resolve()) in feat["source"] and feat["skipped"] == []
    with zipfile.ZipFile(archive) as zf:  # the ASV scores travel unchanged into the features output
        for split in ("dev", "eval"):
            member = f"LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{split}.gi.trl.scores.txt"
            assert (proj / f"data/features/asvspoof/asv_scores.{split}.txt").read_bytes() == zf.read(member)

    m = branch_results(proj, "asvspoof")
    prov = json.loads((proj / "results/asvspoof/provenance.json").read_text())
    assert prov["data_source"] == "real" and m["data_source"] == "real" and m["min_tdcf_available"] is True
    assert set(m["asv"]) == {"dev", "eval"} and 0 <= m["asv"]["eval"]["eer"] < 0.5
    assert [r["model"] for r in m["runs"]] == MODELS
    for r in m["runs"]:  # min t-DCF for every model, on dev and eval
        for split in ("dev", "eval"):
            assert isinstance(r[split]["min_tdcf"], float) and 0 <= r[split]["min_tdcf"] <= 1.0 + 1e-9
    for name in MODELS:
        assert m[f"min_tdcf_mean/{name}"] == m["models"][name]["eval_min_tdcf_mean"]
    section = json.loads((proj / "results/asvspoof/section.json").read_text())
    assert "min t-DCF: ASVspoof 2019 cost model" in json.dumps(section)
    # the LFCC-GMM reference beside the models, every model's EER and min t-DCF with an interval and a test (issue 17)
    assert m["reference"] == "lfcc_gmm" and set(m["baselines"]) == {"lfcc_gmm"}
    assert (proj / "results/asvspoof/scores/lfcc_gmm_seed0.eval.txt").exists()
    for name in MODELS + ["lfcc_gmm"]:
        for key in ("eer_mean", "min_tdcf_mean"):
            assert m[f"{key}_ci_low/{name}"] <= m[f"{key}_ci_high/{name}"], (name, key)
    for name in MODELS:
        assert 0.0 <= m[f"eer_mean_p_vs_ref/{name}"] <= 1.0 and 0.0 <= m[f"min_tdcf_mean_p_vs_ref/{name}"] <= 1.0
        assert m[f"eer_mean_diff_vs_ref/{name}"] == pytest.approx(m[f"eer_mean/{name}"] - m["eer_mean/lfcc_gmm"])
    assert "paired bootstrap over speakers" in json.dumps(section)


@pytest.mark.e2e
def test_real_archive_with_a_bad_protocol_line_stops_download_or_is_skipped(tmp_path):
    archive = _la_zip(tmp_path)
    bad = tmp_path / "bad" / "LA.zip"
    bad.parent.mkdir()
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("ASVspoof2019.LA.cm.eval.trl.txt"):
                lines = body.split(b"\n")
                lines[1] = lines[1].rsplit(b" ", 2)[0] + b" A99 spoof"  # an attack id the release does not have
                body = b"\n".join(lines)
            dst.writestr(info, body)
    proj = copy_project(tmp_path / "proj", _params(bad))
    res = _stage(proj, "download", ok=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"{bad.resolve()}!LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt:2: spoof with system " \
           "id 'A99'; eval attacks are A07-A19" in res.stderr

    params = _params(bad)
    params["asvspoof"]["on_bad_file"] = "skip"
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _stage(proj, "download")
    assert json.loads((proj / "data/raw/asvspoof/source.json").read_text())["skipped"] == 1
    _stage(proj, "features")
    skipped = json.loads((proj / "data/features/asvspoof/manifest.json").read_text())["skipped"]
    assert [(s["line"], s["reason"][:20]) for s in skipped] == [(2, "spoof with system id")]
