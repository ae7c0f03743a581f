"""The app's code path on a separate Dask cluster: a real `dask scheduler` process and a `dask worker` process
(not the embedded cluster), named by TP_SCHEDULER. An attribution job and a curve run through it."""
import json
import os
import subprocess
import sys
import time

import pytest

from ui_support import APP_ROOT, app_test, apply_env, ensure_quick_demo, settle

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ensure_quick_demo()
    tmp = tmp_path_factory.mktemp("cluster")
    sched_file = tmp / "scheduler.json"
    env = dict(os.environ, PYTHONPATH=str(APP_ROOT), DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="1.0")
    logs = [open(tmp / "scheduler.log", "w"), open(tmp / "worker.log", "w")]
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                              env=env, cwd=tmp, stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        for _ in range(120):
            if sched_file.is_file() and sched_file.stat().st_size:
                break
            time.sleep(0.5)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                                       "2", "--nworkers", "1", "--no-dashboard", "--name", "external-worker"],
                                      env=env, cwd=tmp, stdout=logs[1], stderr=subprocess.STDOUT))
        yield address, tmp
    finally:
        for p in procs[::-1]:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


def test_attribution_and_a_curve_run_on_an_existing_cluster(cluster, monkeypatch, tmp_path):
    from tp_core.engine import get_engine, shutdown_engine

    address, tmp = cluster
    apply_env(monkeypatch, tmp_path / "exports")
    monkeypatch.setenv("TP_SCHEDULER", address)
    shutdown_engine()  # the next page run connects to TP_SCHEDULER instead of starting an embedded cluster
    try:
        eng = get_engine()
        assert not eng.embedded and eng.address == address
        for _ in range(120):
            if eng.workers().get("workers"):
                break
            time.sleep(0.5)
        assert eng.workers() == {"address": address, "embedded": False, "workers": 1, "threads": 2}

        at = app_test("pages/2_Attribution.py")
        at.session_state["attr_samples"] = 12
        at.session_state["attr_steps"] = 3
        at.run()
        [b for b in at.button if b.label == "Run attribution"][0].click()
        settle(at)
        assert not at.exception
        assert any("integrated gradients" in s.value for s in at.subheader), [s.value for s in at.subheader]

        prune = app_test("pages/4_Prune.py")
        prune.session_state["attr_samples"] = 12
        prune.session_state["attr_steps"] = 3
        prune.session_state["baselines"] = ["random"]
        settle(prune)
        assert not prune.exception and prune.session_state["last_point"]["kept_pct"] < 100
        points = [i for i in eng.jobs() if i.kind == "point" and i.state == "done"]
        assert len(points) >= 8 and eng.computations() >= len(points)
        # the work ran in the worker process, which loaded the model itself
        log = (tmp / "worker.log").read_text()
        assert "external-worker" in log or "Start worker" in log, log[-2000:]
        loaded = eng.client.run(lambda: sorted(k[0] for k in __import__("tp_core.refs").refs._MODELS))
        assert list(loaded.values()) == [["demo-quick"]]
    finally:
        shutdown_engine()
