"""Results you can trust, checked on the session's two test-scale runs (one by DVC, one by Snakemake):

* the same params, data and code give the same bytes in every output (timings aside), whichever tool ran it;
* every stage declares all the project code it runs (checked against what a real run imported), and editing
  any shared module makes exactly the stages that import it out of date, in both tools;
* what Snakemake decides with (--config, --configfile) is what the stages run with.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import TINY_PARAMS, clone_built, output_md5s, run

pytestmark = pytest.mark.e2e


def _stages():
    from repropipe.stages import load_all

    return load_all()


def noisy_paths() -> list[str]:
    """Outputs declared noisy (timings, RSS, and what displays them)."""
    return sorted({o for st in _stages().values() for o in st.noisy})


def _is_noisy(rel: str, noisy: list[str]) -> bool:
    return any(rel == n or rel.startswith(n + "/") for n in noisy)


def test_two_runs_from_scratch_give_the_same_bytes_in_every_output(dvc_built, smk_built):
    """`dvc repro` and `snakemake` from two fresh checkouts: same md5 for every file of every declared output
    except the declared-noisy ones (times and memory, and the section/report pages that display them)."""
    noisy = noisy_paths()
    a = {k: v for k, v in output_md5s(dvc_built).items() if not _is_noisy(k, noisy)}
    b = {k: v for k, v in output_md5s(smk_built).items() if not _is_noisy(k, noisy)}
    assert set(a) == set(b), f"only in dvc run: {sorted(set(a) - set(b))}; only in snakemake run: {sorted(set(b) - set(a))}"
    differ = sorted(k for k in a if a[k] != b[k])
    assert len(a) > 100 and differ == [], f"{len(differ)} of {len(a)} output files differ: {differ[:20]}"
    # the noisy ones exist and are few
    assert {"results/qr/timings.json", "results/eeg/timings.json"} <= set(output_md5s(dvc_built))
    costs = [n for n in noisy if n.startswith("results/costs/")]
    assert len(costs) == len(_stages()), costs  # every stage's cost file, and nothing else under results/costs
    assert len([n for n in noisy if n not in costs]) <= 8, noisy


@pytest.mark.parametrize("built", ["dvc_built", "smk_built"])
def test_declared_code_covers_every_module_a_real_run_imported(built, request):
    root = request.getfixturevalue(built)
    records = root / ".repropipe/imports"
    stages = _stages()
    seen = {p.stem: json.loads(p.read_text()) for p in records.glob("*.json")}
    assert set(seen) == set(stages), f"stages that ran without recording: {sorted(set(stages) - set(seen))}"
    for name, imported in seen.items():
        missing = sorted(set(imported) - set(stages[name].code))
        assert missing == [], f"{name} ran {missing} but does not declare them as inputs"


def _snakemake_jobs(out: str) -> set[str]:
    """Every rule in the dry run's job table."""
    if "Job stats:" not in out:
        return set()
    table = out.split("Job stats:", 1)[1].split("\ntotal", 1)[0].splitlines()[3:]
    return {line.split()[0] for line in table if line.strip()}


def _descendants(stages, names: set[str]) -> set[str]:
    """``names`` and every stage downstream of them."""
    found = set(names)
    while True:
        outs = {o for n in found for o in stages[n].outs}
        more = {n for n, st in stages.items() if n not in found and any(d in outs for d in st.deps)}
        if not more:
            return found
        found |= more


def _snakemake_direct(out: str) -> set[str]:
    """Rules Snakemake re-runs because one of their own inputs changed (not merely downstream of one)."""
    m = re.search(r"^\s*updated input files:\n((?:\s{8,}.*\n?)+)", out, re.M)
    return {r.strip() for r in m.group(1).replace("\n", ",").split(",") if r.strip()} if m else set()


