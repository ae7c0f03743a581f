"""The pipeline's import order: each tp_core module imports only the stages below it (no import circles), as
README's pipeline table lists them: model -> task data -> attribution scores -> masks (+ recovery) -> evaluation ->
export, with the job engine underneath and the work/serve/CLI layers on top."""
import ast
from pathlib import Path

import tp_core

RANK = {
    "errors": 0, "limits": 1, "paths": 2, "gates": 1, "adapters": 1, "model_checks": 2, "slicing": 2, "jobs": 3,
    "decoder": 3.5, "llm_load": 3.5,
    "model": 4, "data": 4, "prompts": 4.5, "attribution": 5, "masks": 6, "recovery": 7, "pruning": 8, "iterative": 8.5,
    "evaluation": 9, "budget": 9.5,
    "curves": 10, "inspector": 10, "export": 10, "vocab": 10, "demo": 10, "export_formats": 11,
    "work": 12, "serve": 13, "cli": 14, "__init__": 15, "__main__": 15,
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
