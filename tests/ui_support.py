"""Shared set-up for the app tests: the quick demo model (built once under TP_HOME) and app settings."""
from __future__ import annotations

from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent.parent
APP_ENV = {
    "TP_APP_MODEL": "demo-quick",
    "TP_APP_EVAL_LIMIT": "200",
    "TP_APP_GRID": "0,0.3,0.6,0.9",
}


def ensure_quick_demo() -> Path:
    from tp_core.demo import build_demo

    return build_demo(quick=True)


def apply_env(monkeypatch, exports: Path) -> None:
    for k, v in APP_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TP_EXPORTS_DIR", str(exports))


def app_test(page: str, timeout: float = 240):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP_ROOT / page), default_timeout=timeout)
    # small, fast attribution settings for tests
    at.session_state["attr_samples"] = 8
    at.session_state["attr_steps"] = 4
    return at