@pytest.fixture(scope="module")
def fast_snakemake_env(tmp_path_factory) -> dict[str, str]:
    """A failing `scontrol` first on PATH: the SLURM plugin probes `scontrol show config` when Snakemake starts, and
    waits 10 s for a controller where the client is installed but none runs (CI before the SLURM test)."""
    stub = tmp_path_factory.mktemp("stub")
    (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (stub / "scontrol").chmod(0o755)
    from conftest import ENV

    return {"PATH": f"{stub}{os.pathsep}{ENV['PATH']}"}


def test_editing_a_shared_module_makes_exactly_its_importers_out_of_date(dvc_built, tmp_path, fast_snakemake_env):
    root = clone_built(dvc_built, tmp_path / "proj")
    stages = _stages()
    assert "up to date" in run(root, "dvc", "status").stdout.lower()
    dry = run(root, "snakemake", "-n", "results/report.html", env=fast_snakemake_env)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    shared = sorted({f for st in stages.values() for f in st.code
                     if f.count("/") == 2 or f.startswith("src/repropipe/report/")})
    assert {"src/repropipe/training.py", "src/repropipe/metrics.py", "src/repropipe/plotting.py",
            "src/repropipe/io.py", "src/repropipe/report/section.py"} <= set(shared)
    measured = {}
    for rel in shared:
        path = root / rel
        before, st = path.read_bytes(), path.stat()
        path.write_bytes(before + b"\n# an edit\n")
        try:
            status = json.loads(run(root, "dvc", "status", "--json").stdout or "{}")
            by_dvc = {k.split(":")[-1] for k in status}
            dry = run(root, "snakemake", "-n", "results/report.html", env=fast_snakemake_env).stdout
            smk_direct, smk_jobs = _snakemake_direct(dry), _snakemake_jobs(dry)
        finally:
            path.write_bytes(before)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        expected = {n for n, s in stages.items() if rel in s.code}
        measured[rel] = len(expected)
        assert by_dvc == expected, f"{rel}: dvc status names {sorted(by_dvc)}, importers are {sorted(expected)}"
        # Snakemake names as "updated input files" only the importers not already downstream of another one;
        # it re-runs exactly the importers and what depends on them
        assert smk_direct and smk_direct <= expected, f"{rel}: snakemake -n names {sorted(smk_direct)}"
        assert smk_jobs == _descendants(stages, expected), (
            f"{rel}: snakemake -n re-runs {sorted(smk_jobs)}, importers are {sorted(expected)}")
    print("stages made out of date by editing each shared module:", json.dumps(measured, indent=1))
    # and a branch module only its own branch's stages
    rel = "src/repropipe/asvspoof/models.py"
    path = root / rel
    path.write_bytes(path.read_bytes() + b"\n# an edit\n")
    status = json.loads(run(root, "dvc", "status", "--json").stdout or "{}")
    assert {k.split(":")[-1] for k in status} == {"asvspoof_train", "asvspoof_evaluate"}


def test_snakemake_config_overrides_reach_the_stages(smk_built, tmp_path, fast_snakemake_env):
    root = clone_built(smk_built, tmp_path / "proj")
    res = run(root, "snakemake", "--cores", "1", "results/report.html", "--config",
              'report={"title": "OVERRIDDEN"}', env=fast_snakemake_env)
    out = res.stdout + res.stderr
    assert "rule report:" in out and "rule qr_benchmark:" not in out
    html = (root / "results/report.html").read_text()
    assert "<title>OVERRIDDEN</title>" in html
    assert yaml.safe_load((root / "params.yaml").read_text())["report"]["title"] == TINY_PARAMS["report"]["title"]

    override = tmp_path / "recipe.yaml"
    override.write_text(yaml.safe_dump({"report": {"title": "FROM A CONFIGFILE"}}))
    run(root, "snakemake", "--cores", "1", "results/report.html", "--configfile", str(override),
        env=fast_snakemake_env)
    assert "<title>FROM A CONFIGFILE</title>" in (root / "results/report.html").read_text()

    bad = run(root, "snakemake", "--cores", "1", "results/report.html", "--config", 'qr={"repeats": "x"}', ok=False,
              env=fast_snakemake_env)
    assert bad.returncode != 0 and "qr" in bad.stdout + bad.stderr
