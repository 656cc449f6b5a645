"""`python -m repropipe <branch> <step>`: the one entry point dvc.yaml and the .smk rules call."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from repropipe import params as params_mod
from repropipe.download import DownloadError
from repropipe.stages import TOOLS, load_all, run_stage


def _parser() -> argparse.ArgumentParser:
    stages = load_all()
    p = argparse.ArgumentParser(prog="repropipe", description="Run one stage of the repropipe pipeline. "
                                "dvc.yaml and the Snakemake rules call exactly these commands.")
    p.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    branches = p.add_subparsers(dest="branch", required=True, metavar="<branch>")
    by_branch: dict[str, argparse._SubParsersAction] = {}
    for st in stages.values():
        if st.branch not in by_branch:
            bp = branches.add_parser(st.branch, help=f"stages of the {st.branch} branch")
            by_branch[st.branch] = bp.add_subparsers(dest="step", required=True, metavar="<step>")
        sp = by_branch[st.branch].add_parser(st.step, help=st.help, description=st.help)
        sp.add_argument("--params", default=params_mod.DEFAULT_PARAMS, help="parameter file (default: params.yaml)")
        sp.set_defaults(stage=st)
    for t in TOOLS.values():
        if t.branch not in by_branch:
            bp = branches.add_parser(t.branch, help=f"stages of the {t.branch} branch")
            by_branch[t.branch] = bp.add_subparsers(dest="step", required=True, metavar="<step>")
        tp = by_branch[t.branch].add_parser(t.step, help=t.help, description=t.help)
        t.arguments(tp)
        tp.set_defaults(tool=t)

    tools = branches.add_parser("pipeline", help="inspect the pipeline itself")
    tsub = tools.add_subparsers(dest="step", required=True, metavar="<step>")
    ls = tsub.add_parser("stages", help="print every stage's command, params, deps and outs as JSON")
    ls.set_defaults(action="stages")
    val = tsub.add_parser("validate", help="validate params.yaml against workflow/schemas/params.schema.yaml")
    val.add_argument("--params", default=params_mod.DEFAULT_PARAMS)
    val.set_defaults(action="validate")
    res = tsub.add_parser("set-resources", help="print --set-resources RULE:ASSIGN for every stage (e.g. gpu=0 "
                          "to run GPU rules on CPU nodes of a SLURM cluster)")
    res.add_argument("assign", nargs="+", metavar="RESOURCE=VALUE")
    res.set_defaults(action="set-resources")
    bench = tsub.add_parser("bench-noop", help="time `dvc status` and `snakemake -n` on a no-op at the real "
                            "datasets' file counts (minutes: writes archives of ~390k tiny members under a temp dir)")
    bench.add_argument("--scale", type=float, default=1.0, help="fraction of the real file counts (default 1.0)")
    bench.add_argument("--layout", choices=("archive", "tree", "both"), default="archive",
                       help="archive: raw outputs as the pipeline declares them (source.json + archive in an "
                            "untracked cache; EEG's 327 EDFs loose); tree: one file per example in every raw "
                            "output (the design to avoid, for contrast); both: one after the other")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs per no-op check (median)")
    bench.add_argument("--workdir", default=None, help="where to build the bench project (default: a temp dir)")
    bench.add_argument("--keep", action="store_true", help="keep the bench project afterwards")
    bench.set_defaults(action="bench-noop")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    try:
        if getattr(args, "action", None) == "stages":
            stages = load_all()
            print(json.dumps({n: {"cmd": s.cmd, "params": list(s.params), "deps": list(s.deps),
                                  "outs": list(s.outs)} for n, s in stages.items()}, indent=2))
        elif getattr(args, "action", None) == "set-resources":
            print(" ".join(["--set-resources"] + [f"{n}:{a}" for n in load_all() for a in args.assign]))
        elif getattr(args, "action", None) == "bench-noop":
            from repropipe import bench_noop

            bench_noop.main(scale=args.scale, workdir=args.workdir, keep=args.keep, layout=args.layout,
                             repeats=args.repeats)
        elif getattr(args, "action", None) == "validate":
            params_mod.load_params(args.params)
            print(f"{args.params}: valid")
        elif getattr(args, "tool", None) is not None:
            return int(args.tool.run(args) or 0)
        else:
            run_stage(args.stage, args.params)
    except (params_mod.ParamsError, ValueError, FileNotFoundError, DownloadError) as exc:
        print(f"repropipe: error: {exc}", file=sys.stderr)
        return 2
    return 0
