"""The pipeline's import order: each tp_core module imports only the stages below it (no import circles), as
README's pipeline table lists them: model -> task data -> attribution scores -> masks (+ recovery) -> evaluation ->
export, with the job engine underneath and the work/serve/CLI layers on top."""
import ast
from pathlib import Path

import tp_core

RANK = {
    "errors": 0, "limits": 1, "paths": 2, "gates": 1, "adapters": 1, "model_checks": 2, "slicing": 2, "jobs": 3,
    "settings": 2.5,
    "llm_source": 3.5,  # causal LMs from a GGUF file, a folder or a hub id: below model, which loads through it
    "decoder": 3.5, "llm_load": 3.6,
    "model": 4, "data": 4, "prompts": 4.5, "attribution": 5, "masks": 6,
    # recovery: one projection's least squares and the passes over the model's blocks, then the recovery API
    "recovery_fit": 6.5, "recovery_passes": 6.5, "recovery": 7, "pruning": 8, "iterative": 8.5,
    "evaluation": 9, "budget": 9.5,
    "curves": 10, "inspector": 10, "vocab": 10, "demo": 10,
    # the export package (tp_core/export/): each format or concern, then the formats export, then the package API
    "export.onnx": 10, "export.int8": 10.1, "export.hf": 10.1, "export.latency": 10.2, "export.report": 10.2,
    "export.card": 10.3, "export.folder": 10.4, "export.vocabulary": 10.4, "export.formats": 10.5, "export": 11,
    "work": 12, "policy": 12.5, "serve": 13, "cli": 14, "__init__": 15, "__main__": 15,
}
FOLDER = Path(tp_core.__file__).parent


def _name(path: Path) -> str:
    """A module's key in RANK: "model", or "export.onnx" inside a package (the package itself: "export")."""
    parts = list(path.relative_to(FOLDER).with_suffix("").parts)
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> list[Path]:
    return sorted(FOLDER.glob("*.py")) + sorted(FOLDER.glob("*/*.py"))


def _imports(path: Path) -> set[str]:
    """The tp_core modules `path` imports (keys of RANK), also the imports inside functions."""
    package = list(path.relative_to(FOLDER).parent.parts)  # [] for tp_core's own modules
    out = set()

    def add(dotted: list[str]) -> None:
        # "export.onnx" where that is a module of the package, else the top module ("model", or "export" itself)
        out.add(".".join(dotted[:2]) if ".".join(dotted[:2]) in RANK else dotted[0])

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            if node.module:
                add(base + node.module.split("."))
            else:
                for a in node.names:
                    add(base + [a.name])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tp_core."):
            add(node.module.split(".")[1:])
    out.discard(_name(path))
    return out


def test_every_module_has_a_place_in_the_pipeline():
    modules = {_name(p) for p in _modules()}
    assert modules == set(RANK), (modules - set(RANK), set(RANK) - modules)


def test_each_stage_imports_only_the_stages_below_it():
    bad = [(_name(p), m) for p in _modules() for m in _imports(p) if RANK[m] >= RANK[_name(p)]]
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
