"""Time forecasts of the jobs panel: a job's record (`JobInfo`: state, progress reports, where it runs) with its
remaining-time estimate, the per-worker outlook of which jobs share a worker and when they end (`outlook`), and
this machine's measured throughput (`Throughput`, seconds per work unit, persisted under TP_HOME) for jobs that
have not reported any progress yet.
"""
from __future__ import annotations

import heapq
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable

from ..paths import atomic_write_text, tp_home
from .spec import ACTIVE, Job

PACE_WINDOW_S = 8.0  # the remaining-time estimate uses the job's pace over this many recent seconds


@dataclass
class JobInfo:
    """The client's record of one job: its state and progress reports (from the workers' events), and the
    estimate of its remaining time drawn from them."""

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
    token: str = ""  # names the current run on the workers (cancel and preemption requests are for a run)
    preempting: bool = False  # asked to give way, not yet back in the queue
    background: bool = False  # takes a background slot (client.py): at most one per worker runs
    released: bool = False  # stopped because nobody wanted it any more (`Engine.release`), not by a user's cancel

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
        A job's CPU time per unit of work stays the same when it shares the cores; its wall time per CPU second is
        what changes."""
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
        "about to end" while most of it is still to run."""
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



def outlook(jobs: Iterable[JobInfo]) -> None:
    """For each running job: how many of these jobs share its worker now (`sharing`) and when the others are
    expected to have drained (`alone_at`): each of them ends at its own estimate, and a waiting job takes the first
    place to free up for its throughput estimate (None when any of those is unknown: then no speed-up is
    forecast)."""
    now = time.time()
    jobs = list(jobs)
    running = [i for i in jobs if i.state == "running"]
    queued = sorted((i for i in jobs if i.state == "queued"), key=lambda i: (-i.priority, i.submitted))
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


class Throughput:
    """Seconds per work unit per kind of job, learned from finished jobs (persisted under TP_HOME)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rates: dict[str, float] | None = None

    def _path(self):
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
                atomic_write_text(self._path(), json.dumps(rates, indent=1))
            except OSError:
                pass

