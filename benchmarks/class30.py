"""A class on one server: N students (default 30) in real Chromium (one browser, a context each) against one
`python -m tp_core serve`, as `make run` starts it (warm start on), in two configurations side by side:

* `embedded`     the server's own embedded Dask cluster (one worker process, a thread per core);
* `two-workers`  the same app with `TP_SCHEDULER` naming a separate `dask scheduler` that has a worker process set up
                 like the embedded one plus a second worker process: the way a school adds a machine (here both
                 workers run on this machine, so the second one adds processes, not cores).

Each configuration starts from cold caches (a fresh TP_HOME with the built model linked in) and waits for the warm
start to finish (at most --warm-wait seconds). Then the class: every student opens the guided tour and walks its five
steps (waiting for each step's content and reading it a moment), opens the Prune page, and when the whole class is
there, everyone presses the FFN slider within --spread seconds of each other: first to the same new sparsity (one
point the class shares: the scheduler's start events show how often each of its jobs ran), then --own rounds to a
sparsity of the student's own. Timed (benchmarks/class30_session.py): every page run (action -> the end of the script
run it started) and every new point (key press -> the slider's first estimate shown; and -> the point on all
examples). Results exact per session: every point a student saw on all examples is compared with the metric tp_core
computes directly (fresh attribution scores, masks, `evaluate_masked`; no engine, no cache).

  .venv/bin/python benchmarks/class30.py                        # the full demo, 30 students, both configurations
  .venv/bin/python benchmarks/class30.py --quick --sessions 3   # a small check on the quick demo

Writes benchmarks/out/class30.json; the full demo's run also writes `class30_page_run_p95_s` and
`class30_new_point_p95_s` (the embedded cluster's; the two-worker figures beside them under `class30`) into
docs/results.json (`--results` names another file, `--results ''` none).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from class30_session import Rendezvous, Student  # noqa: E402 (benchmarks/ on the path: this script's folder)
from ui_support import ARGS, CHROMIUM, free_port, healthy, stop_process  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "class30.json"
CONFIGS = ("embedded", "two-workers")
# further configurations (not run by default): the embedded cluster with other app settings
CONFIG_ENV = {"calm": {"TP_APP_REDRAWS_PER_S": "1"}}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# the embedded cluster's Dask settings (engine/client.py sets them in-process), for separately started processes
DASK_ENV = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0", "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED":
            "False", "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s",
            "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s"}
QUICK = {"TP_APP_EVAL_LIMIT": "200", "TP_APP_GRID": "0,0.3,0.6,0.9", "TP_APP_ATTR_SAMPLES": "16",
         "TP_APP_ATTR_STEPS": "4", "TP_APP_RECOVER_SAMPLES": "128"}
SHARED_PCT = 51  # the sparsity (whole percent) the whole class moves to first: one press from the default 50 %


# ----- pure helpers ------------------------------------------------------------------------------------------------
def p95(values: list[float]) -> float | None:
    """The 95th percentile as bench_interactive.py takes it (the sorted values' element at int(0.95 n)), so the
    class's figure reads like the 8-session one; None for no values."""
    v = sorted(values)
    return v[min(len(v) - 1, int(0.95 * len(v)))] if v else None


def summary(values: list[float]) -> dict:
    """n, median, p95 and max of `values` (seconds), rounded to ms; the figures are None for no values."""
    v = sorted(values)
    if not v:
        return {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    mid = len(v) // 2
    median = v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
    return {"n": len(v), "p50_s": round(median, 3), "p95_s": round(p95(v), 3), "max_s": round(v[-1], 3)}


def own_points(sessions: int, rounds: int, avoid: set[int], low: int = 11, high: int = 95) -> list[list[int]]:
    """For each session, `rounds` FFN sparsities (whole percent) nobody else visits and no curve has (`avoid`: the
    grid, the start value, the shared point): every own point is really evaluated by its session."""
    free = [p for p in range(low, high + 1) if p not in avoid]
    if len(free) < sessions * rounds:
        raise SystemExit(f"only {len(free)} free slider points for {sessions} x {rounds}: use fewer sessions or rounds")
    # spread each round over the range, so a round's presses are of similar length for everyone
    return [[free[r * sessions + s] for r in range(rounds)] for s in range(sessions)]


def exactness(points: list[dict], direct: dict) -> dict:
    """Compare what each session showed with tp_core's direct metric at the same (task, ffn_pct, n), at the four
    decimals the readout shows. Returns the number checked, those exact, and every mismatch."""
    bad = []
    for p in points:
        want = direct.get((p["task"], p["ffn_pct"], p["n"]))
        if want is None or f"{want:.4f}" != p["shown"]:
            bad.append({**p, "direct": None if want is None else round(want, 6)})
    return {"checked": len(points), "exact": len(points) - len(bad), "mismatches": bad}


def by_kind(records: list[dict]) -> dict:
    """summary() of the records' seconds per kind, with each kind's error count."""
    kinds: dict[str, list] = {}
    for r in records:
        kinds.setdefault(r["kind"], []).append(r)
    return {k: {**summary([r["seconds"] for r in rs if r["seconds"] is not None and not r["error"]]),
                "errors": sum(bool(r["error"]) for r in rs)} for k, rs in kinds.items()}


# ----- servers -------------------------------------------------------------------------------------------------------
def fresh_home(model: str) -> Path:
    """A TP_HOME with the built demo model linked in and every cache cold."""
    from tp_core.paths import demo_path

    src = demo_path(model == "demo-quick")
    if not src.is_dir():
        raise SystemExit(f"{model} is not built: python -m tp_core build-demo{' --quick' * (model == 'demo-quick')}")
    home = Path(tempfile.mkdtemp(prefix="tp-class30-"))
    (home / "models").mkdir()
    os.symlink(src, home / "models" / src.name)
    return home


def start_cluster(env: dict, home: Path, threads: int) -> tuple[str, list]:
    """A `dask scheduler` and two `dask worker` processes (each like the embedded cluster's one: `threads` threads,
    below the app in CPU priority, one background slot for the warm start);
    returns the scheduler's address and the processes (scheduler first)."""
    sched_file = home / "scheduler.json"
    env = {**env, **DASK_ENV, "PYTHONPATH": str(ROOT), "TP_WORKER_NICE": env.get("TP_WORKER_NICE", "10")}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)], env=env,
                              cwd=home, stdout=open(home / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    for _ in range(240):
        if sched_file.is_file() and sched_file.stat().st_size:
            break
        time.sleep(0.5)
    address = json.loads(sched_file.read_text())["address"]
    for name in ("embedded-style", "second-worker"):
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                                       str(threads), "--nworkers", "1", "--no-dashboard", "--name", name,
                                       "--resources", "background=1"], env=env,
                                      cwd=home, stdout=open(home / f"{name}.log", "w"), stderr=subprocess.STDOUT))
    return address, procs


