"""The ASVspoof `paper` recipe (conf/asvspoof/paper.yaml): its published systems and settings.

Both tools, the schema and the stages: tests/test_recipes.py, for every branch's recipe.
"""

from __future__ import annotations

import copy
import json

import pytest

from conftest import ROOT, TINY_PARAMS
from repropipe.asvspoof.recipe import load_recipe
from test_recipes import snakemake_config

RECIPE = ROOT / "conf/asvspoof/paper.yaml"


def test_paper_recipe_sets_the_published_asvspoof_systems_and_front_end():
    """The tool-independent checks (both tools, schema, only this section) are tests/test_recipes.py's."""
    a = snakemake_config(copy.deepcopy(TINY_PARAMS), load_recipe(RECIPE))["asvspoof"]
    assert a["features"]["kinds"] == ["lfcc", "wave"] and round(a["features"]["seconds"] * 16000) == 64600
    assert a["train"]["models"] == ["lfcc_lcnn", "lfcc_lcnn_lstmsum_p2s", "aasist", "aasist_l"]
    assert a["train"]["epochs"] == 100
    from repropipe.asvspoof.config import FeaturesConfig
    from repropipe.asvspoof.features import NII_FRONT_END
    from repropipe.config import parse

    cfg = parse(FeaturesConfig, a["features"]).front_end()  # NII's LFCC front end, 750 frames
    assert {k: getattr(cfg, k) for k in NII_FRONT_END} == NII_FRONT_END and cfg.spectral_samples == 749 * 160
    assert a["train"]["per_model"]["aasist"]["lr_schedule"] == "cosine" and a["train"]["lr_schedule"] == "step"
    # only asvspoof's features and train keys change
    assert {k: v for k, v in a.items() if k not in ("features", "train")} == \
        {k: v for k, v in TINY_PARAMS["asvspoof"].items() if k not in ("features", "train")}


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
