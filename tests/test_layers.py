"""The pipeline's import order: each tp_core module imports only the stages below it (no import circles), as
README's pipeline table lists them: model -> task data -> attribution scores -> masks (+ recovery) -> evaluation ->
export, with the job engine underneath and the work/serve/CLI layers on top. Imports inside functions count, and so
do dynamic ones: `importlib.import_module`, `__import__` and strings naming a tp_core module ("tp_core.work" or
"tp_core.work:point", the way a module would be looked up by name)."""
import ast
import re
from pathlib import Path

import tp_core

RANK = {
    "errors": 0, "defaults": 0, "limits": 1, "paths": 2, "gates": 1, "adapters": 1, "model_checks": 2, "slicing": 2,
    "settings": 2.5,
    # the job engine: the job spec, then the worker runtime and the forecast, then the Dask client
    "engine.spec": 3, "engine.runtime": 3.1, "engine.forecast": 3.1, "engine.client": 3.2, "engine": 3.3,
    "llm_source": 3.5,  # causal LMs from a GGUF file, a folder or a hub id: below model, which loads through it
    "decoder": 3.5, "llm_load": 3.6,
    "model": 4, "data": 4, "prompts": 4.5, "structured": 4.8, "attribution": 5, "masks": 6,
    # recovery: one projection's least squares and the passes over the model's blocks, then the recovery API
    "recovery_fit": 6.5, "recovery_passes": 6.5, "recovery": 7, "pruning": 8, "iterative": 8.5,
    "evaluation": 9, "baselines": 9.2, "budget": 9.5,
    "kwon": 9.7,  # Kwon et al.'s pipeline: FLOPs from budget, mask tuning from recovery
    "kprune": 9.8,  # K-prune: unit costs from kwon, weight tuning from recovery
    "curves": 10, "inspector": 10, "vocab": 10, "demo": 10,
    # the export package (tp_core/export/): each format or concern, then the formats export, then the package API
    "export.prompt_file": 9.9,  # a causal LM's prompt.json and its stdlib renderer, beside ONNX and hf/ files
    "export.onnx": 10, "export.int8": 10.1, "export.hf": 10.1, "export.latency": 10.2, "export.report": 10.2,
    "export.card": 10.3, "export.folder": 10.4, "export.vocabulary": 10.4, "export.formats": 10.5, "export": 11,
    "refs": 11.5, "predstore": 11.6,
    "work": 12, "work_export": 12.1, "policy": 12.5, "sweeps": 12.5, "tour": 12.7, "serve": 13,
    "cli_parser": 13.5, "cli": 14,
    "__init__": 15, "__main__": 15,
}
ROOT = Path(tp_core.__file__).parent
MODULE_STRING = re.compile(r"tp_core((?:\.\w+)+)(?::\w+)?")  # "tp_core.work" or "tp_core.work:point"
COMPUTED = "<computed name>"  # a dynamic import whose module name is not a literal: no layer can be checked


def _name(path: Path) -> str:
    """A module's place in RANK: "work", "engine.client", "engine" for the package's __init__."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _rank_key(dotted: str) -> str:
    """The RANK entry of a module path below tp_core ("engine.client.Engine" -> "engine.client")."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    return parts[0]


def _dynamic(node: ast.Call) -> str | None:
    """The tp_core module a call imports by name, COMPUTED if the name is not a literal, None if it is no import."""
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return COMPUTED
    if arg.value.startswith("."):  # import_module(".work", "tp_core")
        return arg.value.lstrip(".")
    m = MODULE_STRING.fullmatch(arg.value)
    return m.group(1)[1:] if m else None


