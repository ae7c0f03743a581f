"""`python -m tp_core serve` (what `make run` starts): a Dask cluster with worker processes, the warm start, and the
Streamlit app pointed at that cluster.

* Without `TP_SCHEDULER`, a `LocalCluster` is started here (scheduler on 127.0.0.1, one worker process whose threads
  x torch threads = the cores). With `TP_SCHEDULER=tcp://host:8786`, that cluster is used and nothing is started.
* The warm start submits, at the lowest priority and as background jobs (at most one worker thread: a user's first
  job finds a thread free instead of waiting for a running warm-start job to end), the default task's scores (ig
  with the app's default settings and the default baselines, tp_core/settings.py) and its progressive curves, then
  the other demo tasks', with the very keys the app's pages ask for, so a newcomer finds them computed (or shares
  the running computation).
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
from .settings import app_settings


def warm_start(engine: Engine, spec: str = "demo", tasks: tuple[str, ...] | None = None,
               eval_limit: int | None = None, owner: str = "warm-start") -> list[str]:
    """Submit the warm start at the lowest priority; returns the submitted keys (first task first)."""
    from .data import load_split
    from .model import load_model
    from .policy import PRIORITY, curve_plan, session_attribution
    from .work import DataRef, model_ref

    model = load_model(spec)
    settings = app_settings()
    eval_limit = eval_limit or settings.eval_limit
    coarse = settings.coarse_examples
    first = tasks or settings.tasks
    order = [t for t in first if t in model.tasks] + [t for t in model.tasks if t not in first]
    ref = model_ref(model)
    cfg = session_attribution(settings)  # the very scores and curves a new session asks for
    keys = []
    for ti, task in enumerate(order):
        n_full = len(load_split(task, "validation", limit=eval_limit))
        n_small = min(coarse, n_full)
        stages = [(DataRef(task, "validation", n_small), n_small)]
        if n_full > n_small:
            stages.append((DataRef(task, "validation", eval_limit), n_full))
        plan, _, _ = curve_plan(model, ref, task, cfg, ["ig", *settings.baselines], 0.0, "global", stages,
                                settings.grid, task_label=task, offset=PRIORITY["warm"] - 1000 * ti)
        for p in plan:
            keys.append(engine.submit(p.job, owner=owner, priority=p.priority, background=True))
    return keys


def preload_worker(engine: Engine, spec: str) -> str | None:
    """As the server starts, a GGUF causal LM (`smollm2`, a .gguf file) is made ready in the worker (dequantized
    once if it is not yet, then loaded: work.prepare_llm), as a background job: the first point a session asks for
    then finds the weights in the worker instead of spending its first seconds loading them. The job is the one the
    Model page asks for, so a session that opens meanwhile shares it. Returns its key; None for other models (an
    encoder loads in about a second)."""
    from pathlib import Path

    from .llm_source import EMBEDDED, converted_folder, embedded_gguf
    from .policy import PRIORITY
    from .work import prepare_llm_job

    path = embedded_gguf(spec) if spec in EMBEDDED else Path(spec).expanduser() if spec.lower().endswith(".gguf") \
        else None
    if path is None or not path.is_file():
        return None
    job = prepare_llm_job(spec, path.stat().st_size, converted_folder(path) is None)
    return engine.submit(job, owner="serve", priority=PRIORITY["build"], background=True)


def serve(port: int = 8501, warm: bool = True, spec: str = "demo") -> int:
    address = os.environ.get("TP_SCHEDULER") or None
    engine = Engine(address=address, processes=True)
    where = engine.address if address else f"embedded cluster {engine.address} ({engine.workers()})"
    print(f"TaskPrune Studio: job engine on {where}", flush=True)
    try:
        if preload_worker(engine, spec):
            print(f"worker: loading {spec}", flush=True)
    except TPError as exc:
        print(f"worker preload skipped: {exc}", flush=True)
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
