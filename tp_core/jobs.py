"""The job engine's former single module, kept so that code written against `tp_core.jobs` still imports; the
engine lives in the package `tp_core.engine` (spec, runtime, forecast, client), and new code imports from there."""
from .engine import (ACTIVE, ENV_SCHEDULER, PACE_WINDOW_S, TOPIC, URGENT, WORKER_NICE, Engine, Job, JobCancelled,
                     JobFailed, JobInfo, Throughput, content_key, get_engine, new_owner_id, set_engine,
                     shutdown_engine)

__all__ = [
    "ACTIVE", "ENV_SCHEDULER", "PACE_WINDOW_S", "TOPIC", "URGENT", "WORKER_NICE", "Engine", "Job", "JobCancelled",
    "JobFailed", "JobInfo", "Throughput", "content_key", "get_engine", "new_owner_id", "set_engine",
    "shutdown_engine",
]
