"""Real-browser reliability tests: five sessions at once on one `streamlit run` server, and a tab closed mid-run.

* Five browser contexts (five users) on the quick demo model, each on its own task, attribution method, FFN and head
  sparsity and allocation. Their first Prune visits (attribution + curves, cold on a first run) and their slider
  moves run on the server at the same time; each page must then show exactly what the same settings give alone
  (computed in this process, scores recomputed without the disk cache), and afterwards a fresh session's dense
  evaluation on a subset nobody has evaluated yet must equal the unmasked model's.
* A tab closed while an attribution is running leaves only complete, loadable score files, a new tab computes (or
  reuses) the same attribution cleanly, and the server goes on serving another session.

The server gets its own TP_HOME (`<TP_HOME>/ui-concurrency`, the demo models linked in), so these tests can read its
score cache without other tests writing there; it is cold (TP_HOME is the module's temporary one). Screenshots of
the five sessions go to TP_SCREENSHOTS_DIR when it is set. Timing is measured in benchmarks/load_test.py, not here.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from test_browser import ARGS, CHROMIUM, _goto, _metric, _wait_idle
from tp_core.policy import APP_ATTRIBUTION
from ui_support import APP_ENV, app_tracebacks, ensure_quick_demo, healthy, require_browser, streamlit_server

pytestmark = [pytest.mark.ui, pytest.mark.browser]

EVAL_LIMIT = 80
GRID = "0,0.9"
SAMPLES, STEPS = 16, 4
METHOD_LABELS = {"ig": "integrated gradients (ig)", "grad_x_act": "gradient x activation",
                 "activation": "mean |activation|", "magnitude": "weight magnitude (data-free)",
                 "random": "random (seeded)"}


@dataclass(frozen=True)
class Session:
    task: str
    method: str
    ffn_key: str  # "End" (95 %) or "Home" (0 %) on the FFN slider
    head_steps: int  # ArrowRight presses on the head slider (10 % each)
    allocation: str = "global"

    @property
    def ffn(self) -> float:
        return 0.95 if self.ffn_key == "End" else 0.0

    @property
    def heads(self) -> float:
        return round(0.1 * self.head_steps, 1)

    @property
    def echo(self) -> str:  # what the sidebar shows once the server has the new values
        return f"FFN {self.ffn:.0%} · heads {self.heads:.0%} · {self.allocation}"


SESSIONS = (
    Session("sst2", "ig", "End", 0),
    Session("ag_news", "grad_x_act", "End", 1),
    Session("sst2", "magnitude", "Home", 2),
    Session("ag_news", "random", "End", 0, "per-layer"),
    Session("ag_news", "ig", "End", 1, "per-layer"),
)


@pytest.fixture(scope="module")
def server():
    require_browser()
    from tp_core.paths import tp_home

    demo = ensure_quick_demo()
    real_home = tp_home()
    home = real_home / "ui-concurrency"
    home.mkdir(exist_ok=True)
    models = home / "models"
    if not models.exists():
        models.symlink_to(demo.parent if demo.parent.name == "models" else real_home / "models",
                          target_is_directory=True)
    exports = home / "exports"
    env = {**os.environ, **APP_ENV, "TP_HOME": str(home), "TP_EXPORTS_DIR": str(exports),
           "TP_APP_EVAL_LIMIT": str(EVAL_LIMIT), "TP_APP_GRID": GRID, "TP_APP_ATTR_SAMPLES": str(SAMPLES),
           "TP_APP_ATTR_STEPS": str(STEPS), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    log_path = home / "streamlit.log"
    with streamlit_server(env, log_path) as (url, proc):
        yield url, home, proc
    assert not app_tracebacks(log_path.read_text(errors="replace"))


def _shot(page, name: str) -> None:
    folder = os.environ.get("TP_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.mouse.move(5, 5)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _open_session(browser, url: str, page_name: str = "Model"):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(f"{url}/{page_name}", timeout=60_000)
    return page


def _choose(page, testid: str, label: str, option: str) -> None:
    page.locator(f'[data-testid="{testid}"]', has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    _wait_idle(page)


def _pick_task(page, task: str) -> None:
    page.get_by_text("Tasks and dense metrics").wait_for(timeout=240_000)
    _wait_idle(page)
    _choose(page, "stSelectbox", "Current task", task)


def _pick_method(page, method: str) -> None:
    _goto(page, "Attribution")
    page.get_by_role("button", name="Run attribution").wait_for(timeout=120_000)
    _choose(page, "stSelectbox", "Method", METHOD_LABELS[method])


def _slider(page, index: int):
    return page.locator('[data-testid="stSlider"]').nth(index).get_by_role("slider")


def _sidebar_shows(page, text: str, timeout: int = 300_000) -> None:
    page.wait_for_function("(t) => { const s = document.querySelector('[data-testid=stSidebar]');"
                           " return s && s.innerText.replace(/\\s+/g, ' ').includes(t); }", arg=text, timeout=timeout)


def _point_on_all_examples(page, timeout: int = 420_000) -> None:
    """The slider's point has landed on all validation examples (not only the first, subset pass)."""
    page.wait_for_function("() => { const t = document.body.innerText; return t.includes('Kept parameters') && "
                           "!t.includes('refining on all examples') && !t.includes('Evaluating this setting'); }",
                           timeout=timeout)
    _wait_idle(page, timeout=timeout)


