"""The job engine: every heavy computation (attribution, curve points, neuron ablation, demo build, export) runs as a
job on a Dask `distributed` cluster, so the app's pages never block on it and identical requests share one run.

* By default the engine starts an embedded `LocalCluster` (one worker process; its threads x torch threads = the
  machine's cores). `TP_SCHEDULER=tcp://host:8786` (or `Engine(address=...)`) uses an existing Dask cluster instead:
  the same code, the same keys. Workers need `tp_core` importable and the same data/model paths.
* `Engine.submit(job, owner, priority)` returns the job's key at once. A key is the hash of what is computed (model
  weights, task, settings, data), so two sessions asking for the same thing get the same key and one computation.
* `status(key)` -> `JobInfo` (state, progress, elapsed, remaining), `result(key)` (None while running; raises
  `JobFailed` with the job's own message if it failed), `cancel(key, owner)` (the job stops at its next progress
  report once no owner wants it), `jobs(owner)` lists a session's jobs.
* Priorities are Dask's: a higher number runs first among waiting jobs. The app gives a slider point 100, coarse
  curve points 50, fine points 20-30 and warm-up work -100, so one user's next point never waits behind another
  user's whole curve (curves are many small point jobs, not one long job).
* Preemption: a job at priority >= URGENT (90: slider and dense points) that finds every thread busy makes running
  `preemptible` jobs of lower priority (curve points) give way at their next progress report (a batch); they go back
  in the queue and start again (their work so far is lost, at most one point's; a point about to end is left alone).
  Without it a slider point waited for the 500-example curve points already running on both threads.
* Progress and start/finish events travel as Dask structured events (`Worker.log_event`, topic `tp-job`), so the
  client sees them as they happen, also for jobs another client submitted to a shared cluster.

Worker functions live in `tp_core.work`; a `Job` names one of them, its arguments and its content key. Arguments that
are themselves `Job`s are submitted first and passed as Dask dependencies.
"""
from __future__ import annotations

import atexit
import hashlib
import heapq
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import TPError

TOPIC = "tp-job"
ENV_SCHEDULER = "TP_SCHEDULER"
ACTIVE = ("queued", "running")
URGENT = 90  # a job at this priority or above makes running preemptible jobs below it give way
PREEMPT_MIN_LEFT_S = 1.0  # ... unless they are about to end anyway
ATTEMPT_SEP = "~"  # the Dask key of a preempted job's later attempt: "<content key>~<attempt>"


class JobFailed(TPError):
    """A job ended with an error; the message is the job's own (a TPError's text, or a short note for a bug)."""


class JobCancelled(TPError):
    """Raised inside a worker function when its job was cancelled (at its next progress report)."""


class JobPreempted(Exception):
    """Raised inside a worker function when an urgent job needs its thread (at its next progress report); the
    engine puts the job back in the queue. Not a TPError: it is never shown as a failure."""


@dataclass(frozen=True)
class Job:
    """What to compute: `tp_core.work.<fn>(progress, *args)`, under the content key `key`."""

    kind: str  # scores | point | dense | ablation | top_activating | export | build_demo
    fn: str  # name of a function in tp_core.work
    args: tuple
    key: str
    label: str  # what the jobs panel shows
    units: float = 1.0  # work units, for the time estimate before the job has reported any progress
    rate_key: str = ""  # which throughput (seconds per unit) the estimate uses
    preemptible: bool = False  # may give way to an urgent job at a progress report and run again later (a job
    # that other jobs take as an argument must not: its dependents' futures would fail with it)


def content_key(kind: str, *parts: Any) -> str:
    """A stable key from what a job computes (reprs of frozen dataclasses, strings, numbers)."""
    h = hashlib.sha256(json.dumps([kind, *[repr(p) for p in parts]]).encode())
    return f"{kind}-{h.hexdigest()[:20]}"


