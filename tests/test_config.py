"""Typed params (issue 16): every typed config mirrors the schema exactly, and every stage reads typed configs.

The schema is what both tools validate params.yaml against; these tests fail when a key is added,
removed, made optional or retyped on one side only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from repropipe import config, stages
from repropipe.params import load_params

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/params.schema.yaml").read_text())


def _schema_node(key: str) -> dict:
    node = SCHEMA
    for part in key.split("."):
        node = node["properties"][part]
    return node


@pytest.fixture(scope="module")
def registered() -> dict[str, type]:
    stages.load_all()
    for mod in ("asvspoof", "speaker", "eeg", "gan", "qr", "report"):  # config modules a stage imports lazily
        try:
            importlib.import_module(f"repropipe.{mod}.config")
        except ModuleNotFoundError as exc:
            if exc.name != f"repropipe.{mod}.config":
                raise
    return dict(config.SECTIONS)


def test_every_typed_config_matches_the_schema(registered: dict[str, type]) -> None:
    problems = [p for key, cls in sorted(registered.items())
                for p in config.schema_mismatches(cls, _schema_node(key), key)]
    assert problems == []


def test_every_typed_config_parses_the_shipped_params(registered: dict[str, type]) -> None:
    params = load_params(ROOT / "params.yaml")
    for key, cls in registered.items():
        cls.of(params)  # raises ConfigError naming the key on any disagreement


def test_every_mapping_a_stage_reads_has_a_typed_config(registered: dict[str, type]) -> None:
    """A stage's params boundary is typed: each object-valued key it declares is covered by a config class."""
    missing = []
    for st in stages.load_all().values():
        for key in st.params:
            if _schema_node(key).get("type") != "object":
                continue  # scalars (seed, device, a source switch) need no class
            if not any(key == k or key.startswith(k + ".") for k in registered):
                missing.append(f"{st.name}: {key}")
    assert missing == []


# --- the converter and the checker themselves -----------------------------------------------------------


@dataclass(frozen=True)
class _Inner:
    k: int


@dataclass(frozen=True)
class _Outer:
    lr: float
    name: Literal["a", "b"]
    inner: _Inner
    sizes: list[int]
    path: Optional[str] = None
    tags: dict[str, float] = field(default_factory=dict)


def test_parse_converts_nested_and_numbers() -> None:
    cfg = config.parse(_Outer, {"lr": 1, "name": "a", "inner": {"k": 3}, "sizes": [1, 2], "tags": {"x": 2}})
    assert cfg == _Outer(lr=1.0, name="a", inner=_Inner(3), sizes=[1, 2], tags={"x": 2.0})
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize(("data", "message"), [
    ({"lr": 1, "name": "a", "inner": {"k": 3}, "sizes": [], "extra": 1}, "x: unknown key 'extra'"),
    ({"lr": 1, "name": "a", "inner": {}, "sizes": []}, "x.inner: key 'k' is missing"),
    ({"lr": 1, "name": "c", "inner": {"k": 3}, "sizes": []}, "x.name: expected one of ['a', 'b']"),
    ({"lr": 1, "name": "a", "inner": {"k": 3}, "sizes": [1, "2"]}, "x.sizes[1]: expected an integer"),
])
def test_parse_names_the_dotted_key(data: dict, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.parse(_Outer, data, "x")


@dataclass(frozen=True)
class _Keyword:
    from_: str = config.key("from")


def test_a_keyword_key_is_read_through_an_alias() -> None:
    assert config.parse(_Keyword, {"from": "kaggle"}).from_ == "kaggle"
    assert config.schema_mismatches(_Keyword, {"type": "object", "required": ["from"],
                                               "properties": {"from": {"type": "string"}}}, "x") == []
    with pytest.raises(config.ConfigError, match="x: unknown key 'from_'"):
        config.parse(_Keyword, {"from_": "kaggle"}, "x")


def test_schema_checker_catches_drift() -> None:
    schema = {"type": "object", "required": ["lr", "name", "inner", "sizes"], "properties": {
        "lr": {"type": "number"}, "name": {"type": "string", "enum": ["a", "b"]},
        "inner": {"type": "object", "required": ["k"], "properties": {"k": {"type": "integer"}}},
        "sizes": {"type": "array", "items": {"type": "integer"}},
        "path": {"type": ["string", "null"]}, "tags": {"type": "object", "additionalProperties": {"type": "number"}}}}
    assert config.schema_mismatches(_Outer, schema, "x") == []
    drifted = {**schema, "properties": {**schema["properties"], "new": {"type": "integer"},
                                        "lr": {"type": "string"}, "path": {"type": "string"}}}
    found = config.schema_mismatches(_Outer, drifted, "x")
    assert any("x.new: in the schema" in p for p in found)
    assert any(p.startswith("x.lr: schema type") for p in found)
    assert any(p.startswith("x.path: schema does not allow null") for p in found)
    assert any("x.name" in p for p in config.schema_mismatches(
        _Outer, {**schema, "properties": {**schema["properties"], "name": {"type": "string", "enum": ["a"]}}}, "x"))
