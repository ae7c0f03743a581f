"""The app on the job engine (AppTest, quick demo): a page submits and returns at once with progress, jobs survive
navigation and a reload, cancel, a failing job's message on the page and in the jobs panel, two sessions sharing one
computation."""
import shutil
import time

import pytest

from test_app import env, quick_demo  # noqa: F401  (the same fixtures: quick demo model, app settings)
from ui_support import app_test, settle

pytestmark = pytest.mark.ui


def _engine():
    from tp_core.engine import get_engine

    return get_engine()


def _fresh_scores_key(samples: int, steps: int, method: str = "ig", task: str = "sst2") -> str:
    """The key of the app's scores job for these settings, with any cached result removed (so it really runs)."""
    from dataclasses import replace

    from tp_core.attribution import cached_scores_path
    from tp_core.model import load_model
    from tp_core.policy import APP_ATTRIBUTION
    from tp_core.work import model_ref, scores_job

    model = load_model("demo-quick")
    cfg = replace(APP_ATTRIBUTION, method=method, samples=samples, steps=steps)  # what the app asks for
    cached_scores_path(model, task, cfg).unlink(missing_ok=True)
    key = scores_job(model, model_ref(model), task, cfg, None).key
    _engine().forget(key)
    return key


def _page(path: str):
    """A session opened on the app (app.py), then on `path`, so that it can switch pages like a user."""
    return app_test("app.py").switch_page(path)


def _attribution(samples: int, steps: int, sid: str | None = None):
    at = _page("pages/2_Attribution.py")
    at.session_state["attr_samples"] = samples
    at.session_state["attr_steps"] = steps
    at.session_state["attr_method"] = "ig"
    if sid:
        at.query_params["sid"] = sid
    return at


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error] + \
        [p.proto.text for p in at.get("progress")]
    return "\n".join(str(p) for p in parts)


def test_submit_returns_at_once_and_shows_progress_then_the_result(env):
    key = _fresh_scores_key(16, 4)
    at = _attribution(16, 4).run()
    run = [b for b in at.button if b.label == "Run attribution"][0]
    t0 = time.time()
    run.click().run()
    assert time.time() - t0 < 5  # the page returned; the job runs in the background
    info = _engine().status(key)
    assert info is not None and info.state in ("queued", "running")
    assert at.get("progress"), "the page shows the job's progress"
    assert "ig scores · sst2" in _texts(at)
    settle(at)
    assert _engine().status(key).state == "done"
    assert any("integrated gradients" in s.value for s in at.subheader)


def test_jobs_survive_navigation_and_a_reload(env):
    key = _fresh_scores_key(12, 4)
    at = _attribution(12, 4).run()
    [b for b in at.button if b.label == "Run attribution"][0].click().run()
    sid = at.session_state["_sid"]
    at.switch_page("pages/4_Prune.py").run()  # leave the page while it runs
    assert at.title[0].value == "Prune"
    assert _engine().status(key).state in ("queued", "running", "done")
    reloaded = _page("pages/2_Attribution.py")  # a browser reload: a new session with the URL's id
    reloaded.query_params["sid"] = sid
    reloaded.run()
    assert reloaded.session_state["_sid"] == sid
    assert reloaded.session_state["attr_samples"] == 12  # the session's settings came back
    assert sid in _engine().status(key).owners
    assert "ig scores · sst2 · N=12" in "\n".join(str(p.proto.text) for p in reloaded.get("progress")) + \
        "\n".join(c.value for c in reloaded.caption)
    settle(reloaded)
    at.switch_page("pages/2_Attribution.py")
    settle(at)  # back on the page: the finished scores are drawn
    assert any("integrated gradients" in s.value for s in at.subheader)


def test_cancel_from_the_jobs_panel(env):
    key = _fresh_scores_key(256, 48)  # long enough to still run when cancelled
    at = _attribution(256, 48).run()
    [b for b in at.button if b.label == "Run attribution"][0].click().run()
    at.run()  # the sidebar panel now lists it with its cancel button
    at.button(key=f"cancel_{key}").click().run()
    assert _engine().status(key).state == "cancelled"
    at.run()
    assert "cancelled" in _texts(at)
    t0 = time.time()
    while _engine().jobs(active_only=True) and time.time() - t0 < 60:
        time.sleep(0.2)
    assert not _engine().jobs(active_only=True), "the cancelled job stopped"


