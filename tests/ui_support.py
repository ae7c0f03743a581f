"""Shared set-up for the app tests: the quick demo model (in the test's TP_HOME, see conftest.py), app settings, and
whether the real-browser tests run."""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent.parent
APP_ENV = {
    "TP_APP_MODEL": "demo-quick",
    "TP_APP_EVAL_LIMIT": "96",
    "TP_APP_COARSE_EXAMPLES": "48",
    "TP_APP_RECOVER_SAMPLES": "64",
    "TP_APP_GRID": "0,0.3,0.6,0.9",
}


# TP_CHROMIUM: another Chromium binary (also how to check that a missing browser fails the browser tests)
CHROMIUM = os.environ.get("TP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SKIP_BROWSER_ENV = "TP_SKIP_BROWSER"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
# Whether a script run (of the page or of a fragment) is in progress: the app root's script-run state. Streamlit's
# "Running..." status widget is no signal: in the Streamlit installed here (1.67) it appears only once a run has
# lasted 500 ms, so shorter runs never show it and a wait for its absence can return in the middle of a run.
IDLE_SELECTOR = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def wait_idle(page, timeout: float = 240_000, settle_ms: int = 400) -> None:
    """Wait until no script run is in progress (after `settle_ms`, so a run a click just asked for has begun)."""
    page.wait_for_timeout(settle_ms)
    page.wait_for_selector(IDLE_SELECTOR, state="attached", timeout=timeout)


def browser_verdict(chromium: str, has_playwright: bool, skip_env: str | None) -> tuple[str, str]:
    """Whether the real-browser tests run: ("run", ""), or ("skip" | "fail", why). A missing Chromium or playwright
    fails them (CI must not pass without its browser tests) unless TP_SKIP_BROWSER=1 opts out: then they skip."""
    if skip_env == "1":
        return "skip", f"{SKIP_BROWSER_ENV}=1: real-browser tests opted out"
    missing = [what for what, ok in ((f"Chromium ({chromium})", Path(chromium).is_file()),
                                     ("the playwright package", has_playwright)) if not ok]
    if missing:
        return "fail", (f"{' and '.join(missing)} not installed: `make test` installs Debian chromium and the "
                        f"requirements; set {SKIP_BROWSER_ENV}=1 to skip the real-browser tests instead")
    return "run", ""


def require_browser() -> None:
    """Skip or fail the calling real-browser test (or its module's fixture) as browser_verdict decides."""
    import pytest

    verdict, why = browser_verdict(CHROMIUM, importlib.util.find_spec("playwright") is not None,
                                   os.environ.get(SKIP_BROWSER_ENV))
    if verdict == "skip":
        pytest.skip(why)
    if verdict == "fail":
        pytest.fail(why, pytrace=False)


def browser_app_env(exports: Path, **extra: str) -> dict:
    """For a real-browser test module: require the browser (see require_browser), the quick demo, and return the
    environment of an app server on it (small attribution settings, offline, the embedded job engine)."""
    require_browser()
    ensure_quick_demo()
    env = {**os.environ, **APP_ENV, "TP_EXPORTS_DIR": str(exports), "TP_APP_ATTR_SAMPLES": "16",
           "TP_APP_ATTR_STEPS": "4", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           **extra}
    env.pop("TP_SCHEDULER", None)
    return env


def ensure_quick_demo() -> Path:
    """The quick demo's folder in the current TP_HOME (conftest.py links the session's build there: no training)."""
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/_stcore/health", timeout=5).status == 200
    except OSError:
        return False


@contextmanager
def streamlit_server(env: dict, log_path: Path):
    """`streamlit run app.py` on a free port with `env`, output to `log_path`; yields (url, process), stops it after."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                                 "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                                cwd=APP_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                if healthy(url):
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"streamlit did not start; see {log_path}")
            yield url, proc
        finally:
            stop_process(proc, 10)


def stop_process(proc, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not ended after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def settle(at, timeout: float = 300, rounds: int = 6):
    """Run the page, wait until the job engine (and any background model load) has nothing left to do, run again -
    until a run submits nothing new (AppTest does not run the pages' self-refreshing fragments, so this stands in
    for them)."""
    from tp_app.models import any_loading
    from tp_core.engine import ACTIVE, get_engine

    eng = get_engine()

    def busy() -> bool:  # a job, or the app's background load of a causal LM
        return bool(eng.jobs(active_only=True)) or any_loading()

    def ended() -> set:
        return {(i.key, i.state) for i in eng.jobs() if i.state not in ACTIVE}

    before = ended()
    at.run()
    t0 = time.time()
    for _ in range(rounds):
        # done only when nothing runs and nothing ended while the page ran (a job that lands during a run is
        # drawn by the next one: returning then was a race that left a finished search undrawn)
        if not busy() and ended() == before:
            return at
        while busy():
            if time.time() - t0 > timeout:
                raise TimeoutError(f"jobs still running: {[i.label for i in eng.jobs(active_only=True)][:5]}")
            time.sleep(0.1)
        before = ended()
        at.run()
    return at


def app_tracebacks(log_text: str) -> list[str]:
    """Tracebacks in a server log, except Streamlit's own when a browser tab closes while the server is still
    sending to it (starlette's WebSocketDisconnected: the page's self-refreshing parts keep sending while jobs run)."""
    blocks = log_text.split("Traceback (most recent call last):")[1:]
    return [b[-1500:] for b in blocks if "WebSocketDisconnected" not in b and "WebSocket is not connected" not in b]
