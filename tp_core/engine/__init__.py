"""The job engine: every heavy computation (attribution, curve points, neuron ablation, demo build, export) runs as a
job on a Dask `distributed` cluster, so the app's pages never block on it and identical requests share one run.

Four modules, each with one concern:

* `spec`: what a job is (`Job`: the worker function, its arguments and its content key; `content_key`; the
  exceptions `JobFailed`, `JobCancelled`, `JobPreempted`; job states and the event topic);
* `runtime`: what runs inside a Dask worker (`run_job`: progress reports as Dask events, cancel and preemption
  requests, the worker process's one-time setup);
* `forecast`: time estimates (`JobInfo` with its remaining time, `outlook` of jobs sharing a worker, the machine's
  measured `Throughput`);
* `client`: the Dask client side (`Engine`: submit, status, result, wait, cancel, preemption; the process-wide
  engine `get_engine` / `set_engine` / `shutdown_engine`).

The engine sits below every pipeline stage: it imports none of them. A `Job` carries its worker function (e.g.
`tp_core.work.point`), which Dask pickles by reference, so the worker imports that function's module itself.
"""
from .client import ENV_SCHEDULER, Engine, default_workers, get_engine, new_owner_id, set_engine, shutdown_engine
from .forecast import PACE_WINDOW_S, JobInfo, Throughput, outlook
from .runtime import ENV_WORKER_NICE, WORKER_NICE, run_job
from .spec import (ACTIVE, ATTEMPT_SEP, PREEMPT_MIN_LEFT_S, TOPIC, URGENT, Job, JobCancelled, JobFailed, JobPreempted,
                   content_key)

__all__ = [
    "ACTIVE", "ATTEMPT_SEP", "ENV_SCHEDULER", "ENV_WORKER_NICE", "PACE_WINDOW_S", "PREEMPT_MIN_LEFT_S", "TOPIC",
    "URGENT", "WORKER_NICE", "Engine", "Job", "JobCancelled", "JobFailed", "JobInfo", "JobPreempted", "Throughput",
    "content_key", "default_workers", "get_engine", "new_owner_id", "outlook", "run_job", "set_engine",
    "shutdown_engine",
]
