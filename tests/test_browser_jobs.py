"""Real browser (Debian Chromium) against `python -m tp_core serve` - what `make run` starts: a Dask cluster with a
worker process, the app pointed at it. A user submits attribution and sees its progress in the jobs panel, leaves
the page and comes back, reloads the browser, cancels; a failing job shows its message; two sessions asking for the
same scores share one computation."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_browser import ARGS, CHROMIUM, _goto, _wait_idle
from ui_support import APP_ROOT, app_tracebacks, browser_app_env, ensure_quick_demo, free_port, healthy, stop_process

pytestmark = [pytest.mark.ui, pytest.mark.browser]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    env = browser_app_env(tmp / "exports")
    demo = ensure_quick_demo()  # built by browser_app_env; this returns its folder
    port = free_port()
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tp_core", "serve", "--port", str(port), "--model", "demo-quick",
                             "--no-warm"], cwd=APP_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if healthy(url):
                break
            assert proc.poll() is None, (tmp / "serve.log").read_text()[-2000:]
            time.sleep(0.5)
        yield url, tmp, demo
    finally:
        stop_process(proc, 20)
        log.close()
        assert not app_tracebacks((tmp / "serve.log").read_text())


def _sidebar(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def _wait_sidebar(page, text: str, timeout: int = 240_000) -> None:
    page.wait_for_function("(t) => { const s = document.querySelector('[data-testid=stSidebar]');"
                           " return s && s.innerText.replace(/\\s+/g, ' ').includes(t); }", arg=text, timeout=timeout)


def _set_slider(page, label: str, key: str) -> None:
    page.locator('[data-testid="stSlider"]', has_text=label).first.get_by_role("slider").focus()
    page.keyboard.press(key)
    page.wait_for_timeout(300)
    _wait_idle(page)


def test_jobs_in_a_real_browser(served):
    from playwright.sync_api import sync_playwright

    url, tmp, demo = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
            page.goto(f"{url}/Attribution", timeout=120_000)
            page.get_by_role("button", name="Run attribution").wait_for(timeout=240_000)
            _wait_idle(page)
            _set_slider(page, "Scoring examples", "End")  # 512 examples x 64 steps: a long job
            _set_slider(page, "IG steps", "End")
            t0 = time.time()
            page.get_by_role("button", name="Run attribution").click()
            _wait_sidebar(page, "ig scores · sst2 · N=512")  # submitted: listed in the jobs panel at once
            assert time.time() - t0 < 15
            _wait_sidebar(page, "elapsed", timeout=120_000)  # running, with progress and time
            _goto(page, "Model")  # leave the page: the job goes on (Model asks for one cached dense point only)
            _wait_sidebar(page, "N=512")
            assert any(c["name"] == "tp_sid" for c in page.context.cookies())
            page.reload()  # a reload finds the session's jobs again (the session id is in a cookie)
            _wait_sidebar(page, "N=512", timeout=120_000)
            _wait_idle(page)
            page.screenshot(path=str(tmp / "before_cancel.png"), full_page=True)
            page.locator('[data-testid="stSidebar"] [class*="st-key-cancel_scores"] button').first.click()
            try:
                _wait_sidebar(page, "cancelled", timeout=60_000)
            finally:
                page.screenshot(path=str(tmp / "after_cancel.png"), full_page=True)

            # a failing job: the model folder disappears before the worker loads it
            folder = tmp / "my-model"
            shutil.copytree(demo, folder)
            _goto(page, "Model")
            page.locator('[data-testid="stRadio"]', has_text="Where is the model?").get_by_text("Local folder").click()
            _wait_idle(page)
            box = page.locator('[data-testid="stTextInput"]', has_text="Model folder").locator("input")
            box.fill(str(folder))
            box.press("Enter")
            _wait_idle(page)
            page.get_by_role("button", name="Load", exact=True).click()
            page.get_by_text(f"Loaded {folder}").wait_for(timeout=120_000)
            shutil.rmtree(folder)
            _goto(page, "Attribution")
            _set_slider(page, "Scoring examples", "Home")
            page.get_by_role("button", name="Run attribution").click()
            page.locator('[data-testid="stAlertContentError"]', has_text="does not exist").first.wait_for(
                timeout=240_000)
            _wait_sidebar(page, "does not exist")
            page.screenshot(path=str(tmp / "failed.png"), full_page=True)

            # two sessions ask for the same scores at once: one computation, the same result on both pages
            pages = []
            for _ in range(2):
                q = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                q.goto(f"{url}/Attribution", timeout=120_000)
                q.get_by_role("button", name="Run attribution").wait_for(timeout=240_000)
                _wait_idle(q)
                _set_slider(q, "IG steps", "ArrowRight")  # 5 steps: not cached by the other tests
                _set_slider(q, "Scoring examples", "ArrowRight")  # 20 examples
                pages.append(q)
            for q in pages:
                q.get_by_role("button", name="Run attribution").click()
            captions = []
            for q in pages:
                q.get_by_text("sst2 · integrated gradients").wait_for(timeout=300_000)
                _wait_idle(q)
                captions.append(q.locator('[data-testid="stCaptionContainer"]', has_text="computed in").first
                                .inner_text())
            assert captions[0] == captions[1] and "20 examples" in captions[0], captions  # one run, one timing
            if os.environ.get("TP_SCREENSHOTS_DIR"):
                pages[0].screenshot(path=str(Path(os.environ["TP_SCREENSHOTS_DIR"]) / "6_jobs.png"), full_page=True)
        finally:
            browser.close()
