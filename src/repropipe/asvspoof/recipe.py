"""Recipe files (conf/asvspoof/*.yaml): a partial params tree laid over params.yaml, the same way in both tools.

Snakemake takes a recipe as it is (``--configfile conf/asvspoof/paper.yaml``: its config is params.yaml
updated key by key, dicts merged, lists and scalars replaced). DVC has no config overlay for
``dvc repro``, but ``dvc exp run -S`` applies Hydra overrides to params.yaml; ``recipe-args`` prints
one ``-S ++key=value`` per leaf of the recipe, which gives DVC the same params as Snakemake's merge
(tests/test_asvspoof_recipes.py checks both against each other). ``++`` adds keys params.yaml lacks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from repropipe.stages import tool


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe's mapping; a file that is not one is a ParamsError naming it."""
    from repropipe.params import ParamsError

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path}: not a readable YAML recipe ({exc})") from exc
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: a recipe is a mapping of params keys, like params.yaml")
    return doc


def _hydra_value(value: Any) -> str:
    """A YAML value in Hydra's override grammar (JSON-style quoting covers strings, numbers, lists, null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return "null" if value is None else json.dumps(value)


def overrides(recipe: dict[str, Any], prefix: str = "") -> list[str]:
    """``++dotted.key=value`` for every leaf of ``recipe`` (lists are leaves, as in Snakemake's merge)."""
    out = []
    for key, value in recipe.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += overrides(value, dotted + ".")
        else:
            out.append(f"++{dotted}={_hydra_value(value)}")
    return out


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="a recipe file, e.g. conf/asvspoof/paper.yaml")


@tool("asvspoof", "recipe-args", arguments=_arguments,
      help="Print `-S ++key=value` arguments for `dvc exp run` that apply a recipe file (e.g. conf/asvspoof/paper.yaml).")
def recipe_args(args: argparse.Namespace) -> int:
    import shlex

    print(" ".join(f"-S {shlex.quote(o)}" for o in overrides(load_recipe(args.recipe))))
    return 0