def test_a_moved_slider_lets_go_of_its_old_points_and_gets_them_back(env):
    from tp_core.work import probe_job

    eng = _engine()
    # every worker thread busy, so the page's points wait in the queue as on a crowded server
    blockers = [eng.submit(probe_job(20.0, tag=f"slider-blocker-{i}"), owner="other", priority=1000)
                for i in range(eng._threads())]
    at = _page("pages/4_Prune.py")
    at.session_state["attr_method"] = "grad_x_act"
    at.session_state["baselines"] = []
    at.run()
    sid = at.session_state["_sid"]
    at.slider(key="w_ffn_sparsity").set_value(0.83).run()
    old = [i for i in eng.jobs(owner=sid, active_only=True) if "FFN 83%" in i.label]
    assert old, [i.label for i in eng.jobs(owner=sid)]
    at.slider(key="w_ffn_sparsity").set_value(0.87).run()  # moved on before any of 83%'s points ran
    mine = {i.key for i in eng.jobs(owner=sid)}
    for info in old:  # released without a trace: not this session's, stopped (nobody else wanted them)
        assert info.key not in mine and eng.status(info.key).state == "cancelled", (info.label, info.state)
    assert any("FFN 87%" in i.label for i in eng.jobs(owner=sid, active_only=True))
    for key in blockers:
        eng.cancel(key)
    at.slider(key="w_ffn_sparsity").set_value(0.83).run()  # and back: its points run again
    t0 = time.time()
    landed = lambda: "last_point" in at.session_state and at.session_state["last_point"]["ffn_sparsity"] == 0.83  # noqa: E731
    while not landed() and time.time() - t0 < 180:
        time.sleep(0.5)
        at.run()
    assert not at.exception and landed()
    assert not [b for b in at.button if "failed or cancelled" in b.label]
    for info in eng.jobs(owner=sid, active_only=True):  # the rest of the curve is not this test's business
        eng.cancel(info.key)


def test_a_failing_job_shows_its_message_on_the_page_and_in_the_panel(env, quick_demo):
    folder = env / "my-model"
    shutil.copytree(quick_demo, folder)
    at = _page("pages/1_Model.py").run()
    at.radio(key="w_model_source").set_value("Local folder").run()
    at.text_input(key="model_typed").set_value(str(folder)).run()
    [b for b in at.button if b.label == "Load"][0].click().run()
    assert at.session_state["model_spec"] == str(folder)
    # the model disappears before the worker loads it, at once (a worker that started loading during a plain
    # rmtree saw a half-deleted folder: "has no encoder.safetensors" instead of "does not exist")
    folder.rename(env / "gone")
    shutil.rmtree(env / "gone")
    at.switch_page("pages/2_Attribution.py").run()
    # settings no other test or app default uses: a copy of the quick demo has its fingerprint, so scores another
    # run left in TP_HOME with the same settings would be found there and no worker would need the model
    at.slider(key="w_attr_samples").set_value(28).run()
    [b for b in at.button if b.label == "Run attribution"][0].click()
    settle(at)
    errors = [e.value for e in at.error]
    assert any("failed" in e and "does not exist" in e for e in errors), errors
    assert any("does not exist" in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert not at.exception
    at.switch_page("pages/4_Prune.py")  # nothing else broke: another page still works on a good model
    at.session_state["model_spec"] = "demo-quick"
    at.session_state["attr_method"] = "magnitude"
    settle(at)
    assert not at.exception and at.session_state["last_point"]["metric"] > 0


def test_two_sessions_share_one_computation(env):
    key = _fresh_scores_key(20, 4)
    a, b = _attribution(20, 4).run(), _attribution(20, 4).run()
    for at in (a, b):
        [x for x in at.button if x.label == "Run attribution"][0].click().run()
    settle(a)
    settle(b)
    assert _engine().computations(key) == 1
    assert {a.session_state["_sid"], b.session_state["_sid"]} <= _engine().status(key).owners
    for at in (a, b):
        assert any("integrated gradients" in s.value for s in at.subheader)