def _prune_numbers(page) -> dict:
    pruned = page.locator('[data-testid="stMetric"]', has_text="(pruned)").first
    dense = page.locator('[data-testid="stMetric"]', has_text="(dense)").first
    head = page.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"Task: \S+ · method: ")).first
    return {"head": head.inner_text(),
            "kept": _metric(page, "Kept parameters"),
            "metric": pruned.locator('[data-testid="stMetricValue"]').inner_text(),
            "dense": dense.locator('[data-testid="stMetricValue"]').inner_text()}


def _dense_table(page) -> dict:
    """The Model page's "Tasks and dense metrics" table: {task: (dense value, examples)} (read from the grid's
    accessible table)."""
    page.get_by_text("Tasks and dense metrics").wait_for(timeout=240_000)
    _wait_idle(page)
    grid = page.locator('[data-testid="stDataFrame"]').filter(has_text="dense value").first
    grid.locator("table tbody tr td").first.wait_for(state="attached", timeout=60_000)  # drawn a moment later
    header = [c.strip() for c in grid.locator("table thead th").all_text_contents()]
    out = {}
    for row in grid.locator("table tbody tr").all():
        cells = dict(zip(header, [c.strip() for c in row.locator("td").all_text_contents()]))
        out[cells["task"]] = (float(cells["dense value"]), int(cells["validation examples"]))
    assert set(out) == {"sst2", "ag_news"}, (header, out)
    return out


def _no_error_on(page) -> None:
    errors = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


@pytest.mark.skip(reason="not yet adapted to the job engine: with every session's curves (3 methods each, attribution "
                         "included) queued on the shared 2-thread worker, its per-session waits time out; the "
                         "sharing and isolation it checks are covered by test_jobs.py, test_app_jobs.py and "
                         "test_browser_jobs.py until it is reworked (see the closing note)")
