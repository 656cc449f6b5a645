"""`python -m repropipe pipeline bench-noop`: what a no-op costs at the real datasets' file counts.

Both tools look at every output on every run: DVC stats each file of a directory output (and
hashes it when its mtime/inode/size changed), Snakemake stats each declared output. So the cost
of "nothing to do" grows with the number of files the outputs hold, not with their size.

The bench builds a stand-in project under a temp dir with one download -> features pair of
stages per dataset, each declared in a dvc.yaml and a Snakefile, at the real datasets' example
counts (121,461 FLACs for ASVspoof 2019 LA, ...). ``layout`` picks how the raw data is stored:

* ``archive`` (default): what the pipeline's stages declare today. ASVspoof, VoxCeleb and CelebA:
  the archive sits in an untracked cache (``data/cache/<name>/<name>.zip`` holding one tiny member
  per example; VoxCeleb's Kaggle source also leaves its extracted tree there) and the raw output is
  a small ``source.json`` naming it; the features stage reads the zip's member list. EEG keeps its
  327 EDFs as loose files in the raw output (``data/raw/eeg/Sxxx/SxxxRyy.edf`` + manifest.json),
  as the real stage does: 327 files cost DVC nothing worth designing around.
* ``tree``: the design the README warns against: every raw output is a tree of one tiny file
  per example (the old measurement, for contrast).

Features are what the real stages write at those counts: a few shards per split (and per kind
for ASVspoof) plus an index. The bench builds the project once with Snakemake, records it with
``dvc commit -f`` (hashing and caching every output file, as ``dvc repro`` would), then times the
no-op ``snakemake -n`` and ``dvc status``, which must both report nothing to do. It also times
``snakemake --version``: on a machine where Slurm's client is installed but no controller answers,
snakemake-executor-plugin-slurm's import runs ``scontrol show config`` with a 10 s timeout, a
start-up cost that no workflow design removes; the summary shows it beside the no-op times.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIMIT_S = 5.0  # the issue's bound for each no-op check


@dataclass(frozen=True)
class Dataset:
    """One dataset as the pipeline stores it at its real size."""

    name: str
    splits: dict[str, int]  # examples per split in the real download
    ext: str
    raw: str                # "archive": source.json + archive in an untracked cache; "tree": loose files in the output
    shard_size: int         # examples per feature shard (params.yaml's value); 0: one file per split
    kinds: int = 1          # feature kinds sharded separately (ASVspoof: lfcc and mel)
    index_files: int = 1    # index/manifest files beside the shards
    extra_shards: int = 0   # shards of splits carved out of these (VoxCeleb: val and verify out of train)
    cache_tree: bool = False  # the real source also leaves an extracted tree in the cache (Kaggle)
    what: str = ""

    def count(self, scale: float) -> dict[str, int]:
        return {s: max(1, round(n * scale)) for s, n in self.splits.items()}

    def feature_files(self, scale: float) -> int:
        per_split = [1 if not self.shard_size else math.ceil(n / self.shard_size) for n in self.count(scale).values()]
        return (sum(per_split) + self.extra_shards) * self.kinds + self.index_files


DATASETS = (
    Dataset("asvspoof", {"train": 25_380, "dev": 24_844, "eval": 71_237}, "flac", "archive", 2048, kinds=2,
            index_files=2, what="ASVspoof 2019 LA FLACs in LA.zip (data/cache/asvspoof)"),
    Dataset("speaker", {"train": 56_666, "test": 6_000}, "pt", "archive", 0, index_files=1, extra_shards=2,
            cache_tree=True,
            what="HW4 VoxCeleb uttr-*.pt (approx.), Kaggle zip + its extraction in data/cache/speaker"),
    Dataset("gan", {"train": 162_770, "valid": 19_867, "test": 19_962}, "jpg", "archive", 8192,
            what="CelebA img_align_celeba.zip JPEGs (data/cache/gan)"),
    Dataset("eeg", {"all": 327}, "edf", "tree", 0, index_files=2,
            what="EEGMMI 109 subjects x runs 4/8/12 EDFs, loose in data/raw/eeg"),
)
FILES_PER_DIR = 25_000
GITIGNORE = "/data/raw/\n/data/features/\n/data/cache/\n.snakemake/\n"  # as the repository's .gitignore  # the real trees keep tens of thousands of files per directory

GEN = '''\
"""Stand-in stages (see repropipe.bench_noop): raw data as an archive or a tree, features as shards."""
import json, os, sys, zipfile

PER_DIR = %(per_dir)d


def tree(out, name, n, ext):
    for i in range(n):
        d = os.path.join(out, f"part{i // PER_DIR:03d}")
        if i %% PER_DIR == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{name}_{i:07d}.{ext}"), "wb") as f:
            f.write(f"{name}{i}".encode())


def raw_archive(name, n, ext, cache, out, unpack):
    """The download stage: archive fetched once into the untracked cache, output = source.json."""
    archive = os.path.join(cache, f"{name}.zip")
    os.makedirs(cache, exist_ok=True)
    if not os.path.exists(archive):
        with zipfile.ZipFile(archive + ".part", "w") as zf:
            for i in range(n):
                zf.writestr(f"{name}/{name}_{i:07d}.{ext}", f"{name}{i}")
        os.replace(archive + ".part", archive)
    if unpack and not os.path.exists(os.path.join(cache, "unpacked.done")):
        tree(os.path.join(cache, "unpacked"), name, n, ext)
        open(os.path.join(cache, "unpacked.done"), "w").close()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "source.json"), "w") as f:
        json.dump({"archive": os.path.abspath(archive), "size": os.path.getsize(archive), "count": n}, f)


def raw_tree(name, n, ext, out, manifest):
    tree(out, name, n, ext)
    for k in range(manifest):
        with open(os.path.join(out, f"manifest{k}.json"), "w") as f:
            json.dump({"count": n}, f)


def features(raw, out, shards, index):
    """The features stage: reads the raw data's listing, writes a few shards and an index."""
    src = os.path.join(raw, "source.json")
    if os.path.exists(src):
        with zipfile.ZipFile(json.load(open(src))["archive"]) as zf:
            n = len(zf.namelist())
    else:
        n = sum(len(files) for _, _, files in os.walk(raw))
    os.makedirs(out, exist_ok=True)
    for s in range(shards):
        with open(os.path.join(out, f"shard-{s:04d}.pt"), "wb") as f:
            f.write(os.urandom(4096))
    for k in range(index):
        with open(os.path.join(out, f"index{k}.json"), "w") as f:
            json.dump({"examples": n}, f)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "raw-archive":
        raw_archive(a[0], int(a[1]), a[2], a[3], a[4], a[5] == "1")
    elif cmd == "raw-tree":
        raw_tree(a[0], int(a[1]), a[2], a[3], int(a[4]))
    else:
        features(a[0], a[1], int(a[2]), int(a[3]))
