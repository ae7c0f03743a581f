"""Reliability of the job engine with worker processes: a job whose worker process is killed mid-way ends (Dask's
nanny restarts the worker and the job runs again, or the job reports that its worker died) instead of hanging."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Run in a fresh interpreter: a spawned worker process re-runs the parent's __main__, which AppTest replaces with a
# page script in the test process. The tiny model is saved to a folder so that the worker processes (also the one
# the nanny starts after the kill) load it themselves.
KILL_WORKER = r"""
import json, logging, os, signal, sys, time
sys.path.insert(0, "tests")
from tiny import tiny_multitask
from tp_core.attribution import AttributionConfig
from tp_core.engine import Engine, JobFailed
from tp_core.work import ModelRef, probe_job, scores_job

def kill_when_running(eng, key):
    while eng.status(key).state != "running":  # started on the worker (its start event arrived)
        assert eng.status(key).state == "queued", eng.status(key)
        time.sleep(0.02)
    pid = next(iter(eng.client.run(os.getpid).values()))
    os.kill(pid, signal.SIGKILL)
    return time.time()

model = tiny_multitask("bert")
folder = model.save(sys.argv[1])
ref = ModelRef(str(folder), False, model.fingerprint())
eng = Engine(address="", processes=True, n_workers=1, threads_per_worker=1)
# the nannies' and scheduler's warnings (a worker that could not be restarted) go to stderr, shown on failure
logging.getLogger("distributed").setLevel(logging.WARNING)
logging.getLogger("distributed").addHandler(logging.StreamHandler(sys.stderr))
out = {}
try:
    job = scores_job(model, ref, "sst2", AttributionConfig(method="ig", samples=32, steps=8), None)
    key = eng.submit(job, owner="t")
    killed = kill_when_running(eng, key)
    scores = eng.wait(key, 120)
    info = eng.status(key)
    out["rerun"] = {"state": info.state, "starts": eng.computations(key), "s": time.time() - killed,
                    "layers": len(scores.ffn), "started_after_kill": info.started > killed}
    eng.cluster.scheduler.allowed_failures = 0  # now a worker's death fails the job at once
    key = eng.submit(probe_job(30.0, tag="killed"), owner="t")
    kill_when_running(eng, key)
    t0 = time.time()
    try:
        eng.wait(key, 120)
        out["given_up"] = {"state": eng.status(key).state}
    except JobFailed as exc:
        out["given_up"] = {"state": eng.status(key).state, "error": str(exc), "s": time.time() - t0}
    # the restarted worker works; with the default tolerance again, so that a job the scheduler hands to the dead
    # worker before it has noticed the death is retried instead of failing (a race, not what this checks)
    eng.cluster.scheduler.allowed_failures = 3
    after = eng.submit(probe_job(0.1, tag="after"), owner="t")
    try:
        out["after"] = eng.wait(after, 120)
    except TimeoutError:  # what each side saw, for the assertion's message
        out["after"] = {"timeout": str(eng.status(after)),
                        "scheduler_workers": list(eng.client.scheduler_info()["workers"]),
                        "scheduler_tasks": eng.client.run_on_scheduler(
                            lambda dask_scheduler: {k: str(ts.state) for k, ts in dask_scheduler.tasks.items()}),
                        "nannies": {str(n): str(w.status) for n, w in eng.cluster.workers.items()}}
finally:
    eng.close()
print(json.dumps(out, default=str))
"""


def test_a_job_whose_worker_process_is_killed_runs_again_or_fails_but_never_hangs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TP_SCHEDULER", "TP_WORKER_NICE")}
    env["TP_HOME"] = str(tmp_path / "home")
    run = subprocess.run([sys.executable, "-c", KILL_WORKER, str(tmp_path / "tiny")], capture_output=True,
                         text=True, timeout=420, env=env, cwd=str(ROOT))
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # the nanny restarted the worker and Dask ran the job again: the client saw two starts and the scores, and the
    # job's record (elapsed time, progress, pace) started over with the second run
    assert out["rerun"]["state"] == "done" and out["rerun"]["starts"] == 2 and out["rerun"]["layers"] == 3, out
    assert out["rerun"]["started_after_kill"], out
    # with no retries allowed, the job fails with a message saying what happened
    assert out["given_up"]["state"] == "error", out
    assert "worker running this job stopped" in out["given_up"]["error"], out
    assert out["after"] == 0.1, (out["after"], run.stderr[-3000:])
