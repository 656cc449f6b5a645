"""`python -m repropipe <branch> <step>`: the one entry point dvc.yaml and the .smk rules call.

Running a stage imports only that stage's branch (``stages.load_branch``), so a stage executes no
code but its own import closure, which is exactly what its declared code inputs list. The
``pipeline`` commands (DAG generation, inspection, benchmarks) live in :mod:`repropipe.pipeline`,
imported only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import repropipe
from repropipe import params as params_mod
from repropipe.download import DownloadError
from repropipe.io import OutputNotWritable
from repropipe.stages import STAGES, TOOLS, load_all, load_branch, run_stage

BRANCH_HELP = {
    "asvspoof": "ASVspoof 2019 LA anti-spoofing: features (LFCC, log-mel, waveform), LFCC-LCNN, ResNet18, AASIST, "
                "LFCC-GMM baseline; EER and min t-DCF with intervals",
    "speaker": "VoxCeleb (HW4) speaker identification and verification: Conformer, attention pooling, AM-softmax, "
               "ECAPA-TDNN; accuracy and EER with intervals",
    "gan": "CelebA 64x64 WGAN-GP (torch-mimicry's design) with calibrated I-SIR sampling; FID/KID via torch-fidelity",
    "eeg": "PhysioNet EEG motor imagery: EDF epochs, Transformer/Linformer/SimCLR/EEGNet beside CSP+LDA; F1, accuracy",
    "qr": "QR orthogonalisation layer: memory and time of hand-written backward passes",
    "report": "the HTML report that gathers every branch",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PARAMS_ENV = "REPROPIPE_PARAMS"


def _literal(text: str) -> str:
    """argparse %-formats the help of sub-commands: a docstring's "95 %" must reach it as "95 %%"."""
    return text.replace("%", "%%")


def _branch_of(argv: list[str]) -> str | None:
    """The first positional argument: the branch to load (None: load every branch, e.g. for --help)."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--log-level":
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def _parser(branch: str | None) -> argparse.ArgumentParser:
    if branch is None or branch == "pipeline":
        load_all()
    else:
        load_branch(branch)
    p = argparse.ArgumentParser(prog="repropipe", description="Run one stage of the repropipe pipeline. "
                                "dvc.yaml and the Snakemake rules call exactly these commands.")
    p.add_argument("--version", action="version", version=f"repropipe {repropipe.__version__}")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help="logging level (default: INFO)")
    branches = p.add_subparsers(dest="branch", required=True, metavar="<branch>")
    by_branch: dict[str, argparse._SubParsersAction] = {}

    def sub(name: str) -> argparse._SubParsersAction:
        if name not in by_branch:
            text = BRANCH_HELP.get(name, f"the {name} branch")
            bp = branches.add_parser(name, help=_literal(text), description=text)
            by_branch[name] = bp.add_subparsers(dest="step", required=True, metavar="<step>")
        return by_branch[name]

    for st in STAGES.values():
        sp = sub(st.branch).add_parser(st.step, help=_literal(st.help), description=st.help)
        sp.add_argument("--params", default=os.environ.get(PARAMS_ENV) or params_mod.DEFAULT_PARAMS,
                        help=f"parameter file (default: ${PARAMS_ENV} if set, else params.yaml; the Snakefile sets "
                             f"{PARAMS_ENV} to its effective config when --config/--configfile change it)")
        sp.set_defaults(stage=st)
    for t in TOOLS.values():
        tp = sub(t.branch).add_parser(t.step, help=_literal(t.help), description=t.help)
        t.arguments(tp)
        tp.set_defaults(tool=t)
    if branch is None or branch == "pipeline":
        pipeline = importlib.import_module("repropipe.pipeline")
        pipeline.add_commands(branches.add_parser(
            "pipeline", help="inspect and generate the pipeline itself (DAG files, stage table, clean-up)",
            description="inspect and generate the pipeline itself"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(_branch_of(argv)).parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    try:
        if getattr(args, "action", None) is not None:
            return int(args.action(args) or 0)
        if getattr(args, "tool", None) is not None:
            return int(args.tool.run(args) or 0)
        run_stage(args.stage, args.params)
    except (params_mod.ParamsError, ValueError, FileNotFoundError, DownloadError, OutputNotWritable) as exc:
        print(f"repropipe: error: {exc}", file=sys.stderr)
        return 2
    return 0
