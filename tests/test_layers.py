"""The pipeline's import order: each tp_core module imports only the stages below it (no import circles), as
README's pipeline table lists them: model -> task data -> attribution scores -> masks (+ recovery) -> evaluation ->
export, with the job engine underneath and the work/serve/CLI layers on top."""
import ast
from pathlib import Path

import tp_core

RANK = {
    "errors": 0, "limits": 1, "paths": 2, "gates": 1, "adapters": 1, "model_checks": 2, "slicing": 2, "jobs": 3,
    "settings": 2.5,
    "model": 4, "data": 4, "attribution": 5, "masks": 6, "recovery": 7, "pruning": 8, "iterative": 8.5,
    "evaluation": 9, "budget": 9.5,
    "curves": 10, "inspector": 10, "export": 10, "vocab": 10, "demo": 10, "export_formats": 11,
    "work": 12, "policy": 12.5, "serve": 13, "cli": 14, "__init__": 15, "__main__": 15,
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):  # also the imports inside functions
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tp_core."):
            out.add(node.module.split(".")[1])
    return out


def test_every_module_has_a_place_in_the_pipeline():
    modules = {p.stem for p in Path(tp_core.__file__).parent.glob("*.py")}
    assert modules == set(RANK), (modules - set(RANK), set(RANK) - modules)


def test_each_stage_imports_only_the_stages_below_it():
    folder = Path(tp_core.__file__).parent
    bad = [(p.stem, m) for p in folder.glob("*.py") for m in _imports(p) if RANK[m] >= RANK[p.stem]]
    assert not bad, bad


# The app's helper modules (tp_app/): each imports only the ones below it; `common` gathers them for the pages.
# A module not listed here ranks just below `common` (a page helper that common may gather).
APP_RANK = {"__init__": 0, "style": 1, "state": 1, "models": 1, "jobs": 2, "progress": 3, "page": 4, "common": 5,
            "launch": 6}


def _app_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module == "tp_app":
            out.update(a.name for a in node.names)
    return out


def test_app_helpers_import_only_the_ones_below_them():
    folder = Path(tp_core.__file__).parent.parent / "tp_app"
    assert set(APP_RANK) <= {p.stem for p in folder.glob("*.py")}
    rank = lambda m: APP_RANK.get(m, APP_RANK["common"] - 0.5)  # noqa: E731
    bad = [(p.stem, m) for p in folder.glob("*.py") for m in _app_imports(p) if rank(m) >= rank(p.stem)]
    assert not bad, bad