def test_five_browser_sessions_at_once_each_get_their_single_session_numbers(server):
    """Five users at once (tasks, methods, FFN/head sparsity, allocation all differ): every page shows its own
    settings' numbers, nothing fails, and the shared model is left unmasked."""
    from playwright.sync_api import sync_playwright

    url, _, proc = server
    shown = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pages = []
            for s in SESSIONS:  # cheap set-up one after the other: task on the Model page, method on Attribution
                page = _open_session(browser, url)
                if not pages:
                    before = _dense_table(page)
                _pick_task(page, s.task)
                _pick_method(page, s.method)
                pages.append(page)
            # all five open Prune at once: attributions (cold on a first run) and curves run side by side
            for page in pages:
                page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Prune", exact=True).first.click()
            for page in pages:
                page.get_by_text("Kept parameters", exact=True).wait_for(timeout=420_000)
                _wait_idle(page, timeout=420_000)
                _no_error_on(page)
            # then every user moves the sliders (and two the allocation) before anyone waits for a result
            for s, page in zip(SESSIONS, pages):
                _slider(page, 0).focus()
                page.keyboard.press(s.ffn_key)
                if s.head_steps:
                    _slider(page, 1).focus()
                    for _ in range(s.head_steps):
                        page.keyboard.press("ArrowRight")
                if s.allocation != "global":
                    page.locator('[data-testid="stRadio"]', has_text="Allocation").get_by_text(s.allocation).click()
            for i, (s, page) in enumerate(zip(SESSIONS, pages)):
                _sidebar_shows(page, s.echo)
                page.wait_for_timeout(500)
                _wait_idle(page, timeout=420_000)
                _sidebar_shows(page, s.echo, timeout=10_000)
                _point_on_all_examples(page)
                _no_error_on(page)
                shown[s] = _prune_numbers(page)
                _shot(page, f"concurrent_{i + 1}_{s.task}_{s.method}")
            for page in pages:
                page.context.close()
            # a fresh session afterwards: the same dense table, then a dense evaluation on a validation subset
            # nobody has evaluated yet (not memoised: really run on the shared model now)
            page = _open_session(browser, url)
            after = _dense_table(page)
            box = page.locator('[data-testid="stNumberInput"]', has_text="Validation examples").first.locator("input")
            box.fill(str(EVAL_LIMIT - 30))
            box.press("Enter")
            deadline = time.time() + 180
            while True:
                page.wait_for_timeout(500)
                fresh = _dense_table(page)
                if all(n == EVAL_LIMIT - 30 for _, n in fresh.values()) or time.time() > deadline:
                    break
            _no_error_on(page)
        finally:
            browser.close()
    assert proc.poll() is None and healthy(url), "the server stopped"

    from tp_core.attribution import attribute
    from tp_core.data import load_split
    from tp_core.evaluation import evaluate, evaluate_masked
    from tp_core.masks import PruneConfig, build_masks
    from tp_core.pruning import count_params, kept_params
    from tp_core.model import load_model

    model = load_model("demo-quick")
    problems = []
    for s in SESSIONS:
        got = shown[s]
        data = load_split(s.task, "validation", limit=EVAL_LIMIT)
        scores = attribute(model, s.task, replace(APP_ATTRIBUTION, method=s.method, samples=SAMPLES, steps=STEPS),
                           use_cache=False)  # recomputed here, alone: not read back from the server's cache
        masks = build_masks(scores, PruneConfig(s.ffn, s.heads, s.allocation), model.unit_shape())
        metric, kept = evaluate_masked(model, s.task, data, masks).metric, kept_params(model, masks, s.task)
        dense = evaluate(model, s.task, data)
        want = {"metric": f"{metric:.4f}", "kept": f"{100 * kept / count_params(model, s.task):.1f} %",
                "dense": f"{dense.metric:.4f}"}
        if s.task not in got["head"] or s.method not in got["head"] or any(got[k] != v for k, v in want.items()):
            problems.append((s, got, want))
    assert after == before, (before, after)
    for task, (value, n) in fresh.items():  # the shared model was not left masked
        dense = evaluate(model, task, load_split(task, "validation", limit=EVAL_LIMIT - 30))
        if n != EVAL_LIMIT - 30 or abs(value - round(dense.metric, 4)) > 1e-9:
            problems.append((task, value, n, dense))
    assert not problems, problems


def _scores_dir_is_clean(home: Path) -> list:
    """Every score file loads completely; nothing else (no partial or temp file) is left in the folder."""
    from tp_core.attribution import UnitScores

    folder = home / "scores"
    bad = []
    for f in folder.iterdir() if folder.is_dir() else []:
        if f.suffix != ".json" or f.name.startswith("."):
            bad.append(f"stray file {f.name}")
            continue
        try:
            s = UnitScores.load(f)
            json.loads(f.read_text())
            assert s.ffn is not None or s.heads is not None
        except Exception as exc:  # noqa: BLE001 - reported
            bad.append(f"{f.name}: {exc}")
    return bad


