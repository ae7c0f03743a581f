"""The Prune page's first curve point on a causal LM (issue 28, `llm_first_curve_point_s`): real Chromium against a
server started as `make run` starts it (`python -m tp_core serve`: its Dask cluster with a worker process), model
`smollm2`, attribution scores cached and every curve cache cold.

  .venv/bin/python benchmarks/llm_first_point.py [--model smollm2] [--task sst2] [--method grad_x_act]

What is cached and what is cold:
* cached: the dequantized fp32 weights (TP_HOME/models/llm, linked from --llm-home) and the task's attribution
  scores for the page's method with the app's attribution settings (computed once into --scores-home, outside the
  timing; the first run spends minutes there), copied into a fresh TP_HOME;
* cold: the curve points' and per-example predictions' caches (TP_HOME/points, TP_HOME/preds: the fresh TP_HOME
  has none), the engine's jobs (a new server; `--no-warm` by default, so no warm start computes curves ahead of
  the page). The server is ready when its app process has preloaded the model and its cluster is idle (what the
  server loads into its worker as it starts is done by then, as for a user who opens the app a minute later).

The browser opens the Prune page through a shared link (task, method, no baselines, the session's defaults
otherwise) and the time runs from the navigation until the first PRUNED point is drawn on the metric-vs-size chart
(read from the Plotly figure's data, as bench_interactive's `first_curve_point_s`). The jobs that ran until then
(the engine's start/progress/done events, in order, with their messages) and the number of examples the first
point is on (the page's caption) are kept beside the time, so the figure can be explained.

Writes benchmarks/out/llm_first_point.json and `llm_first_curve_point_s` (with the machine, load average and
command) into docs/results.json; report_llm.py draws it in the LLM section of docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench_interactive import ARGS, CAPTION_N_JS, POINTS_JS  # noqa: E402
from bench_tour import wait_cluster_idle  # noqa: E402
from common import DOCS, machine, merge_results  # noqa: E402

GOAL_S = 10.0


def compute_scores(home: Path, model_spec: str, task: str, method: str) -> str:
    """The page's scores for `task` (the app's attribution settings, units "both" as the page's default sliders
    ask) in `home`'s scores cache: computed when missing. Runs in a child process (`--scores-only`), so this
    process never holds the model while it measures."""
    from dataclasses import replace

    from tp_core.attribution import attribute, cached_scores_path
    from tp_core.model import load_model
    from tp_core.policy import APP_ATTRIBUTION

    model = load_model(model_spec)
    cfg = replace(APP_ATTRIBUTION, method=method, units="both")
    path = cached_scores_path(model, task, cfg)
    if not path.is_file():
        t0 = time.time()
        attribute(model, task, cfg)
        print(f"{method} scores for {task} computed in {time.time() - t0:.0f} s", flush=True)
    return str(path)


def fresh_home(args) -> Path:
    """A new TP_HOME holding only the converted weights (linked) and the cached scores (copied)."""
    home = Path(tempfile.mkdtemp(prefix="tp-llmfirst-"))
    (home / "models").mkdir()
    os.symlink(Path(args.llm_home).resolve() / "models" / "llm", home / "models" / "llm")
    shutil.copytree(Path(args.scores_home) / "scores", home / "scores")
    return home


def wait_ready(home: Path, url: str, limit: float = 600) -> None:
    from ui_support import healthy

    t0 = time.time()
    while not healthy(url) or not re.search(r"model preloaded|preload skipped", (home / "serve.log").read_text()):
        if time.time() - t0 > limit:
            raise TimeoutError("the server did not get ready")
        time.sleep(0.5)


def record_events(observer, t_ref: list) -> list:
    """Every job event the scheduler publishes from now on, as (seconds since t_ref[0], key, event, message)."""
    from tp_core.engine import TOPIC

    events: list = []

    def on_event(event, _orig=observer._on_event):
        msg = event[1]
        when = (msg.get("t") or time.time()) - t_ref[0]
        events.append((round(when, 2), msg.get("key", ""), msg.get("event"), msg.get("message", "")))
        _orig(event)

    observer.client.subscribe_topic(TOPIC, on_event)
    return events


def explain(events: list, until: float) -> list[dict]:
    """Per job that started before `until`: its key, first message, start, end (None: still running) and seconds."""
    jobs: dict = {}
    for when, key, kind, message in events:
        if when > until + 0.5 and key not in jobs:
            continue
        j = jobs.setdefault(key, {"key": key, "what": "", "start": None, "end": None})
        if kind == "start" and j["start"] is None:
            j["start"] = when
        elif kind == "progress" and message and not j["what"]:
            j["what"] = message
        elif kind in ("done", "error", "cancelled", "preempted"):
            j["end"], j["how"] = when, kind
    for j in jobs.values():
        if j["start"] is not None and j["end"] is not None:
            j["seconds"] = round(j["end"] - j["start"], 2)
    return [j for j in jobs.values() if j["start"] is not None and j["start"] <= until]


def scheduler_tasks(client) -> list:
    """(key, state, priority) of every task the Dask scheduler holds: which jobs were waiting, and how urgent."""
    def listing(dask_scheduler=None) -> list:
        return [(str(k), ts.state, list(ts.priority or ())) for k, ts in dask_scheduler.tasks.items()]

    return client.run_on_scheduler(listing)


def measure(args, home: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from tp_core.engine import Engine
    from ui_support import free_port, stop_process

    port = free_port()
    env = {**os.environ, "TP_HOME": str(home), "TP_APP_MODEL": args.model, "TP_EXPORTS_DIR": str(home / "exports")}
    env.pop("TP_SCHEDULER", None)
    log = open(home / "serve.log", "w")
    t_start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "tp_core", "serve", "--port", str(port), "--model", args.model,
                             *([] if args.warm else ["--no-warm"])], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        wait_ready(home, url)
        address = re.search(r"(tcp://[\d.]+:\d+)", (home / "serve.log").read_text()).group(1)
        observer = Engine(address=address)
        t_ref = [time.time()]
        events = record_events(observer, t_ref)
        out["server_ready_s"] = round(time.time() - t_start, 1)
        out["idle_wait_s"] = wait_cluster_idle(observer.client, 600, quiet=3.0)
        out["server_ready_s"] = round(time.time() - t_start, 1)
        out["load_before"] = os.getloadavg()[0]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            link = f"{url}/Prune?model={args.model}&task={args.task}&method={args.method}&baselines=none"
            t_ref[0] = t0 = time.time()
            page.goto(link, timeout=600_000)
            page.wait_for_function(f"() => ({POINTS_JS})() > 0",
                                   timeout=args.limit * 1000, polling=100)
            out["llm_first_curve_point_s"] = round(time.time() - t0, 2)
            out["first_point_examples"] = page.evaluate(CAPTION_N_JS, "At FFN")
            out["scheduler_at_first_point"] = scheduler_tasks(observer.client)
            if args.shot:
                page.screenshot(path=args.shot, full_page=True)
            browser.close()
        out["jobs_before_first_point"] = explain(events, out["llm_first_curve_point_s"])
        out["events"] = events
        observer.close()
    finally:
        stop_process(proc, 30)
        log.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--method", default="grad_x_act",
                    help="the page's method (its scores are cached first; ig's take far longer to compute once)")
    ap.add_argument("--llm-home", default=os.environ.get("TP_HOME", str(Path.home() / ".cache" / "taskprune")),
                    help="a TP_HOME whose models/llm holds the dequantized model (default: TP_HOME)")
    ap.add_argument("--scores-home", default=str(HERE / "out" / "llm_first_point_home"),
                    help="where the page's scores are computed once and kept between runs")
    ap.add_argument("--warm", action="store_true", help="start the server with its warm start (default: without)")
    ap.add_argument("--limit", type=float, default=600, help="seconds to wait for the first point")
    ap.add_argument("--shot", default="", help="a screenshot of the page at the first point")
    ap.add_argument("--json", default=str(HERE / "out" / "llm_first_point.json"))
    ap.add_argument("--no-results", action="store_true", help="do not write docs/results.json")
    ap.add_argument("--scores-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scores_only:
        print(compute_scores(Path(os.environ["TP_HOME"]), args.model, args.task, args.method))
        return 0
    scores_home = Path(args.scores_home)
    (scores_home / "models").mkdir(parents=True, exist_ok=True)
    if not (scores_home / "models" / "llm").exists():
        os.symlink(Path(args.llm_home).resolve() / "models" / "llm", scores_home / "models" / "llm")
    subprocess.run([sys.executable, __file__, "--scores-only", "--model", args.model, "--task", args.task,
                    "--method", args.method], check=True, env={**os.environ, "TP_HOME": str(scores_home)})
    home = fresh_home(args)
    command = "benchmarks/llm_first_point.py " + " ".join(sys.argv[1:])
    res = {"model": args.model, "task": args.task, "method": args.method, "warm_start": args.warm,
           "machine": f"{machine()['cpu']}, {os.cpu_count()} cores", "command": command,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cold": "points and preds caches empty (fresh TP_HOME), new server and worker" +
                   ("" if args.warm else ", no warm start"),
           "cached": "fp32 weights, the page's attribution scores", "goal_s": GOAL_S}
    try:
        res.update(measure(args, home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    res["load_after"] = os.getloadavg()[0]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))
    print(f"llm_first_curve_point_s {res['llm_first_curve_point_s']} (first point on "
          f"{res.get('first_point_examples')} examples, load {res['load_before']:.2f})")
    for j in res["jobs_before_first_point"]:
        print(f"  {j['start']:7.2f} .. {j['end'] if j['end'] is not None else '-':>7}  {j['what'][:90]}")
    if not args.no_results:
        merge_results(DOCS / "results.json", {"llm_first_curve_point_s": {
            k: v for k, v in res.items() if k != "events"}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
