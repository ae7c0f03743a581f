import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch, request):
    """Unit tests get a throwaway TP_HOME so caches never leak between tests; integration tests keep the real one."""
    if "integration" not in request.keywords and "ui" not in request.keywords:
        monkeypatch.setenv("TP_HOME", str(tmp_path / "tp_home"))
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
