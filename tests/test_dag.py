"""One DAG: dvc.yaml and the Snakemake rules are generated from the stage registry, and both tools read them
as the same stages with the same commands, inputs (data and code), outputs and params."""

from __future__ import annotations

import os
import subprocess
import sys
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
                r.name: {"cmd": r.shellcmd.removesuffix(" 2> {log}"), "deps": [str(f) for f in r.input],
                         "outs": [str(f) for f in r.output],
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
        assert sorted(st.all_deps) == sorted(dvc[name]["deps"]), name
        assert sorted(st.outs) == sorted(dvc[name]["outs"]), name


def test_generated_files_are_up_to_date():
    """Change a @stage (or any import) and forget `python -m repropipe pipeline write-dag`: this fails."""
    from repropipe import dag
    from repropipe.stages import load_all

    assert dag.stale(ROOT, load_all()) == [], "run `python -m repropipe pipeline write-dag`"


def test_a_stale_generated_file_is_reported(tmp_path):
    root = copy_project(tmp_path / "proj")
    rules = root / "workflow/rules/qr.smk"
    rules.write_text(rules.read_text().replace("mem_mb=4000", "mem_mb=1"))
    res = subprocess.run([sys.executable, "-m", "repropipe", "pipeline", "write-dag", "--check"], cwd=root,
                         capture_output=True, text=True)
    assert res.returncode == 1 and "workflow/rules/qr.smk" in res.stderr
    subprocess.run([sys.executable, "-m", "repropipe", "pipeline", "write-dag"], cwd=root, check=True,
                   capture_output=True)
    assert "mem_mb=4000" in rules.read_text()


def test_code_inputs_are_the_import_closure():
    """Shared modules are inputs of exactly the stages that import them; a branch's code only of its own stages."""
    from repropipe.stages import load_all

    stages = load_all()
    code = {n: set(s.code) for n, s in stages.items()}
    every = set.intersection(*code.values())
    assert {"src/repropipe/cli.py", "src/repropipe/stages.py", "src/repropipe/io.py",
            "src/repropipe/params.py"} <= every
    assert {n for n in stages if "src/repropipe/training.py" in code[n]} >= {
        "asvspoof_train", "speaker_train", "eeg_train", "gan_train"}
    assert "src/repropipe/training.py" not in code["report"] | code["qr_benchmark"] | code["asvspoof_download"]
    assert "src/repropipe/metrics.py" in code["asvspoof_evaluate"] and "src/repropipe/metrics.py" not in code["report"]
    assert {n for n in stages if "src/repropipe/plotting.py" in code[n]} == {
        "qr_benchmark", "asvspoof_evaluate", "speaker_evaluate", "eeg_evaluate", "gan_evaluate"}
    for n, st in stages.items():
        other = [f for f in code[n] if f.count("/") == 3 and f.split("/")[2] not in (st.branch, "report")]
        assert other == [], f"{n} depends on another branch's code: {other}"
    assert "src/repropipe/asvspoof/models.py" not in code["asvspoof_download"]  # a model edit must not re-download


def test_snakemake_lint_is_clean():
    res = subprocess.run(["snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.parametrize("edit", [
    ("    - report\n    outs:\n    - results/report.html\n", "    - report\n    - seed\n    outs:\n    - results/report.html\n"),  # an extra params key
    ("    - results/eeg/timings\n    - src/repropipe/__init__.py\n", "    - src/repropipe/__init__.py\n"),  # a missing dependency
    ("cmd: python -m repropipe report build", "cmd: python -m repropipe report build --log-level DEBUG"),
])
def test_a_drifted_dvc_yaml_is_caught(tmp_path, edit):
    root = copy_project(tmp_path / "proj")
    text = (root / "dvc.yaml").read_text()
    assert edit[0] in text
    (root / "dvc.yaml").write_text(text.replace(edit[0], edit[1], 1))
    assert differences(root) != []
