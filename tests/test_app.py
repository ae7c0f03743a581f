"""Streamlit AppTest: every page's main flow on the quick demo model, plus the friendly error paths."""
from pathlib import Path

import pytest

from ui_support import APP_ENV, app_test, apply_env, ensure_quick_demo, settle

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")  # the module's TP_HOME has it (conftest.py); a session fixture would build it anew
def quick_demo():
    return ensure_quick_demo()


@pytest.fixture
def env(quick_demo, monkeypatch, tmp_path):
    apply_env(monkeypatch, tmp_path / "exports")
    return tmp_path


def _no_exception(at):
    assert not at.exception, [e.value for e in at.exception]


def _text(at) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [e.value for e in at.error] + \
            [w.value for w in at.warning] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def test_home_page(env):
    at = app_test("app.py").run()
    _no_exception(at)
    assert "demo-quick" in _text(at) and "Where to start" in [s.value for s in at.subheader]


def test_model_page_shows_architecture_and_dense_metrics(env):
    at = settle(app_test("pages/1_Model.py"))
    _no_exception(at)
    others = [b for b in at.button if b.label.startswith("Evaluate the other")]
    assert others, "the other tasks are evaluated on request only"
    others[0].click()
    settle(at)
    _no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "6" and metrics["Heads per layer"] == "12"
    assert metrics["FFN neurons per layer"] == "1536"
    dense = at.dataframe[-1].value
    assert set(dense["task"]) == {"sst2", "ag_news"} and (dense["dense value"] > 0.5).all()
    assert at.selectbox(key="w_task").value in ("sst2", "ag_news")
    # beside each dense metric: the majority baseline on the same examples and the margin; neither task is near it
    assert dense["majority baseline"].str.contains("(", regex=False).all()
    assert (dense["near majority"] == "no").all() and "always positive F1" not in dense.columns
    # a later server (a new engine: nothing in its job registry) shows what is on disk without being asked, as
    # after the warm start: every task's dense metric and margin, a job asked for the current task only
    from tp_core.engine import get_engine, shutdown_engine

    shutdown_engine()
    later = settle(app_test("pages/1_Model.py"))
    _no_exception(later)
    again = later.dataframe[-1].value
    assert list(again["dense value"]) == list(dense["dense value"]), again.to_dict("records")
    assert list(again["margin (95% interval)"]) == list(dense["margin (95% interval)"])
    assert len(get_engine().jobs()) == 1


def test_model_page_flags_a_task_at_chance_and_the_pickers_mark_it(env):
    from tiny import tiny_multitask

    folder = env / "tiny-random"
    tiny_multitask("bert").save(folder)  # random weights: every task at chance
    at = app_test("app.py").switch_page("pages/1_Model.py")
    at.session_state["model_spec"], at.session_state["model_source"] = str(folder), "Local folder"
    at = settle(at)
    _no_exception(at)
    dense = at.dataframe[-1].value
    row = dense[dense["task"] == at.session_state["task"]].iloc[0]
    assert row["near majority"] == "⚠ yes", dense.to_dict("records")
    assert any("not clearly above always answering" in w.value for w in at.warning), _text(at)
    box = at.selectbox(key="w_task")
    assert f"{box.value} (near majority)" in box.options
    at.switch_page("pages/2_Attribution.py").run()
    _no_exception(at)
    assert f"{at.session_state['task']} (near majority)" in at.multiselect(key="w_attr_tasks").options
    assert any("not clearly above always answering" in w.value for w in at.warning)


def test_model_page_bad_folder_gives_a_friendly_error(env):
    bad = env / "not-a-model"
    bad.mkdir()
    (bad / "weights.txt").write_text("nothing useful")
    at = app_test("pages/1_Model.py").run()
    at.radio(key="w_model_source").set_value("Local folder").run()
    at.text_input(key="model_typed").set_value(str(bad)).run()
    at.button[0].click().run()
    _no_exception(at)
    assert any("not a model folder" in e.value for e in at.error), [e.value for e in at.error]
    at.text_input(key="model_typed").set_value(str(env / "missing-folder")).run()
    at.button[0].click().run()
    assert any("does not exist" in e.value for e in at.error)
    assert at.session_state["model_spec"] == "demo-quick"  # the current model did not change
    at.radio(key="w_model_source").set_value("Hugging Face hub id").run()
    at.text_input(key="model_typed").set_value("nobody-xyz/no-such-model").run()
    at.button[0].click().run()
    _no_exception(at)
    assert any("hub id 'nobody-xyz/no-such-model'" in e.value for e in at.error), [e.value for e in at.error]


