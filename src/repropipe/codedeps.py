"""The project code a stage executes: the import closure of its function, read from the source.

Both tools re-run a stage when one of its declared inputs changes, so a stage must declare every
file of the project it runs, shared modules included: a fix to ``metrics.compute_eer`` has to make
every stage that computes an EER out of date, and nothing else. Stage modules import their heavy
dependencies inside the stage functions, so the closure starts from the CLI that runs the stage,
the stage module's top level, and the imports inside the stage function (and the module-level
helpers it calls), then follows every import of every project module reached, at any depth.

The analysis is static (``ast``) and conservative: a module that calls ``importlib.import_module``
in a package's ``__init__`` (a PEP 562 lazy package) brings in the whole package. Other dynamic imports
are not followed: the CLI imports only the branch it runs (``stages.load_branch``) and the
``pipeline`` tools module only for ``pipeline`` commands. ``tests/test_codedeps.py`` checks the result
against the modules a real run of each stage loaded.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path

PACKAGE = "repropipe"
SRC_ROOT = Path(__file__).resolve().parent.parent  # .../src
ENTRY_MODULES = ("repropipe.__main__", "repropipe.cli")  # what `python -m repropipe <branch> <step>` runs first


def module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (a package's ``__init__.py``), or None if it is not one."""
    base = SRC_ROOT.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_package(name: str) -> bool:
    return (SRC_ROOT.joinpath(*name.split(".")) / "__init__.py").is_file()


def _resolve(current: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = current.split(".")
    base = parts if _is_package(current) else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports_in(tree: ast.AST, current: str) -> set[str]:
    """Project modules named by the import statements anywhere under ``tree``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(current, node)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}") is not None}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and _is_package(current)):
            # a lazy package (PEP 562 __getattr__): any of its modules may be loaded
            found |= {f"{current}.{p.stem}" for p in SRC_ROOT.joinpath(*current.split(".")).glob("*.py")
                      if p.stem != "__init__"}
    return {m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is not None}


def _with_parents(name: str) -> set[str]:
    """Importing ``a.b.c`` executes ``a/__init__``, ``a.b/__init__`` and ``a.b.c``."""
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


@functools.lru_cache(maxsize=None)
def _module_imports(name: str) -> frozenset[str]:
    path = module_file(name)
    assert path is not None, name
    return frozenset(_imports_in(ast.parse(path.read_text(), str(path)), name))


def closure(start: Iterable[str]) -> set[str]:
    """Every project module executed when the modules ``start`` are imported (and all their imports run)."""
    seen: set[str] = set()
    todo = [m for s in start for m in _with_parents(s)]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        for dep in _module_imports(name):
            todo.extend(_with_parents(dep))
    return seen


def _function_imports(fn: Callable[..., object]) -> set[str]:
    """Imports inside ``fn`` and inside the module-level functions of its module that it calls, transitively."""
    module = inspect.getmodule(fn)
    assert module is not None and module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(), module.__file__)
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found: set[str] = set()
    todo, seen = [fn.__name__], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        found |= _imports_in(defs[name], module.__name__)
        todo.extend(n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs)
    return found


def _top_level_imports(module_name: str) -> set[str]:
    path = module_file(module_name)
    assert path is not None
    tree = ast.parse(path.read_text(), str(path))
    top = ast.Module(body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))],
                     type_ignores=[])
    return _imports_in(top, module_name)


def stage_code(fn: Callable[..., object]) -> tuple[str, ...]:
    """The project files (relative to the repository root) that running stage function ``fn`` executes."""
    module = fn.__module__
    if module_file(module) is None:  # a stage defined outside the package (tests): the entry point only
        return tuple(sorted(str(module_file(m).relative_to(SRC_ROOT.parent)) for m in closure(ENTRY_MODULES)))  # type: ignore[union-attr]
    start = set(ENTRY_MODULES) | _with_parents(module) | _top_level_imports(module) | _function_imports(fn)
    # the stage module itself is executed, but only its top level and this function's imports count:
    # the module file is still a dependency, since editing it may change this function
    mods = closure(start - {module}) | {module}
    repo_root = SRC_ROOT.parent
    return tuple(sorted(str(module_file(m).relative_to(repo_root)) for m in mods))  # type: ignore[union-attr]
