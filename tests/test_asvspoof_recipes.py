"""The ASVspoof `paper` recipe (conf/asvspoof/paper.yaml): valid params in both tools, reaching the stages."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_PARAMS, clone_built, copy_project, run
from repropipe.asvspoof.recipe import load_recipe, overrides
from repropipe.params import validate

RECIPE = ROOT / "conf/asvspoof/paper.yaml"


def snakemake_config(base: dict, recipe: dict) -> dict:
    """What `snakemake --configfile recipe` makes of params.yaml: Snakemake's own update_config."""
    from snakemake.utils import update_config

    cfg = copy.deepcopy(base)
    update_config(cfg, copy.deepcopy(recipe))
    return cfg


def dvc_params(base: dict, tmp_path: Path) -> dict:
    """What `python -m repropipe asvspoof recipe-args ... | xargs dvc exp run` writes to params.yaml: DVC's own -S code."""
    from dvc.utils.hydra import apply_overrides

    out = subprocess.run([sys.executable, "-m", "repropipe", "asvspoof", "recipe-args", str(RECIPE)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    words = shlex.split(out)  # xargs' quoting rules, for these arguments
    assert words[0::2] == ["-S"] * (len(words) // 2)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    apply_overrides(path, words[1::2])
    assert "lr_min: 5e-06" in path.read_text()  # DVC's YAML 1.2 float, which load_params reads as a number
    from repropipe.params import load_params

    return load_params(path)


@pytest.mark.parametrize("base", ["params.yaml", "test scale"])
def test_paper_recipe_gives_the_same_valid_params_in_snakemake_and_dvc(base, tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text()) if base == "params.yaml" else copy.deepcopy(TINY_PARAMS)
    recipe = load_recipe(RECIPE)
    smk = snakemake_config(params, recipe)
    assert dvc_params(params, tmp_path) == smk
    validate(smk, RECIPE)
    a = smk["asvspoof"]
    assert a["features"]["kinds"] == ["lfcc", "wave"] and round(a["features"]["seconds"] * 16000) == 64600
    assert a["train"]["models"] == ["lfcc_lcnn", "lfcc_lcnn_lstmsum_p2s", "aasist", "aasist_l"]
    assert a["train"]["epochs"] == 100
    from repropipe.asvspoof.features import NII_FRONT_END, FeatureConfig

    cfg = FeatureConfig.from_params(a["features"])  # NII's LFCC front end, 750 frames
    assert {k: getattr(cfg, k) for k in NII_FRONT_END} == NII_FRONT_END and cfg.spectral_samples == 749 * 160
    assert a["train"]["per_model"]["aasist"]["lr_schedule"] == "cosine" and a["train"]["lr_schedule"] == "step"
    # only asvspoof's features and train keys change: every other branch and key is untouched
    assert {k: v for k, v in smk.items() if k != "asvspoof"} == {k: v for k, v in params.items() if k != "asvspoof"}
    assert {k: v for k, v in a.items() if k not in ("features", "train")} == \
        {k: v for k, v in params["asvspoof"].items() if k not in ("features", "train")}
    assert overrides({"a": {"b": [1, "x"], "c": None, "d": {"e": 0.5}}}) == ['++a.b=[1,"x"]', "++a.c=null", "++a.d.e=0.5"]


def test_paper_recipe_matches_the_authors_aasist_config():
    """The AASIST half of the recipe against the authors' config files, where they are present."""
    for d in (ROOT.parent / "shared/anchors/aasist", ROOT.parent.parent / "shared/anchors/aasist"):
        if (d / "AASIST.conf").is_file():
            break
    else:
        pytest.skip("the authors' AASIST.conf is not here (../shared/anchors/aasist)")
    train = load_recipe(RECIPE)["asvspoof"]["train"]
    for name, conf in (("aasist", "AASIST.conf"), ("aasist_l", "AASIST-L.conf")):
        c = json.loads((d / conf).read_text())
        o = c["optim_config"]
        mine = train["per_model"][name]
        assert (mine["batch_size"], train["epochs"]) == (c["batch_size"], c["num_epochs"])
        assert (mine["lr"], mine["lr_min"], mine["weight_decay"]) == (o["base_lr"], o["lr_min"], o["weight_decay"])
        assert (mine["lr_schedule"], o["scheduler"], o["optimizer"]) == ("cosine", "cosine", "adam")
        assert round(load_recipe(RECIPE)["asvspoof"]["features"]["seconds"] * 16000) == c["model_config"]["nb_samp"]


def test_snakemake_configfile_hands_the_paper_params_to_the_asvspoof_stages(tmp_path):
    """The Snakefile writes the merged config once and points REPROPIPE_PARAMS at it; the commands stay the same."""
    root = copy_project(tmp_path / "proj")
    dry = run(root, "snakemake", "-n", "-p", "results/asvspoof/metrics.json", "--configfile", "conf/asvspoof/paper.yaml")
    text = dry.stdout + dry.stderr
    commands = [line.split("python -m repropipe ", 1)[1] for line in text.splitlines()
                if "python -m repropipe asvspoof" in line]
    assert {c.split()[1] for c in commands} == {"download", "features", "train", "evaluate"}
    assert not any("--params" in c for c in commands)  # same commands as without the override
    files = list((root / ".repropipe/params").glob("*.yaml"))
    assert len(files) == 1  # one effective params file, which every stage reads through REPROPIPE_PARAMS
    effective = yaml.safe_load(files[0].read_text())
    assert effective == snakemake_config(TINY_PARAMS, load_recipe(RECIPE))
    assert effective["asvspoof"]["train"]["per_model"]["aasist_l"]["batch_size"] == 24


@pytest.mark.e2e
def test_paper_recipe_changes_the_params_of_exactly_the_affected_rules(smk_built, tmp_path):
    """On the test-scale build, --configfile changes the params of asvspoof features and train; evaluate and the
    report follow from their inputs; nothing else runs.

    Every rerun trigger is on: the override reaches the stages through REPROPIPE_PARAMS, not the commands, so
    no rule's code changes.
    """
    root = clone_built(smk_built, tmp_path / "proj")
    dry = run(root, "snakemake", "-n", "results/report.html", "--configfile", "conf/asvspoof/paper.yaml")
    text = dry.stdout + dry.stderr
    table = text.split("Job stats:", 1)[1].split("total", 1)[0].splitlines()[3:]  # after the header and rule
    jobs = {line.split()[0] for line in table if line.strip()}
    assert jobs == {"asvspoof_features", "asvspoof_train", "asvspoof_evaluate", "report"}, text[-3000:]
    # features' declared params changed (kinds, seconds); the rest follows from the changed features
    job = text.split("rule asvspoof_features:", 1)[1].split("reason:", 1)[1].splitlines()[0]
    assert job.startswith(" Params have changed") and "'seconds': 4.0375" in job, job
