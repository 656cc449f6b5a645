"""Every branch's `paper` recipe (conf/<branch>/paper.yaml): valid params, the same in both tools, reaching the stages.

The recipes are tested at test scale: laid over tests/conftest.py's TINY_PARAMS (as over params.yaml), the
branch's changed keys reach its stages through each tool; nothing runs at the published sizes.
"""

from __future__ import annotations

import copy
import functools
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_PARAMS, clone_built, copy_project, run
from repropipe.params import ParamsError, load_params, validate
from repropipe.recipes import load_recipe, overrides

BRANCHES = ("asvspoof", "speaker", "eeg", "gan")
# the stages whose declared params each recipe changes (every other stage of the branch follows from its inputs)
CHANGED = {"asvspoof": {"asvspoof_features", "asvspoof_train"},
           "speaker": {"speaker_features", "speaker_train"},  # the recipe's 90/10 split is a features key
           "eeg": {"eeg_features", "eeg_train"},
           "gan": {"gan_train", "gan_evaluate"}}  # gan_evaluate rebuilds the generator from gan.model
FIRST = {"asvspoof": "asvspoof_features", "speaker": "speaker_features", "eeg": "eeg_features", "gan": "gan_train"}
DOWNSTREAM = {"asvspoof": {"asvspoof_evaluate"}, "speaker": {"speaker_evaluate"}, "eeg": {"eeg_evaluate"},
              "gan": set()}


def recipe_path(branch: str) -> Path:
    return ROOT / "conf" / branch / "paper.yaml"


def snakemake_config(base: dict, recipe: dict) -> dict:
    """What `snakemake --configfile recipe` makes of params.yaml: Snakemake's own update_config."""
    from snakemake.utils import update_config

    cfg = copy.deepcopy(base)
    update_config(cfg, copy.deepcopy(recipe))
    return cfg