def start_serve(env: dict, home: Path, model: str) -> tuple[str, subprocess.Popen]:
    """`python -m tp_core serve` (warm start on, as `make run`); returns its URL once the app has its model."""
    port = free_port()
    log = home / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "tp_core", "serve", "--port", str(port), "--model", model],
                            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if healthy(url) and re.search(r"model preloaded|preload skipped", log.read_text()):
            return url, proc
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop_process(proc, 10)
    raise SystemExit(f"the server did not start; see {log}")


def scheduler_busy(client) -> int:
    """Tasks the scheduler still has to run (queued, waiting or processing)."""
    return client.run_on_scheduler(lambda dask_scheduler: sum(
        ts.state in ("queued", "waiting", "processing", "no-worker") for ts in dask_scheduler.tasks.values()))


def wait_warm(client, limit_s: float) -> tuple[float, bool]:
    """Seconds until the scheduler has nothing left to run (the warm start done), and whether it got there."""
    t0, quiet = time.time(), 0
    while time.time() - t0 < limit_s:
        quiet = quiet + 1 if scheduler_busy(client) == 0 else 0
        if quiet >= 3:
            return round(time.time() - t0, 1), True
        time.sleep(1.0)
    return round(time.time() - t0, 1), False


# ----- where the CPU went ------------------------------------------------------------------------------------------
CPU_GROUPS = ("app server", "job workers", "browsers", "benchmark", "other")


