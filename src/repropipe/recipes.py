"""Recipe files (``conf/<branch>/*.yaml``): a partial params tree laid over params.yaml, the same way in both tools.

A recipe holds only the keys it changes, under its branch's section, and names its sources in comments
(``conf/<branch>/paper.yaml`` is each paper's published recipe). Snakemake takes a recipe as it is
(``--configfile conf/<branch>/paper.yaml``: its config is params.yaml updated key by key, dicts merged,
lists and scalars replaced; the Snakefile hands the result to the stages through REPROPIPE_PARAMS).
DVC has no config overlay for ``dvc repro``, but ``dvc exp run -S`` applies Hydra overrides to
params.yaml; ``python -m repropipe <branch> recipe-args <recipe>`` prints one ``-S ++key=value`` per
leaf of the recipe, which gives DVC the same params as Snakemake's merge (tests/test_recipes.py checks
both against each other for every branch). ``++`` adds keys params.yaml lacks.

Each branch's stage module calls :func:`recipe_cli` once, which registers its ``recipe-args`` command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from repropipe.stages import tool


def load_recipe(path: str | Path, branch: str | None = None) -> dict[str, Any]:
    """The recipe's mapping; a file that is not one, or (with ``branch``) one that changes another section, is a
    ParamsError naming it."""
    from repropipe.params import ParamsError

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path}: not a readable YAML recipe ({exc})") from exc
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: a recipe is a mapping of params keys, like params.yaml")
    if branch is not None and set(doc) != {branch}:
        raise ParamsError(f"{path}: a {branch} recipe changes only the '{branch}' section; it has "
                          f"{', '.join(map(repr, sorted(doc)))}")
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


def recipe_cli(branch: str) -> None:
    """Register ``python -m repropipe <branch> recipe-args <recipe>`` (DVC's ``-S`` arguments for a recipe)."""
    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("recipe", help=f"a recipe file, e.g. conf/{branch}/paper.yaml")

    def recipe_args(args: argparse.Namespace) -> int:
        import shlex

        print(" ".join(f"-S {shlex.quote(o)}" for o in overrides(load_recipe(args.recipe, branch))))
        return 0

    tool(branch, "recipe-args", arguments=arguments,
         help=f"Print `-S ++key=value` arguments for `dvc exp run` that apply a {branch} recipe file "
              f"(e.g. conf/{branch}/paper.yaml).")(recipe_args)
