"""Real-browser test: Debian Chromium (Playwright) drives the app served by `streamlit run` on a free port.

Walks Model -> Attribution (small settings) -> Heatmaps (a click on a cell opens it in the neuron inspector) ->
Prune (moves the slider, the shown metric changes; its "Share this view" link, opened in a fresh browser context,
shows the same view) -> Export (the exported folder reloads). With TP_SCREENSHOTS_DIR set it also visits every page
and saves a screenshot of each (that is how docs/screenshots/ is made). Then, on the same server, a fresh session
opens the guided tour from a link with an out-of-range value and walks its five steps.
"""
import json
import os
import time
from pathlib import Path

import pytest

from ui_support import (ARGS, CHROMIUM, IDLE_SELECTOR, app_tracebacks, browser_app_env,  # noqa: F401 (ARGS,
                        streamlit_server, wait_idle)  # CHROMIUM: re-exported)

pytestmark = [pytest.mark.ui, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    exports = tmp_path_factory.mktemp("exports")
    env = browser_app_env(exports, TP_APP_RUN_LOG=str(exports.parent / "runlog.jsonl"))
    with streamlit_server(env, exports.parent / "streamlit.log") as (url, _):
        yield url, exports


def _shot(page, name):
    folder = os.environ.get("TP_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.mouse.move(5, 5)  # no tooltip from the last click in the picture
        page.wait_for_timeout(1500)  # let Plotly finish drawing
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _wait_idle(page, timeout=240_000):
    """Wait until the script run finished (ui_support.wait_idle: the app's script-run state)."""
    wait_idle(page, timeout, settle_ms=500)


def _goto(page, name):
    # exact: the home page's link, "TaskPrune Studio", contains "Prune"
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name, exact=True).first.click()
    _wait_idle(page)


def _metric(page, label) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def _view_widgets(page) -> dict:
    """What the Prune page's controls show: the two sparsity sliders, the baselines picked in "Compare with", the
    chosen allocation and whether recovery is on."""
    main = page.locator('[data-testid="stMain"]')
    tags = main.locator('[data-testid="stMultiSelect"]', has_text="Compare with").first \
        .locator("[data-tag]").evaluate_all("(tags) => tags.map(t => t.getAttribute('aria-label'))")
    return {"sliders": [t.inner_text() for t in page.locator('[data-testid="stSliderThumbValue"]').all()[:2]],
            "baselines": sorted(tags),
            "allocation": main.locator('[data-testid="stRadio"]', has_text="Allocation").first
            .locator('label:has(input:checked)').inner_text(),
            "recovery": main.locator('[data-testid="stCheckbox"]', has_text="+ recovery").first.locator("input")
            .is_checked()}


def _shared_link_opens_the_same_view(browser, page, url) -> None:
    """The sidebar's "Share this view" link of the Prune page, opened in a fresh browser context (no cookie: a new
    session), shows the same task, method, sliders and kept parameters, and says it came from a link."""
    page.get_by_text("Kept parameters", exact=True).wait_for(timeout=240_000)
    _wait_idle(page)
    view = page.locator('[data-testid="stMain"] [data-testid="stMarkdown"]', has_text="· method:").first.inner_text()
    widgets = _view_widgets(page)
    sliders = widgets["sliders"]
    kept = _metric(page, "Kept parameters")
    page.get_by_role("button", name="Share this view").click()
    link = page.locator('[data-testid="stPopoverBody"] [data-testid="stCode"]').first.inner_text().strip()
    page.keyboard.press("Escape")
    assert link.startswith(f"{url}/Prune?model=demo-quick&task=sst2&method=ig&"), link
    assert sliders != ["0.50", "0.00"], "the budget's split: not the defaults a fresh session would show anyway"
    fresh = browser.new_context(viewport={"width": 1500, "height": 1000})
    try:
        other = fresh.new_page()
        other.goto(link, timeout=60_000)
        other.get_by_text("Opened from a shared link").wait_for(timeout=120_000)
        other.get_by_text("Kept parameters", exact=True).wait_for(timeout=240_000)
        _wait_idle(other)
        assert other.url == f"{url}/Prune"  # the link's settings are taken off the address once applied
        assert other.locator('[data-testid="stMain"] [data-testid="stMarkdown"]', has_text="· method:").first \
            .inner_text() == view
        assert _view_widgets(other) == widgets and widgets["baselines"], widgets
        assert _metric(other, "Kept parameters") == kept
    finally:
        fresh.close()


def _download(page, label: str, folder: Path) -> Path:
    """Press the first download button named `label` and save what the browser receives (a press that lands while
    the page redraws the button is lost: try again)."""
    for attempt in range(3):
        try:
            with page.expect_download(timeout=120_000) as got:
                page.get_by_role("button", name=label, exact=True).first.click()
            path = folder / got.value.suggested_filename
            got.value.save_as(path)
            return path
        except Exception:
            assert attempt < 2, f"the {label!r} button gave no file"
            _wait_idle(page)


def _check_downloads(files: dict, export_dir: Path) -> None:
    """The files a user takes away: a real PNG and SVG of the curve chart, and a report with the curves and the
    export."""
    import struct
    import xml.etree.ElementTree as ET

    png = files["PNG"].read_bytes()
    assert files["PNG"].name.startswith("curves-sst2-") and png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (2000, 920) and len(png) > 20_000, (width, height, len(png))
    svg = ET.fromstring(files["SVG"].read_bytes())
    assert svg.tag.endswith("svg") and "kept parameters (%)" in ET.tostring(svg, encoding="unicode")
    report = files["Download the report (HTML)"].read_text()
    assert report.startswith("<!DOCTYPE html>") and "Chosen ratio" in report and "integrated gradients" in report
    assert "95% interval" in report and '"fill":"toself"' in report  # the curves with their bands
    assert export_dir.name in report and "Model card" in report  # this session's export
    assert "src=\"http" not in report and "src='http" not in report


def test_browser_walkthrough(server):
    from playwright.sync_api import sync_playwright

    url, exports = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tall = bool(os.environ.get("TP_SCREENSHOTS_DIR"))  # the app scrolls inside its own container
        page = browser.new_page(viewport={"width": 1500, "height": 2400 if tall else 1000})
        try:
            page.goto(url, timeout=60_000)
            page.get_by_text("Where to start").wait_for(timeout=120_000)
            _wait_idle(page)
            _shot(page, "0_home")

            _goto(page, "Model")
            page.get_by_text("Architecture of").wait_for(timeout=120_000)
            page.get_by_text("Tasks and dense metrics").wait_for()
            _wait_idle(page)
            assert _metric(page, "Layers") == "6"
            _shot(page, "1_model")

            page.locator('[data-testid="stDataFrame"]').filter(has_text="dense value").first.wait_for(timeout=300_000)
            _wait_idle(page)  # the dense metrics job landed: no page rerun is pending

            _goto(page, "Attribution")
            for attempt in range(3):  # a click that lands while a background job's rerun starts can be dropped
                page.get_by_role("button", name="Run attribution").click()
                try:
                    page.get_by_text("ig scores · sst2").or_(page.get_by_text("sst2 · integrated gradients")).first \
                        .wait_for(timeout=30_000)
                    break
                except Exception:
                    assert attempt < 2, "Run attribution never started a job"
                    _wait_idle(page)
            page.get_by_text("sst2 · integrated gradients").wait_for(timeout=600_000)
            _wait_idle(page)
            _shot(page, "2_attribution")

            _goto(page, "Heatmaps")
            # with cold caches the page first asks to score the second task: click until the inspector shows
            deadline = time.time() + 300
            while not page.get_by_text("Neuron inspector").is_visible():
                assert time.time() < deadline, "the Heatmaps page never showed the neuron inspector"
                btn = page.get_by_role("button", name="Compute scores")
                if btn.count() and btn.first.is_visible():
                    btn.first.click()
                    _wait_idle(page)
                page.wait_for_timeout(500)
            btn = page.get_by_role("button", name="Score the other tasks")
            if btn.count() and btn.first.is_visible():
                btn.first.click()
                _wait_idle(page)
            page.get_by_text("Neuron inspector").wait_for(timeout=120_000)
            _wait_idle(page)
            # click one cell of the first layer x head heatmap: the inspector follows the Plotly selection
            # (a click that lands while the chart is still being redrawn is lost, so try a few times)
            for attempt in range(5):
                page.wait_for_timeout(1500)
                plot = page.locator('[data-testid="stPlotlyChart"]').first.locator(".nsewdrag").first
                plot.scroll_into_view_if_needed()
                box = plot.bounding_box()
                page.mouse.click(box["x"] + box["width"] * 7.5 / 12, box["y"] + box["height"] * (1 - 3.5 / 6))
                try:
                    page.get_by_text("head 7 of layer 3").wait_for(timeout=40_000)
                    break
                except Exception:
                    assert attempt < 4, "clicking the head heatmap never opened head 7 of layer 3 in the inspector"
                    _wait_idle(page)
            page.get_by_text("Top-activating validation examples").wait_for(timeout=120_000)
            _wait_idle(page)
            _shot(page, "3_heatmaps")

            _goto(page, "Prune")
            page.get_by_text("Kept parameters", exact=True).wait_for(timeout=240_000)
            _wait_idle(page)
            kept_before = _metric(page, "Kept parameters")
            metric_label = page.locator('[data-testid="stMetric"]', has_text="(pruned)").first
            before = metric_label.locator('[data-testid="stMetricValue"]').inner_text()
            slider = page.locator('[data-testid="stSlider"]').first.get_by_role("slider")
            slider.focus()
            page.keyboard.press("End")  # FFN sparsity 95%
            page.wait_for_function(
                "(v) => { const m = [...document.querySelectorAll('[data-testid=stMetric]')]"
                ".find(e => e.innerText.includes('Kept parameters')); return m && !m.innerText.includes(v); }",
                arg=kept_before, timeout=120_000)
            _wait_idle(page)
            after = metric_label.locator('[data-testid="stMetricValue"]').inner_text()
            kept_after = _metric(page, "Kept parameters")
            assert kept_after != kept_before
            assert after != before, (before, after)
            if os.environ.get("TP_SCREENSHOTS_DIR"):  # a middle setting reads better in the picture
                slider.focus()
                for _ in range(45):
                    page.keyboard.press("ArrowLeft")
                _wait_idle(page)
            _shot(page, "4_prune")

            # "Meet a budget": a FLOPs budget moves both sliders to the planned split and says so
            page.get_by_text("Meet a budget", exact=True).click()
            flops = page.get_by_label("FLOPs (% of dense)")
            flops.fill("40")
            flops.press("Enter")
            _wait_idle(page)
            page.get_by_role("button", name="Find the split").click()
            page.get_by_text("Within 40% of the dense FLOPs").wait_for(timeout=240_000)
            _wait_idle(page)
            said = page.get_by_text("Within 40% of the dense FLOPs").inner_text()
            shown = [t.inner_text() for t in page.locator('[data-testid="stSliderThumbValue"]').all()[:2]]
            assert f"FFN sparsity {float(shown[0]):.0%}, head sparsity {float(shown[1]):.0%}" in said, (said, shown)
            _shot(page, "4_prune_budget")
            _shared_link_opens_the_same_view(browser, page, url)

            _goto(page, "Export")
            page.get_by_text("custom (choose everything)").click()  # the TaskPrune folder (the deploy preset:
            _wait_idle(page)  # test_app_export.py)
            page.get_by_role("button", name="Export and verify").click()
            page.get_by_text("and reloaded it").wait_for(timeout=240_000)
            _wait_idle(page)
            _shot(page, "5_export")

            # take the results away: the curve chart as PNG and SVG, and the report (now with the export)
            _goto(page, "Prune")
            page.get_by_text("Kept parameters", exact=True).wait_for(timeout=240_000)
            _wait_idle(page)
            files = {label: _download(page, label, exports.parent / "downloads")
                     for label in ("PNG", "SVG", "Download the report (HTML)")}
        finally:
            browser.close()

    folders = [d for d in exports.iterdir() if d.is_dir()]
    assert len(folders) == 1
    _check_downloads(files, folders[0])
    from tp_core.export import load_export

    small = load_export(folders[0])
    assert small.pruning and small.pruning.get("ffn_sparsity", 0) > 0
    _check_run_log(exports.parent / "runlog.jsonl")


def _check_run_log(path: Path) -> None:
    """TP_APP_RUN_LOG (tp_app/runlog.py): the server timed the walk's page runs on its own clock, each answering the
    requests that came before its end, and logged the slider's first estimate at 95% as the Prune page drew it."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    runs = [x for x in lines if x["kind"] == "run"]
    answered = [(q, r["ended"]) for r in runs for q in r["requested"]]
    assert len(answered) >= 10, len(answered)  # navigations, clicks and key presses of the walk
    # a run that began before the server's first page run installed the log has no start
    assert all(r["started"] is None or r["started"] <= r["ended"] for r in runs)
    assert sum(r["started"] is not None for r in runs) >= len(runs) - 2
    assert all(0 <= end - q < 600 for q, end in answered)
    assert {"Model", "Prune", "Export"} <= {r["page"].split("_", 1)[-1] for r in runs}, {r["page"] for r in runs}
    assert any(x["kind"] == "fragment" for x in lines)  # the progress polls
    assert any(x["kind"] == "mark" and x["label"] == "At FFN 95%" for x in lines)


STEP_SHOWS = {  # what each step of the tour shows once its jobs landed (text in the main area, charts included)
    1: ("its area is the attribution", "Estimate with 4 steps", "The library's ig score (4 steps)"),
    2: ("sst2: layer x FFN neuron (sorted by score)", "sst2: layer x head", "Open the Heatmaps page"),
    3: ("50% of FFN removed", "70% of FFN removed", "90% of FFN removed", "random (seeded)", "chance:", "Dense: "),
    4: ("Pruned, masks only", "Pruned + lstsq recovery", "vs masks only", "integrated gradients (ig) + lstsq recovery"),
    5: ("FFN removed", "dense float32 is", "Measure it on the Export page"),
}


def _main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _tour_step_shows(page, n: int) -> None:
    """Wait until step `n` of the tour shows everything in STEP_SHOWS[n] (its jobs landed), then check that
    nothing on the page failed."""
    needles = STEP_SHOWS[n]
    page.wait_for_function(  # the content, with no script run in progress
        "(n) => { const m = document.querySelector('[data-testid=stMain]'); const t = m ? m.textContent : '';"
        f" return n.every(x => t.includes(x)) && !!document.querySelector('{IDLE_SELECTOR}'); }}",
        arg=list(needles), timeout=300_000, polling=100)
    body = page.locator('[data-testid="stMain"]').text_content()
    assert all(x in body for x in needles), [x for x in needles if x not in body]
    assert page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count() == 0, \
        _main_text(page)[-2000:]
    assert page.locator('[data-testid="stMain"] h3', has_text=f"{n} · ").count() == 1


def _tour_next(page, n: int) -> None:
    """Press Next (a press that lands during a rerun can be lost: press again) until step `n` is the heading."""
    for attempt in range(3):
        page.locator(".st-key-tour_next button").click()
        try:
            page.locator('[data-testid="stMain"] h3', has_text=f"{n} · ").wait_for(timeout=30_000)
            return
        except Exception:
            assert attempt < 2, f"Next never opened step {n}"
            _wait_idle(page)


def test_browser_tour_from_a_link(server):
    """A fresh session opens the tour from a shared link whose FFN sparsity is out of range: the page says the value
    was not taken (the default stands) and the tour works. Then each step as a user walks it with Next: the
    neuron's integrated-gradients path (moving the step-count slider redraws it), the heatmaps, pruning at
    50/70/90% against the random baseline, recovery, the export's counts; no step shows an error."""
    from playwright.sync_api import sync_playwright

    url, exports = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            tall = bool(os.environ.get("TP_SCREENSHOTS_DIR"))  # the app scrolls inside its own container
            page = browser.new_context(viewport={"width": 1500, "height": 2600 if tall else 1400}).new_page()
            page.goto(f"{url}/Tour?model=demo-quick&task=sst2&ffn=1.5", timeout=60_000)
            note = page.get_by_text("Opened from a shared link; not taken from it")
            note.wait_for(timeout=120_000)
            assert "ffn 1.5: outside 0 to 0.95 in steps of 0.01" in note.text_content()  # the default stands
            _tour_step_shows(page, 1)
            assert page.url == f"{url}/Tour"
            steps = page.locator('[data-testid="stSlider"]', has_text="Steps")
            assert steps.locator('[data-testid="stSliderThumbValue"]').inner_text() == "4"
            steps.get_by_role("slider").focus()
            page.keyboard.press("ArrowLeft")  # 2 steps: the estimate and the bars change, the library's score not
            page.get_by_text("Estimate with 2 steps").wait_for(timeout=120_000)
            wait_idle(page, settle_ms=100)
            assert "2 Gauss-Legendre steps" in page.locator('[data-testid="stMain"]').text_content()
            _shot(page, "tour_1")
            for n in (2, 3, 4, 5):
                _tour_next(page, n)
                _tour_step_shows(page, n)
                _shot(page, f"tour_{n}")
            assert page.locator(".st-key-tour_next button").is_disabled()
        finally:
            browser.close()
    log = (exports.parent / "streamlit.log").read_text()
    assert not app_tracebacks(log), app_tracebacks(log)[:1]


# Several sessions at once: tests/test_browser_concurrency.py (five users, plus a tab closed mid-run).
