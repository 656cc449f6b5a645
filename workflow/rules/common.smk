# Shared helpers for every rule file (the rule files themselves are generated from the stage registry by
# `python -m repropipe pipeline write-dag`). Validation runs at parse time, before any job is scheduled,
# with the same schema and code the stages use under DVC.
import hashlib
import os
from pathlib import Path

import yaml

from repropipe.cli import PARAMS_ENV  # REPROPIPE_PARAMS: set here, read by every stage (an output, not an input)
from repropipe.io import atomic_write_text
from repropipe.params import validate as _validate_params

_validate_params(config, "params.yaml")


def _hand_effective_params_to_stages(cfg):
    """Make --config/--configfile reach the stages: every stage reads REPROPIPE_PARAMS when it is set.

    When the merged config differs from params.yaml, it is written once per distinct content to
    .repropipe/params/<sha256>.yaml (immutable, so concurrent or cluster jobs never see a half-written file) and
    REPROPIPE_PARAMS points at it; jobs inherit it (cluster jobs re-read this file with the same arguments). The
    rules' commands stay the same, so Snakemake re-runs exactly the rules whose declared params changed.
    """
    os.environ.pop(PARAMS_ENV, None)  # never a value left over from the calling shell
    on_disk = yaml.safe_load(Path("params.yaml").read_text())
    if cfg == on_disk:
        return
    text = yaml.safe_dump(cfg, sort_keys=True)
    path = Path(".repropipe/params") / (hashlib.sha256(text.encode()).hexdigest()[:16] + ".yaml")
    if not path.exists():
        atomic_write_text(path, text)
    os.environ[PARAMS_ENV] = str(path)


_hand_effective_params_to_stages(config)


def param(dotted):
    """The value of a dotted params key, declared as a rule param so a change re-runs the rule."""
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node
