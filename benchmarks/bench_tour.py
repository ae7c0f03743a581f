"""The guided tour's page runs in a real browser, for benchmarks/bench_interactive.py (`tour_longest_rerun_s`).

Once the server's warm start is done (`wait_cluster_idle`: its Dask cluster has nothing to run), a fresh session
opens the Tour page and walks it forward with Next (moving step 1's step-count slider on the way), each step until
its content shows (the jobs it asked for landed), then back again with everything computed. Every script run of the
page (and of its progress fragments) is timed in the page itself, from the run's start to the page being idle, as
bench_interactive's walk does; `tour_longest_rerun_s` is the longest of them (goal < 1 s).
"""
from __future__ import annotations

import time

STEPS = 5
# what each step shows once its jobs landed (text in the main area)
READY = {1: "The library's ig score", 2: "Open the Heatmaps page", 3: "Dense: ", 4: "vs masks only",
         5: "dense float32 is"}
READY_JS = ("([n, t]) => { const m = document.querySelector('[data-testid=stMain]'); if (!m) return false;"
            " const h = [...m.querySelectorAll('h3')].some(e => e.textContent.startsWith(n + ' · '));"
            " const idle = document.querySelector('[data-testid=stApp][data-test-script-state=notRunning]');"
            " return h && !!idle && m.textContent.includes(t); }")
BUSY_STATES = ("released", "waiting", "queued", "no-worker", "processing")


def cluster_busy(client) -> int:
    """How many tasks the Dask scheduler still has to run (waiting, queued or processing)."""
    def count(dask_scheduler=None) -> int:
        return sum(1 for ts in dask_scheduler.tasks.values() if ts.state in BUSY_STATES)

    return client.run_on_scheduler(count)


def wait_cluster_idle(client, limit: float, quiet: float = 5.0) -> float | None:
    """Seconds until the cluster had nothing to run for `quiet` seconds in a row (the warm start is done), or None
    when it was still busy after `limit` seconds."""
    t0, since = time.time(), None
    while time.time() - t0 < limit:
        if cluster_busy(client):
            since = None
        elif since is None:
            since = time.time()
        elif time.time() - since >= quiet:
            return since - t0
        time.sleep(0.5)
    return None


def _ready(page, n: int, limit: float) -> float:
    """Seconds until step `n` shows its content with no script run in progress."""
    t0 = time.time()
    page.wait_for_function(READY_JS, arg=[n, READY[n]], timeout=limit * 1000, polling=100)
    return time.time() - t0


def _press(page, button: str, n: int, limit: float) -> float:
    """Press the tour's Back or Next (a press that lands during a run can be lost: press again); seconds from the
    first press until step `n` is ready."""
    t0 = time.time()
    for attempt in range(3):
        page.locator(f".st-key-tour_{button} button").click()
        try:
            _ready(page, n, limit if attempt == 2 else 30)
            return time.time() - t0
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: the press was lost, or the jobs still run
            if page.locator('[data-testid="stMain"] h3', has_text=f"{n} · ").count():
                _ready(page, n, limit)
                return time.time() - t0
    raise TimeoutError(f"the tour never showed step {n}")


def walk_tour(browser, url: str, run_watch: str, shot=None, limit: float = 1800) -> dict:
    """Walk the tour forward and back in a fresh browser context (see the module's docstring); returns
    `tour_longest_rerun_s`, the runs [seconds, pass, step] and each step's seconds until ready."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.add_init_script(run_watch)
    page = ctx.new_page()
    runs, ready = [], {}

    def take(label: str, n: int) -> None:
        runs.extend([round(r[0], 3), label, n] for r in page.evaluate("() => window.__runs.splice(0)"))

    try:
        t0 = time.time()
        page.goto(f"{url}/Tour", timeout=600_000)
        _ready(page, 1, limit)
        ready["forward 1"] = time.time() - t0
        steps = page.locator('[data-testid="stSlider"]', has_text="Steps")
        steps.get_by_role("slider").focus()
        page.keyboard.press("ArrowLeft")  # the step-count slider: the chart and the estimate redrawn
        page.get_by_text("Estimate with 2 steps").wait_for(timeout=limit * 1000)
        _ready(page, 1, limit)
        take("forward", 1)
        for n in range(2, STEPS + 1):
            ready[f"forward {n}"] = _press(page, "next", n, limit)
            take("forward", n)
            if shot:
                shot(page, f"tour-{n}")
        for n in range(STEPS - 1, 0, -1):  # everything computed: the page runs alone
            ready[f"back {n}"] = _press(page, "back", n, limit)
            take("back", n)
    finally:
        ctx.close()
    return {"tour_longest_rerun_s": max(r[0] for r in runs), "tour_runs": runs,
            "tour_ready_s": {k: round(v, 2) for k, v in ready.items()}}