def cpu_seconds(server_pid: int) -> dict[int, tuple[str, float]]:
    """{pid: (group, user + system CPU seconds)} of every process now: the app server (`serve`), its job workers
    (the embedded cluster's processes below it, or separate `dask` processes), the browsers (Chromium), this benchmark
    (itself and Playwright's driver) and everything else on the machine."""
    import psutil

    me = os.getpid()
    below_server = set()
    try:
        below_server = {c.pid for c in psutil.Process(server_pid).children(recursive=True)}
    except psutil.Error:
        pass
    out = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "ppid"]):
        try:
            t = proc.cpu_times()
            cmd = " ".join(proc.info["cmdline"] or [])
            name = (proc.info["name"] or "").lower()
        except psutil.Error:
            continue
        if proc.pid == server_pid:
            group = "app server"
        elif proc.pid in below_server or "distributed.cli.dask" in cmd:
            group = "job workers"
        elif "chrom" in name or "chrom" in cmd.split(" ")[0].lower():
            group = "browsers"
        elif proc.pid == me or "playwright" in cmd or proc.info["ppid"] == me:
            group = "benchmark"
        else:
            group = "other"
        out[proc.pid] = (group, t.user + t.system)
    return out


def cpu_used(before: dict, after: dict, wall_s: float) -> dict:
    """CPU seconds per group between two `cpu_seconds` snapshots (a process new since `before` counts from 0), and
    each group's share of what the machine's cores could give in `wall_s`."""
    used = dict.fromkeys(CPU_GROUPS, 0.0)
    for pid, (group, sec) in after.items():
        used[group] += max(0.0, sec - (before.get(pid, (group, 0.0))[1]))
    cores = os.cpu_count() or 1
    return {"cores": cores, "wall_s": round(wall_s, 1),
            "seconds": {g: round(v, 1) for g, v in used.items()},
            "share_of_machine": {g: round(v / (wall_s * cores), 3) for g, v in used.items()}}


# ----- the class -----------------------------------------------------------------------------------------------------
def renice_browsers(nice: int) -> int:
    """Put this benchmark's Chromium processes at CPU priority `nice` (new renderers fork from its zygote and inherit
    it); returns how many were changed."""
    import psutil

    changed = 0
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "chrom" in (proc.name() or "").lower() and proc.nice() < nice:
                proc.nice(nice)
                changed += 1
        except psutil.Error:
            pass
    return changed


CGROUP = Path("/sys/fs/cgroup/cpu/tp-class30-browsers")  # cgroup v1's cpu controller, where the machine has one


def browser_cgroup(shares: int) -> Path | None:
    """A CPU cgroup whose processes together weigh `shares` (the root's tasks weigh 1024 at nice 0, 110 at nice
    10): the browsers then run on what the server and its workers leave, as on the students' own machines, however
    many renderer processes they start (each one at nice 19 would still weigh 15, and 30 of them outweigh a worker
    at nice 10). None where the machine has no writable cpu controller, or with `shares` 0."""
    if shares <= 0 or not CGROUP.parent.is_dir():
        return None
    try:
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "cpu.shares").write_text(str(shares))
    except OSError:
        return None
    return CGROUP


def move_browsers(group: Path) -> None:
    """Put this benchmark's Chromium processes into `group` (a process forked later starts there too)."""
    import psutil

    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "chrom" in (proc.name() or "").lower():
                (group / "cgroup.procs").write_text(str(proc.pid))
        except (psutil.Error, OSError):
            pass


async def keep_browsers_niced(nice: int, group: Path | None = None) -> None:
    """Every 2 s, renice any Chromium process started since (a GPU or utility process the browser adds later) and
    put it into the browsers' CPU cgroup."""
    while True:
        renice_browsers(nice)
        if group is not None:
            move_browsers(group)
        await asyncio.sleep(2.0)