@dataclass
class JobInfo:
    key: str
    kind: str
    label: str
    state: str = "queued"  # queued | running | done | error | cancelled
    progress: float = 0.0
    message: str = "waiting for a worker"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    priority: int = 0
    owners: set = field(default_factory=set)
    withdrawn: set = field(default_factory=set)  # owners who cancelled their interest
    estimate_s: float | None = None  # before it starts: from this machine's measured throughput
    first_report: tuple | None = None  # (time, fraction[, thread CPU seconds]) of the first progress report
    reports: list = field(default_factory=list)  # recent (time, fraction[, cpu]) progress reports, for the pace
    worker: str = ""  # the worker it runs on (jobs on one worker share its cores)
    sharing: int = 1  # this engine's jobs running on that worker at its latest report, itself included
    cores: int = 1  # the CPU cores of that worker's machine
    alone_at: float | None = None  # when the others running there are expected to have drained (None: unknown)
    result: Any = None
    future: Any = None
    job: Job | None = None
    owner: str = ""  # who submitted it first (the owner its dependencies are submitted for again)
    attempt: int = 0  # how often it was put back in the queue for an urgent job (preempted)
    preempting: bool = False  # asked to give way, not yet back in the queue

    @property
    def elapsed(self) -> float:
        end = self.finished or time.time()
        return max(0.0, end - (self.started or self.submitted))

    @property
    def remaining(self) -> float | None:
        """Seconds left: from the job's own recent pace once it has reported progress past its first batch, counting
        down between reports (and faster once the jobs it shares its worker with are expected to end: `_shared_left`);
        else the machine's measured throughput; None when nothing is known."""
        if self.state not in ACTIVE:
            return 0.0
        if self.state == "running" and self.started is not None:
            now = time.time()
            base = self._pace_base(now)
            last = self.reports[-1] if self.reports else None
            if base is not None and last is not None and last[1] > base[1] + 1e-9:
                # seconds per unit of progress between two reports; then counting down since the latest one
                pace = (last[0] - base[0]) / (last[1] - base[1])
                left = self._shared_left(pace, 1.0 - last[1], base, last)
                return max(0.0, left - (now - last[0]))
            if self.progress > 0:
                return self._left_at_average_pace(now)
            if self.estimate_s is not None:
                return max(0.0, self.estimate_s - (now - self.started))
            return None
        return self.estimate_s

    def _shared_left(self, pace: float, work: float, base: tuple, last: tuple) -> float:
        """Seconds from the latest report to the end for `work` (fraction) left at `pace` (wall seconds per unit,
        measured while `sharing` jobs ran on the worker). When other jobs share the worker and are expected to have
        drained at `alone_at`, the rest runs at the pace the job would have alone: the wall time it got per CPU second
        of its own thread (`thread_time`, sent with each report) less the share the others took of the worker's
        cores, never below one wall second per CPU second (no forecast for a job whose thread does not do its work).
        Measured with a MiniLM forward and backward pass beside a second thread's forward passes, 2 cores: its CPU
        time per pass stays the same (5.85 vs 5.89 s for 8), its wall time per CPU second goes 1.43 -> 2.03. The
        attribution of the default walk ran 1.47x faster once the Model page's dense
        job beside it ended; its panel, estimating from the shared pace, said 15 s where 10.2 s were left."""
        shared = pace * work
        cpu0, cpu1 = (r[2] if len(r) > 2 else None for r in (base, last))  # older reports carry no CPU time
        if self.sharing <= 1 or self.alone_at is None or cpu0 is None or cpu1 is None or cpu1 <= cpu0:
            return shared
        ratio = (last[0] - base[0]) / (cpu1 - cpu0)  # wall seconds per CPU second, shared
        if ratio > 10:  # its thread does not do the work (it sleeps or waits for a subprocess)
            return shared
        # processor sharing: n runnable threads on C cores run at n / C wall seconds per CPU second each; the
        # `sharing` - 1 others leaving take (sharing - 1) / C of that away (what else runs there stays)
        speedup = ratio / max(1.0, ratio - (self.sharing - 1) / max(1, self.cores))
        until = max(0.0, self.alone_at - last[0])
        if speedup <= 1.0 or until >= shared:
            return shared
        return until + (shared - until) / speedup

    def left_for_preemption(self) -> float | None:
        """Seconds left as the preemption rule sees them: the larger of `remaining` and the average pace since
        the start. `remaining` counts down from the last report, so a job slowed down by a busy machine reads
        "about to end" while most of it is still to run (an 8-session run kept a 100-example point with 6 s left
        in place of the urgent ones)."""
        left = self.remaining
        if self.state == "running" and self.started is not None and self.progress > 0:
            avg = self._left_at_average_pace(time.time())
            left = avg if left is None else max(left, avg)
        return left

    def _left_at_average_pace(self, now: float) -> float:
        """Seconds left at the job's average pace since it started (running, progress > 0)."""
        return max(0.0, (now - self.started) * (1.0 - self.progress) / self.progress)

    def _pace_base(self, now: float) -> tuple[float, float] | None:
        """The report the pace is measured from: the oldest report of the last PACE_WINDOW_S seconds before the
        latest one (at least the one before it; never the start, whose first batch carries the warm-up), so that
        the pace follows the job's speed now (after a job it shared the worker with has ended), not its average
        since the start. None before the second report."""
        pts = ([self.first_report] if self.first_report is not None else []) + list(self.reports)
        if len(pts) < 2:
            return self.first_report
        batches = [r for r in pts if r[1] > 0]  # the start (fraction 0) would carry the first batch's warm-up
        if len(batches) >= 2:
            pts = batches
        older = [r for r in pts[:-1] if now - r[0] <= PACE_WINDOW_S]
        return older[0] if older else pts[-2]

    def public(self) -> dict:
        return {"key": self.key, "kind": self.kind, "label": self.label, "state": self.state,
                "progress": self.progress, "message": self.message, "elapsed": self.elapsed,
                "remaining": self.remaining, "error": self.error, "priority": self.priority}


