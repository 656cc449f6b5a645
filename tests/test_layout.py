"""One shape for every branch (issue 16): a newcomer who knows one branch finds anything in another.

Every dataset branch has the same modules with the same roles (docs/pipeline.md, "Package layout");
stage.py only wires stages to them; the backend of matplotlib is chosen in one place; below a
stage, code reads typed configs, not params dicts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "repropipe"
DATASET_BRANCHES = ("asvspoof", "speaker", "eeg", "gan")
ROLES = ("config", "data", "features", "models", "train", "evaluate", "figures", "section", "stage")
QR_ROLES = ("config", "evaluate", "figures", "section", "stage")
PATH_CONSTANTS = {"RAW", "FEATURES", "OUT", "MODELS"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("branch", DATASET_BRANCHES + ("qr",))
def test_every_branch_has_the_same_modules(branch: str) -> None:
    roles = ROLES if branch in DATASET_BRANCHES else QR_ROLES
    missing = [r for r in roles if not (SRC / branch / f"{r}.py").is_file()]
    assert missing == [], f"{branch} lacks {missing}"


@pytest.mark.parametrize("branch", DATASET_BRANCHES + ("qr",))
def test_stage_module_only_wires_stages(branch: str) -> None:
    """stage.py holds @stage functions and the path constants; evaluation, figures and tables live elsewhere."""
    tree = _tree(SRC / branch / "stage.py")
    strays = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            decorated = any(isinstance(d, ast.Call) and getattr(d.func, "id", None) == "stage"
                            for d in node.decorator_list)
            if not decorated:
                strays.append(f"def {node.name}")
        elif isinstance(node, ast.ClassDef):
            strays.append(f"class {node.name}")
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id.isupper() and t.id not in PATH_CONSTANTS | {"CONTROL", "REFERENCE"}:
                    strays.append(t.id)
    assert strays == [], f"{branch}/stage.py: move {strays} to the module of their role"


def test_path_constants_have_one_set_of_names() -> None:
    """RAW, FEATURES, OUT, MODELS everywhere: no FEAT, MODELS_DIR, CODE or SRC spellings."""
    found = {}
    for path in SRC.rglob("*.py"):
        for node in _tree(path).body:
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in {"FEAT", "MODELS_DIR", "CODE", "FEATURES_DIR", "RAW_DIR"}:
                        found[str(path.relative_to(SRC))] = t.id
    assert found == {}


def test_matplotlib_backend_is_chosen_once() -> None:
    uses = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "matplotlib.use(" in p.read_text()]
    assert uses == ["plotting.py"]


@pytest.mark.parametrize("branch", DATASET_BRANCHES + ("qr",))
def test_no_params_dicts_below_the_stage_boundary(branch: str) -> None:
    """Only stage.py sees ctx.params; everything it calls takes typed fields."""
    offenders = []
    for path in sorted((SRC / branch).glob("*.py")):
        if path.name == "stage.py":
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and node.attr == "params" and getattr(node.value, "id", "") == "ctx":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