async def class_run(url: str, args, plan: list[list[int]], n_full: int, observer, shots: Path | None,
                    server_pid: int | None = None) -> dict:
    """Every student walks the tour and opens Prune; then the class moves the slider together, first to the
    shared point, then to each student's own points. Returns the records, the points seen and the job counts."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        group, out_group = browser_cgroup(args.browser_shares), None
        nicer = (asyncio.create_task(keep_browsers_niced(args.browser_nice, group))
                 if args.browser_nice or group is not None else None)
        students = [Student(browser, url, f"s{i}", args.timeout, seed=i, shots=shots if i == 0 else None)
                    for i in range(args.sessions)]
        for s in students:
            await s.open()
        moments = [Rendezvous(len(students)) for _ in range(2 + len(plan[0]))]
        marks: dict = {}

        def starts() -> dict:
            with observer._lock:  # the client's event thread adds to it
                return dict(observer._starts)

        async def lesson(s: Student, own: list[int]) -> None:
            await asyncio.sleep(args.spread * s.rng.random())  # the class arrives within a few seconds
            await s.tour(args.read)
            await s.prune()
            marks.setdefault("shared", (await moments[0].wait(), starts()))
            await s.move("shared", SHARED_PCT, args.spread, n_full)
            marks.setdefault("shared_end", (await moments[1].wait(), starts()))
            for r, target in enumerate(own):
                await s.move("own", target, args.spread, n_full)
                await moments[2 + r].wait()

        t0 = time.time()
        cpu0 = cpu_seconds(server_pid) if server_pid else None
        cpu = None
        try:
            await asyncio.gather(*(lesson(s, own) for s, own in zip(students, plan)))
            if cpu0 is not None:  # before the browser contexts close (their processes' counts go with them)
                cpu = cpu_used(cpu0, cpu_seconds(server_pid), time.time() - t0)
        finally:
            if nicer is not None:
                nicer.cancel()
            for s in students:
                await s.close()
            await browser.close()
            if group is not None:
                out_group = args.browser_shares
                try:
                    group.rmdir()  # empty once the browsers have ended
                except OSError:
                    pass
    before, after = marks["shared"][1], marks["shared_end"][1]
    ran = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    return {"t0": t0, "t1": time.time(), "wall_s": round(time.time() - t0, 1),
            "records": [r for s in students for r in s.records],
            "points": [q for s in students for q in s.points], "broken": [s.broken for s in students if s.broken],
            "shared_jobs_run": len(ran), "shared_max_computations": max(ran.values()) if ran else None,
            "restarts": observer.restarts(), "cpu": cpu, "browser_shares": out_group}


def run_config(name: str, args, settings: dict, plan: list[list[int]], n_full: int) -> dict:
    """Start the server (and for `two-workers` its separate cluster), wait for the warm start, hold the class."""
    from tp_core.engine import Engine

    home = fresh_home(settings["TP_APP_MODEL"])
    env = {k: v for k, v in os.environ.items() if k != "TP_SCHEDULER"}
    env.update({**OFFLINE, **settings, **CONFIG_ENV.get(name, {}), "TP_HOME": str(home),
                "TP_EXPORTS_DIR": str(home / "exports"), "TP_APP_RUN_LOG": str(home / "runlog.jsonl")})
    procs, out = [], {"config": name, "home": str(home)}
    try:
        if name == "two-workers":
            from tp_core.engine import default_workers

            address, procs = start_cluster(env, home, default_workers()[1])
            env["TP_SCHEDULER"] = address
        url, serve = start_serve(env, home, settings["TP_APP_MODEL"])
        procs.append(serve)
        address = env.get("TP_SCHEDULER") or re.search(r"(tcp://[\d.]+:\d+)", (home / "serve.log").read_text())[1]
        observer = Engine(address=address)  # sees every job's start event on the scheduler
        try:
            layout = observer.workers()
            out["engine"] = {k: layout.get(k) for k in ("workers", "threads")}
            out["warm_start_s"], out["warm_start_done"] = wait_warm(observer.client, args.warm_wait)
            print(f"[{name}] {out['engine']}; warm start {out['warm_start_s']} s "
                  f"({'done' if out['warm_start_done'] else 'still running'})", flush=True)
            out["load_before"] = os.getloadavg()[0]
            out.update(asyncio.run(class_run(url, args, plan, n_full, observer,
                                              args.shots / name if args.shots else None, serve.pid)))
            out["load_after"] = os.getloadavg()[0]
            out["server_healthy_after"] = healthy(url)
        finally:
            observer.close()
    finally:
        for proc in procs[::-1]:  # the server first, then the workers, then the scheduler
            stop_process(proc, 30)
    if "t0" in out:
        moved = {f"At FFN {pct}%" for pct in [SHARED_PCT, *(p for own in plan for p in own)]}
        out["server"] = server_times(home / "runlog.jsonl", out["t0"], out["t1"], moved)
    log = (home / "serve.log").read_text(errors="replace")
    out["server_log_traceback"] = "Traceback" in log
    if not args.keep_home:
        shutil.rmtree(home, ignore_errors=True)
    return out


def server_times(log: Path, t0: float, t1: float, labels: set[str] | None = None) -> dict:
    """The server's own clock (TP_APP_RUN_LOG, tp_app/runlog.py) over the class [t0, t1]: every user request's page
    run (arrival -> the end of the whole run that answered it; each key press on the slider sends a request), every
    new point (the slider's last request -> the readout fragment or page run that drew "At FFN n%" first: the
    latest request of that session before the mark; only the `labels` the class moved to, not the page's start
    value), and the fragment runs (progress polls) with their durations."""
    if not log.is_file():
        return {}
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    runs = [x for x in lines if x["kind"] == "run"]
    page, requests = [], {}
    for r in runs:
        for q in r["requested"]:
            requests.setdefault(r["session"], []).append(q)
            if t0 <= q <= t1:
                page.append(r["ended"] - q)
    firsts: dict = {}
    for m in (x for x in lines if x["kind"] == "mark" and t0 <= x["t"] <= t1
              and (labels is None or x["label"] in labels)):
        firsts.setdefault((m["session"], m["label"]), m)
    points, engine, drawn = [], [], []
    for (session, _), m in firsts.items():
        before = [q for q in requests.get(session, []) if q <= m["t"]]
        if before:
            asked = max(before)
            points.append(m["t"] - asked)
            if m.get("finished") is not None:  # the engine's part (result ready; 0 when it was ready before the
                engine.append(max(0.0, m["finished"] - asked))  # request) and the drawing's (a page or fragment
                drawn.append(m["t"] - max(m["finished"], asked))  # run that the browser asks for)
    frags = [x["ended"] - x["started"] for x in lines
             if x["kind"] == "fragment" and x["started"] is not None and t0 <= x["ended"] <= t1]
    return {"page_run": summary(page), "new_point": summary(points), "new_point_engine": summary(engine),
            "new_point_drawn_after": summary(drawn), "fragment_run": summary(frags),
            "fragment_runs_per_s": round(len(frags) / max(t1 - t0, 1e-9), 2),
            "whole_runs": sum(t0 <= r["ended"] <= t1 for r in runs)}


def direct_metrics(settings: dict, wanted: set) -> dict:
    """tp_core's own metric at each (task, ffn_pct, n): the app's attribution settings scored afresh (no cache),
    global masks, `evaluate_masked` on the same seeded validation examples. No engine, no cached point."""
    from dataclasses import replace

    from tp_core.attribution import attribute
    from tp_core.data import load_split
    from tp_core.evaluation import evaluate_masked
    from tp_core.masks import PruneConfig, build_masks, units_for
    from tp_core.model import load_model
    from tp_core.policy import APP_ATTRIBUTION

    model = load_model(settings["TP_APP_MODEL"])
    cfg = replace(APP_ATTRIBUTION, samples=int(settings.get("TP_APP_ATTR_SAMPLES") or APP_ATTRIBUTION.samples),
                  steps=int(settings.get("TP_APP_ATTR_STEPS") or APP_ATTRIBUTION.steps))
    limit = int(settings["TP_APP_EVAL_LIMIT"])
    scores, out = {}, {}
    for task, pct, n in sorted(wanted):
        units = units_for(pct / 100, 0.0, cfg.units)
        if (task, units) not in scores:
            scores[task, units] = attribute(model, task, replace(cfg, units=units), use_cache=False)
        full = len(load_split(task, "validation", limit=limit))
        data = load_split(task, "validation", limit=limit if n == full else n, seed=0)
        masks = build_masks(scores[task, units], PruneConfig(pct / 100, 0.0, "global"), model.unit_shape())
        out[task, pct, n] = evaluate_masked(model, task, data, masks).metric
    return out


# ----- results -------------------------------------------------------------------------------------------------------
def config_summary(run: dict, check: dict) -> dict:
    """A configuration's headline figures: page runs, new points (first estimate; and on all examples), exactness."""
    records = run.get("records", [])
    # page runs: what a click or key press in the app started; opening the app (the browser loads Streamlit's
    # frontend first) is kept apart as the first load
    page_runs = [r["seconds"] for r in records if r["seconds"] is not None and not r["error"]
                 and not r["kind"].startswith(("new point", "tour step", "Prune readout", "open the tour"))]
    loads = [r["seconds"] for r in records if r["kind"] == "open the tour" and r["seconds"] is not None]
    firsts = [r["seconds"] for r in records if r["kind"].startswith("new point") and r["seconds"] is not None]
    finals = [p["final_s"] for p in run.get("points", [])]
    return {"page_run": summary(page_runs), "first_load": summary(loads), "new_point": summary(firsts),
            "new_point_all_examples": summary(finals),
            "page_runs_still_busy": sum(bool(r.get("censored")) for r in records),
            "errors": sum(bool(r["error"]) for r in records), "exact": f"{check['exact']} of {check['checked']}",
            "shared_max_computations": run.get("shared_max_computations"), "wall_s": run.get("wall_s"),
            "warm_start_s": run.get("warm_start_s"), "engine": run.get("engine"), "cpu": run.get("cpu"),
            "server": run.get("server") or {}}