PACE_WINDOW_S = 8.0  # the remaining-time estimate uses the job's pace over this many recent seconds


# ----- worker side -----------------------------------------------------------------------------------------------
_CANCELLED: set[str] = set()
_PREEMPT: set[str] = set()
_RUNNING: set[str] = set()
_WORKER_INIT = threading.Lock()
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_worker_ready = False


def _cancel_on_worker(key: str) -> bool:
    _CANCELLED.add(key)
    return True


def _preempt_on_worker(key: str) -> bool:
    """Ask the running job `key` (if it runs here) to give way at its next progress report."""
    if key in _RUNNING:
        _PREEMPT.add(key)
        return True
    return False


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


ENV_WORKER_NICE = "TP_WORKER_NICE"
WORKER_NICE = 10  # the embedded cluster's worker processes: below the app server and the browser


def _lower_priority(nice: str) -> None:
    """Raise this worker process's nice value to `nice` (every thread of it: on Linux, nice is per thread, and
    threads started later inherit it). Set by the engine for its embedded worker processes only, so that page runs
    and the browser get the cores first when they compete with background jobs (py-spy: a Heatmaps page run spent
    most of its time waiting for the CPU while the inspector's jobs ran); when the app is idle, jobs get all of it."""
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


def run_job(key: str, fn_name: str, args: tuple, units: float, rate_key: str, attempt: int = 0) -> Any:
    """The Dask task: runs `tp_core.work.<fn_name>(progress, *args)` (or `module:function`) and reports start,
    progress and the end. The work module is imported by name: the engine sits below every pipeline stage.
    `attempt` counts how often the job was preempted before (its events carry it)."""
    import importlib

    module, _, name = fn_name.rpartition(":")
    fn = getattr(importlib.import_module(module or "tp_core.work"), name)
    _prepare_worker()
    t0 = time.time()
    _RUNNING.add(key)
    _log({"key": key, "event": "start", "t": t0, "attempt": attempt})
    last = [0.0]
    cpu0 = time.thread_time()  # this thread's CPU time: with one torch thread, the job's own compute

    def progress(fraction: float, message: str = "") -> None:
        if key in _CANCELLED:
            raise JobCancelled("Cancelled.")
        if key in _PREEMPT:
            raise JobPreempted(key)
        now = time.time()
        if now - last[0] >= 0.25 or fraction >= 1.0:
            last[0] = now
            _log({"key": key, "event": "progress", "fraction": float(min(max(fraction, 0.0), 1.0)),
                  "message": str(message)[:200], "t": now, "attempt": attempt,
                  "cpu": time.thread_time() - cpu0})

    try:
        out = fn(progress, *args)
    except JobCancelled:
        _log({"key": key, "event": "cancelled", "t": time.time()})
        raise
    except JobPreempted:
        _log({"key": key, "event": "preempted", "t": time.time(), "attempt": attempt,
              "seconds": time.time() - t0})
        raise
    except TPError as exc:
        _log({"key": key, "event": "error", "error": str(exc)[:500], "t": time.time()})
        raise JobFailed(str(exc)) from None
    except Exception as exc:  # a bug: a short, clear note (no traceback on a page)
        msg = f"{type(exc).__name__}: {str(exc)[:300]}"
        _log({"key": key, "event": "error", "error": msg, "t": time.time()})
        raise JobFailed(f"The job failed: {msg}") from None
    finally:
        _CANCELLED.discard(key)
        _PREEMPT.discard(key)
        _RUNNING.discard(key)
    seconds = time.time() - t0
    _log({"key": key, "event": "done", "t": time.time(), "seconds": seconds, "units": float(units),
          "rate_key": rate_key})
    return out