@functools.cache
def recipe_args(branch: str) -> tuple[str, ...]:
    """`python -m repropipe <branch> recipe-args conf/<branch>/paper.yaml`, split as xargs splits it."""
    out = subprocess.run([sys.executable, "-m", "repropipe", branch, "recipe-args", str(recipe_path(branch))],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    words = shlex.split(out)
    assert words[0::2] == ["-S"] * (len(words) // 2)
    return tuple(words[1::2])


def dvc_params(base: dict, branch: str, params_file: Path) -> dict:
    """What `recipe-args ... | xargs dvc exp run` writes to params.yaml: DVC's own -S code, read back as stages do."""
    from dvc.utils.hydra import apply_overrides

    params_file.write_text(yaml.safe_dump(base, sort_keys=False))
    apply_overrides(params_file, list(recipe_args(branch)))
    return load_params(params_file)


@pytest.mark.parametrize("base", ["params.yaml", "test scale"])
@pytest.mark.parametrize("branch", BRANCHES)
def test_paper_recipe_gives_the_same_valid_params_in_snakemake_and_dvc(branch, base, tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text()) if base == "params.yaml" else copy.deepcopy(TINY_PARAMS)
    recipe = load_recipe(recipe_path(branch), branch)
    smk = snakemake_config(params, recipe)
    assert dvc_params(params, branch, tmp_path / "params.yaml") == smk
    validate(smk, recipe_path(branch))
    assert smk != params  # the recipe changes something
    # only the branch's section changes
    assert {k: v for k, v in smk.items() if k != branch} == {k: v for k, v in params.items() if k != branch}
    assert "Source" in recipe_path(branch).read_text()  # every recipe names its sources


def test_recipe_of_another_branch_or_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(ParamsError, match="a gan recipe changes only the 'gan' section; it has 'asvspoof'"):
        load_recipe(recipe_path("asvspoof"), "gan")
    (tmp_path / "r.yaml").write_text("- 1\n")
    with pytest.raises(ParamsError, match="r.yaml: a recipe is a mapping"):
        load_recipe(tmp_path / "r.yaml")
    assert overrides({"a": {"b": [1, "x"], "c": None, "d": {"e": 0.5}, "f": True}}) == \
        ['++a.b=[1,"x"]', "++a.c=null", "++a.d.e=0.5", "++a.f=true"]


def test_published_sizes():
    """The numbers each recipe names as published (the files' comments give the sources)."""
    gan = load_recipe(recipe_path("gan"))["gan"]
    assert (gan["model"]["nz"], gan["model"]["ngf"], gan["model"]["ndf"]) == (128, 1024, 1024)
    t = gan["train"]
    # mimicry README, CelebA 64 x 64 training parameters: batch 64, lr 2e-4, betas (0.0, 0.9), n_dis 5, 100K steps
    assert (t["n_dis"], t["lr"], t["beta1"], t["beta2"], t["batch_size"]) == (5, 2e-4, 0.0, 0.9, 64)
    steps_per_epoch = 162_770 / (t["n_dis"] * t["batch_size"])  # CelebA's training partition
    assert 100_000 <= t["epochs"] * int(steps_per_epoch) and (t["epochs"] - 1) * (int(steps_per_epoch) + 1) < 100_000
    eeg = load_recipe(recipe_path("eeg"))["eeg"]
    assert eeg["train"]["eegnet"] == {"F1": 8, "D": 2, "F2": 16, "kernel_1": 40, "kernel_2": 20, "dropout": 0.25,
                                      "epochs": 500}  # Lawhern et al.'s SMR kernels (32, 16 at 128 Hz) at 160 Hz
    assert eeg["features"]["chunk"] == 2 * 160  # 2 s at PhysioNet's 160 Hz
    speaker = load_recipe(recipe_path("speaker"))["speaker"]
    hw4 = speaker["train"]  # the HW4 sample: batch 32, 70,000 steps over about 48,960 of its 56,666 utterances
    assert (hw4["batch_size"], hw4["lr"], hw4["warmup_steps"], hw4["segment_len"]) == (32, 1e-3, 1000, 128)
    assert speaker["features"]["val_fraction"] == 0.1  # the sample's 90/10 split
    per_epoch = int((56_666 * (600 - 24) / 600) * 0.9) // hw4["batch_size"]
    assert 70_000 <= hw4["epochs"] * per_epoch < 70_000 + per_epoch
    ecapa = speaker["ecapa"]
    assert (ecapa["channels"], ecapa["mfa_channels"], ecapa["emb_dim"]) == (1024, 1536, 192)


TARGET = {b: f"results/{b}/metrics.json" for b in BRANCHES}


@pytest.mark.parametrize("branch", BRANCHES)
def test_snakemake_configfile_hands_the_paper_params_to_the_branchs_stages(branch, tmp_path):
    """The Snakefile writes the merged config once and points REPROPIPE_PARAMS at it; the commands stay the same."""
    root = copy_project(tmp_path / "proj")
    recipe = f"conf/{branch}/paper.yaml"
    dry = run(root, "snakemake", "-n", "-p", TARGET[branch], "--configfile", recipe)
    text = dry.stdout + dry.stderr
    commands = [line.split("python -m repropipe ", 1)[1] for line in text.splitlines()
                if f"python -m repropipe {branch} " in line]
    assert commands and not any("--params" in c for c in commands)  # same commands as without the override
    files = list((root / ".repropipe/params").glob("*.yaml"))
    assert len(files) == 1  # one effective params file, which every stage reads through REPROPIPE_PARAMS
    assert yaml.safe_load(files[0].read_text()) == snakemake_config(TINY_PARAMS, load_recipe(root / recipe))


@pytest.mark.e2e
@pytest.mark.parametrize("branch", BRANCHES)
def test_paper_recipe_reruns_exactly_the_branchs_stages_in_snakemake(branch, smk_built, tmp_path):
    """On the test-scale build, --configfile changes the params of exactly the stages that declare the changed keys;
    the rest of the branch and the report follow from their inputs; nothing else runs."""
    root = clone_built(smk_built, tmp_path / "proj")
    dry = run(root, "snakemake", "-n", "results/report.html", "--configfile", f"conf/{branch}/paper.yaml")
    text = dry.stdout + dry.stderr
    table = text.split("Job stats:", 1)[1].split("total", 1)[0].splitlines()[3:]  # after the header and rule
    jobs = {line.split()[0] for line in table if line.strip()}
    assert jobs == CHANGED[branch] | DOWNSTREAM[branch] | {"report"}, text[-3000:]
    # Snakemake gives one reason per job: the first changed stage's is its params (later ones' are their inputs)
    reason = text.split(f"rule {FIRST[branch]}:", 1)[1].split("reason:", 1)[1].splitlines()[0]
    assert reason.startswith(" Params have changed"), reason


@pytest.mark.e2e
@pytest.mark.parametrize("branch", BRANCHES)
def test_paper_recipe_changes_the_params_of_exactly_the_branchs_stages_in_dvc(branch, dvc_built, tmp_path):
    """`recipe-args | xargs dvc exp run` first applies the -S overrides to params.yaml (DVC's apply_overrides, as
    here), then reproduces: `dvc status` names exactly the stages whose declared params changed."""
    import json

    root = clone_built(dvc_built, tmp_path / "proj")
    dvc_params(yaml.safe_load((root / "params.yaml").read_text()), branch, root / "params.yaml")
    status = json.loads(run(root, "dvc", "status", "--json").stdout or "{}")
    assert set(status) == CHANGED[branch], status
    for name in CHANGED[branch]:  # e.g. [{"changed deps": {"params.yaml": {"gan.train": "modified"}}}]
        changed = [e["changed deps"] for e in status[name] if isinstance(e, dict) and "changed deps" in e]
        assert changed and all(set(c) == {"params.yaml"} for c in changed), status[name]
