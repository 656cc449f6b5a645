"""Load params.yaml and validate it against workflow/schemas/params.schema.yaml.

The same function is called by every stage (so ``dvc repro`` fails on its first stage, before any
work) and by the Snakefile at parse time (so ``snakemake`` fails before scheduling anything).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DEFAULT_PARAMS = "params.yaml"
SCHEMA_RELPATH = Path("workflow/schemas/params.schema.yaml")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats without a dot (``5e-06``).

    DVC writes params with ruamel (YAML 1.2): after ``dvc exp run -S key=0.000005`` the file says
    ``5e-06``, which PyYAML's YAML 1.1 rules would read as the *string* '5e-06'.
    """


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


class ParamsError(ValueError):
    """params.yaml is malformed or does not match the schema."""


def _line_of(root: yaml.Node | None, path: list[Any]) -> int | None:
    """1-based line of the YAML node at ``path`` (or of its deepest existing parent)."""
    node, line = root, None
    if node is not None:
        line = node.start_mark.line + 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(key)), None)
            if nxt is None:
                key_node = next((k for k, _ in node.value if k.value == str(key)), None)
                return key_node.start_mark.line + 1 if key_node is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _describe(error: jsonschema.ValidationError) -> tuple[list[Any], str]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(known))
        path = path + [extra[0]] if extra else path
        return path, f"unknown key (expected one of: {', '.join(known)})"
    return path, error.message


def schema_path_for(params_path: Path) -> Path:
    """The schema of the repository the stage runs in (the working directory); else the one beside params.

    Snakemake hands a stage its effective config as a file under .repropipe/params/, away from the
    schema, so the working directory comes first.
    """
    candidates = (Path.cwd() / SCHEMA_RELPATH, params_path.resolve().parent / SCHEMA_RELPATH,
                  Path(__file__).resolve().parents[2] / SCHEMA_RELPATH)  # the checkout this package runs from
    return next((c for c in candidates if c.is_file()), candidates[0])


def validate(params: dict[str, Any], params_path: str | os.PathLike[str] = DEFAULT_PARAMS,
             schema_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Raise :class:`ParamsError` naming file, line and key for every violation found."""
    params_path = Path(params_path)
    schema_file = Path(schema_path) if schema_path else schema_path_for(params_path)
    schema = yaml.safe_load(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return params
    try:
        root = yaml.compose(params_path.read_text()) if params_path.exists() else None
    except yaml.YAMLError:
        root = None
    lines = []
    for err in errors:
        path, message = _describe(err)
        key = ".".join(str(p) for p in path) or "<top level>"
        line = _line_of(root, path)
        where = f"{params_path}:{line}" if line else str(params_path)
        lines.append(f"{where}: key '{key}': {message}")
    raise ParamsError(f"invalid parameters (checked against {schema_file}):\n  " + "\n  ".join(lines))


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: parameter file not found (run from the repository root)")
    try:
        params = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ParamsError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter names at the top level")
    return validate(params, path)


def select(params: dict[str, Any], keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The subset of ``params`` named by dotted ``keys`` (the keys a stage declares it reads)."""
    out: dict[str, Any] = {}
    for dotted in keys:
        node: Any = params
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ParamsError(f"params.yaml: stage reads key '{dotted}', which is not set")
            node = node[part]
        out[dotted] = node
    return out
