"""How interactive the app is in practice: real Chromium against a server started as `make run` starts it
(`python -m tp_core serve`: its Dask cluster with a worker process, and its warm start on), the full demo model,
score and curve caches cold when the server starts.

  .venv/bin/python benchmarks/bench_interactive.py [--model demo] [--sessions 8] [--shared 5] [--skip-concurrent]

Measures (all from the browser, plus the scheduler's own event log for the job counts):
* ui_longest_rerun_s   longest single page run (Streamlit's "running" indicator shown) during the default walk
                        Home -> Model -> Attribution (Run) -> Heatmaps -> Prune -> one slider move -> Export
* walk_blocking_s      the sum of those page runs over the walk: the time the page itself was busy (background jobs
                        do not count: the user can read, scroll and click meanwhile)
* first_curve_point_s  opening Prune with scores cached, until the first PRUNED curve point is drawn (the dense
                        point, which the Model page already computed, does not count; with the warm start on, the
                        curves may be computed or under way by then, as for a user of `make run`)
* default_curves_s     from opening Prune until every default curve is complete at its final resolution
* estimate_error_max   largest relative error of a shown time estimate (Attribution's "about X s" before the run,
                        the jobs panel's "~X s left" at a quarter of the run) against the real time
* shared_job_count     5 sessions open the same not-yet-computed curve at once: the most computations any of its jobs
                        ran (from the scheduler's `tp-job` start events)
* default_export_seconds  the Export page's deploy preset (split, recovery, task vocabulary, ONNX int8 + hf/): from
                        the click to "Exported to" (the files written, ready to download; the checks of each format
                        follow as their own job), once the page's preparation is done (its split and recovery are
                        jobs that start as the page opens: `default_export_prepare_s`, from opening it). Alone, with
                        the checks' end beside it (`default_export_checked_s`): --export-only
* tour_longest_rerun_s  once the warm start is done (the cluster idle): the longest page run of the guided tour,
                        walked forward and back in a fresh session (benchmarks/bench_tour.py)
* concurrent8_new_point_p95_s  8 sessions on different tasks each move the FFN slider to new points at the same time:
                        95th percentile of key press -> the new metric shown (the slider's first estimate, on one
                        batch of 32 examples); beside it `concurrent8_coarse_point_p95_s`, press -> the same point on
                        the 100-example subset (measured before anyone presses again)
Writes benchmarks/out/bench_interactive.json and the headline keys into docs/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from bench_cpu import BrowserRenicer, cpu_by_role  # noqa: E402 (benchmarks/ on the path: this script's folder)
from bench_tour import wait_cluster_idle, walk_tour  # noqa: E402
from common import machine  # noqa: E402
from ui_support import wait_idle  # noqa: E402 (tests/ on the path first)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
# every script run (page or fragment) as [seconds, page]: from the app root's script-run state (Streamlit's status
# widget shows only runs that last over 500 ms, and then only from that moment on)
RUN_WATCH = """
window.__runs = []; window.__runStart = null;
new MutationObserver(() => {
  const app = document.querySelector('[data-testid=stApp]');
  const state = app && app.getAttribute('data-test-script-state');
  const busy = state === 'running' || state === 'rerunRequested';
  const now = performance.now();
  if (busy && window.__runStart === null) window.__runStart = now;
  if (!busy && window.__runStart !== null) {
    window.__runs.push([(now - window.__runStart) / 1000, location.pathname]); window.__runStart = null; }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-test-script-state']});
"""


SHARED_EXAMPLES = 150
COARSE_N = 100  # tp_core.settings.AppSettings.coarse_examples: the slider's second pass, after its first estimate
DEFAULT_EVAL_LIMIT = 500  # tp_core.settings.AppSettings.eval_limit: the app's validation subset per task


def _goto(page, name):
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name, exact=True).first.click()


def _idle(page, timeout=600_000):
    wait_idle(page, timeout)


def _settle(page, seconds: float = 15) -> None:
    """Like _idle, but gives up quietly: a page whose progress fragments rerun every second under load may show
    the running indicator almost all the time."""
    try:
        _idle(page, timeout=int(seconds * 1000))
    except Exception:  # noqa: BLE001 - playwright's TimeoutError
        pass


def _sidebar_has(page, text: str, timeout: float = 300) -> None:
    page.wait_for_function("(t) => { const s = document.querySelector('[data-testid=stSidebar]');"
                           " return s && s.innerText.replace(/\\s+/g, ' ').includes(t); }", arg=text,
                           timeout=timeout * 1000, polling=500)


def _points(page) -> int:
    """Pruned points drawn on the curves of the Prune page's metric-vs-size chart (not in any other chart): the
    markers of its curve traces below 100% kept parameters (not the dense point each curve starts from, nor the
    slider's "current setting" star), read from the Plotly figure's data."""
    return page.evaluate(POINTS_JS)


POINTS_JS = """() => [...document.querySelectorAll('[data-testid=stPlotlyChart]')]
  .filter(c => c.textContent.includes('kept parameters'))
  .reduce((n, c) => { const gd = c.querySelector('.js-plotly-plot');
    return n + ((gd && gd.data) || []).filter(t => (t.mode || '').includes('markers') && t.name !== 'current setting')
      .reduce((k, t) => k + [...(t.x || [])].filter(x => x < 100 - 1e-6).length, 0); }, 0)"""


def _slider_shows(page, ffn_pct: int, timeout: float) -> None:
    """The Prune page shows the metric of the slider's point at FFN `ffn_pct` % (its caption names the setting)."""
    page.wait_for_function(SHOWS_JS, arg=f"At FFN {ffn_pct}%", timeout=timeout * 1000, polling=250)


SHOWS_JS = ("(t) => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
            ".some(e => e.textContent.includes(t))")
# the number of examples the slider's caption "At FFN n% ... on N examples" names now (None: no such caption)
CAPTION_N_JS = ("(t) => { for (const e of document.querySelectorAll('[data-testid=stCaptionContainer]')) {"
                " const m = (e.textContent || '').match(/ on (\\d+) examples/);"
                " if (e.textContent.includes(t) && m) return +m[1]; } return null; }")
# In each of the 8 sessions: the page's own clock at the key press and when each "At FFN n%" caption first appears,
# so a latency does not include the benchmark's polling of 8 busy pages one after another (under load one round of
# polls took seconds).
POINT_WATCH = """
window.__tpShown = {}; window.__tpPress = null;
document.addEventListener('keydown', (e) => { if (e.key === 'ArrowRight') window.__tpPress = Date.now(); }, true);
window.__tpShownN = {};
const tpLook = () => {
  for (const el of document.querySelectorAll('[data-testid=stCaptionContainer]')) {
    const t = el.textContent || '';
    const m = t.match(/At FFN \\d+%/);
    if (m && !(m[0] in window.__tpShown)) window.__tpShown[m[0]] = Date.now();
    const n = t.match(/(At FFN \\d+%).* on (\\d+) examples/);  // each pass's first appearance, by its size
    if (n && !((n[1] + '|' + n[2]) in window.__tpShownN)) window.__tpShownN[n[1] + '|' + n[2]] = Date.now();
  }
};
document.addEventListener('DOMContentLoaded', () =>
  new MutationObserver(tpLook).observe(document.body, {subtree: true, childList: true, characterData: true}));
"""


def _curves_pending(page) -> bool:
    return page.evaluate("() => document.body.textContent.includes('jobs done')")


def _export_preparing(page) -> bool:
    """Whether the Export page's deploy preset is still finding its split or fitting its recovery (or has not drawn
    the export's planned size yet)."""
    body = page.locator('[data-testid="stMain"]').inner_text()
    return any(w in body for w in ("Finding the deploy split", "Fitting the lstsq recovery")) or \
        "At these settings the export keeps" not in body


def _metric(page, label) -> str:
    return page.locator('[data-testid="stMetric"]', has_text=label).first.locator(
        '[data-testid="stMetricValue"]').inner_text()


SHOTS: Path | None = None


def _shot(page, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        (SHOTS / f"{name}.txt").write_text(page.inner_text("body"))


def _until(page, cond, what: str, limit: float) -> float:
    """Poll `cond()` every 0.25 s; returns the seconds it took. Every 60 s and on giving up, a screenshot and the
    page text go to SHOTS (so a stuck walk shows where)."""
    t0 = time.time()
    n = 0
    while not cond():
        time.sleep(0.25)
        if time.time() - t0 > 60 * (n + 1):
            n += 1
            _shot(page, f"wait-{what}-{n}")
        if time.time() - t0 > limit:
            _shot(page, f"stuck-{what}")
            raise TimeoutError(f"{what}: not done after {limit:.0f} s")
    return time.time() - t0


def _seconds(text: str) -> float | None:
    m = re.search(r"([\d.]+) (s|min)\b", text)
    if not m:
        return None
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1)


KEYS = ["ui_longest_rerun_s", "first_curve_point_s", "default_curves_s", "walk_blocking_s", "tour_longest_rerun_s",
        "concurrent8_new_point_p95_s", "shared_job_count", "estimate_error_max", "default_export_seconds"]


def _write(out: dict, path: str) -> None:
    """The measurements so far (written after each part, so an interrupted run keeps what it measured)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2))


def _prune_steps(page, walk: dict, out: dict) -> None:
    """The walk's Heatmaps and Prune steps: the first curve point, every default curve, then one slider move to a
    new point (51% FFN, which the Export page's deploy preset then takes as the user's split)."""
    _goto(page, "Heatmaps")
    t = time.time()
    page.get_by_text(re.compile("Neuron inspector|scores yet for")).first.wait_for(timeout=600_000)
    _idle(page)
    walk["heatmaps"] = time.time() - t
    _shot(page, "heatmaps")
    t = time.time()
    _goto(page, "Prune")
    page.wait_for_url("**/Prune", timeout=60_000)
    page.get_by_text("Compare with").first.wait_for(timeout=600_000)
    _until(page, lambda: _points(page) > 0, "first-point", 1800)
    out["first_curve_point_s"] = time.time() - t
    _shot(page, "prune-first-point")
    _until(page, lambda: not _curves_pending(page), "default-curves", 3600)
    out["default_curves_s"] = time.time() - t
    _shot(page, "prune-curves-done")
    _idle(page)
    _slider_shows(page, 50, 600)
    t = time.time()
    page.locator('[data-testid="stSlider"]').first.get_by_role("slider").focus()
    page.keyboard.press("ArrowRight")  # 51%: a new point
    _slider_shows(page, 51, 600)
    walk["slider_new_point"] = time.time() - t
    _idle(page)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--shared", type=int, default=5)
    ap.add_argument("--skip-concurrent", action="store_true")
    ap.add_argument("--skip-shared", action="store_true")
    ap.add_argument("--skip-walk", action="store_true", help="only the shared and 8-session parts")
    ap.add_argument("--skip-tour", action="store_true")
    ap.add_argument("--warm-limit", type=float, default=3600,
                    help="seconds to wait for the warm start to finish before the tour (then walked anyway)")
    ap.add_argument("--no-warm", action="store_true",
                    help="start the server without its warm start (not how `make run` starts it: experiments only)")
    ap.add_argument("--export-only", action="store_true",
                    help="only default_export_seconds: Home -> Model -> Attribution (run) -> Export, without the "
                         "Heatmaps and Prune steps (the deploy split then comes from the budget helper; the other "
                         "walk figures are not measured); implies --skip-shared --skip-concurrent --skip-tour")
    ap.add_argument("--browser-nice", type=int, default=19,
                    help="nice value of every Chromium thread while the 8 sessions press their sliders: the "
                         "browsers stand in for the users' own machines, so they take only the CPU the server and "
                         "its workers leave (0: leave Chromium's own priorities, which compete with the workers)")
    ap.add_argument("--scores-from", default="",
                    help="a TP_HOME whose attribution scores cache is copied in first (experiments on the 8-session "
                         "part only: its setup then skips computing every task's scores; the walk needs cold caches)")
    ap.add_argument("--note", default="", help="a line on what this run is (kept with it in the history table)")
    ap.add_argument("--shots", default=str(ROOT / "benchmarks" / "out" / "interactive_shots"),
                    help="screenshots of each stage (and of any wait over a minute)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "bench_interactive.json"))
    args = ap.parse_args()
    if args.export_only:
        args.skip_shared = args.skip_concurrent = args.skip_tour = True
    global SHOTS
    SHOTS = Path(args.shots)

    from playwright.sync_api import sync_playwright

    from tp_core.demo import demo_path
    from tp_core.engine import Engine
    from ui_support import free_port, healthy, stop_process

    src = demo_path(args.model == "demo-quick")
    home = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    (home / "models").mkdir()
    os.symlink(src, home / "models" / src.name)  # the built model; every cache starts cold
    if args.scores_from:
        assert args.skip_walk, "--scores-from: the walk is measured on cold caches"
        shutil.copytree(Path(args.scores_from).expanduser() / "scores", home / "scores")
    port = free_port()
    env = {**os.environ, "TP_HOME": str(home), "TP_APP_MODEL": args.model, "TP_EXPORTS_DIR": str(home / "exports")}
    env.pop("TP_SCHEDULER", None)
    log = open(home / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tp_core", "serve", "--port", str(port), "--model", args.model,
                             *(["--no-warm"] if args.no_warm else [])],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    out: dict = {"model": args.model, "machine": f"{machine()['cpu']}, {os.cpu_count()} cores",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": os.getloadavg()[0],
                 "command": "benchmarks/bench_interactive.py " + " ".join(sys.argv[1:]),
                 "browser_nice": args.browser_nice, "warm_start": not args.no_warm}
    renicer = None  # holds the browsers' priority during the 8-session phase
    try:
        for _ in range(600):
            if healthy(url):
                break
            time.sleep(0.5)
        for _ in range(600):  # ready: the app process has its imports and the model loaded (tp_app/launch.py)
            if re.search(r"model preloaded|preload skipped", (home / "serve.log").read_text()):
                break
            time.sleep(0.5)
        address = re.search(r"(tcp://[\d.]+:\d+)", (home / "serve.log").read_text()).group(1)
        layout = re.search(r"'workers': (\d+), 'threads': (\d+)", (home / "serve.log").read_text())
        if layout:
            w, t = int(layout.group(1)), int(layout.group(2))
            out["engine"] = f"{w} worker process{'es' if w > 1 else ''} x {t // max(1, w)} thread(s) x 1 torch thread"
        observer = Engine(address=address)  # sees every job's start event on the shared scheduler
        timeline: list = []  # (time, key, event) of every job event, for the 8-session diagnosis

        def _record(event, _orig=observer._on_event):
            msg = event[1]
            if msg.get("event") != "progress":
                timeline.append((msg.get("t"), msg.get("key"), msg.get("event")))
            elif msg.get("key", "").startswith("scores-"):  # the attribution's own pace, for the estimate check
                timeline.append((msg.get("t"), msg.get("key"), f"progress {msg.get('fraction', 0):.3f}"))
            _orig(event)

        from tp_core.engine import TOPIC

        observer.client.subscribe_topic(TOPIC, _record)
        with sync_playwright() as p:
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            if not args.skip_walk:
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                ctx.add_init_script(RUN_WATCH)
                page = ctx.new_page()
                walk: dict = {}
                t = time.time()
                page.goto(url, timeout=600_000)
                page.get_by_text("Where to start").wait_for(timeout=600_000)
                _idle(page)
                walk["home"] = time.time() - t
                t = time.time()
                _goto(page, "Model")
                page.get_by_text("Tasks and dense metrics").wait_for(timeout=600_000)
                _idle(page)
                walk["model"] = time.time() - t
                _shot(page, "model")
                _goto(page, "Attribution")
                page.get_by_role("button", name="Run attribution").wait_for(timeout=600_000)
                _idle(page)
                caption = page.locator('[data-testid="stCaptionContainer"]', has_text="To compute").first.inner_text()
                pre_estimate = _seconds(caption.split("about", 1)[1]) if "about" in caption else None
                t = time.time()
                page.get_by_role("button", name="Run attribution").click()
                _idle(page)
                walk["attribution_submit"] = time.time() - t
                panel_estimate = None

                def scores_shown() -> bool:
                    nonlocal panel_estimate
                    side = page.locator('[data-testid="stSidebar"]').inner_text()
                    m = re.search(r"ig scores · sst2[^\n]*\n(\d+)% · [^\n]*~([\d.]+ (?:s|min)) left", side)
                    if m and panel_estimate is None and int(m.group(1)) >= 25:
                        panel_estimate = (time.time(), _seconds(m.group(2)), int(m.group(1)))
                    return page.get_by_text("sst2 · integrated gradients").count() > 0

                _until(page, scores_shown, "attribution", 1800)
                _shot(page, "attribution-done")
                attribution_s = time.time() - t
                errors = []
                if pre_estimate:
                    errors.append(abs(pre_estimate - attribution_s) / attribution_s)
                if panel_estimate:
                    real_left = time.time() - panel_estimate[0]
                    errors.append(abs(panel_estimate[1] - real_left) / max(real_left, 1e-9))
                # what ran beside the attribution job (a shared worker changes its pace): for the estimate check
                out["attribution_events"] = [e for e in timeline if (e[0] or 0) >= t - 30]
                out["attribution_t0"] = t
                if panel_estimate:  # when the panel was read (s after the click) and at which progress
                    out["attribution_panel_read"] = (round(panel_estimate[0] - t, 2), panel_estimate[2])
                out.update(attribution_s=attribution_s, attribution_pre_estimate_s=pre_estimate,
                           attribution_panel_estimate=panel_estimate and panel_estimate[1],
                           estimate_error_max=max(errors) if errors else None)
                if not args.export_only:
                    _prune_steps(page, walk, out)
                _goto(page, "Export")
                t = time.time()  # the deploy preset fits its recovery as the page opens: the click waits for none
                _until(page, lambda: not _export_preparing(page), "export-preparation", 1800)
                out["default_export_prepare_s"] = time.time() - t
                _idle(page)
                _shot(page, "export-ready")
                t = time.time()
                page.get_by_role("button", name="Export and verify").click()
                page.get_by_text("Exported to").wait_for(timeout=600_000)
                walk["export"] = out["default_export_seconds"] = time.time() - t
                _idle(page)
                _shot(page, "export")
                if args.export_only:  # the files are ready; the checks that follow, for the record
                    t = time.time()
                    page.get_by_text("every format checked").wait_for(timeout=600_000)
                    out["default_export_checked_s"] = out["default_export_seconds"] + time.time() - t
                    _shot(page, "export-checked")
                    _write(out, args.json)
                else:
                    runs = page.evaluate("() => window.__runs")
                    out.update(walk=walk, page_runs=runs, ui_longest_rerun_s=max(r[0] for r in runs),
                               walk_blocking_s=sum(r[0] for r in runs))
                    _write(out, args.json)

            if not args.skip_tour:  # the tour, once the warm start is done (the cluster has nothing left to run)
                out["tour_warm_wait_s"] = wait_cluster_idle(observer.client, args.warm_limit)
                out.update(walk_tour(browser, url, RUN_WATCH, _shot))
                _write(out, args.json)

            # five sessions open the same, not yet computed curve at once
            base = dict(observer._starts)
            if args.skip_shared:
                args.shared = 0
            shared = []
            for _ in range(args.shared):
                c = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                shared.append(c)
            # each on an evaluation set whose curves nobody computed yet: 150 examples (the walk's coarse pass
            # computed the 100-example points, so 100 found everything cached and ran nothing)
            for q in shared:
                q.goto(f"{url}/Model", timeout=600_000)
                q.get_by_text("Tasks and dense metrics").wait_for(timeout=600_000)
                _settle(q)
                box = q.locator('[data-testid="stNumberInput"]', has_text="Validation examples").first.locator("input")
                box.fill(str(SHARED_EXAMPLES))
                box.press("Enter")
                q.wait_for_timeout(1500)
                _settle(q)
            for q in shared:  # then all open Prune within a few seconds
                _goto(q, "Prune")
            for q in shared:
                q.wait_for_url("**/Prune", timeout=60_000)
                q.wait_for_timeout(1000)
                _until(q, lambda q=q: not _curves_pending(q) and _points(q) > 0, "shared-curve", 1800)
            if shared:
                _shot(shared[0], "shared-done")
                counts = {k: v - base.get(k, 0) for k, v in observer._starts.items() if v - base.get(k, 0) > 0}
                # no job started: the curve was cached after all, and nothing was measured (not "0 computations")
                out["shared_job_count"] = max(counts.values()) if counts else None
                out["shared_jobs_run"] = len(counts)
            _write(out, args.json)
            for q in shared:
                q.context.close()

            if not args.skip_concurrent:
                from tp_core.model import load_model

                tasks = list(load_model(args.model).tasks)
                sessions = []
                for i in range(args.sessions):
                    qctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                    qctx.add_init_script(POINT_WATCH)
                    q = qctx.new_page()
                    q.goto(f"{url}/Model", timeout=600_000)
                    q.get_by_text("Tasks and dense metrics").wait_for(timeout=600_000)
                    _settle(q)
                    task = tasks[i % len(tasks)]
                    for attempt in range(3):  # a pick made while the page was starved can be lost: pick again
                        try:  # already the session's task (the default one): nothing to pick
                            _sidebar_has(q, f"Task: {task}", timeout=5)
                            break
                        except Exception:  # noqa: BLE001 - playwright's TimeoutError
                            pass
                        q.locator('[data-testid="stSelectbox"]', has_text="Current task").first.click(timeout=300_000)
                        q.keyboard.type(task)  # filter the (virtualised) list, then pick the match
                        q.get_by_role("option", name=task, exact=True).click()
                        try:
                            _sidebar_has(q, f"Task: {task}", timeout=300 if attempt < 2 else 600)
                            break
                        except Exception:  # noqa: BLE001 - playwright's TimeoutError
                            print(f"session {i}: task pick not shown after attempt {attempt + 1}", flush=True)
                            _shot(q, f"task-pick-s{i}-attempt{attempt + 1}")
                            if attempt == 2:
                                raise
                            q.keyboard.press("Escape")
                    # every session evaluates on the app's default number of examples: a run of 23:06 found three
                    # of its sessions on 20 (the box's minimum) after the task pick, so the box is set and checked
                    box = q.locator('[data-testid="stNumberInput"]', has_text="Validation examples").first.locator(
                        "input")
                    if box.input_value() != str(DEFAULT_EVAL_LIMIT):
                        box.fill(str(DEFAULT_EVAL_LIMIT))
                        box.press("Enter")
                        q.wait_for_timeout(1500)
                    _settle(q, 5)
                    assert box.input_value() == str(DEFAULT_EVAL_LIMIT), f"session {i}: {box.input_value()} examples"
                    _goto(q, "Prune")
                    sessions.append(q)
                examples = []
                for q in sessions:
                    _slider_shows(q, 50, 1800)
                    examples.append(q.evaluate(CAPTION_N_JS, "At FFN 50%"))
                out["concurrent8_examples"] = dict(zip([tasks[i % len(tasks)] for i in range(len(sessions))],
                                                       examples))  # what each session's points are evaluated on
                print(f"sessions' validation examples: {out['concurrent8_examples']}", flush=True)
                latencies, presses, coarse, coarse_missing = [], [], [], []
                # from here on the browsers stand in for the users' own machines: they get the CPU the server and
                # its workers leave (while the sessions were set up, they had their normal priority: at nice 19
                # from the start, a starved page had not drawn its task choice after 5 minutes)
                renicer = BrowserRenicer(args.browser_nice) if args.browser_nice else None
                restarts0, t_phase, cpu0 = observer.restarts(), time.time(), cpu_by_role()
                for step in range(3):
                    starts = []
                    for q in sessions:  # everyone presses at (nearly) the same time
                        q.locator('[data-testid="stSlider"]').first.get_by_role("slider").focus()
                        q.keyboard.press("ArrowRight")
                        starts.append((q, time.time()))
                    pending = dict(enumerate(starts))
                    while pending:  # poll every session, so each latency is when its own point appeared
                        for i, (q, t0) in list(pending.items()):
                            label = f"At FFN {51 + step}%"
                            # the page's own record first (no layout); the DOM itself when the record is missing
                            if q.evaluate("(t) => !!(window.__tpShown || {})[t]", label) or \
                                    q.evaluate(SHOWS_JS, label):
                                seen = time.time()
                                shown, pressed = q.evaluate(f"() => [window.__tpShown['At FFN {51 + step}%'], "
                                                            "window.__tpPress]")
                                # the page's own clock when it can tell (press and caption), else the poll's
                                lat = (shown - pressed) / 1000.0 if shown and pressed else seen - t0
                                latencies.append(lat)
                                presses.append((i, step, t0, lat, seen - t0))
                                del pending[i]
                        time.sleep(0.25)
                        assert time.time() - starts[0][1] < 1800, "slider points did not land"
                    # then the same points on the coarse subset (the first estimate is on one batch): each
                    # session's press -> its caption on >= COARSE examples, before anyone presses again
                    label = f"At FFN {51 + step}%"
                    pending = dict(enumerate(starts))
                    while pending:
                        for i, (q, t0) in list(pending.items()):
                            shown = q.evaluate("([t, c]) => { const s = window.__tpShownN || {}; const ts = "
                                               "Object.keys(s).filter(k => k.startsWith(t + '|') && "
                                               "+k.split('|')[1] >= c).map(k => s[k]); "
                                               "return [ts.length ? Math.min(...ts) : null, window.__tpPress]; }",
                                               [label, COARSE_N])
                            now = q.evaluate(CAPTION_N_JS, label)  # the DOM itself when the record is missing
                            if shown[0] is not None:
                                coarse.append((shown[0] - shown[1]) / 1000.0 if shown[1] else time.time() - t0)
                                del pending[i]
                            elif now is not None and now >= COARSE_N:
                                coarse.append(time.time() - t0)
                                del pending[i]
                            elif time.time() - t0 > 300:  # never stall the run: say which page and what it shows
                                _shot(q, f"coarse-timeout-s{i}-step{step}")
                                print(f"session {i}: no {COARSE_N}-example value for {label} after 300 s "
                                      f"(caption on {now} examples)", flush=True)
                                coarse_missing.append((i, step, now))
                                del pending[i]
                        time.sleep(0.25)
                latencies.sort()
                out["concurrent8_new_point_s"] = latencies
                out["concurrent8_new_point_p95_s"] = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
                out["concurrent8_new_point_median_s"] = statistics.median(latencies)
                coarse.sort()  # the value on the coarse subset (100 examples), after the quick first estimate
                out["concurrent8_coarse_point_s"] = coarse
                out["concurrent8_coarse_point_p95_s"] = (coarse[min(len(coarse) - 1, int(0.95 * len(coarse)))]
                                                         if coarse and not coarse_missing else None)
                out["concurrent8_coarse_point_missing"] = coarse_missing
                out["concurrent8_preempted_restarts"] = observer.restarts() - restarts0  # points that gave way
                cpu1, wall = cpu_by_role(), time.time() - t_phase  # who had the two cores while points were due
                out["concurrent8_cpu_cores"] = {k: round((cpu1[k] - cpu0.get(k, 0.0)) / wall, 2) for k in cpu1}
                (Path(args.json).parent / "bench_interactive_concurrent_events.json").write_text(json.dumps(
                    {"presses": presses,
                     "events": [e for e in timeline if (e[0] or 0) >= t_phase - 120]}))
            browser.close()
            if renicer is not None:
                out["browser_renice"] = {**renicer.stop(), "when": "the 8-session slider presses"}
                renicer = None
        observer.close()
    finally:
        if renicer is not None:  # a run that failed mid-phase still gives autogroup scheduling back
            renicer.stop()
        stop_process(proc, 30)
        log.close()
    out["load_after"] = os.getloadavg()[0]
    _write(out, args.json)
    results = ROOT / "docs" / "results.json"
    doc = json.loads(results.read_text()) if results.is_file() else {}
    prev_doc = dict(doc)
    doc.update({k: out[k] for k in KEYS if out.get(k) is not None})  # a part skipped keeps its last measurement
    old = doc.get("meta", {}).get("interactive", {})
    doc.setdefault("meta", {})["interactive"] = {k: out.get(k) for k in ("model", "machine", "date", "load_before",
                                                                          "load_after", "command", "engine",
                                                                          "warm_start")}
    for part, key in (("shared_job_count", "shared_job_count_run"), ("concurrent8_new_point_p95_s", "concurrent8_run"),
                      ("ui_longest_rerun_s", "walk_run"), ("tour_longest_rerun_s", "tour_run")):
        if out.get(part) is None and old.get(key):  # ... and says which run that was
            doc["meta"]["interactive"][key] = old[key]
        elif out.get(part) is not None:
            doc["meta"]["interactive"][key] = {k: out.get(k) for k in ("date", "command", "load_before",
                                                                       "browser_nice", "browser_renice", "engine")}
    # the run this one replaces as the headline joins the table of earlier runs (the report draws it)
    hist_keys = [k for k in KEYS if k != "shared_job_count"]  # the walk's and the 8 sessions' figures
    history = list(old.get("history") or [])
    if old.get("date") and not any(h.get("date") == old["date"] for h in history):
        prev = {k: prev_doc.get(k) for k in hist_keys}
        prev["concurrent8_new_point_median_s"] = (old.get("details") or {}).get("concurrent8_new_point_median_s")
        history.append({"date": old["date"], **prev, "note": old.get("note", "")})
    doc["meta"]["interactive"]["history"] = sorted(history, key=lambda h: h.get("date") or "")
    if args.note:
        doc["meta"]["interactive"]["note"] = args.note
    old_details = old.get("details") or {}
    doc["meta"]["interactive"]["details"] = {
        k: out[k] if out.get(k) is not None else old_details.get(k)
        for k in ("walk", "page_runs", "attribution_s", "attribution_pre_estimate_s", "attribution_panel_estimate",
                  "shared_jobs_run", "concurrent8_new_point_s", "concurrent8_new_point_median_s",
                  "concurrent8_coarse_point_s", "concurrent8_coarse_point_p95_s", "concurrent8_coarse_point_missing",
                  "concurrent8_examples", "default_export_prepare_s", "tour_runs", "tour_ready_s", "tour_warm_wait_s",
                  "concurrent8_preempted_restarts", "concurrent8_cpu_cores")}
    from tp_core.paths import atomic_write_text

    atomic_write_text(results, json.dumps(doc, indent=1))  # never a half-written results.json
    for k in KEYS:
        print(f"{k:32s} {out.get(k)}")
    print("walk:", {k: round(v, 2) for k, v in out.get("walk", {}).items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