def test_model_page_bad_upload_gives_a_friendly_error_and_good_upload_becomes_a_task(env):
    at = app_test("pages/1_Model.py").run()
    at.file_uploader[0].set_value(("mine.csv", b"sentence,label\nnice film,1\n", "text/csv"))
    at.run()
    [b for b in at.button if b.label == "Use this data"][0].click().run()
    _no_exception(at)
    assert any("no column 'text'" in e.value or "text" in e.value for e in at.error), [e.value for e in at.error]
    at.selectbox(key="upload_head").set_value("sst2")
    at.file_uploader[0].set_value(("mine.csv", b"text,label\nnice film,positive\nawful film,negative\n"
                                   b"dull film,negative\n", "text/csv"))
    at.run()
    [b for b in at.button if b.label == "Use this data"][0].click().run()
    _no_exception(at)
    assert at.session_state["task"] == "upload:mine", [e.value for e in at.error]
    assert any("Loaded 3 examples" in s.value for s in at.success)
    at.file_uploader[0].set_value(("mine.csv", b"text,label\ngood,maybe\n", "text/csv"))
    at.run()
    [b for b in at.button if b.label == "Use this data"][0].click().run()
    assert any("maybe" in e.value for e in at.error), [e.value for e in at.error]  # label not in the head's labels


def test_attribution_page_runs_and_caches(env):
    at = app_test("pages/2_Attribution.py").run()
    _no_exception(at)
    at.selectbox(key="w_attr_method").set_value("grad_x_act").run()
    [b for b in at.button if b.label == "Run attribution"][0].click().run()
    _no_exception(at)
    settle(at)
    _no_exception(at)
    assert any("gradient x activation" in s.value for s in at.subheader), [s.value for s in at.subheader]
    at2 = app_test("pages/2_Attribution.py")
    at2.session_state["attr_method"] = "grad_x_act"
    at2.run()
    assert any("already scored" in c.value for c in at2.caption)


def test_attribution_page_offers_the_structured_llm_criteria(env):
    """FLAP (and Wanda-sp) are in the method picker; they use no labels, so the labels choice is off."""
    at = app_test("pages/2_Attribution.py").run()
    from tp_app.style import METHOD_LABELS

    picker = at.selectbox(key="w_attr_method")
    assert {METHOD_LABELS["wanda_sp"], METHOD_LABELS["flap"]} <= set(picker.options)  # the options as shown
    picker.set_value("flap").run()
    assert [r for r in at.radio if r.label == "Target labels"][0].disabled
    [b for b in at.button if b.label == "Run attribution"][0].click().run()
    settle(at)
    _no_exception(at)
    assert any("FLAP" in s.value for s in at.subheader), [s.value for s in at.subheader]