''' % {"per_dir": FILES_PER_DIR}


def _plan(scale: float, layout: str) -> list[dict[str, Any]]:
    """Per dataset: example count, how its raw data is stored, and the files each output holds."""
    out = []
    for d in DATASETS:
        n = sum(d.count(scale).values())
        raw = "tree" if layout == "tree" else d.raw
        manifest = 1 if d.raw == "tree" else 0  # EEG's real raw output has a manifest.json beside the EDFs
        out.append({"name": d.name, "n": n, "ext": d.ext, "raw": raw, "cache_tree": d.cache_tree and raw == "archive",
                    "raw_files": 1 if raw == "archive" else n + manifest, "manifest": manifest,
                    "shards": d.feature_files(scale) - d.index_files, "index": d.index_files,
                    "feature_files": d.feature_files(scale)})
    return out


def _raw_cmd(p: dict[str, Any]) -> str:
    raw = f"data/raw/{p['name']}"
    if p["raw"] == "archive":
        return (f"python gen.py raw-archive {p['name']} {p['n']} {p['ext']} data/cache/{p['name']} {raw} "
                f"{int(p['cache_tree'])}")
    return f"python gen.py raw-tree {p['name']} {p['n']} {p['ext']} {raw} {p['manifest']}"


def write_project(root: Path, plan: list[dict[str, Any]]) -> None:
    """dvc.yaml and a Snakefile declaring the same download -> features stages per dataset."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "gen.py").write_text(GEN)
    dvc = ["stages:"]
    smk = ["rule all:", "    input:"] + [f'        "data/features/{p["name"]}",' for p in plan] + [""]
    for p in plan:
        name = p["name"]
        raw, feat = f"data/raw/{name}", f"data/features/{name}"
        feat_cmd = f"python gen.py features {raw} {feat} {p['shards']} {p['index']}"
        dvc += [f"  raw_{name}:", f"    cmd: {_raw_cmd(p)}", "    deps: [gen.py]", f"    outs: [{raw}]",
                f"  features_{name}:", f"    cmd: {feat_cmd}", f"    deps: [gen.py, {raw}]", f"    outs: [{feat}]"]
        smk += [f"rule raw_{name}:", '    input: "gen.py"', f'    output: directory("{raw}")',
                f'    shell: "{_raw_cmd(p)}"', "",
                f"rule features_{name}:", f'    input: "gen.py", "{raw}"', f'    output: directory("{feat}")',
                f'    shell: "{feat_cmd}"', ""]
    (root / "dvc.yaml").write_text("\n".join(dvc) + "\n")
    (root / "Snakefile").write_text("\n".join(smk) + "\n")


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _run(root: Path, *cmd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return took, res.stdout + res.stderr


NOOP = {"snakemake": "Nothing to be done", "dvc": "up to date"}


def _noop(root: Path, *cmd: str, repeats: int = 3) -> float:
    """Median wall time of a command that must report nothing to do (raises if it has work)."""
    times = []
    for _ in range(repeats):
        took, out = _run(root, *cmd)
        if NOOP[cmd[0]] not in out:
            raise RuntimeError(f"{' '.join(cmd)} did not report a no-op:\n{out[-2000:]}")
        times.append(took)
    return statistics.median(times)


def _say(msg: str) -> None:
    print(f"bench-noop: {msg}", flush=True)


def bench(root: Path, scale: float = 1.0, layout: str = "archive", repeats: int = 3) -> dict[str, Any]:
    """Build the stand-in project under ``root`` and time its no-ops; returns the measurements."""
    plan = _plan(scale, layout)
    write_project(root, plan)
    _say(f"dir={root} layout={layout} scale={scale} " + " ".join(
        f"{p['name']}:examples={p['n']},raw_files={p['raw_files']},feature_files={p['feature_files']}" for p in plan))
    res: dict[str, Any] = {"layout": layout, "scale": scale, "plan": plan, "steps": {}}

    def step(what: str, secs: float) -> None:
        res["steps"][what] = secs
        _say(f"layout={layout} step={what!r} seconds={secs:.2f}")

    step("snakemake full run (writes every file)", _run(root, "snakemake", "--cores", "2", "all")[0])
    step("snakemake --version (start-up only)", min(_run(root, "snakemake", "--version")[0] for _ in range(repeats)))
    step("snakemake -n (no-op)", _noop(root, "snakemake", "-n", "all", repeats=repeats))
    # a git repo ignoring what the real one ignores: DVC's stage collection walks the workspace but
    # skips git-ignored folders, so the untracked cache (62k extracted VoxCeleb files) costs nothing
    (root / ".gitignore").write_text(GITIGNORE)
    _run(root, "git", "init", "-q")
    _run(root, "dvc", "init", "-q")
    _run(root, "dvc", "config", "core.analytics", "false")
    step("dvc commit -f (hash + cache every output file)", _run(root, "dvc", "commit", "-f", "-q")[0])
    step("dvc --version (start-up only)", min(_run(root, "dvc", "--version")[0] for _ in range(repeats)))
    step("dvc status (no-op)", _noop(root, "dvc", "status", repeats=repeats))
    for p in plan:
        step(f"  dvc status raw_{p['name']} ({p['raw_files']} output files)",
             _noop(root, "dvc", "status", f"raw_{p['name']}", repeats=1))
    step("snakemake -n after dvc commit (no-op)", _noop(root, "snakemake", "-n", "all", repeats=repeats))
    res["snakemake_noop_s"] = res["steps"]["snakemake -n (no-op)"]
    res["dvc_noop_s"] = res["steps"]["dvc status (no-op)"]
    res["snakemake_startup_s"] = res["steps"]["snakemake --version (start-up only)"]
    res["dvc_startup_s"] = res["steps"]["dvc --version (start-up only)"]
    return res


def _verdict(secs: float) -> str:
    return f"{'yes' if secs < LIMIT_S else 'NO'}"


def summary(results: list[dict[str, Any]]) -> str:
    """The table the README quotes: per layout, both no-ops, start-up, and whether each is under 5 s."""
    lines = [f"{'layout':<8} {'output files':>15} {'check':<16} {'no-op s':>8} {'<5 s':>5} "
             f"{'start-up s':>10} {'no-op - start-up':>16} {'<5 s':>5}"]
    for r in results:
        raw_files = sum(p["raw_files"] + p["feature_files"] for p in r["plan"])
        for tool, noop, start in (("snakemake -n", r["snakemake_noop_s"], r["snakemake_startup_s"]),
                                  ("dvc status", r["dvc_noop_s"], r["dvc_startup_s"])):
            lines.append(f"{r['layout']:<8} {raw_files:>15} {tool:<16} {noop:>8.2f} {_verdict(noop):>5} "
                         f"{start:>10.2f} {noop - start:>16.2f} {_verdict(noop - start):>5}")
    lines.append("both report nothing to do: yes (checked on every timed run)")
    load = os.getloadavg()
    lines.append(f"scale={results[0]['scale']} load_avg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f} "
                 f"cpus={os.cpu_count()}")
    return "\n".join(lines)


def main(scale: float = 1.0, workdir: str | None = None, keep: bool = False, layout: str = "archive",
         repeats: int = 3) -> list[dict[str, Any]]:
    layouts = ["archive", "tree"] if layout == "both" else [layout]
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="repropipe-bench-noop-"))
    results = []
    try:
        for lay in layouts:
            results.append(bench(base / lay, scale, lay, repeats))
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    for r in results:
        width = max(len(k) for k in r["steps"])
        print(f"\n{'layout ' + r['layout']:<{width}}  seconds")
        for what, secs in r["steps"].items():
            print(f"{what:<{width}}  {secs:7.2f}")
    print("\n" + summary(results))
    print(json.dumps({r["layout"]: {k: round(r[k], 3) for k in ("snakemake_noop_s", "dvc_noop_s",
                                                                  "snakemake_startup_s", "dvc_startup_s")}
                      for r in results}))
    return results