def _imports(path: Path, source: str | None = None) -> set[str]:
    """The tp_core modules `path` imports (RANK keys), plus COMPUTED for a dynamic import of an unknown name."""
    package = _name(path).split(".")[:-1] if path.name != "__init__.py" else _name(path).split(".")
    if _name(path) == "__init__":
        package = []
    out = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            if node.module:
                out.add(_rank_key(".".join([*base, node.module])))
            else:
                out.update(_rank_key(".".join([*base, a.name])) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tp_core."):
            out.add(_rank_key(node.module.split(".", 1)[1]))
        elif isinstance(node, ast.Import):
            out.update(_rank_key(a.name.split(".", 1)[1]) for a in node.names if a.name.startswith("tp_core."))
        elif isinstance(node, ast.Call) and (mod := _dynamic(node)) is not None:
            out.add(mod if mod == COMPUTED else _rank_key(mod))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = MODULE_STRING.fullmatch(node.value)
            if m:
                out.add(_rank_key(m.group(1)[1:]))
    return out


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts}


def test_every_module_has_a_place_in_the_pipeline():
    modules = set(_modules())
    assert modules == set(RANK), (modules - set(RANK), set(RANK) - modules)


def test_each_stage_imports_only_the_stages_below_it():
    bad = [(name, m) for name, p in _modules().items() for m in _imports(p)
           if m == COMPUTED or m not in RANK or RANK[m] >= RANK[name]]
    assert not bad, bad


def test_the_check_sees_dynamic_imports_and_module_names_in_strings():
    engine = ROOT / "engine" / "runtime.py"
    cases = {
        "import importlib\nfn = importlib.import_module('tp_core.work')": {"work"},
        "from importlib import import_module\nimport_module('.curves', 'tp_core')": {"curves"},
        "mod = __import__('tp_core.evaluation')": {"evaluation"},
        "fn = getattr(importlib.import_module(module or 'tp_core.work'), name)": {COMPUTED, "work"},
        "FN = 'tp_core.work:point'": {"work"},
        "import tp_core.model": {"model"},
        "from .spec import Job\nfrom ..errors import TPError\nfrom .. import paths": {"engine.spec", "errors",
                                                                                        "paths"},
        "'''Runs tp_core.work functions.'''": set(),  # prose naming a module is no import
    }
    for source, expected in cases.items():
        assert _imports(engine, source) == expected, source
    assert _imports(ROOT / "cli.py", "from .engine import get_engine\nfrom .engine.client import Engine") == {
        "engine", "engine.client"}


# The app's helper modules (tp_app/): each imports only the ones below it; `common` gathers them for the pages.
# A module not listed here ranks just below `common` (a page helper that common may gather).
APP_RANK = {"__init__": 0, "style": 1, "state": 1, "models": 1, "export_tables": 1, "jobs": 2, "share": 2,
            "report": 2, "progress": 3, "charts": 3, "page": 4, "common": 5, "launch": 6}


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


# The outer layers: pages (and the app's entry script) -> tp_app -> tp_core; benchmarks -> tp_core. No layer imports one
# above it or beside it (a page never imports another page, the library never the app or a benchmark), dynamic
# imports included. Each layer lists the top-level names it may import from this repository.
REPO = ROOT.parent
OUTER = {
    "tp_core": ({"tp_core"}, ["tp_core/**/*.py"]),
    "tp_app": ({"tp_core", "tp_app"}, ["tp_app/*.py"]),
    "pages": ({"tp_core", "tp_app"}, ["pages/*.py", "TaskPrune_Studio.py"]),
    "benchmarks": ({"tp_core", "benchmarks"}, ["benchmarks/*.py"]),
}
OWN = {"tp_core", "tp_app", "pages", "benchmarks", "tests"} | {p.stem for p in (REPO / "benchmarks").glob("*.py")}


def _top_imports(path: Path) -> set[str]:
    """The repository's own top-level names a file imports: statically, inside functions, or by import_module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and (mod := _dynamic(node)) not in (None, COMPUTED):
            names = ["tp_core." + mod]
        out.update(n.split(".")[0] for n in names)
    # a benchmark's sibling helpers (common, report, bench_*) are the benchmarks layer
    return {("benchmarks" if n in OWN - {"tp_core", "tp_app", "pages", "tests"} else n) for n in out if n in OWN}


def test_outer_layers_import_only_the_layers_below_them():
    bad = []
    for allowed, patterns in OUTER.values():
        for pattern in patterns:
            for path in REPO.glob(pattern):
                bad += [(str(path.relative_to(REPO)), m) for m in _top_imports(path) - allowed]
    assert not bad, bad