def test_prune_page_slider_changes_metric_and_smallest_model_helper(env):
    at = app_test("pages/4_Prune.py")
    at.session_state["attr_method"] = "grad_x_act"
    at.session_state["baselines"] = ["random"]
    settle(at)
    _no_exception(at)
    kept = lambda: next(m.value for m in at.metric if m.label == "Kept parameters")  # noqa: E731
    first = at.session_state["last_point"]
    at.slider(key="w_ffn_sparsity").set_value(0.9)
    settle(at)
    _no_exception(at)
    second = at.session_state["last_point"]
    assert second["ffn_sparsity"] == 0.9 and second["kept_params"] < first["kept_params"]
    assert second["metric"] != first["metric"] or second["kept_pct"] != first["kept_pct"]
    assert kept().endswith("%")
    # the chart: one line per method with its interval band, the dense line and the chance line
    chart = at.get("plotly_chart")[0].proto.spec
    assert '"chance: majority class' in chart and '"dense ' in chart and "95% interval" in chart
    # the chart's PNG and SVG downloads and the report (tp_app.charts; the files: tests/test_browser.py)
    downloads = {d.label: d.proto for d in at.download_button}
    assert {"PNG", "SVG", "Download the report (HTML)"} <= set(downloads), list(downloads)
    assert all(d.deferred_file_id and d.ignore_rerun for d in downloads.values())  # made when pressed, no rerun
    at.number_input(key="target_pct").set_value(90.0).run()
    [b for b in at.button if b.label == "Find smallest model"][0].click().run()
    settle(at)
    _no_exception(at)
    found = [s.value for s in at.success if "Smallest model keeping" in s.value]
    from tp_core.engine import get_engine

    assert found or at.warning, ([(i.label, i.state, i.error) for i in get_engine().jobs() if i.kind == "search"],
                                 [e.value for e in at.error])
    if found:  # the answer stays on screen while the page shows the setting it found, through later reruns
        assert f"FFN sparsity {at.slider(key='w_ffn_sparsity').value:.1%}" in found[0]
        at.run()
        assert any("Smallest model keeping" in s.value for s in at.success)
        at.slider(key="w_ffn_sparsity").set_value(0.0)
        settle(at)
        assert not any("Smallest model keeping" in s.value for s in at.success)


def test_prune_page_budget_helper_moves_both_sliders_within_the_budget(env):
    from tp_core.budget import flops_fraction
    from tp_core.engine import Job, get_engine
    from tp_core.masks import PruneConfig, build_masks
    from tp_core.model import load_model

    at = app_test("pages/4_Prune.py")
    at.session_state["attr_method"] = "grad_x_act"
    settle(at)
    _no_exception(at)
    at.number_input(key="budget_flops_pct").set_value(40.0)
    at.number_input(key="budget_seq").set_value(64)
    [b for b in at.button if b.label == "Find the split"][0].click().run()
    settle(at)
    _no_exception(at)
    found = [s.value for s in at.success if s.value.startswith("Within 40% of the dense FLOPs")]
    assert found, ([e.value for e in at.error], [s.value for s in at.success])
    ffn, heads = at.slider(key="w_ffn_sparsity").value, at.slider(key="w_head_sparsity").value
    assert f"FFN sparsity {ffn:.0%}, head sparsity {heads:.0%}" in found[0]
    assert "chosen for the best accuracy" in found[0] and "validation examples among" in found[0]
    assert heads in [round(0.1 * i, 1) for i in range(10)] and 0 < ffn <= 0.95
    # the sliders' setting really is within the budget: count its FLOPs from the masks the page evaluates
    eng = get_engine()
    done = [i for i in eng.jobs() if i.kind == "budget" and i.state == "done"]
    assert done and (done[-1].result.ffn_sparsity, done[-1].result.head_sparsity) == (ffn, heads)
    sel = done[-1].result.selection  # each split on the head slider's steps was evaluated; the best one is shown
    assert sel["by"] == "metric" and len(sel["candidates"]) == done[-1].result.candidates
    assert max(r["metric"] for r in sel["candidates"]) == next(
        r["metric"] for r in sel["candidates"] if (r["ffn_sparsity"], r["head_sparsity"]) == (ffn, heads))
    scores = done[-1].job.args[2]
    scores = eng.result(scores.key) if isinstance(scores, Job) else scores
    model = load_model("demo-quick")
    masks = build_masks(scores, PruneConfig(ffn, heads, "global"), model.unit_shape())
    assert flops_fraction(model, masks, 64) == pytest.approx(done[-1].result.flops_fraction, abs=1e-5)
    assert done[-1].result.flops_fraction <= 0.40 + 1e-9
    # a latency budget nothing can meet: one friendly message, no traceback, sliders untouched
    at.radio(key="budget_kind").set_value("latency").run()
    at.number_input(key="budget_ms").set_value(0.1).run()
    [b for b in at.button if b.label == "Find the split"][0].click().run()
    settle(at)
    _no_exception(at)
    assert any(e.value.startswith("No split found:") for e in at.error), [e.value for e in at.error]
    assert at.slider(key="w_ffn_sparsity").value == ffn


