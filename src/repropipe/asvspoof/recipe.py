"""The ASVspoof recipes (conf/asvspoof/*.yaml) through the shared mechanism of :mod:`repropipe.recipes`.

Registers ``python -m repropipe asvspoof recipe-args conf/asvspoof/paper.yaml``; ``load_recipe`` and
``overrides`` stay importable from here.
"""

from __future__ import annotations

from repropipe.recipes import load_recipe, overrides, recipe_cli

__all__ = ["load_recipe", "overrides"]

recipe_cli("asvspoof")
