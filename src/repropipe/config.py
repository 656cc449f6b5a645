"""Typed views of params.yaml: each stage turns the dicts it reads into frozen dataclasses at its boundary.

Why: below a stage, code should take named, typed fields (``cfg.lr``), not walk nested dicts under
one-letter names; and a reader should find what a key does by following one attribute.

One class per params section, registered with the dotted key it mirrors::

    @params_section("asvspoof.train")
    @dataclass(frozen=True)
    class TrainConfig:
        epochs: int
        lr: float

    cfg = TrainConfig.of(ctx.params)        # or config.parse(TrainConfig, ctx.params["asvspoof"]["train"])

The schema (workflow/schemas/params.schema.yaml) stays the one description of what a valid file is
(it is what both tools validate against before any work); ``tests/test_config.py`` walks every
registered class against the schema node at its key, so a key added to, removed from or retyped in
one of the two fails CI until the other follows. Validation already happened (schema), so ``parse``
only converts; it still refuses unknown and missing keys with the dotted key in the message.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

#: dotted params key -> the dataclass that mirrors it (filled by :func:`params_section`)
SECTIONS: dict[str, type] = {}


class ConfigError(ValueError):
    """A params mapping does not fit the typed config that a stage expects."""


def params_section(key: str) -> Callable[[type[T]], type[T]]:
    """Register ``cls`` as the typed view of params key ``key`` and give it ``cls.of(params)``."""

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__}: @params_section goes above @dataclass")
        if key in SECTIONS and SECTIONS[key] is not cls:
            raise ValueError(f"params key {key!r} already has a typed config: {SECTIONS[key].__qualname__}")
        SECTIONS[key] = cls
        cls.params_key = key  # type: ignore[attr-defined]

        def of(klass: type[T], params: Mapping[str, Any]) -> T:
            """The typed section of the whole params mapping (what ``ctx.params`` holds)."""
            node: Any = params
            for part in key.split("."):
                if not isinstance(node, Mapping) or part not in node:
                    raise ConfigError(f"params: key '{key}' is not set (needed by {klass.__qualname__})")
                node = node[part]
            return parse(klass, node, key)

        cls.of = classmethod(of)  # type: ignore[attr-defined]
        return cls

    return register


def parse(cls: type[T], data: Any, where: str = "params") -> T:
    """Build ``cls`` (a dataclass, possibly nested) from plain YAML data, converting ints to floats where typed so."""
    return _convert(cls, data, where)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def key(name: str, **kwargs: Any) -> Any:
    """A dataclass field read from params key ``name``: for keys that are Python keywords (``from: kaggle``)."""
    return dataclasses.field(metadata={"key": name}, **kwargs)


def _key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        errors = []
        for a in rest:
            try:
                return _convert(a, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        fields = {_key_of(f): f for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' (expected one of: {', '.join(sorted(fields))})")
        hints = _hints(tp)
        kwargs = {}
        for k, f in fields.items():
            if k in value:
                kwargs[f.name] = _convert(hints[f.name], value[k], f"{where}.{k}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: key '{k}' is missing ({tp.__name__} needs it)")
        return tp(**kwargs)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: config type {tp!r} is not supported by repropipe.config")


def schema_mismatches(cls: type, schema: Mapping[str, Any], where: str) -> list[str]:
    """Every way the dataclass ``cls`` and the JSON-schema object ``schema`` disagree (empty: they agree).

    Checked: the same keys; required keys are exactly the fields without a default; each field's type
    accepts the schema's type (integer -> int, number -> float, string/enum -> str or Literal of the
    enum, boolean -> bool, array -> list/tuple, object -> nested dataclass or dict, null -> Optional).
    """
    return _object_mismatches(cls, schema, where)


_JSON_OF = {int: {"integer"}, float: {"number", "integer"}, str: {"string"}, bool: {"boolean"}}


def _object_mismatches(cls: type, schema: Mapping[str, Any], where: str) -> list[str]:
    out: list[str] = []
    props = schema.get("properties") or {}
    fields = {_key_of(f): f for f in dataclasses.fields(cls) if f.init}
    for name in sorted(set(props) - set(fields)):
        out.append(f"{where}.{name}: in the schema, not in {cls.__name__}")
    for name in sorted(set(fields) - set(props)):
        out.append(f"{where}.{name}: in {cls.__name__}, not in the schema")
    required = set(schema.get("required") or [])
    hints = _hints(cls)
    for name in sorted(set(fields) & set(props)):
        f = fields[name]
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if (name in required) == has_default:
            out.append(f"{where}.{name}: schema says {'required' if name in required else 'optional'}, "
                       f"{cls.__name__} has {'a default' if has_default else 'no default'}")
        out.extend(_type_mismatches(hints[f.name], props[name], f"{where}.{name}"))
    return out


def _schema_types(node: Mapping[str, Any]) -> set[str]:
    if "enum" in node and "type" not in node:
        return {_json_type(v) for v in node["enum"]}
    if "const" in node:
        return {_json_type(node["const"])}
    t = node.get("type")
    if t is None and ("oneOf" in node or "anyOf" in node):
        return set().union(*(_schema_types(n) for n in node.get("oneOf", node.get("anyOf", []))))
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "object" if isinstance(v, dict) else "array"


def _type_mismatches(tp: Any, node: Mapping[str, Any], where: str) -> list[str]:
    if tp is Any:
        return []
    want = _schema_types(node)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        optional = len(members) < len(args)
        if optional != ("null" in want):
            return [f"{where}: schema {'allows' if 'null' in want else 'does not allow'} null, type {tp} "
                    f"{'is' if optional else 'is not'} Optional"]
        rest = {**node, "type": sorted(want - {"null"})}
        if "enum" in rest:
            rest["enum"] = [v for v in rest["enum"] if v is not None]
        if len(members) == 1:
            return _type_mismatches(members[0], rest, where)
        covered = set().union(*(_covers(m) for m in members))
        return [] if want - {"null"} <= covered else [f"{where}: schema type {sorted(want)}, config type {tp}"]
    if "null" in want:
        return [f"{where}: schema allows null, type {tp} is not Optional"]
    got = _covers(tp)
    if not want <= got:
        return [f"{where}: schema type {sorted(want)}, config type {getattr(tp, '__name__', tp)}"]
    if origin is typing.Literal and "enum" in node and set(args) != set(node["enum"]):
        return [f"{where}: schema enum {node['enum']}, Literal{list(args)}"]
    if dataclasses.is_dataclass(tp):
        return _object_mismatches(tp, node, where)
    if origin in (list, tuple) and args and isinstance(node.get("items"), Mapping):
        return _type_mismatches(args[0], node["items"], f"{where}[]")
    if origin is dict and len(args) == 2 and isinstance(node.get("additionalProperties"), Mapping):
        return _type_mismatches(args[1], node["additionalProperties"], f"{where}.*")
    return []


def _covers(tp: Any) -> set[str]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return {"integer", "number", "string", "boolean", "array", "object", "null"}
    if origin is typing.Literal:
        return {_json_type(a) for a in typing.get_args(tp)}
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_covers(a) for a in typing.get_args(tp)))
    if tp in _JSON_OF:
        return _JSON_OF[tp]
    if origin in (list, tuple) or tp in (list, tuple):
        return {"array"}
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return {"object"}
    return set()
