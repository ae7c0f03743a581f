"""Load test: N concurrent browser sessions (headless Debian Chromium, Playwright) against one `streamlit run` server.

Each session is a user on the Prune page: open the Model page, pick a task, open Prune, then move the FFN slider to
a curve grid point (cached), a new point (one real masked evaluation), another grid point, another new point and
back to the first new point (memoised), reading the shown metric after each move. Sessions alternate between the
model's tasks; every session gets its own new points, so a "new" point is really evaluated by that session.

The slider moves with arrow keys (0.01 per press), as a keyboard user would: a press that lands while a run is
still going restarts it with the newer value, so a long move can evaluate a few in-between points too (each
record notes its presses). A request is timed from the browser action (click or key presses) until the page shows
the result: the sidebar echoes the new setting, the script run is over (no "Running..." widget) and no element is
stale. First a warm-up session computes what is shared (attribution scores, curves; instant when cached), then the
same script runs for 1 session alone, then for N sessions at once. Prints median / p90 / max per request type and the
number of errors for both, and writes everything to benchmarks/out/load_test.json (git-ignored).

    .venv/bin/python benchmarks/load_test.py --quick              # quick demo model, small settings
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:8501 --sessions 8

Timings depend on the machine and on what else runs on it; the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, UTC
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from ui_support import ARGS, CHROMIUM, IDLE_SELECTOR, free_port, healthy, stop_process  # noqa: E402 (tests/ on the path first)

OUT = ROOT / "benchmarks" / "out" / "load_test.json"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TIMEOUT_MS = int(os.environ.get("LOAD_TEST_TIMEOUT_MS", "600000"))
# no script run in progress (the app root's script-run state, as tests/ui_support.py) and no stale element
_IDLE = (f"!!document.querySelector('{IDLE_SELECTOR}')"
         " && !document.querySelector('[data-testid=stElementContainer][data-stale=true]')")
DONE_JS = """(want) => {
  const side = document.querySelector('[data-testid=stSidebar]');
  if (!side || !side.innerText.replace(/\\s+/g, ' ').includes(want)) return false;
  if (!(IDLE)) return false;
  return !!document.querySelector('[data-testid=stMetric]');
}""".replace("IDLE", _IDLE)
IDLE_JS = "() => " + _IDLE


def start_server(env_extra: dict) -> tuple[str, subprocess.Popen, Path]:
    port = free_port()
    log = ROOT / "benchmarks" / "out" / "load_test_streamlit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env={**os.environ, **OFFLINE, **env_extra}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if healthy(url):
            return url, proc, log
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"streamlit did not start; see {log}")


class Points:
    """Hands out FFN sparsities (whole percent) nobody has visited yet: not on the grid, not the start value."""

    def __init__(self, grid: list[float], start: float = 0.5):
        self.used = {round(g, 2) for g in grid} | {round(start, 2)}
        self.next = 0.11

    def new(self) -> float:
        while round(self.next, 2) in self.used:
            self.next += 0.01
        v = round(self.next, 2)
        if v > 0.95:
            raise SystemExit("ran out of unvisited slider points: use fewer sessions")
        self.used.add(v)
        self.next += 0.01
        return v


class Session:
    def __init__(self, browser, url: str, task: str, plan: list[tuple[str, float]], label: str):
        self.browser, self.url, self.task, self.plan, self.label = browser, url, task, plan, label
        self.records: list[dict] = []
        self.ffn = 0.5

    async def timed(self, kind: str, action, done, detail: str = "") -> None:
        t0 = time.perf_counter()
        error = None
        try:
            await action()
            await done()
            err = self.page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
            if await err.count():
                error = (await err.first.inner_text())[:200]
        except Exception as exc:  # noqa: BLE001 - a failed request is counted, the run goes on
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        self.records.append({"session": self.label, "task": self.task, "kind": kind, "detail": detail,
                             "seconds": round(time.perf_counter() - t0, 4), "error": error})

    async def idle(self) -> None:
        await self.page.wait_for_timeout(300)
        await self.page.wait_for_function(IDLE_JS, timeout=TIMEOUT_MS)

    async def run(self) -> list[dict]:
        ctx = await self.browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = page = await ctx.new_page()
        try:
            await self.timed("open Model page", lambda: page.goto(self.url + "/Model", timeout=TIMEOUT_MS),
                             lambda: self._model_ready())
            box = page.locator('[data-testid="stSelectbox"]', has_text="Current task").first

            async def pick():
                await box.click()
                await page.get_by_role("option", name=self.task, exact=True).click()

            shown = (await box.inner_text()).strip().splitlines()[-1].strip()  # label, then the value
            if shown != self.task:  # choosing the task already shown reruns nothing: nothing to time
                # the Model page's sidebar shows no task on its first run, so wait for the run to end instead
                await self.timed("pick task", pick, self.idle)
            await self.timed("open Prune page",
                             lambda: page.locator('[data-testid="stSidebarNav"] a', has_text="Prune").first.click(),
                             lambda: self._prune_ready())
            for kind, value in self.plan:
                presses = abs(round((value - self.ffn) / 0.01))
                await self.timed(kind, lambda v=value: self._move(v), lambda v=value: page.wait_for_function(
                    DONE_JS, arg=f"FFN {v:.0%} ·", timeout=TIMEOUT_MS), detail=f"FFN {value:.0%}, {presses} presses")
                if self.records[-1]["error"] is None:
                    self.records[-1]["metric"] = await self._metric()
        finally:
            await ctx.close()
        return self.records

    async def _model_ready(self):
        await self.page.get_by_text("Tasks and dense metrics").wait_for(timeout=TIMEOUT_MS)
        await self.idle()

    async def _prune_ready(self):
        await self.page.get_by_text("Kept parameters", exact=True).wait_for(timeout=TIMEOUT_MS)
        await self.idle()
        await self.page.wait_for_function(DONE_JS, arg=f"FFN {self.ffn:.0%} ·", timeout=TIMEOUT_MS)

    async def _move(self, value: float) -> None:
        slider = self.page.locator('[data-testid="stSlider"]').first.get_by_role("slider")
        await slider.focus()
        steps = round((value - self.ffn) / 0.01)
        key = "ArrowRight" if steps > 0 else "ArrowLeft"
        for _ in range(abs(steps)):  # a keyboard user: presses that land during a run restart it (Streamlit)
            await self.page.keyboard.press(key)
        self.ffn = value

    async def _metric(self) -> str:
        box = self.page.locator('[data-testid="stMetric"]', has_text="(pruned)").first
        return await box.locator('[data-testid="stMetricValue"]').inner_text()


def plan_for(points: Points, grid: list[float]) -> list[tuple[str, float]]:
    inner = [g for g in grid if 0 < g <= 0.95] or [0.0]
    a, b = inner[0], inner[-1]
    n1, n2 = points.new(), points.new()
    return [("slider -> grid point (cached)", a), ("slider -> new point (evaluates)", n1),
            ("slider -> grid point (cached)", b), ("slider -> new point (evaluates)", n2),
            ("slider -> point visited before", n1)]


async def run_phase(url: str, tasks: list[str], n: int, points: Points, grid: list[float], label: str) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            sessions = [Session(browser, url, tasks[i % len(tasks)], plan_for(points, grid), f"{label}-{i}")
                        for i in range(n)]
            t0 = time.perf_counter()
            results = await asyncio.gather(*(s.run() for s in sessions))
            wall = time.perf_counter() - t0
        finally:
            await browser.close()
    return {"sessions": n, "wall_seconds": round(wall, 2), "records": [r for rs in results for r in rs]}


def summarise(phase: dict) -> dict:
    kinds: dict[str, list] = {}
    for r in phase["records"]:
        kinds.setdefault(r["kind"], []).append(r)
    out = {}
    for kind, rs in kinds.items():
        ok = [r["seconds"] for r in rs if r["error"] is None]
        out[kind] = {"n": len(rs), "errors": sum(r["error"] is not None for r in rs),
                     "median_s": round(float(np.median(ok)), 3) if ok else None,
                     "p90_s": round(float(np.percentile(ok, 90)), 3) if ok else None,
                     "max_s": round(float(max(ok)), 3) if ok else None}
    return out


def print_table(name: str, phase: dict, summary: dict) -> None:
    print(f"\n{name}: {phase['sessions']} session(s), wall {phase['wall_seconds']:.1f} s")
    print(f"{'request':<36} {'n':>3} {'median s':>9} {'p90 s':>8} {'max s':>8} {'errors':>6}")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for kind, s in summary.items():
        print(f"{kind:<36} {s['n']:>3} {fmt(s['median_s']):>9} {fmt(s['p90_s']):>8} {fmt(s['max_s']):>8} "
              f"{s['errors']:>6}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="attach to a running server instead of starting one (its settings apply)")
    ap.add_argument("--sessions", type=int, default=5, help="concurrent browser sessions (default 5)")
    ap.add_argument("--quick", action="store_true", help="the quick demo model with small settings")
    ap.add_argument("--eval-limit", type=int, help="TP_APP_EVAL_LIMIT for a started server")
    ap.add_argument("--grid", help="TP_APP_GRID for a started server (comma-separated FFN sparsities)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit("Debian chromium is not installed (apt-get install chromium; never `playwright install`)")

    settings = {"TP_APP_MODEL": "demo-quick" if args.quick else os.environ.get("TP_APP_MODEL", "demo")}
    if args.quick:
        settings.update(TP_APP_EVAL_LIMIT="200", TP_APP_GRID="0,0.3,0.6,0.9", TP_APP_ATTR_SAMPLES="16",
                        TP_APP_ATTR_STEPS="4")
    if args.eval_limit:
        settings["TP_APP_EVAL_LIMIT"] = str(args.eval_limit)
    if args.grid:
        settings["TP_APP_GRID"] = args.grid
    from tp_core.settings import APP_GRID

    grid = [float(x) for x in settings.get("TP_APP_GRID", os.environ.get(
        "TP_APP_GRID", ",".join(map(str, APP_GRID)))).split(",")]

    sys.path.insert(0, str(ROOT))
    from tp_core.data import list_tasks
    from tp_core.model import load_model

    proc = log = None
    if args.url:
        url = args.url.rstrip("/")
        if not healthy(url):
            raise SystemExit(f"no healthy streamlit server at {url}")
    else:
        if settings["TP_APP_MODEL"] in ("demo", "demo-quick"):
            from tp_core.demo import build_demo

            build_demo(quick=settings["TP_APP_MODEL"] == "demo-quick")
        url, proc, log = start_server(settings)
    try:
        model = load_model(settings["TP_APP_MODEL"])
        bundle = {t.name for t in list_tasks()}
        tasks = [t for t in model.tasks if t in bundle]
        del model
        points = Points(grid)
        load_before = os.getloadavg()
        print(f"server {url}; model {settings['TP_APP_MODEL']}; tasks {', '.join(tasks)}; "
              f"load average {load_before[0]:.2f}")
        warm = asyncio.run(run_phase(url, tasks, len(tasks), points, grid, "warmup"))
        print(f"warm-up ({len(tasks)} sessions, computes scores and curves once when not cached): "
              f"{warm['wall_seconds']:.1f} s")
        alone = asyncio.run(run_phase(url, tasks, 1, points, grid, "alone"))
        many = asyncio.run(run_phase(url, tasks, args.sessions, points, grid, "concurrent"))
        load_after = os.getloadavg()
        server_ok = healthy(url)
    finally:
        if proc is not None:
            stop_process(proc, 10)
    s_alone, s_many = summarise(alone), summarise(many)
    print_table("alone", alone, s_alone)
    print_table("concurrent", many, s_many)
    errors = [r for ph in (warm, alone, many) for r in ph["records"] if r["error"]]
    for r in errors[:10]:
        print(f"error in {r['session']} ({r['kind']}): {r['error']}")
    crashed = False
    if log is not None:
        crashed = "Traceback" in log.read_text(errors="replace")
        if crashed:
            print(f"the server log has a traceback: {log}")
    print(f"server healthy afterwards: {server_ok}")
    result = {
        "meta": {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                 "command": " ".join([Path(sys.executable).name, *sys.argv]),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
                 "url": url, "started_server": proc is not None, "settings": settings, "grid": grid,
                 "tasks": tasks, "sessions": args.sessions, "load_average_before": load_before,
                 "load_average_after": load_after, "server_healthy_after": server_ok,
                 "server_log_traceback": crashed},
        "summary": {"alone": s_alone, "concurrent": s_many},
        "warmup": warm, "alone": alone, "concurrent": many,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 1 if errors or crashed or not server_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
