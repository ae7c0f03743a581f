"""The worker runtime: what runs inside a Dask worker for every job. `run_job` (the Dask task) calls the job's
worker function with a `progress(fraction, message)` callback, sends start, progress and end reports as Dask
structured events (topic `TOPIC`), and stops the job at a progress report when its run was cancelled or asked to
give way to an urgent job. It also sets each worker process up once (torch threads, CPU priority).

Cancel and preemption requests name a run (a token the client draws for each launch of a job), not the job's
content key: a request for a run that never started here (it was cancelled while queued) then cannot stop a later
run of the same job, and a stale request is dropped after `STALE_REQUEST_S`.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from ..errors import TPError
from .spec import TOPIC, JobCancelled, JobFailed, JobPreempted

ENV_WORKER_NICE = "TP_WORKER_NICE"
WORKER_NICE = 10  # the embedded cluster's worker processes: below the app server and the browser
STALE_REQUEST_S = 600.0  # a cancel request for a run that has not started by then is forgotten
REPORT_EVERY_S = 0.25  # progress events are sent at most this often (and at the end)

_LOCK = threading.Lock()
_CANCELLED: dict[str, float] = {}  # run token -> when the cancel request arrived
_PREEMPT: set[str] = set()  # run tokens asked to give way
_RUNNING: dict[str, str] = {}  # run token -> job key, for the runs executing in this process
_WORKER_INIT = threading.Lock()
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_worker_ready = False


def cancel_on_worker(token: str) -> bool:
    """Stop the run `token` at its next progress report, or at its start if it has not started here yet."""
    now = time.time()
    with _LOCK:
        for old, at in list(_CANCELLED.items()):
            if now - at > STALE_REQUEST_S and old not in _RUNNING:
                del _CANCELLED[old]
        _CANCELLED[token] = now
    return True


def preempt_on_worker(token: str) -> bool:
    """Ask the run `token` (if it executes here) to give way at its next progress report."""
    with _LOCK:
        if token in _RUNNING:
            _PREEMPT.add(token)
            return True
    return False


def pending_requests() -> dict:
    """The cancel and preemption requests this process holds, and its running jobs (tests, diagnostics)."""
    with _LOCK:
        return {"cancelled": sorted(_CANCELLED), "preempt": sorted(_PREEMPT), "running": dict(_RUNNING)}


def _log(msg: dict) -> None:
    try:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(TOPIC, {**msg, "worker": worker.address, "cores": _CORES})
    except Exception:  # not on a worker (direct call in a test): nothing to report to
        pass


def _prepare_worker() -> None:
    """Once per worker process: torch threads so that worker threads x torch threads <= cores."""
    global _worker_ready
    with _WORKER_INIT:
        if _worker_ready:
            return
        import torch

        threads = int(os.environ.get("TP_TORCH_THREADS", "0") or 0)
        if threads <= 0:
            try:
                from distributed import get_worker

                per = max(1, get_worker().state.nthreads)
            except Exception:
                per = 1
            threads = max(1, (os.cpu_count() or 1) // per)
        torch.set_num_threads(threads)
        _lower_priority(os.environ.get(ENV_WORKER_NICE, ""))
        _worker_ready = True


def _lower_priority(nice: str) -> None:
    """Raise this worker process's nice value to `nice` (every thread of it: on Linux, nice is per thread, and
    threads started later inherit it). Set by the engine for its embedded worker processes only, so that page runs
    and the browser get the cores first when they compete with background jobs; when the app is idle, jobs get all
    of it."""
    try:
        target = int(nice)
    except ValueError:
        return
    tasks = Path("/proc/self/task")
    for tid in ([int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(target, os.getpriority(os.PRIO_PROCESS, tid)))
        except (OSError, AttributeError):
            pass


def _reporter(key: str, token: str, attempt: int) -> Callable[[float, str], None]:
    """The `progress` callback of one run: raises JobCancelled / JobPreempted when asked to stop, and sends a
    progress event at most every REPORT_EVERY_S seconds with this thread's CPU time (for the forecast)."""
    last = [0.0]
    cpu0 = time.thread_time()  # this thread's CPU time: with one torch thread, the job's own compute

    def progress(fraction: float, message: str = "") -> None:
        if token in _CANCELLED:
            raise JobCancelled("Cancelled.")
        if token in _PREEMPT:
            raise JobPreempted(key)
        now = time.time()
        if now - last[0] >= REPORT_EVERY_S or fraction >= 1.0:
            last[0] = now
            _log({"key": key, "event": "progress", "fraction": float(min(max(fraction, 0.0), 1.0)),
                  "message": str(message)[:200], "t": now, "attempt": attempt,
                  "cpu": time.thread_time() - cpu0})

    return progress


def run_job(key: str, token: str, fn: Callable[..., Any], args: tuple, units: float, rate_key: str,
            attempt: int = 0) -> Any:
    """The Dask task: runs `fn(progress, *args)` and reports start, progress and the end. `token` names this run
    (for cancel and preemption requests); `attempt` counts how often the job was preempted before (its events
    carry it)."""
    _prepare_worker()
    t0 = time.time()
    with _LOCK:
        _RUNNING[token] = key
    _log({"key": key, "event": "start", "t": t0, "attempt": attempt})
    try:
        if token in _CANCELLED:  # cancelled while on its way to this worker
            raise JobCancelled("Cancelled.")
        out = fn(_reporter(key, token, attempt), *args)
    except JobCancelled:
        _log({"key": key, "event": "cancelled", "t": time.time()})
        raise
    except JobPreempted:
        _log({"key": key, "event": "preempted", "t": time.time(), "attempt": attempt, "seconds": time.time() - t0})
        raise
    except TPError as exc:
        _log({"key": key, "event": "error", "error": str(exc)[:500], "t": time.time()})
        raise JobFailed(str(exc)) from None
    except Exception as exc:  # a bug: a short, clear note (no traceback on a page)
        msg = f"{type(exc).__name__}: {str(exc)[:300]}"
        _log({"key": key, "event": "error", "error": msg, "t": time.time()})
        raise JobFailed(f"The job failed: {msg}") from None
    finally:
        with _LOCK:
            _CANCELLED.pop(token, None)
            _PREEMPT.discard(token)
            _RUNNING.pop(token, None)
    seconds = time.time() - t0
    _log({"key": key, "event": "done", "t": time.time(), "seconds": seconds, "units": float(units),
          "rate_key": rate_key})
    return out
