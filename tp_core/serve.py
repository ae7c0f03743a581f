"""`python -m tp_core serve` (what `make run` starts): a Dask cluster with worker processes, the warm start, and the
Streamlit app pointed at that cluster.

* Without `TP_SCHEDULER`, a `LocalCluster` is started here (scheduler on 127.0.0.1, one worker process whose threads
  x torch threads = the cores). With `TP_SCHEDULER=tcp://host:8786`, that cluster is used and nothing is started.
* The warm start submits, at the lowest priority (every user job runs first), the default task's scores (ig with the
  app's default settings and the default baselines) and its progressive curves, then the other demo tasks', with the
  very keys the app's pages ask for, so a newcomer finds them computed (or shares the running computation).
* Streamlit runs as a child process with `TP_SCHEDULER` set; stopping `serve` (Ctrl-C) stops both.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .engine import Engine
from .errors import TPError
from .paths import REPO_ROOT

# the Prune page's default "Compare with" (and the warm start's): the strongest baseline of our benchmark. `random`
# is one click away; it was a default until it made the default curves take a third longer (issue 11), and the
# chart's chance line already shows where a useless criterion lands.
DEFAULT_BASELINES = ("grad_x_act",)
DEFAULT_TASKS = ("sst2", "ag_news")
DEFAULT_EVAL_LIMIT = 500
COARSE_EXAMPLES = 100
# a moved slider's first estimate: one batch of examples, ahead of every other job (work.curve_plan's
# `slider_first`), then the coarse subset and all examples, so that with many sessions moving sliders at once
# each one gets a first number before any 100-example pass runs.
SLIDER_FIRST_EXAMPLES = 32


# The app's curve grid (FFN sparsity; 0 = the dense point), the full-resolution pass of the Prune page and the
# warm start: the coarse pass's grid (work.COARSE_GRID: 30/50/70/90%, so every open marker gets its filled twin)
# plus 80 and 85%, where curves part. The CLI's 0.1 steps cost twice as much in the app (a point's cost falls with
# its sparsity, and 10-40% sat on the dense line); the slider evaluates any other sparsity.
APP_GRID: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9)


def default_grid() -> tuple[float, ...]:
    """The app's grid: TP_APP_GRID (comma-separated) or APP_GRID."""
    env = os.environ.get("TP_APP_GRID")
    return tuple(float(x) for x in env.split(",")) if env else APP_GRID


def warm_start(engine: Engine, spec: str = "demo", tasks: tuple[str, ...] | None = None,
               eval_limit: int | None = None, owner: str = "warm-start") -> list[str]:
    """Submit the warm start at the lowest priority; returns the submitted keys (first task first)."""
    from .data import load_split
    from .model import load_model
    from .work import APP_ATTRIBUTION, PRIORITY, DataRef, curve_plan, model_ref

    model = load_model(spec)
    eval_limit = eval_limit or int(os.environ.get("TP_APP_EVAL_LIMIT", DEFAULT_EVAL_LIMIT))
    coarse = int(os.environ.get("TP_APP_COARSE_EXAMPLES", COARSE_EXAMPLES))
    order = [t for t in (tasks or DEFAULT_TASKS) if t in model.tasks] + \
        [t for t in model.tasks if t not in (tasks or DEFAULT_TASKS)]
    ref = model_ref(model)
    cfg = APP_ATTRIBUTION
    keys = []
    for ti, task in enumerate(order):
        n_full = len(load_split(task, "validation", limit=eval_limit))
        n_small = min(coarse, n_full)
        stages = [(DataRef(task, "validation", n_small), n_small)]
        if n_full > n_small:
            stages.append((DataRef(task, "validation", eval_limit), n_full))
        plan, _, _ = curve_plan(model, ref, task, cfg, ["ig", *DEFAULT_BASELINES], 0.0, "global", stages,
                                default_grid(), task_label=task, offset=PRIORITY["warm"] - 1000 * ti)
        for p in plan:
            keys.append(engine.submit(p.job, owner=owner, priority=p.priority))
    return keys


def serve(port: int = 8501, warm: bool = True, spec: str = "demo") -> int:
    address = os.environ.get("TP_SCHEDULER") or None
    engine = Engine(address=address, processes=True)
    where = engine.address if address else f"embedded cluster {engine.address} ({engine.workers()})"
    print(f"TaskPrune Studio: job engine on {where}", flush=True)
    if warm:
        try:
            keys = warm_start(engine, spec)
            print(f"warm start: {len(keys)} background jobs queued at the lowest priority", flush=True)
        except TPError as exc:
            print(f"warm start skipped: {exc}", flush=True)
    env = dict(os.environ, TP_SCHEDULER=engine.address)
    cmd = [sys.executable, "-m", "tp_app.launch", "run", str(REPO_ROOT / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    print(f"Starting TaskPrune Studio on http://localhost:{port}", flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)

    def stop(signum, frame):  # SIGTERM (a service manager, a test) stops the app and the cluster too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.close()
    return proc.returncode or 0
