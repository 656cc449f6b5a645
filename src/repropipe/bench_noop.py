"""`python -m repropipe pipeline bench-noop`: what a no-op costs at the real datasets' file counts.

Both tools look at every output on every run: DVC stats each file of a directory output (and
hashes it when its mtime/inode/size changed), Snakemake stats each declared output. So the cost
of "nothing to do" grows with the number of files, not their size. This bench builds a stand-in
project under a temp dir whose raw outputs hold as many tiny files as the real downloads
(121,461 FLACs for ASVspoof 2019 LA, ...) and whose feature outputs are a few shards, as the
pipeline writes them; builds it once with Snakemake, records it with `dvc commit` (hashing and
caching every file, as `dvc repro` would), then times the no-op `snakemake -n` and `dvc status`.
It is not part of the test suite (minutes, ~400k files); the README quotes its numbers.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> (files in the real raw download, extension, where the count comes from)
DATASETS: dict[str, tuple[int, str, str]] = {
    "asvspoof": (121_461, "flac", "ASVspoof 2019 LA train 25,380 + dev 24,844 + eval 71,237 FLACs"),
    "speaker": (62_666, "pt", "HW4 VoxCeleb subset uttr-*.pt, approximately"),
    "gan": (202_599, "jpg", "CelebA img_align_celeba JPEGs"),
    "eeg": (327, "edf", "EEGMMI 109 subjects x runs 4/8/12 EDF files"),
}
FILES_PER_DIR = 25_000  # the real trees keep tens of thousands of files per directory
FILES_PER_SHARD = 20_000  # features: one shard per this many examples

GEN = '''\
"""Stand-in stages: raw writes N tiny distinct files; features writes a few shards."""
import os, sys
kind, name, n, ext, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
if kind == "raw":
    for i in range(n):
        d = os.path.join(out, f"part{i // %(per_dir)d:03d}")
        if i %% %(per_dir)d == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{name}_{i:07d}.{ext}"), "wb") as f:
            f.write(f"{name}{i}".encode())
else:
    os.makedirs(out, exist_ok=True)
    for s in range(max(1, n // %(per_shard)d)):
        with open(os.path.join(out, f"shard-{s:04d}.pt"), "wb") as f:
            f.write(os.urandom(4096))
''' % {"per_dir": FILES_PER_DIR, "per_shard": FILES_PER_SHARD}


def _counts(scale: float) -> dict[str, int]:
    return {name: max(1, round(n * scale)) for name, (n, _, _) in DATASETS.items()}


def write_project(root: Path, counts: dict[str, int]) -> None:
    """dvc.yaml and a Snakefile declaring the same raw -> features stages per dataset."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "gen.py").write_text(GEN)
    dvc = ["stages:"]
    smk = ["rule all:", "    input:"] + [f'        "data/features/{n}",' for n in counts] + [""]
    for name, n in counts.items():
        ext = DATASETS[name][1]
        raw, feat = f"data/raw/{name}", f"data/features/{name}"
        dvc += [f"  raw_{name}:", f"    cmd: python gen.py raw {name} {n} {ext} {raw}", "    deps: [gen.py]",
                f"    outs: [{raw}]",
                f"  features_{name}:", f"    cmd: python gen.py features {name} {n} {ext} {feat}",
                f"    deps: [gen.py, {raw}]", f"    outs: [{feat}]"]
        smk += [f"rule raw_{name}:", '    input: "gen.py"', f'    output: directory("{raw}")',
                f'    shell: "python gen.py raw {name} {n} {ext} {raw}"', "",
                f"rule features_{name}:", f'    input: "gen.py", "{raw}"', f'    output: directory("{feat}")',
                f'    shell: "python gen.py features {name} {n} {ext} {feat}"', ""]
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


def _noop(root: Path, *cmd: str, expect: str, repeats: int = 3) -> float:
    """Median wall time of a command that must report nothing to do."""
    times = []
    for _ in range(repeats):
        took, out = _run(root, *cmd)
        if expect not in out:
            raise RuntimeError(f"{' '.join(cmd)} did not report a no-op:\n{out[-2000:]}")
        times.append(took)
    return statistics.median(times)


class _Rows(list):
    """Rows that print as they are measured, so a long bench shows its numbers early."""

    def append(self, row: tuple[str, float]) -> None:
        print(f"bench-noop: step={row[0]!r} seconds={row[1]:.2f}", flush=True)
        super().append(row)


def bench(root: Path, scale: float = 1.0) -> list[tuple[str, float]]:
    counts = _counts(scale)
    write_project(root, counts)
    rows = _Rows()
    print(f"bench-noop: dir={root} files=" + ",".join(f"{k}:{v}" for k, v in counts.items()), flush=True)
    rows.append(("snakemake full run (writes every file)", _run(root, "snakemake", "--cores", "2", "all")[0]))
    rows.append(("snakemake -n (no-op)", _noop(root, "snakemake", "-n", "all", expect="Nothing to be done")))
    _run(root, "dvc", "init", "--no-scm", "-q")
    _run(root, "dvc", "config", "core.analytics", "false")
    rows.append(("dvc commit -f (hash + cache every file)", _run(root, "dvc", "commit", "-f", "-q")[0]))
    rows.append(("dvc status (no-op)", _noop(root, "dvc", "status", expect="up to date")))
    for name in counts:
        rows.append((f"  dvc status raw_{name} ({counts[name]} files)",
                     _noop(root, "dvc", "status", f"raw_{name}", expect="up to date", repeats=1)))
    rows.append(("snakemake -n after dvc commit", _noop(root, "snakemake", "-n", "all", expect="Nothing to be done")))
    return rows


def main(scale: float = 1.0, workdir: str | None = None, keep: bool = False) -> None:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="repropipe-bench-noop-")) / "proj"
    try:
        rows = bench(root, scale)
    finally:
        if not keep:
            shutil.rmtree(root.parent if workdir is None else root, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  seconds")
    for what, secs in rows:
        print(f"{what:<{width}}  {secs:7.2f}")
    print(f"bench-noop: total_files={sum(_counts(scale).values())} scale={scale}")