def test_heatmaps_page_inspector_and_overlap(env):
    at = app_test("pages/3_Heatmaps.py")
    at.session_state["attr_method"] = "grad_x_act"
    at.run()
    _no_exception(at)
    compute = [b for b in at.button if b.label.startswith("Compute scores")]
    if compute:
        compute[0].click()
        settle(at)
        _no_exception(at)
    others = [b for b in at.button if b.label.startswith("Score the other tasks")]
    if others:
        others[0].click()
        settle(at)
        _no_exception(at)
    # the untouched default unit waits for a click (its two jobs would take the workers from other pages)
    inspect = [b for b in at.button if b.label.startswith("Inspect ")]
    assert inspect and inspect[0].label == "Inspect FFN neuron 0 of layer 0"
    assert "Top-activating" not in _text(at)
    inspect[0].click()
    settle(at)
    _no_exception(at)
    assert "Top-activating" in _text(at) and not [b for b in at.button if b.label.startswith("Inspect ")]
    # every chart (two tasks' heatmaps, kept share, overlap) with its PNG and SVG download (tp_app.charts)
    charts, files = at.get("plotly_chart"), [d.label for d in at.download_button]
    assert len(charts) == 6 and files == ["PNG", "SVG"] * len(charts), (len(charts), files)
    # a unit the user picked runs at once
    at.number_input(key="w_insp_layer").set_value(2).run()
    at.number_input(key="w_insp_index").set_value(7)
    settle(at)
    _no_exception(at)
    text = _text(at)
    assert "FFN neuron 7 of layer 2" in text
    assert "Top-activating" in text and "<span" in text
    score_table = at.dataframe[0].value
    assert set(score_table["task"]) == {"sst2", "ag_news"}
    assert any("vs dense" in (m.delta or "") for m in at.metric)


def test_export_page_exports_and_reloads(env):
    at = app_test("pages/5_Export.py")
    at.session_state["attr_method"] = "magnitude"
    at.session_state["ffn_sparsity"] = 0.5
    at.session_state["export_preset"] = "custom"  # the TaskPrune folder (the deploy preset: test_app_export.py)
    at.run()
    _no_exception(at)
    at.text_input(key="export_name").set_value("../escape").run()
    [b for b in at.button if b.label == "Export and verify"][0].click().run()
    assert any("not allowed" in e.value for e in at.error)
    at.text_input(key="export_name").set_value("sst2-test").run()
    [b for b in at.button if b.label == "Export and verify"][0].click()
    settle(at)
    _no_exception(at)
    last = at.session_state["last_export"]
    assert Path(last["out_dir"]) == env / "exports" / "sst2-test" and Path(last["out_dir"]).is_dir()
    after = last["params_pruned"]["total"]
    assert after < last["params_dense"]["total"] and last["reloaded_params"] == after
    assert abs(last["reloaded_metric"] - last["metric_pruned"]) < 1e-6
    assert [d.label.split(" (")[0] for d in at.download_button] == ["Download everything"]
    import zipfile

    names = zipfile.ZipFile(last["zip"]).namelist()  # the TaskPrune folder and the mask file beside it
    assert "sst2-test/taskprune.json" in names and "sst2-test.mask.json" in names
    assert not (env / "escape").exists()