def test_closing_a_tab_during_attribution_leaves_a_clean_cache(server):
    """Close the tab while `ig` runs on settings not cached yet: the score cache holds only complete files, a new
    tab then gets the same scores as a run alone, and another user's session kept working throughout."""
    from playwright.sync_api import sync_playwright

    from tp_core.attribution import UnitScores, attribute, cache_key, scoring_data
    from tp_core.model import load_model

    url, home, proc = server
    model = load_model("demo-quick")
    steps = STEPS + 6  # slow enough to be closed mid-run (the steps slider moves one step per key press)
    cfg = replace(APP_ATTRIBUTION, method="ig", samples=SAMPLES + 4, steps=steps)  # what the app asks for
    path = home / "scores" / f"{cache_key(model, 'sst2', cfg, scoring_data('sst2', cfg))}.json"
    path.unlink(missing_ok=True)  # make sure it is computed (a previous run of this test cached it)

    def set_up(page):
        _pick_task(page, "sst2")
        _pick_method(page, "ig")
        _slider(page, 0).focus()  # scoring examples: +4 per press
        page.keyboard.press("ArrowRight")
        _slider(page, 1).focus()  # IG steps: +1 per press
        for _ in range(steps - STEPS):
            page.keyboard.press("ArrowRight")
        page.wait_for_timeout(500)
        _wait_idle(page)
        page.get_by_text(f"{cfg.samples} examples", exact=False).first.wait_for(timeout=60_000)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            other = _open_session(browser, url)  # another user, on Prune, before and after the close
            _pick_task(other, "ag_news")
            _goto(other, "Prune")
            other.get_by_text("Kept parameters", exact=True).wait_for(timeout=300_000)
            _wait_idle(other, timeout=300_000)

            page = _open_session(browser, url)
            set_up(page)
            caption = page.locator('[data-testid="stCaptionContainer"]', has_text="To compute").first
            assert "To compute: sst2" in caption.inner_text()
            page.get_by_role("button", name="Run attribution").click()
            _sidebar_shows(page, "elapsed", timeout=120_000)  # the job runs: the jobs panel shows its progress
            assert not path.exists()
            page.context.close()  # the user closes the tab mid-run

            # the other session still works while (or after) the orphaned run goes on or stops
            _slider(other, 0).focus()
            other.keyboard.press("Home")
            _sidebar_shows(other, "FFN 0% · heads 0%")
            other.wait_for_timeout(500)
            _wait_idle(other, timeout=300_000)
            _point_on_all_examples(other)
            _no_error_on(other)
            assert _prune_numbers(other)["metric"] == _prune_numbers(other)["dense"]  # FFN 0 %, heads 0 %
            assert proc.poll() is None and healthy(url)

            deadline = time.time() + 120  # the closed tab's run ends (stopped, or finished and saved whole)
            while time.time() < deadline and any(f.name.startswith(".") for f in (home / "scores").iterdir()):
                time.sleep(1)
            assert _scores_dir_is_clean(home) == []

            page = _open_session(browser, url)  # a new tab: same settings, computes or reuses cleanly
            set_up(page)
            page.get_by_role("button", name="Run attribution").click()
            page.get_by_text("sst2 · integrated gradients").wait_for(timeout=300_000)
            _wait_idle(page)
            _no_error_on(page)
            caption = page.locator('[data-testid="stCaptionContainer"]', has_text="computed in").first.inner_text()
            assert f"{cfg.samples} examples" in caption and f"steps={steps}" in caption, caption
        finally:
            browser.close()
    assert proc.poll() is None and healthy(url)
    assert _scores_dir_is_clean(home) == []
    saved = UnitScores.load(path)
    alone = attribute(model, "sst2", cfg, use_cache=False)
    for a, b in zip(saved.ffn + saved.heads, alone.ffn + alone.heads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)