def write_results(path: Path, out: dict) -> None:
    """The headline keys (the embedded cluster's figures) and the side-by-side table into results.json."""
    from tp_core.paths import atomic_write_text

    doc = json.loads(path.read_text()) if path.is_file() else {}
    emb = out["summary"].get("embedded") or {}
    doc["class30_page_run_p95_s"] = emb.get("page_run", {}).get("p95_s")
    doc["class30_new_point_p95_s"] = emb.get("new_point", {}).get("p95_s")
    server = emb.get("server") or {}  # the server's own clock (TP_APP_RUN_LOG), without the browsers' drawing
    doc["class30_server_page_run_p95_s"] = (server.get("page_run") or {}).get("p95_s")
    doc["class30_server_new_point_p95_s"] = (server.get("new_point") or {}).get("p95_s")
    earlier = doc.get("class30") or {}
    # configurations this run left out keep their last figures, with the run they came from
    kept = {name: {**s, "from": s.get("from") or {**{k: earlier["meta"][k] for k in ("date", "command")},
                                                   "config_env": earlier["meta"].get("config_env", {}).get(name, {})}}
            for name, s in (earlier.get("summary") or {}).items() if name not in out["summary"]}
    doc["class30"] = {"meta": out["meta"], "summary": {**out["summary"], **kept}}
    atomic_write_text(path, json.dumps(doc, indent=1))