def test_two_sessions_do_not_share_state_or_masks(env):
    """Two app sessions used in turn (AppTest is not thread-safe; the real concurrent case, two browser sessions on
    one server, is in test_browser.py) on different tasks and sparsities."""
    results = {}
    sessions = {}
    for name, task, ffn in (("a", "sst2", 0.3), ("b", "ag_news", 0.9)):
        at = app_test("pages/4_Prune.py")
        at.session_state["attr_method"] = "magnitude"
        at.session_state["baselines"] = []
        at.session_state["task"] = task
        settle(at)
        sessions[name] = (at, task, ffn)
    for at, _task, ffn in sessions.values():  # interleaved: a, b both loaded, then each moves its slider
        at.slider(key="w_ffn_sparsity").set_value(ffn).run()
    for name, (at, _task, _ffn) in sessions.items():
        settle(at)  # a rerun after the other session moved must still show this session's own point
        results[name] = (at.session_state["task"], at.session_state["ffn_sparsity"], at.session_state["last_point"],
                         [e.value for e in at.exception])
    ta, fa, pa, ea = results["a"]
    tb, fb, pb, eb = results["b"]
    assert not ea and not eb
    assert (ta, fa, pa["task"], pa["ffn_sparsity"]) == ("sst2", 0.3, "sst2", 0.3)
    assert (tb, fb, pb["task"], pb["ffn_sparsity"]) == ("ag_news", 0.9, "ag_news", 0.9)
    # each session's numbers equal a fresh single-session evaluation of its own mask (no leak from the other)
    from tp_core.attribution import AttributionConfig, attribute
    from tp_core.data import load_split
    from tp_core.evaluation import evaluate_masked
    from tp_core.masks import PruneConfig, build_masks
    from tp_core.model import load_model
    from tp_core.pruning import kept_params

    model = load_model("demo-quick")
    for task, ffn, point in (("sst2", 0.3, pa), ("ag_news", 0.9, pb)):
        scores = attribute(model, task, AttributionConfig(method="magnitude", samples=8, steps=4))
        masks = build_masks(scores, PruneConfig(ffn), model.unit_shape())
        data = load_split(task, "validation", limit=int(APP_ENV["TP_APP_EVAL_LIMIT"]))  # what the app evaluates
        metric = evaluate_masked(model, task, data, masks).metric
        assert metric == pytest.approx(point["metric"]) and kept_params(model, masks, task) == point["kept_params"]


def test_a_shared_link_opens_its_view_and_notes_what_it_ignored(env):
    """A link's settings become the session's (defaults for what it gets wrong, with a note), the address loses
    them, and the page's own copy-link box gives the same view back."""
    at = app_test("pages/2_Attribution.py")  # no job runs before a click: the link's settings are all there is
    at.query_params.update({"task": "ag_news", "method": "grad_x_act", "baselines": "random", "ffn": "2",
                            "heads": "0.2", "alloc": "per-layer", "recovery": "scale", "samples": "12", "steps": "2",
                            "labels": "predicted", "units": "ffn", "model": "/etc", "tsk": "x"})
    at.run()
    _no_exception(at)
    assert at.selectbox(key="w_attr_method").value == "grad_x_act"
    assert (at.slider(key="w_attr_samples").value, at.slider(key="w_attr_steps").value) == (12, 2)
    assert (at.radio(key="w_attr_labels").value, at.radio(key="w_attr_units").value) == ("predicted", "ffn")
    assert at.multiselect(key="w_attr_tasks").value == ["ag_news"]
    assert "**FFN** 50% · **heads** 20% · per-layer" in _text(at)  # the sidebar; ffn=2 is out of range
    ss = at.session_state
    assert (ss["model_spec"], ss["baselines"], ss["recover_on"], ss["recover_level"]) == \
        ("demo-quick", ["random"], True, "scale")
    note = " ".join(w.value for w in at.warning)
    assert "model `/etc`" in note and "ffn `2`" in note and "`tsk`" in note and "task `" not in note
    assert not {"task", "model", "ffn"} & set(at.query_params)  # taken off the address: a reload keeps later changes
    shared = [c.value for c in at.code if "?" in c.value]
    assert shared == ["?model=demo-quick&task=ag_news&method=grad_x_act&baselines=random&ffn=0.5&heads=0.2&"
                      "alloc=per-layer&recovery=scale&samples=12&steps=2&labels=predicted&units=ffn&"
                      f"examples={APP_ENV['TP_APP_EVAL_LIMIT']}"]  # the server's examples setting
    at.selectbox(key="w_attr_method").set_value("ig").run()  # the view moved on: the note goes
    assert not at.warning and "method=ig&baselines=random" in [c.value for c in at.code if "?" in c.value][0]
