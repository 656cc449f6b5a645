"""The model registry: params choose a model by name, and tests iterate over every one.

A branch registers each network in its ``models.py``::

    @register_model("lfcc_lcnn", branch="asvspoof", example=lambda: (torch.randn(2, 1, 60, 64),))
    def lfcc_lcnn(**kwargs) -> nn.Module: ...

``example`` returns a tiny positional input for ``forward``; tests/test_models.py builds every
registered model with its defaults, runs forward and backward on that input (on CPU, and CUDA
when present) and checks that every parameter gets a gradient.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Example = Callable[[], tuple[Any, ...]]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    branch: str
    build: Callable[..., Any]
    example: Example | None


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, branch: str, example: Example | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in MODELS and MODELS[name].build is not fn:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelSpec(name, branch, fn, example)
        return fn
    return deco


def load_all_models() -> dict[str, ModelSpec]:
    """Import every ``repropipe/<branch>/models.py`` so the registry is complete."""
    import repropipe

    for info in pkgutil.iter_modules(repropipe.__path__):
        if info.ispkg and importlib.util.find_spec(f"repropipe.{info.name}.models") is not None:
            importlib.import_module(f"repropipe.{info.name}.models")
    return MODELS


def build_model(name: str, **kwargs: Any) -> Any:
    """The model registered as ``name``, built with ``kwargs`` (from params).

    The caller imports its branch's ``models`` module (which registers the names it uses); every branch
    is imported only for a name nobody registered, so a stage runs no other branch's model code.
    """
    if name not in MODELS:
        load_all_models()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name].build(**kwargs)
