"""Test set-up. Every test runs on a temporary TP_HOME, never the user's ~/.cache/taskprune:

* a session home (empty) while session-scoped fixtures run;
* a home per test module, for the module's fixtures and its integration and ui tests (they share its caches);
* a fresh home per unit test (neither `integration` nor `ui`), as before.

Homes of integration and ui tests (and of modules marked so) are seeded with the quick demo model, which is built
once per test session (once for all pytest-xdist workers of a run: the first builds it under a file lock) and
hard-linked into each home, so a test that replaces or removes its copy leaves the others alone. Tests marked `llm`
(the embedded SmolLM2) get its fp32 folder the same way: converted once per run from the installed GGUF package.

Run order (`make test`: pytest-xdist hands out whole modules in collection order, `--no-loadscope-reorder`): one
real-browser module first (the worker that takes it builds the quick demo at once), then the modules that need no
demo (the other worker runs them during the build, and nobody waits for it), then the other real-browser modules,
the longest, so that none of them is left running alone at the end, then the other demo modules.
"""
import fcntl
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

import pytest  # noqa: E402

DEMO_MARKERS = ("integration", "ui")  # tests that use the quick demo model
LLM_MARKER = "llm"  # tests that use the embedded SmolLM2 (converted once per run)


def needs_demo(node) -> bool:
    """Whether a test (or a module, through its pytestmark) is marked as using the quick demo."""
    return any(node.get_closest_marker(m) for m in DEMO_MARKERS)


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch gets its share of the cores (two workers on two cores: one thread
    each) instead of a thread per core each, which oversubscribes the cores; TP_TEST_TORCH_THREADS overrides."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    threads = int(os.environ.get("TP_TEST_TORCH_THREADS") or 0) or (
        max(1, (os.cpu_count() or 1) // workers) if workers else 0)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _module_rank(module_items) -> int:
    """0: needs no quick demo; 1: a real-browser module; 2: another module using the demo."""
    if not any(needs_demo(i) for i in module_items):
        return 0
    return 1 if any(i.get_closest_marker("browser") for i in module_items) else 2


def run_order(modules: list[list]) -> list[list]:
    """Whole modules (lists of items) in the order of the module docstring: the first real-browser module, then
    the others by `_module_rank` (stable)."""
    ordered = sorted(modules, key=_module_rank)
    first = next((m for m in ordered if _module_rank(m) == 1), None)
    return ordered if first is None else [first] + [m for m in ordered if m is not first]


def pytest_collection_modifyitems(config, items):
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    items[:] = [i for group in run_order(list(modules.values())) for i in group]


def link_tree(src: Path, dst: Path) -> Path:
    """Copy the folder `src` to `dst` as hard links (a plain copy across file systems)."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    return Path(shutil.copytree(src, dst, copy_function=link))


def seed_home(home: Path, demo: Path | None) -> Path:
    """Make `home` a TP_HOME with the built quick demo (when given) at its usual place, `models/demo-quick`."""
    home.mkdir(parents=True, exist_ok=True)
    if demo is not None:
        target = home / "models" / demo.name
        if not target.exists():
            link_tree(demo, target)
    return home


def built_once(home: Path, build):
    """`build()` run with `home` as its TP_HOME, under a file lock: concurrent callers (xdist workers) wait for the
    first, then find its result in place (the builders return what is already built)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f"{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TP_HOME", str(home))
            return build()


def build_demo_once(home: Path) -> Path:
    """The quick demo built under `home` (its TP_HOME), once for all workers."""
    from tp_core.demo import build_demo

    return built_once(home, lambda: build_demo(quick=True))


@pytest.fixture(scope="session")
def quick_demo_build(tmp_path_factory) -> Path:
    """The quick demo folder, built once per test run (not per xdist worker: their base temp folders share a parent
    that belongs to this run). Tests never use it directly: their homes get hard links to it."""
    return build_demo_once(builds_root(tmp_path_factory) / "demo-home")


def run_root(tmp_path_factory) -> Path:
    """A folder of this test run shared by its pytest-xdist workers (their base temp folders share a parent)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def builds_root(tmp_path_factory) -> Path:
    """Where the once-per-run builds go: the run's folder, or TP_TEST_BUILDS (a developer's shortcut for running
    single tests again and again: the builds there are reused across runs; `make test` never sets it)."""
    kept = os.environ.get("TP_TEST_BUILDS")
    return Path(kept) if kept else run_root(tmp_path_factory)


@pytest.fixture(scope="session")
def smollm2_build(tmp_path_factory) -> Path:
    """The embedded SmolLM2 converted to fp32 once per test run (under a file lock, like the quick demo), in a home
    of its own; tests marked `llm` get hard links to it at `models/llm/` of their home."""
    from tp_core.llm_source import resolve_causal_lm

    return built_once(builds_root(tmp_path_factory) / "llm-home", lambda: resolve_causal_lm("smollm2"))


def seed_llm(home: Path, folder: Path) -> None:
    target = home / "models" / "llm" / folder.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        link_tree(folder, target)


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """An empty TP_HOME while session-scoped fixtures run (they are set up before any module's home)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TP_HOME", str(tmp_path_factory.mktemp("session-home")))
        yield


@pytest.fixture(scope="module", autouse=True)
def _module_home(request, tmp_path_factory):
    """A TP_HOME of this test module (autouse, so it is in force before the module's other fixtures run). A browser
    module checks for its browser first, so a missing one fails (or skips) before any demo build."""
    if request.node.get_closest_marker("browser"):
        from ui_support import require_browser

        require_browser()
    demo = request.getfixturevalue("quick_demo_build") if needs_demo(request.node) else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TP_HOME", str(seed_home(tmp_path_factory.mktemp("tp_home"), demo)))
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch, request):
    """Unit tests get a throwaway TP_HOME so caches never leak between tests; integration and ui tests keep their
    module's (seeded with the quick demo here when only the test, not its module, is marked)."""
    if needs_demo(request.node):
        seed_home(Path(os.environ["TP_HOME"]), request.getfixturevalue("quick_demo_build"))
    else:
        monkeypatch.setenv("TP_HOME", str(tmp_path / "tp_home"))
    if request.node.get_closest_marker(LLM_MARKER):
        seed_llm(seed_home(Path(os.environ["TP_HOME"]), None), request.getfixturevalue("smollm2_build"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _close_job_engine():
    """Close the process's job engine (if a test started one) before the interpreter shuts down."""
    yield
    from tp_core.engine import shutdown_engine

    shutdown_engine()


@pytest.fixture(scope="module")
def engine():
    """An in-process job engine (one worker thread) for a test module."""
    from tp_core.engine import Engine

    eng = Engine(address="", processes=False, n_workers=1, threads_per_worker=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tiny(request):
    """A tiny random BERT multi-task model registered with the engine under a name of this test module."""
    from tiny import tiny_multitask
    from tp_core.work import register_model

    name = f"tiny-{request.module.__name__}"
    model = tiny_multitask("bert")
    ref = register_model(name, model)
    model.source = name
    return model, ref
