"""The engine's client side: `Engine`, a Dask client plus the registry of this process's jobs (shared by all app
sessions of the process), and the process-wide engine (`get_engine`, `set_engine`, `shutdown_engine`).

* By default the engine starts an embedded `LocalCluster` (one worker; its threads x torch threads = the machine's
  cores). `TP_SCHEDULER=tcp://host:8786` (or `Engine(address=...)`) uses an existing Dask cluster instead: the same
  code, the same keys. Workers need `tp_core` importable and the same data/model paths.
* `Engine.submit(job, owner, priority)` returns the job's key at once. A key is the hash of what is computed (model
  weights, task, settings, data), so two sessions asking for the same thing get the same key and one computation.
* `status(key)` -> `JobInfo` (state, progress, elapsed, remaining), `result(key)` (None while running; raises
  `JobFailed` with the job's own message if it failed), `cancel(key, owner)` (the job stops at its next progress
  report once no owner wants it), `jobs(owner)` lists a session's jobs.
* Priorities are Dask's: a higher number runs first among waiting jobs, so one user's next point never waits
  behind another user's whole curve (curves are many small point jobs, not one long job).
* Preemption: a job at priority >= URGENT that finds every thread busy makes running `preemptible` jobs of lower
  priority give way at their next progress report; they go back in the queue and run again (a point about to end
  is left alone).
* Progress and start/finish events travel as Dask structured events (topic `TOPIC`), so the client sees them as
  they happen, also for jobs another client submitted to a shared cluster.
* Background jobs (`submit(..., background=True)`: serve's warm start) are not preemptible once running, so they
  take at most one thread of a worker: each job holds one unit of the worker resource `BACKGROUND`, which the
  embedded cluster's worker declares once (Dask resources). The other threads stay free for what a user asks for.
  On an external cluster the limit applies where workers declare it (`dask worker --resources background=1`);
  when none does, background jobs run unrestricted (a restriction no worker meets would never run).
* A worker process that dies mid-job (killed, out of memory) is restarted by its nanny and Dask runs the job again
  (the record starts over); after `distributed.scheduler.allowed-failures` such deaths the job fails with a message
  saying so.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import warnings
from typing import Any
from collections.abc import Callable

from ..errors import TPError
from .forecast import JobInfo, Throughput, outlook
from .runtime import ENV_WORKER_NICE, WORKER_NICE, cancel_on_worker, preempt_on_worker, run_job
from .spec import (ACTIVE, ATTEMPT_SEP, BACKGROUND, PREEMPT_MIN_LEFT_S, TOPIC, URGENT, Job, JobCancelled, JobFailed,
                   JobPreempted)

ENV_SCHEDULER = "TP_SCHEDULER"


def _failure(exc: BaseException, reported: str | None) -> str:
    """The message of a job that ended with `exc`: a TPError's own text; for a job whose worker died every time
    it ran (Dask's KilledWorker), what happened; else the error the worker reported, or the exception's text."""
    from distributed.scheduler import KilledWorker

    if isinstance(exc, TPError):
        return str(exc)
    if isinstance(exc, KilledWorker):
        return (f"The worker running this job stopped (killed, or out of memory) {exc.allowed_failures + 1} "
                "times; the job was given up.")
    return reported or f"{type(exc).__name__}: {exc}"


def default_workers() -> tuple[int, int]:
    """(workers, threads per worker) for the embedded cluster: one worker, a thread per core, 1 torch thread each
    (benchmarks/bench_worker_layout.py compares the layouts). `TP_WORKERS` / `TP_WORKER_THREADS` change it."""
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
        # higher priority (a slider point) starts next, not after tasks already sent ahead (default 1.1).
        # Dask's statistical profiler samples every worker thread's stack every 10 ms in the worker's event loop;
        # torch's deep stacks make that cost a large share of a core, starving the compute threads: off, also for
        # the embedded cluster's worker processes. Memory and system samples (every 100 and 500 ms by default)
        # are taken less often for the same reason (memory limits still act within a second).
        # A worker process that dies is restarted by its nanny; the embedded cluster (SpecCluster) closes the nanny
        # for good when no worker of that name is back within `lost-worker-timeout` (15 s by default), and a
        # restart on a loaded machine (spawn, imports, registration) can take longer: the cluster was then left
        # without a worker and queued jobs waited forever. The nanny's own restart is what should decide.
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1 hour",
                         "distributed.scheduler.worker-saturation": 1.0,
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
            # the scheduler's HTTP endpoint tries port 8787 and takes another when it is busy (another cluster on
            # this machine), with a warning on stderr that would break a command's clean output for nothing
            warnings.filterwarnings("ignore", message="Port 8787 is already in use", category=UserWarning)
            extra = {"env": {ENV_WORKER_NICE: os.environ.get(ENV_WORKER_NICE, str(WORKER_NICE))}} if processes else {}
            self.cluster = LocalCluster(n_workers=n_workers or w, threads_per_worker=threads_per_worker or t,
                                        processes=processes, dashboard_address=None, silence_logs=logging.CRITICAL,
                                        resources={BACKGROUND: 1}, **extra)
            self.client = Client(self.cluster, set_as_default=False)
            self.address = self.cluster.scheduler_address
        self.embedded = self.cluster is not None
        self._jobs: dict[str, JobInfo] = {}
        self._lock = threading.RLock()
        self._keep = keep
        self._starts: dict[str, int] = {}
        self._restarts: dict[str, int] = {}  # attempts after a preemption, per job
        self._nthreads = (0, 0.0)  # (threads of the cluster, when counted)
        self._background_slots: bool | None = True if self.cluster is not None else None  # None: not asked yet
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
            elif kind == "start" and info.state == "running":
                # the same attempt starting again: its worker was lost (killed, out of memory) and Dask runs it on
                # another one (or on the restarted one); its progress starts over
                info.started, info.progress = msg.get("t", time.time()), 0.0
                info.message = "restarted: its worker was lost"
                info.first_report, info.reports = None, []
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
        """Which of this engine's jobs share a worker and when they drain (`forecast.outlook`); called with the
        lock held, on every event."""
        outlook(self._jobs.values())

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
                        info.state, info.error, info.message = "error", _failure(exc, info.error), "failed"
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
                self.client.run(preempt_on_worker, v.token)
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

    def _restriction(self, background: bool) -> dict | None:
        """The Dask resources a job needs: one background slot for a background job where workers offer them."""
        if not background:
            return None
        if self._background_slots is None:
            try:
                workers = self.client.scheduler_info().get("workers", {}).values()
                self._background_slots = any(BACKGROUND in (w.get("resources") or {}) for w in workers)
            except Exception:
                return None  # not known now: unrestricted, asked again next time
        return {BACKGROUND: 1} if self._background_slots else None

    def _launch(self, info: JobInfo):
        """Submit `info.job` to Dask (its Job arguments resolved to results or futures); call with the lock held."""
        job = info.job
        args = tuple(self._dependency(a, info.owner, info.priority, info.background) if isinstance(a, Job) else a
                     for a in job.args)
        dkey = job.key if info.attempt == 0 else f"{job.key}{ATTEMPT_SEP}{info.attempt}"
        info.token = uuid.uuid4().hex  # names this run in cancel and preemption requests
        fut = self.client.submit(run_job, job.key, info.token, job.fn, args, job.units, job.rate_key, info.attempt,
                                 key=dkey, priority=info.priority, pure=False,
                                 resources=self._restriction(info.background))
        info.future = fut
        return fut

    # -- the API
    def submit(self, job: Job, owner: str = "", priority: int = 0, retry: bool = False, _room: bool = True,
               background: bool = False) -> str:
        """Submit `job` (and the jobs among its arguments) unless the same key is already running or done;
        returns its key at once. A failed or cancelled job is run again only with `retry` (a user's explicit
        request): pages that re-ask on every rerun must not loop on a failure or undo a cancel; a job that stopped
        because every view let go of it (`release`) runs again for whoever asks next. A `background`
        job (and the jobs it submits as its arguments) takes a background slot (see the module's docstring)."""
        with self._lock:
            info = self._jobs.get(job.key)
            if info is not None and (info.state in ACTIVE + ("done",) or not (retry or info.released)):
                if owner:
                    info.owners.add(owner)
                    if retry or info.state in ACTIVE + ("done",) and owner not in info.withdrawn:
                        info.withdrawn.discard(owner)
                return job.key
            info = JobInfo(job.key, job.kind, job.label, priority=priority, owners={owner} if owner else set(),
                           estimate_s=self.throughput.estimate(job.rate_key, job.units), job=job, owner=owner,
                           background=background)
            self._jobs[job.key] = info
            fut = self._launch(info)
        fut.add_done_callback(self._on_done)
        if priority >= URGENT and _room:  # never with the lock held (a dependency's submit): _make_room talks to
            self._make_room()  # the scheduler synchronously, and the event loop may be waiting for the lock
        return job.key

    def _dependency(self, job: Job, owner: str, priority: int, background: bool = False):
        """A job used as an argument: its result if known, else its future (a Dask dependency)."""
        key = self.submit(job, owner, priority, retry=True, _room=False, background=background)
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
        return self.run_many([job], owner, priority, timeout, progress)[0]

    def run_many(self, jobs: list[Job], owner: str = "", priority: int = 0, timeout: float | None = None,
                 progress: Callable[[float, str], None] | None = None) -> list:
        """Submit `jobs` and wait for all of them, forwarding their mean progress and a running job's message;
        their results, in order. Raises JobFailed (the first failure seen) or JobCancelled at once, without
        waiting for the others."""
        keys = [self.submit(job, owner, priority) for job in jobs]
        deadline = None if timeout is None else time.time() + timeout
        while True:
            infos = [self.status(k) for k in keys]
            ended = [i for i in infos if i.state not in ACTIVE]
            if len(ended) == len(infos) or any(i.state in ("error", "cancelled") for i in ended):
                if progress is not None:
                    progress(1.0, ended[-1].message)
                for info in ended:
                    if info.state != "done":
                        self.wait(info.key, 0)  # raises JobFailed / JobCancelled
                return [self.wait(k, 0) for k in keys]
            if progress is not None:
                now = next((i for i in infos if i.state == "running"), None) or next(i for i in infos
                                                                                     if i.state in ACTIVE)
                progress(sum(1.0 if i.state == "done" else i.progress for i in infos) / len(infos), now.message)
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"{next(i for i in infos if i.state in ACTIVE).label} did not finish within "
                                   f"{timeout} s.")
            time.sleep(0.2 if progress is not None else 0.05)

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
            info.message = "cancelling"
        return self._stop(info)

    def release(self, key: str, owner: str) -> bool:
        """Drop `owner`'s interest without a trace (a view that no longer draws the job: a slider moved on), unlike
        `cancel`, which the owner keeps seeing; the job stops once nobody wants it and no active job needs it as an
        argument; then anyone who submits it again runs it again. True if it was stopped."""
        with self._lock:
            info = self._jobs.get(key)
            if info is None or info.state not in ACTIVE or owner not in info.owners:
                return False
            info.owners.discard(owner)
            info.withdrawn.discard(owner)
            needed = any(key == a.key for other in self._jobs.values() if other.state in ACTIVE and other.job
                         for a in other.job.args if isinstance(a, Job))
            if info.owners - info.withdrawn or needed:
                return False
            info.message, info.released = "cancelling", True
        return self._stop(info)

    def _stop(self, info: JobInfo) -> bool:
        """Cancel `info`'s run (its future, and the run itself on the worker at its next progress report)."""
        fut, token = info.future, info.token
        if fut is not None:
            fut.cancel()
        try:  # the run stops at its next progress report (or at its start, if it is still on its way)
            self.client.run(cancel_on_worker, token)
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


def get_engine(threads_per_worker: int | None = None) -> Engine:
    """The process's engine (created on first use: an embedded LocalCluster, or the cluster TP_SCHEDULER names).
    `threads_per_worker` sets the embedded cluster's worker threads when this call creates it."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            # inside the app's own process the embedded cluster's workers are threads: Streamlit replaces
            # `__main__` with the page script, which a spawned worker process would re-run. `tp_core serve`
            # (`make run`) starts a cluster with worker processes and points the app at it instead.
            _ENGINE = Engine(processes=os.environ.get("TP_JOBS_PROCESSES", "0") == "1",
                             threads_per_worker=threads_per_worker)
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