def print_summary(out: dict) -> None:
    print(f"\n{'configuration':<13} {'what':<28} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for name, s in out["summary"].items():
        for what in ("page_run", "first_load", "new_point", "new_point_all_examples"):
            f = s[what]
            cells = [("-" if f[k] is None else f"{f[k]:.2f}") for k in ("p50_s", "p95_s", "max_s")]
            print(f"{name:<13} {what:<28} {f['n']:>4} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7}")
        for what in ("page_run", "new_point", "new_point_engine", "new_point_drawn_after", "fragment_run"):
            f = (s.get("server") or {}).get(what)
            if f:
                cells = [("-" if f[k] is None else f"{f[k]:.2f}") for k in ("p50_s", "p95_s", "max_s")]
                print(f"{name:<13} {'server: ' + what:<28} {f['n']:>4} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7}")
        print(f"{name:<13} errors {s['errors']}, exact {s['exact']}, shared point's jobs ran at most "
              f"{s['shared_max_computations']} time(s), class wall {s['wall_s']} s, warm start {s['warm_start_s']} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=30, help="students (browser contexts), default 30")
    ap.add_argument("--quick", action="store_true", help="the quick demo model with small settings")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated subset of " + ",".join((*CONFIGS, *CONFIG_ENV)) + " (calm: the embedded "
                         "cluster with " + " ".join(f"{k}={v}" for k, v in CONFIG_ENV["calm"].items()) + ")")
    ap.add_argument("--browser-nice", type=int, default=19,
                    help="CPU priority of the browsers (0: as the server's). A real class brings its own machines; "
                         "on one small machine 30 browsers at the server's priority starve the job workers")
    ap.add_argument("--browser-shares", type=int, default=2,
                    help="the browsers' CPU cgroup weight, all together (cgroup v1 cpu.shares; 0: no cgroup). Where "
                         "the machine has a writable cpu controller, the browsers run on what the server and its "
                         "workers leave, as on a real class's own machines")
    ap.add_argument("--own", type=int, default=2, help="rounds in which each student moves to a point of its own")
    ap.add_argument("--spread", type=float, default=3.0, help="seconds within which the class does the same thing")
    ap.add_argument("--read", type=float, default=2.0, help="seconds a student reads a tour step (0.5x to 1.5x)")
    ap.add_argument("--warm-wait", type=float, default=1800.0, help="longest wait for the warm start to finish")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="longest wait for one page or point, seconds (a student stuck longer is counted as an "
                         "error and stops walking; the class goes on)")
    ap.add_argument("--results", default=None, help="results.json to write the keys into (default: docs/results.json "
                                                    "for the full demo, none with --quick; '' for none)")
    ap.add_argument("--shots", type=Path, default=ROOT / "benchmarks" / "out" / "class30_shots",
                    help="screenshots of what the first student saw, per configuration")
    ap.add_argument("--keep-home", action="store_true", help="keep each configuration's TP_HOME (logs, caches)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit("Debian chromium is not installed (apt-get install chromium; never `playwright install`)")
    settings = {"TP_APP_MODEL": "demo-quick" if args.quick else "demo", **(QUICK if args.quick else {})}
    from tp_core.data import load_split
    from tp_core.model import load_model
    from tp_core.settings import app_settings

    app = app_settings(settings)
    settings["TP_APP_EVAL_LIMIT"] = str(app.eval_limit)
    model = load_model(settings["TP_APP_MODEL"])
    task = next((t for t in app.tasks if t in model.tasks), next(iter(model.tasks)))
    n_full = len(load_split(task, "validation", limit=app.eval_limit))
    plan = own_points(args.sessions, args.own, {round(100 * g) for g in app.grid} | {50, SHARED_PCT})
    runs, t0 = {}, time.time()
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        runs[name] = run_config(name, args, settings, plan, n_full)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".partial.json").write_text(json.dumps(runs, indent=1))  # kept if a later part fails
    wanted = {(p["task"], p["ffn_pct"], p["n"]) for r in runs.values() for p in r.get("points", [])}
    direct = direct_metrics(settings, wanted)
    checks = {name: exactness(r.get("points", []), direct) for name, r in runs.items()}
    out = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "command": "benchmarks/class30.py " + " ".join(sys.argv[1:] if argv is None else argv),
                    "machine": f"{os.cpu_count()} CPU cores", "sessions": args.sessions, "own_rounds": args.own,
                    "spread_s": args.spread, "read_s": args.read, "settings": settings, "task": task,
                    "examples": n_full, "shared_pct": SHARED_PCT, "wall_s": round(time.time() - t0, 1),
                    "browser_nice": args.browser_nice,
                    "browser_shares": next((r["browser_shares"] for r in runs.values() if r.get("browser_shares")),
                                           None),
                    "config_env": {n: CONFIG_ENV[n] for n in runs if n in CONFIG_ENV},
                    "second_worker": "a second worker process on the same machine (no extra cores)"},
           "summary": {name: config_summary(r, checks[name]) for name, r in runs.items()},
           "kinds": {name: by_kind(r.get("records", [])) for name, r in runs.items()},
           "checks": checks, "runs": runs}
    try:
        from common import machine

        out["meta"]["machine"] = f"{machine()['cpu']}, {os.cpu_count()} cores"
    except Exception:  # noqa: BLE001 - the CPU's name is a nicety
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print_summary(out)
    results = args.results if args.results is not None else ("" if args.quick else str(ROOT / "docs/results.json"))
    if results:
        write_results(Path(results), out)
        print(f"wrote the class30 keys into {results}")
    print(f"wrote {args.out}")
    bad = any(s["errors"] or checks[n]["mismatches"] or runs[n].get("server_log_traceback")
              for n, s in out["summary"].items())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
