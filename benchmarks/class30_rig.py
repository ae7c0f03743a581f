"""What the class benchmark's own browsers cost: one student's walk of benchmarks/class30.py, alone, with the
server's caches warm, and the CPU seconds each of its page runs took in Chromium and in the app server's process.
From them, the lowest p95s that 30 students' page runs and new points could have on this machine, with no job
waiting and no other work on it.

Why: class30.py runs its 30 browsers on the server's own cores (a real class brings 30 machines). When the class
moves the slider together, the server must run each session's script and every browser must process the answer
before that page run ends on its clock: N runs that each need c CPU seconds, started within s seconds on C cores,
cannot all be done sooner than the work allows (the (i+1)-th no sooner than (i+1) c / C - s after its own start).
Where those bounds exceed the goals (2 s, 15 s), the class's browser-clock figures cannot meet them on this machine.

    python benchmarks/class30_rig.py [--quick] [--sessions 30] [--spread 3] [--moves 2] [--results FILE]

The student walks twice: the first walk computes what the server computes for a class anyway (tour, Prune page,
its points); the second, timed, walk is all drawing. A page run's CPU seconds are those of every Chromium process
of this benchmark and of the app server's process (not its job workers) from just before its action to the run's
end. The walk's page runs are the class's: tour Next, open Prune, a slider move (opening the app is apart: not a
page run). The bound takes the cheapest slider run measured.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from class30 import OFFLINE, QUICK, fresh_home, p95, start_serve, wait_warm  # noqa: E402
from class30_session import Student  # noqa: E402
from ui_support import ARGS, CHROMIUM, stop_process  # noqa: E402 (tests/ is on the path: class30 puts it there)

ROOT = HERE.parent
PAGE_RUN_KINDS = ("tour Next", "open Prune", "slider")  # config_summary's page runs (class30.py)
POINTS = [47, 53, 58]  # the solo walk's slider moves (no curve point, as class30's own points)


SERVER_PID: list[int] = []  # the app server's process (`serve`), once started


def run_cpu() -> float:
    """User + system CPU seconds of every Chromium process below this benchmark (browser, GPU, renderers) and of the
    app server's own process (its script runs; not the job workers below it): the work a page run needs done."""
    import psutil

    procs = [p for p in psutil.Process(os.getpid()).children(recursive=True) if _is_chromium(p)]
    procs += [psutil.Process(pid) for pid in SERVER_PID if psutil.pid_exists(pid)]
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _is_chromium(proc) -> bool:
    import psutil

    try:
        return "chrom" in (proc.name() or "").lower()
    except psutil.Error:
        return False


class MeteredStudent(Student):
    """A Student whose page runs carry the browsers' CPU seconds from just before the action to the run's end (a
    record of another kind: since the record before)."""

    async def open(self) -> None:
        await super().open()
        self._cpu = run_cpu()

    async def page_run(self, kind: str, action) -> None:
        async def metered():
            self._cpu = run_cpu()  # leftovers of the step before (its drawing, idle polls) are not this run's
            await action()
        await super().page_run(kind, metered)

    def _record(self, kind, seconds, error=None, **extra) -> None:
        now = run_cpu()
        super()._record(kind, seconds, error, cpu_s=round(now - self._cpu, 3), **extra)
        self._cpu = now


def moment_bounds(cpu_s: float, sessions: int, cores: int, spread_s: float) -> list[float]:
    """Lower bounds of the page-run times of `sessions` students who each start one needing `cpu_s` browser CPU
    seconds within `spread_s` of each other, on `cores` cores: by t seconds after the last start at most cores x
    (t + spread_s) CPU seconds are done, so the (i+1)-th run to end ends no sooner than (i+1) cpu_s / cores -
    spread_s after its own start (and never sooner than cpu_s / 1 core: a renderer runs a page on one thread)."""
    return [max(0.0, (i + 1) * cpu_s / cores - spread_s) for i in range(sessions)]


def class_bounds(slider_cpu_s: float, sessions: int, cores: int, spread_s: float, moves: int,
                 other_runs: int) -> dict:
    """The least p95s the class's browser clock allows, if the server answered at once: its `moves` slider moments
    (every student within `spread_s`) bounded by `moment_bounds`, its `other_runs` page runs per student (tour Next,
    open Prune: not synchronised, bounded by 0). Page runs pool both, as class30's headline does; a new point
    includes its slider page run."""
    slider = [b for _ in range(moves) for b in moment_bounds(slider_cpu_s, sessions, cores, spread_s)]
    return {"page_run_p95_s": round(p95(slider + [0.0] * (other_runs * sessions)), 2),
            "new_point_p95_s": round(p95(slider), 2)}


