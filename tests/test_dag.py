"""dvc.yaml, the Snakemake rules and the Python stage registry must describe one DAG."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_project


def dvc_stages(root: Path) -> dict[str, dict]:
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    out = {}
    for name, st in doc["stages"].items():
        def paths(entries):
            return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]
        outs = paths(st.get("outs")) + paths(st.get("metrics")) + paths(st.get("plots"))
        params = []
        for p in st.get("params", []):
            params += list(p.get("params.yaml", [])) if isinstance(p, dict) else [p]
        out[name] = {"cmd": st["cmd"], "deps": paths(st.get("deps")), "outs": outs, "params": params}
    return out


def snakemake_stages(root: Path) -> dict[str, dict]:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    cwd = os.getcwd()
    os.chdir(root)
    try:
        with SnakemakeApi(OutputSettings()) as api:
            wf_api = api.workflow(resource_settings=ResourceSettings(), snakefile=root / "Snakefile", workdir=root)
            wf_api.dag()
            rules = list(wf_api._workflow.rules)
            return {
                r.name: {"cmd": r.shellcmd, "deps": [str(f) for f in r.input], "outs": [str(f) for f in r.output],
                         "params": [k.replace("__", ".") for k in r.params.keys()]}
                for r in rules if r.name != "all"
            }
    finally:
        os.chdir(cwd)


def expand_dirs(root: Path, deps: list[str]) -> set[str]:
    """DVC hashes a source directory; Snakemake lists its .py files. Compare at file level."""
    out = set()
    for d in deps:
        p = root / d
        if d.startswith("src/") and p.is_dir():
            out |= {str(f.relative_to(root)) for f in p.rglob("*.py")}
        else:
            out.add(d)
    return out


def differences(root: Path) -> list[str]:
    dvc, smk = dvc_stages(root), snakemake_stages(root)
    problems = []
    if set(dvc) != set(smk):
        problems.append(f"stages differ: dvc only {sorted(set(dvc) - set(smk))}, snakemake only {sorted(set(smk) - set(dvc))}")
    for name in sorted(set(dvc) & set(smk)):
        a, b = dvc[name], smk[name]
        if a["cmd"] != b["cmd"]:
            problems.append(f"{name}: cmd {a['cmd']!r} != {b['cmd']!r}")
        if expand_dirs(root, a["deps"]) != expand_dirs(root, b["deps"]):
            problems.append(f"{name}: deps {sorted(expand_dirs(root, a['deps']))} != {sorted(expand_dirs(root, b['deps']))}")
        if set(a["outs"]) != set(b["outs"]):
            problems.append(f"{name}: outs {sorted(a['outs'])} != {sorted(b['outs'])}")
        if sorted(a["params"]) != sorted(b["params"]):
            problems.append(f"{name}: params {sorted(a['params'])} != {sorted(b['params'])}")
    return problems


def test_dvc_and_snakemake_declare_the_same_dag():
    assert differences(ROOT) == []


def test_python_registry_matches_dvc():
    from repropipe.stages import load_all

    dvc = dvc_stages(ROOT)
    stages = load_all()
    assert set(stages) == set(dvc)
    for name, st in stages.items():
        assert st.cmd == dvc[name]["cmd"]
        assert sorted(st.params) == sorted(dvc[name]["params"]), name
        assert sorted(st.deps) == sorted(dvc[name]["deps"]), name
        assert sorted(st.outs) == sorted(dvc[name]["outs"]), name


@pytest.mark.parametrize("edit", [
    ("      - report\n", "      - report\n      - seed\n"),                 # an extra params key
    ("      - results/qr/figures\n      - src/repropipe/report\n", "      - src/repropipe/report\n"),  # a missing dependency
    ("cmd: python -m repropipe report build", "cmd: python -m repropipe report build --log-level DEBUG"),
])
def test_a_drifted_dvc_yaml_is_caught(tmp_path, edit):
    root = copy_project(tmp_path / "proj")
    text = (root / "dvc.yaml").read_text()
    assert edit[0] in text
    (root / "dvc.yaml").write_text(text.replace(edit[0], edit[1], 1))
    assert differences(root) != []
