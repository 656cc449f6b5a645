# Shared helpers for every rule file (the rule files themselves are generated from the stage registry by
# `python -m repropipe pipeline write-dag`). Validation runs at parse time, before any job is scheduled,
# with the same schema and code the stages use under DVC.
import hashlib
import json
from pathlib import Path

import yaml

from repropipe.io import atomic_write_text
from repropipe.params import validate as _validate_params

_validate_params(config, "params.yaml")


def _effective_params_arg(cfg):
    """`--params FILE` when --config/--configfile changed anything, so the stages run with what Snakemake decided.

    The effective config is written once per distinct content to .repropipe/params/<sha256>.yaml (immutable,
    so concurrent or cluster jobs never see a half-written file); with no override the command is the plain one.
    """
    on_disk = yaml.safe_load(Path("params.yaml").read_text())
    if cfg == on_disk:
        return ""
    text = yaml.safe_dump(cfg, sort_keys=True)
    path = Path(".repropipe/params") / (hashlib.sha256(text.encode()).hexdigest()[:16] + ".yaml")
    if not path.exists():
        atomic_write_text(path, text)
    return f" --params {path}"


PARAMS_ARG = _effective_params_arg(config)


def param(dotted):
    """The value of a dotted params key, declared as a rule param so a change re-runs the rule."""
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node
