"""What a job is, shared by the engine's client side and the worker runtime: the `Job` spec, its content key, the
exceptions a job ends with and the names of the event topic and job states.

A `Job` carries the worker function itself (a module-level function of an upper layer, e.g. `tp_core.work.point`),
not its name: Dask pickles such a function by reference and the worker imports its module when it unpickles the
task, so the engine never imports the layers above it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from ..errors import TPError

TOPIC = "tp-job"  # the Dask structured-event topic of job start, progress and end reports
ACTIVE = ("queued", "running")
BACKGROUND = "background"  # the worker resource a background job holds one unit of (client.py)
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
    """What to compute: `fn(progress, *args)`, under the content key `key`. `fn` is a module-level function (so
    that a worker process can import it); arguments that are themselves `Job`s are computed first and passed as
    Dask dependencies."""

    kind: str  # scores | point | dense | ablation | top_activating | export | build_demo
    fn: Callable[..., Any]  # the worker function; it takes `progress(fraction, message)` first
    args: tuple
    key: str
    label: str  # what the jobs panel shows
    units: float = 1.0  # work units, for the time estimate before the job has reported any progress
    rate_key: str = ""  # which throughput (seconds per unit) the estimate uses
    preemptible: bool = False  # may give way to an urgent job at a progress report and run again later (a job
    # that other jobs take as an argument must not: its dependents' futures would fail with it)

    def __post_init__(self):
        qualname = getattr(self.fn, "__qualname__", "")
        if not callable(self.fn) or "<" in qualname or not getattr(self.fn, "__module__", None):
            # a name, a lambda or a nested function: a worker process could not import it by reference
            raise TypeError(f"Job {self.kind!r}: fn must be a module-level function, got {self.fn!r}.")


def content_key(kind: str, *parts: Any) -> str:
    """A stable key from what a job computes (reprs of frozen dataclasses, strings, numbers)."""
    h = hashlib.sha256(json.dumps([kind, *[repr(p) for p in parts]]).encode())
    return f"{kind}-{h.hexdigest()[:20]}"
