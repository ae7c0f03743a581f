"""Real browser (Debian Chromium) on the Export page (issue 13): a user picks ONNX and the Hugging Face folder on top
of the TaskPrune folder and the task vocabulary (and, with TP_TEST_EXPORT_LATENCY=1, a latency measurement), exports,
and sees the tables and one download. Always saves a screenshot of the landed page (to TP_SCREENSHOTS_DIR as
export_formats.png when set; that is how docs/screenshots/export_formats.png is made)."""
import os
import shutil
from pathlib import Path

import pytest

from test_browser import _wait_idle
from ui_support import ARGS, CHROMIUM, app_tracebacks, browser_app_env, streamlit_server

pytestmark = [pytest.mark.ui, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export-browser")
    env = browser_app_env(tmp / "exports", TP_APP_EVAL_LIMIT="40")
    with streamlit_server(env, tmp / "streamlit.log") as (url, _):
        yield url, tmp
    assert not app_tracebacks((tmp / "streamlit.log").read_text())


def _pick(page, text: str) -> None:
    """Add an option to the Formats multiselect (type to filter, Enter to take the first match); a click that lands
    while the page reruns can be lost, so try until the option shows as a tag."""
    box = page.locator('[data-testid="stMultiSelect"]').first
    for _attempt in range(4):
        box.locator("input").click()
        page.keyboard.type(text)
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        _wait_idle(page)
        if text in box.inner_text():
            return
    raise AssertionError(f"could not pick {text!r} in the Formats box")


def _check(page, role: str, name: str) -> None:
    """Select a radio option / tick a checkbox by its label, until it shows as checked."""
    for _attempt in range(4):
        widget = page.get_by_role(role, name=name)
        if widget.is_checked():
            return
        page.get_by_text(name).click()
        page.wait_for_timeout(500)
        _wait_idle(page)
    raise AssertionError(f"could not check {name!r}")


def test_export_page_onnx_and_hf_in_a_real_browser(server):
    from playwright.sync_api import sync_playwright

    url, tmp = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # tall: the app scrolls inside its own container, so the whole page must fit for the screenshot
            page = browser.new_page(viewport={"width": 1500, "height": 4200})
            page.goto(f"{url}/Export", timeout=120_000)
            page.get_by_role("button", name="Export and verify").wait_for(timeout=600_000)
            _wait_idle(page, 600_000)
            _check(page, "radio", "custom (choose everything)")
            _pick(page, "ONNX (fp32)")
            _pick(page, "Hugging Face")
            _check(page, "radio", "task (the task's tokens + a general set)")
            if os.environ.get("TP_TEST_EXPORT_LATENCY"):  # off by default: timing on a shared test machine is slow
                _pick(page, "ONNX int8")
                _check(page, "checkbox", "Measure latency (dense torch vs each format; adds about a minute)")
            try:
                page.get_by_text("fewer embedding parameters").first.wait_for(timeout=900_000)  # vocabulary count
                page.get_by_role("button", name="Export and verify").click()
                # the files first (ready to download), then the checks fill the tables in
                page.get_by_text("the files are ready to download").wait_for(timeout=1_500_000)
                page.get_by_text("and reloaded it").wait_for(timeout=1_500_000)
            except Exception:
                page.screenshot(path=str(tmp / "failure.png"), full_page=True)
                raise
            _wait_idle(page)
            page.get_by_role("button", name="Download everything").wait_for(timeout=60_000)
            body = page.locator('[data-testid="stMain"]').inner_text()
            needles = ["Parameters by part", "Formats: size, metric, check", "ONNX (fp32)", "Hugging Face folder",
                       "Vocabulary", "tokens kept", "Off-domain", "padding"]
            for needle in needles + (["Latency before and after"] if os.environ.get("TP_TEST_EXPORT_LATENCY") else []):
                assert needle in body, needle
            page.mouse.move(5, 5)
            page.wait_for_timeout(1000)
            shot = tmp / "export_formats.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("TP_SCREENSHOTS_DIR"):
                Path(os.environ["TP_SCREENSHOTS_DIR"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(os.environ["TP_SCREENSHOTS_DIR"]) / "export_formats.png")
        finally:
            browser.close()
    exports = tmp / "exports"
    folder = next(d for d in exports.iterdir() if d.is_dir())
    assert (folder / "onnx" / "model.onnx").is_file() and (folder / "hf" / "config.json").is_file()
    assert (folder / "taskprune" / "taskprune.json").is_file() and (exports / f"{folder.name}.zip").is_file()
