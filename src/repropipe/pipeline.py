"""`python -m repropipe pipeline <command>`: the DAG files, the stage table, clean-up and benchmarks."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from repropipe import params as params_mod
from repropipe.stages import RESUME_ROOT, load_all


def _stages(args: argparse.Namespace) -> int:
    stages = load_all()
    if args.json:
        print(json.dumps({n: {"cmd": s.cmd, "params": list(s.params), "deps": list(s.deps), "code": list(s.code),
                              "outs": list(s.outs), "noisy": list(s.noisy), "resources": s.resource}
                          for n, s in stages.items()}, indent=2))
        return 0
    rows = [("stage", "command", "data in", "code", "outputs", "params")]
    for n, s in stages.items():
        rows.append((n, s.cmd, str(len(s.deps)), f"{len(s.code)} files", ", ".join(s.outs), ", ".join(s.params)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] + "  [" + r[5] + "]")
    print("\n(`--json` lists every input file, resources and noisy outputs)")
    return 0


def _validate(args: argparse.Namespace) -> int:
    params_mod.load_params(args.params)
    print(f"{args.params}: valid")
    return 0


def _set_resources(args: argparse.Namespace) -> int:
    print(" ".join(["--set-resources"] + [f"{n}:{a}" for n in load_all() for a in args.assign]))
    return 0


def _write_dag(args: argparse.Namespace) -> int:
    from repropipe import dag

    root = Path.cwd()
    if args.check:
        stale = dag.stale(root, load_all())
        if stale:
            print("out of date (run `python -m repropipe pipeline write-dag`): " + ", ".join(stale), file=sys.stderr)
            return 1
        print("dvc.yaml and workflow/rules/*.smk match the stage registry")
        return 0
    changed = dag.write(root, load_all())
    print("rewrote " + ", ".join(changed) if changed else "nothing to rewrite")
    return 0


def _clean(args: argparse.Namespace) -> int:
    """Training work left behind: a stage restored from DVC's run cache never ran, so never cleaned up."""
    removed = [str(p) for p in sorted(RESUME_ROOT.glob("*"))] if RESUME_ROOT.exists() else []
    shutil.rmtree(RESUME_ROOT, ignore_errors=True)
    print("removed " + ", ".join(removed) if removed else f"nothing to remove under {RESUME_ROOT}")
    return 0


def _bench_noop(args: argparse.Namespace) -> int:
    from repropipe import bench_noop

    bench_noop.main(scale=args.scale, workdir=args.workdir, keep=args.keep, layout=args.layout, repeats=args.repeats)
    return 0


def add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="step", required=True, metavar="<step>")
    ls = sub.add_parser("stages", help="every stage's command, inputs, outputs and params (a table; --json for all)")
    ls.add_argument("--json", action="store_true", help="JSON with code inputs and resources too")
    ls.set_defaults(action=_stages)
    val = sub.add_parser("validate", help="validate params.yaml against workflow/schemas/params.schema.yaml")
    val.add_argument("--params", default=params_mod.DEFAULT_PARAMS)
    val.set_defaults(action=_validate)
    res = sub.add_parser("set-resources", help="print --set-resources RULE:ASSIGN for every stage (e.g. gpu=0 "
                         "to run GPU rules on CPU nodes of a SLURM cluster)")
    res.add_argument("assign", nargs="+", metavar="RESOURCE=VALUE")
    res.set_defaults(action=_set_resources)
    dag = sub.add_parser("write-dag", help="render dvc.yaml, workflow/rules/*.smk and .dvc/plots/ templates from "
                         "the stage registry (after changing a @stage or any imports)")
    dag.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1)")
    dag.set_defaults(action=_write_dag)
    clean = sub.add_parser("clean", help=f"remove training work left in {RESUME_ROOT} (after a restore from DVC's "
                           "run cache, or to force a fresh start)")
    clean.set_defaults(action=_clean)
    bench = sub.add_parser("bench-noop", help="time `dvc status` and `snakemake -n` on a no-op at the real "
                           "datasets' file counts (minutes: writes archives of ~390k tiny members under a temp dir)")
    bench.add_argument("--scale", type=float, default=1.0, help="fraction of the real file counts (default 1.0)")
    bench.add_argument("--layout", choices=("archive", "tree", "both"), default="archive",
                       help="archive: raw outputs as the pipeline declares them (source.json + archive in an "
                            "untracked cache; EEG's 327 EDFs loose); tree: one file per example in every raw "
                            "output (the design to avoid, for contrast); both: one after the other")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs per no-op check (median)")
    bench.add_argument("--workdir", default=None, help="where to build the bench project (default: a temp dir)")
    bench.add_argument("--keep", action="store_true", help="keep the bench project afterwards")
    bench.set_defaults(action=_bench_noop)