async def walk(url: str, seed: int, targets: list[int], n_full: int, read_s: float) -> MeteredStudent:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        student = MeteredStudent(browser, url, f"solo{seed}", 300.0, seed=seed)
        await student.open()
        try:
            await student.tour(read_s)
            await student.prune()
            for i, target in enumerate(targets):
                await student.move(f"own {i}", target, 0.0, n_full)
        finally:
            await student.close()
            await browser.close()
    return student


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick demo model with small settings")
    ap.add_argument("--sessions", type=int, default=30, help="the class size the bound is for")
    ap.add_argument("--spread", type=float, default=3.0, help="seconds within which the class moves the slider")
    ap.add_argument("--moves", type=int, default=2, help="slider moments per student (class30.py --own 1: the "
                                                         "shared point and one own point)")
    ap.add_argument("--results", default=None, help="results.json for `class30_rig` (default: docs/results.json "
                                                    "for the full demo, none with --quick; '' for none)")
    args = ap.parse_args(argv)
    settings = {"TP_APP_MODEL": "demo-quick" if args.quick else "demo", **(QUICK if args.quick else {})}
    from tp_core.data import load_split
    from tp_core.engine import Engine
    from tp_core.settings import app_settings

    app = app_settings(settings)
    n_full = len(load_split("sst2", "validation", limit=app.eval_limit))
    home = fresh_home(settings["TP_APP_MODEL"])
    env = {**{k: v for k, v in os.environ.items() if k != "TP_SCHEDULER"}, **OFFLINE, **settings,
           "TP_HOME": str(home), "TP_EXPORTS_DIR": str(home / "exports")}
    t0 = time.time()
    url, serve = start_serve(env, home, settings["TP_APP_MODEL"])
    SERVER_PID.append(serve.pid)
    try:
        asyncio.run(walk(url, 0, POINTS, n_full, 0.2))  # computes what the class computes too
        # the timed walk starts once the scheduler (in the server's process) has nothing left: the warm start's
        # jobs would add their events to the server's CPU seconds
        observer = Engine(address=re.search(r"(tcp://[\d.]+:\d+)", (home / "serve.log").read_text())[1])
        try:
            warm_s, warm_done = wait_warm(observer.client, 1800.0)
        finally:
            observer.close()
        timed = asyncio.run(walk(url, 1, POINTS, n_full, 0.2))  # the same points: drawing only
    finally:
        stop_process(serve, 30)
        shutil.rmtree(home, ignore_errors=True)
    if timed.broken:
        raise SystemExit(f"the timed walk broke: {timed.broken}")
    runs = [{"kind": r["kind"], "cpu_s": r["cpu_s"], "seconds": r["seconds"]} for r in timed.records
            if r["kind"].startswith(PAGE_RUN_KINDS)]
    slider_cpu = min(r["cpu_s"] for r in runs if r["kind"].startswith("slider"))
    others = sum(not r["kind"].startswith("slider") for r in runs)  # tour Next x 4, open Prune
    cores = os.cpu_count() or 1
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": ("benchmarks/class30_rig.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip(),
           "model": settings["TP_APP_MODEL"], "wall_s": round(time.time() - t0, 1), "cores": cores,
           "scheduler_idle_after_s": warm_s, "scheduler_idle": warm_done,
           "sessions": args.sessions, "spread_s": args.spread, "moves": args.moves,
           "opening_cpu_s": round(sum(r["cpu_s"] for r in timed.records
                                      if r["kind"] in ("open the tour", "tour step 1 neuron shown")), 2),
           "page_run_cpu_s_median": sorted(r["cpu_s"] for r in runs)[len(runs) // 2], "slider_cpu_s_min": slider_cpu,
           "runs": runs, "bounds": class_bounds(slider_cpu, args.sessions, cores, args.spread, args.moves, others)}
    print(json.dumps(out, indent=1))
    results = args.results if args.results is not None else ("" if args.quick else str(ROOT / "docs/results.json"))
    if results:
        from tp_core.paths import atomic_write_text

        doc = json.loads(Path(results).read_text()) if Path(results).is_file() else {}
        doc["class30_rig"] = out
        atomic_write_text(Path(results), json.dumps(doc, indent=1))
        print(f"wrote class30_rig into {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
