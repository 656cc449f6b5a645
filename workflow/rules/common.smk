# Shared helpers for every rule file. Validation runs at parse time, before any job is scheduled,
# with the same schema and code the stages use under DVC.
from pathlib import Path

from repropipe.params import validate as _validate_params

_validate_params(config, "params.yaml")


def code(package):
    """Every .py file of a package: Snakemake tracks files, where DVC hashes the directory."""
    return sorted(str(p) for p in Path("src/repropipe", package).rglob("*.py"))


def param(dotted):
    """The value of a dotted params key, declared as a rule param so a change re-runs the rule."""
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node