# ----- throughput (seconds per work unit, measured on this machine) -------------------------------------------------
class Throughput:
    """Seconds per work unit per kind of job, learned from finished jobs (persisted under TP_HOME)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rates: dict[str, float] | None = None

    def _path(self):
        from .paths import tp_home

        return tp_home() / "throughput.json"

    def _load(self) -> dict[str, float]:
        if self._rates is None:
            try:
                raw = json.loads(self._path().read_text())
                self._rates = {str(k): float(v) for k, v in raw.items() if float(v) > 0}
            except (OSError, ValueError, TypeError, AttributeError):
                self._rates = {}
        return self._rates

    def estimate(self, rate_key: str, units: float) -> float | None:
        with self._lock:
            rate = self._load().get(rate_key)
        return None if rate is None else rate * units

    def record(self, rate_key: str, units: float, seconds: float) -> None:
        if not rate_key or units <= 0 or seconds <= 0:
            return
        with self._lock:
            rates = self._load()
            new = seconds / units
            old = rates.get(rate_key)
            rates[rate_key] = new if old is None else 0.5 * old + 0.5 * new
            try:
                from .paths import atomic_write_text

                atomic_write_text(self._path(), json.dumps(rates, indent=1))
            except OSError:
                pass


# ----- client side -----------------------------------------------------------------------------------------------
def default_workers() -> tuple[int, int]:
    """(workers, threads per worker) for the embedded cluster: one worker, a thread per core, 1 torch thread each.
    Measured against one worker process per core (benchmarks/bench_worker_layout.py, sst2's default curves on
    cold caches, no browser): 2 processes x 1 thread took 133 s, 1 process x 2 threads 85 s, although two threads
    of one process share its GIL (with 8 sessions' short points queued, both threads were busy 94% of the time
    on 0.83 of a core). `TP_WORKERS` / `TP_WORKER_THREADS` change it."""
    cores = os.cpu_count() or 1
    workers = max(1, int(os.environ.get("TP_WORKERS") or 1))
    threads = int(os.environ.get("TP_WORKER_THREADS") or 0) or max(1, cores // workers)
    return workers, threads


class Engine:
    """A Dask client plus the registry of this process's jobs (shared by all app sessions of the process)."""

    def __init__(self, address: str | None = None, processes: bool = False, n_workers: int | None = None,
                 threads_per_worker: int | None = None, keep: int = 2000):
        import dask
        from distributed import Client, LocalCluster

        # the scheduler hands a worker only as many tasks as it has threads, so a job submitted later with a
        # higher priority (a slider point) starts next, not after tasks already sent ahead (default 1.1)
        # Dask's statistical profiler samples every worker thread's stack every 10 ms in the worker's event loop;
        # with torch's deep stacks it took 70% of a core and starved the compute threads (py-spy: a 500-example
        # point took 25 s instead of 7 s). Off, also for the embedded cluster's worker processes.
        # The workers' event loops also sample memory (every 100 ms), the system (500 ms, psutil) and send
        # heartbeats: py-spy showed a quarter of a core there while two points computed. Memory and system are
        # sampled less often here (memory limits still act within a second).
        dask.config.set({"distributed.scheduler.worker-saturation": 1.0,
                         "distributed.worker.profile.enabled": False,
                         "distributed.worker.memory.monitor-interval": "1s",
                         "distributed.admin.system-monitor.interval": "2s"})
        address = address if address is not None else (os.environ.get(ENV_SCHEDULER) or None)
        self.cluster = None
        if address:
            try:
                self.client = Client(address, timeout="10s", set_as_default=False)
            except Exception as exc:
                raise TPError(f"Cannot reach the Dask scheduler at {address} ({ENV_SCHEDULER}): "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from None
            self.address = address
        else:
            w, t = default_workers()
            extra = {"env": {ENV_WORKER_NICE: os.environ.get(ENV_WORKER_NICE, str(WORKER_NICE))}} if processes else {}
            self.cluster = LocalCluster(n_workers=n_workers or w, threads_per_worker=threads_per_worker or t,
                                        processes=processes, dashboard_address=None, silence_logs=logging.CRITICAL,
                                        **extra)
            self.client = Client(self.cluster, set_as_default=False)
            self.address = self.cluster.scheduler_address
        self.embedded = self.cluster is not None
        self._jobs: dict[str, JobInfo] = {}
        self._lock = threading.RLock()
        self._keep = keep
        self._starts: dict[str, int] = {}
        self._restarts: dict[str, int] = {}  # attempts after a preemption, per job
        self._nthreads = (0, 0.0)  # (threads of the cluster, when counted)
        self.throughput = Throughput()
        self.client.subscribe_topic(TOPIC, self._on_event)

    # -- events from workers
    def _on_event(self, event) -> None:
        _, msg = event
        key = msg.get("key")
        kind = msg.get("event")
        with self._lock:
            if kind == "start":
                # a preempted job's later attempts are the same computation resumed, not a second one
                counter = self._starts if not msg.get("attempt") else self._restarts
                counter[key] = counter.get(key, 0) + 1
            if kind == "done":
                self.throughput.record(msg.get("rate_key", ""), msg.get("units", 0.0), msg.get("seconds", 0.0))
            info = self._jobs.get(key)
            if info is None or msg.get("attempt", info.attempt) != info.attempt:
                return  # unknown here, or a late report of an attempt that gave way
            if msg.get("worker"):
                info.worker, info.cores = msg["worker"], int(msg.get("cores") or 1)
            if kind == "start" and info.state == "queued":
                info.state, info.started, info.message = "running", msg.get("t", time.time()), "started"
            elif kind == "progress" and info.state in ACTIVE:
                if info.state == "queued":
                    info.state, info.started = "running", msg.get("t", time.time())
                info.progress = max(info.progress, msg.get("fraction", 0.0))
                info.message = msg.get("message", "")
                report = (msg.get("t", time.time()), info.progress, msg.get("cpu"))
                if info.first_report is None:
                    info.first_report = report
                else:
                    info.reports.append(report)
                    del info.reports[:-200]
            elif kind == "error" and info.state in ACTIVE:
                info.error = msg.get("error")
            self._outlook()

    def _outlook(self) -> None:
        """For each running job: how many of this engine's jobs share its worker now (`sharing`) and when the
        others are expected to have drained (`alone_at`): each of them ends at its own estimate, and a waiting job
        takes the first place to free up for its throughput estimate (None when any of those is unknown: then no
        speed-up is forecast). Called with the lock held, on every event."""
        now = time.time()
        running = [i for i in self._jobs.values() if i.state == "running"]
        queued = sorted((i for i in self._jobs.values() if i.state == "queued"),
                        key=lambda i: (-i.priority, i.submitted))
        for info in running:
            others = [i for i in running if i is not info and i.worker == info.worker]
            info.sharing = 1 + len(others)
            ends = [i.remaining for i in others]
            if not others or any(e is None for e in ends):
                info.alone_at = None if others else now
                continue
            if any(q.estimate_s is None for q in queued):
                info.alone_at = None
                continue
            ends = [now + e for e in ends]
            heapq.heapify(ends)
            for q in queued:  # a waiting job takes the first place to free up
                heapq.heapreplace(ends, ends[0] + q.estimate_s)
            info.alone_at = max(ends)

    def _on_done(self, future) -> None:
        key = str(future.key).split(ATTEMPT_SEP)[0]
        with self._lock:
            info = self._jobs.get(key)
        if info is None or (info.future is not None and info.future.key != future.key):
            return  # forgotten, or the callback of an attempt that was replaced
        try:
            status = future.status
            if status == "error" and isinstance(future.exception(), JobPreempted):
                self._requeue(info)
                return
            if status == "finished":
                result = future.result()
                with self._lock:
                    info.result, info.state, info.progress, info.message = result, "done", 1.0, "done"
            elif status == "cancelled":
                with self._lock:
                    info.state, info.message = "cancelled", "cancelled"
            else:
                exc = future.exception()
                with self._lock:
                    if isinstance(exc, JobCancelled):
                        info.state, info.message = "cancelled", "cancelled"
                    else:
                        info.state = "error"
                        info.error = str(exc) if isinstance(exc, TPError) else (info.error or
                                                                                 f"{type(exc).__name__}: {exc}")
                        info.message = "failed"
        except Exception as exc:  # the future itself could not be read (lost worker, cancelled meanwhile)
            with self._lock:
                info.state, info.error, info.message = "error", f"{type(exc).__name__}: {exc}", "failed"
        with self._lock:
            info.finished = time.time()
            info.future = None  # release it: the result lives in the registry now
            self._trim()
            self._outlook()  # the jobs that shared its worker now share it with one fewer

    def _trim(self) -> None:
        if len(self._jobs) <= self._keep:
            return
        old = sorted((i for i in self._jobs.values() if i.state not in ACTIVE), key=lambda i: i.finished or 0)
        for info in old[: len(self._jobs) - self._keep]:
            self._jobs.pop(info.key, None)

    # -- preemption: a slider point does not wait for the curve points already running
    def _threads(self) -> int:
        now = time.time()
        if self._nthreads[1] < now - 30:
            try:
                workers = self.client.scheduler_info().get("workers", {}).values()
                self._nthreads = (max(1, sum(w.get("nthreads", 0) for w in workers)), now)
            except Exception:
                self._nthreads = (max(1, self._nthreads[0]), now)
        return self._nthreads[0]

    def _make_room(self) -> None:
        """When urgent jobs (priority >= URGENT) that can start wait for a thread, ask as many running preemptible
        jobs to give way, each less urgent than the waiting job it makes room for (the most urgent waiting jobs
        first, the least urgent running ones give way first; not one that is about to end): they stop at their
        next progress report (a batch) and go back in the queue (`_requeue`); Dask then starts the urgent ones.
        Only this engine's own jobs are considered."""
        threads = self._threads()
        with self._lock:
            jobs = list(self._jobs.values())
            done = {i.key for i in jobs if i.state == "done"}
            waiting = [i for i in jobs if i.state == "queued" and i.priority >= URGENT and i.job is not None and
                       all(a.key in done for a in i.job.args if isinstance(a, Job))]
            running = [i for i in jobs if i.state == "running"]
            if not waiting:
                return
            need = len(waiting) - max(0, threads - len(running))
            candidates = sorted((i for i in running if i.job is not None and i.job.preemptible and not i.preempting
                                 and ((left := i.left_for_preemption()) is None or left > PREEMPT_MIN_LEFT_S)),
                                key=lambda i: (i.priority, -(i.started or 0)))
            # each of the `need` most urgent waiting jobs takes the least urgent candidate below it (the least
            # urgent waiting job's priority alone would keep a 100-example pass running in place of a quick one)
            victims = []
            for w in sorted(waiting, key=lambda w: -w.priority)[:max(0, need)]:
                pick = next((c for c in candidates if c.priority < w.priority and c not in victims), None)
                if pick is not None:
                    victims.append(pick)
            for v in victims:
                v.preempting, v.message = True, "giving way to an urgent job"
        for v in victims:
            try:
                self.client.run(_preempt_on_worker, v.key)
            except Exception:
                with self._lock:
                    v.preempting = False

    def _requeue(self, info: JobInfo) -> None:
        """Put a preempted job back in the queue (a new attempt under the same content key and priority)."""
        with self._lock:
            if info.state not in ACTIVE or info.job is None:
                return
            info.attempt += 1
            info.state, info.started, info.progress, info.preempting = "queued", None, 0.0, False
            info.first_report, info.reports = None, []
            info.message = "paused for an urgent job; waiting for a worker"
            fut = self._launch(info)
        fut.add_done_callback(self._on_done)

    def _launch(self, info: JobInfo):
        """Submit `info.job` to Dask (its Job arguments resolved to results or futures); call with the lock held."""
        job = info.job
        args = tuple(self._dependency(a, info.owner, info.priority) if isinstance(a, Job) else a for a in job.args)
        dkey = job.key if info.attempt == 0 else f"{job.key}{ATTEMPT_SEP}{info.attempt}"
        fut = self.client.submit(run_job, job.key, job.fn, args, job.units, job.rate_key, info.attempt, key=dkey,
                                 priority=info.priority, pure=False)
        info.future = fut
        return fut

    # -- the API
    def submit(self, job: Job, owner: str = "", priority: int = 0, retry: bool = False, _room: bool = True) -> str:
        """Submit `job` (and the jobs among its arguments) unless the same key is already running or done;
        returns its key at once. A failed or cancelled job is run again only with `retry` (a user's explicit
        request): pages that re-ask on every rerun must not loop on a failure or undo a cancel."""
        with self._lock:
            info = self._jobs.get(job.key)
            if info is not None and (info.state in ACTIVE + ("done",) or not retry):
                if owner:
                    info.owners.add(owner)
                    if retry or info.state in ACTIVE + ("done",) and owner not in info.withdrawn:
                        info.withdrawn.discard(owner)
                return job.key
            info = JobInfo(job.key, job.kind, job.label, priority=priority, owners={owner} if owner else set(),
                           estimate_s=self.throughput.estimate(job.rate_key, job.units), job=job, owner=owner)
            self._jobs[job.key] = info
            fut = self._launch(info)
        fut.add_done_callback(self._on_done)
        if priority >= URGENT and _room:  # never with the lock held (a dependency's submit): _make_room talks to
            self._make_room()  # the scheduler synchronously, and the event loop may be waiting for the lock
        return job.key

    def _dependency(self, job: Job, owner: str, priority: int):
        """A job used as an argument: its result if known, else its future (a Dask dependency)."""
        key = self.submit(job, owner, priority, retry=True, _room=False)
        info = self._jobs[key]
        if info.state == "done":
            return info.result
        return info.future

    def status(self, key: str) -> JobInfo | None:
        with self._lock:
            return self._jobs.get(key)

    def result(self, key: str) -> Any:
        """The result of a finished job, None while it is queued or running (or unknown); raises JobFailed."""
        info = self.status(key)
        if info is None or info.state in ACTIVE:
            return None
        if info.state == "error":
            raise JobFailed(info.error or "The job failed.")
        if info.state == "cancelled":
            return None
        return info.result

    def wait(self, key: str, timeout: float | None = None) -> Any:
        """Block until the job ends (CLI, tests, benchmarks); its result, or JobFailed / TimeoutError."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            info = self.status(key)
            if info is None:
                raise TPError(f"Unknown job {key}.")
            if info.state not in ACTIVE:
                if info.state == "cancelled":
                    raise JobCancelled(f"{info.label}: cancelled.")
                return self.result(key)
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"{info.label} did not finish within {timeout} s.")
            time.sleep(0.05)

    def run(self, job: Job, owner: str = "", priority: int = 0, timeout: float | None = None,
            progress: Callable[[float, str], None] | None = None) -> Any:
        """Submit and wait, forwarding progress (the CLI's way of using the engine)."""
        key = self.submit(job, owner, priority)
        if progress is None:
            return self.wait(key, timeout)
        deadline = None if timeout is None else time.time() + timeout
        while True:
            info = self.status(key)
            if info.state not in ACTIVE:
                progress(1.0, info.message)
                return self.wait(key, 0)
            progress(info.progress, info.message)
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"{info.label} did not finish within {timeout} s.")
            time.sleep(0.2)

    def cancel(self, key: str, owner: str | None = None) -> bool:
        """Withdraw `owner`'s interest (all interest if None); the job stops once nobody wants it."""
        with self._lock:
            info = self._jobs.get(key)
            if info is None or info.state not in ACTIVE:
                return False
            if owner is not None:  # the owner keeps seeing it (as cancelled for them); others may still want it
                info.withdrawn.add(owner)
                if info.owners - info.withdrawn:
                    return False
            fut = info.future
            info.message = "cancelling"
        if fut is not None:
            fut.cancel()
        try:
            self.client.run(_cancel_on_worker, key)
        except Exception:
            pass
        with self._lock:
            if info.state in ACTIVE:
                info.state, info.finished, info.message = "cancelled", time.time(), "cancelled"
        return True

    def jobs(self, owner: str | None = None, active_only: bool = False) -> list[JobInfo]:
        with self._lock:
            out = [i for i in self._jobs.values() if owner is None or owner in i.owners]
        if active_only:
            out = [i for i in out if i.state in ACTIVE]
        return sorted(out, key=lambda i: i.submitted)

    def queue_position(self, key: str) -> int:
        """How many active jobs of higher or equal priority were submitted before this queued job."""
        with self._lock:
            me = self._jobs.get(key)
            if me is None or me.state != "queued":
                return 0
            return sum(1 for i in self._jobs.values() if i.state in ACTIVE and i.key != key and
                       (i.state == "running" or (i.priority > me.priority or
                                                 (i.priority == me.priority and i.submitted < me.submitted))))

    def computations(self, key: str | None = None) -> int:
        """How many times jobs (or one job) actually started on a worker, as seen by this client (a preempted job
        that resumed counts once; `restarts` counts its later attempts)."""
        with self._lock:
            return self._starts.get(key, 0) if key else sum(self._starts.values())

    def restarts(self, key: str | None = None) -> int:
        """How many times jobs (or one job) started again after giving way to an urgent job."""
        with self._lock:
            return self._restarts.get(key, 0) if key else sum(self._restarts.values())

    def forget(self, key: str) -> None:
        """Drop a finished job's record (its result is then recomputed or read from the disk cache)."""
        with self._lock:
            info = self._jobs.get(key)
            if info is not None and info.state not in ACTIVE:
                self._jobs.pop(key, None)

    def workers(self) -> dict:
        try:
            info = self.client.scheduler_info()
            return {"address": self.address, "embedded": self.embedded, "workers": len(info.get("workers", {})),
                    "threads": sum(w.get("nthreads", 0) for w in info.get("workers", {}).values())}
        except Exception as exc:
            return {"address": self.address, "embedded": self.embedded, "error": str(exc)}

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


_ENGINE: Engine | None = None
_ENGINE_LOCK = threading.Lock()


def get_engine() -> Engine:
    """The process's engine (created on first use: an embedded LocalCluster, or the cluster TP_SCHEDULER names)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            # inside the app's own process the embedded cluster's workers are threads: Streamlit replaces
            # `__main__` with the page script, which a spawned worker process would re-run. `tp_core serve`
            # (`make run`) starts a cluster with worker processes and points the app at it instead.
            _ENGINE = Engine(processes=os.environ.get("TP_JOBS_PROCESSES", "0") == "1")
            _at_exit(shutdown_engine)
        return _ENGINE


def _at_exit(fn) -> None:
    """Run `fn` as the interpreter exits, before concurrent.futures stops its executors: Dask calls a future's done
    callbacks through one, so closing the client later (plain `atexit`) logged "cannot schedule new futures after
    shutdown" tracebacks for every job still running when a server stopped. `threading._register_atexit` (CPython
    3.9+) runs its callbacks newest first, before that executor shutdown; plain atexit where it is missing."""
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError("no threading._register_atexit")
        register(fn)
    except RuntimeError:  # missing, or the interpreter is already shutting down
        atexit.register(fn)


def set_engine(engine: Engine | None) -> None:
    """Install an engine (tests: an in-process cluster, or one pointed at a separate scheduler)."""
    global _ENGINE
    with _ENGINE_LOCK:
        _ENGINE = engine


def shutdown_engine() -> None:
    global _ENGINE
    with _ENGINE_LOCK:
        eng, _ENGINE = _ENGINE, None
    if eng is not None:
        try:
            eng.close()
        except Exception:
            pass


def new_owner_id() -> str:
    return uuid.uuid4().hex[:12]
