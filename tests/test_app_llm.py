"""The app on a causal LM: a tiny random Llama saved as a local folder goes through the Model page (architecture,
prompt shown and edited, bad prompts refused with a message), Attribution, Heatmaps, Prune and Export, with the
prompts of a session kept apart from the shared model's (tp_core.decoder.prompt_view)."""
import pytest
from tiny import tiny_llama
from ui_support import app_test, settle

from tp_core.decoder import PromptTask, prompt_view, prompts_key
from tp_core.refs import ModelRef, get_model, loaded_model, model_ref

TEMPLATE_KEY = "Review: {text}\nSentiment:"  # prompts.py's sst2 template, the default prompt's


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A tiny random Llama (tests/tiny.py) as a plain Hugging Face causal-LM folder, prompts left to the defaults."""
    folder = tmp_path_factory.mktemp("tiny-llama-app") / "tiny-llama"
    model = tiny_llama(prompts=False)
    model.encoder.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def env(llama_folder, monkeypatch, tmp_path):
    for key, value in {"TP_APP_MODEL": llama_folder, "TP_APP_EVAL_LIMIT": "24", "TP_APP_COARSE_EXAMPLES": "12",
                       "TP_APP_SLIDER_FIRST_EXAMPLES": "6", "TP_APP_GRID": "0,0.5",
                       "TP_EXPORTS_DIR": str(tmp_path / "exports")}.items():
        monkeypatch.setenv(key, value)
    return llama_folder


def _page(path: str, **state):
    at = app_test(path)
    at.session_state["eval_limit"] = 24
    for k, v in state.items():
        at.session_state[k] = v
    return at


def _no_exception(at):
    assert not at.exception, [e.value for e in at.exception]


def _dense_runs() -> list:
    """The finished dense-point jobs of sst2 (one per prompt and evaluation subset)."""
    from tp_core.engine import get_engine

    return [i for i in get_engine().jobs() if i.kind == "point" and "sst2 · dense" in i.label and i.state == "done"]


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_model_page_shows_the_llama_and_the_default_prompt(env):
    at = settle(_page("pages/1_Model.py"))
    _no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Key/value groups per layer"] == "2" and metrics["MLP neurons per layer"] == "64"
    assert metrics["Layers"] == "2" and metrics["Family"] == "llama"
    assert at.text_area[0].value == TEMPLATE_KEY
    assert [t.value for t in at.text_input if t.label.startswith("Label words")] == ["negative", "positive"]
    dense = at.dataframe[-1].value.set_index("task")
    assert dense.loc["sst2", "dense value"] is not None and 0 <= dense.loc["sst2", "dense value"] <= 1
    # trec's default label words are all '<unk>' in the tiny vocabulary: not offered, and the page says why
    assert "trec" not in dense.index and "trec" not in at.selectbox(key="w_task").options
    assert any("trec: The label words" in c.value for c in at.caption)


def test_model_page_refuses_bad_prompts_and_an_edit_gets_its_own_results(env):
    at = settle(_page("pages/1_Model.py"))
    runs = len(_dense_runs())
    at.text_area[0].set_value("Review without a slot. Sentiment:")
    at.button(key="FormSubmitter:prompt_form::sst2-Apply this prompt").click().run()
    _no_exception(at)
    assert any("{text}" in e for e in _errors(at)), _errors(at)
    assert not at.session_state["prompt_edits"]
    at.text_area[0].set_value("Movie review: {text}\nSentiment:")
    words = [t for t in at.text_input if t.label.startswith("Label words")]
    words[0].set_value("good")
    words[1].set_value("good")
    at.button(key="FormSubmitter:prompt_form::sst2-Apply this prompt").click().run()
    assert any("same token" in e for e in _errors(at)), _errors(at)
    words = [t for t in at.text_input if t.label.startswith("Label words")]
    words[0].set_value("bad film")
    at.button(key="FormSubmitter:prompt_form::sst2-Apply this prompt").click().run()
    assert any("not one" in e for e in _errors(at)), _errors(at)
    words = [t for t in at.text_input if t.label.startswith("Label words")]
    words[0].set_value("bad, worst")
    words[1].set_value("good")
    at.number_input(key=[n.key for n in at.number_input if n.label == "Demonstrations per label"][0]).set_value(0)
    at.button(key="FormSubmitter:prompt_form::sst2-Apply this prompt").click().run()
    _no_exception(at)
    edit = at.session_state["prompt_edits"][env]["sst2"]
    assert edit["template"] == "Movie review: {text}\nSentiment:" and not edit["demos"]
    assert tuple(map(tuple, edit["label_words"])) == (("bad", "worst"), ("good",))
    settle(at)
    assert "Edited in this session" in "\n".join(c.value for c in at.caption)
    assert len(_dense_runs()) == runs + 1  # the edited prompt's own dense point, not the default prompt's
    assert at.dataframe[-1].value.set_index("task").loc["sst2", "dense value"] is not None
    at.button(key="pt_reset::sst2").click().run()
    assert not at.session_state["prompt_edits"] and at.text_area[0].value == TEMPLATE_KEY


def test_attribution_heatmaps_prune_and_export_pages_run_on_the_llama(env):
    state = {"attr_method": "grad_x_act", "baselines": [], "attr_samples": 8}
    at = _page("pages/2_Attribution.py", **state).run()
    _no_exception(at)
    [b for b in at.button if b.label == "Run attribution"][0].click().run()
    settle(at)
    _no_exception(at)
    assert any("gradient x activation" in s.value for s in at.subheader), [s.value for s in at.subheader]

    hm = settle(_page("pages/3_Heatmaps.py", **state))
    _no_exception(hm)
    assert not _errors(hm) and len(hm.get("plotly_chart")) == 3  # sst2's heads and neurons, kept share per layer

    pr = settle(_page("pages/4_Prune.py", **state))
    _no_exception(pr)
    assert not _errors(pr), _errors(pr)
    kept = {m.label: m.value for m in pr.metric}
    assert "Kept parameters" in kept and kept["Kept parameters"].endswith("%")
    assert pr.session_state["last_point"]["task"] == "sst2"

    ex = settle(_page("pages/5_Export.py", **state))
    _no_exception(ex)
    assert ex.radio(key="w_export_vocab").disabled and ex.radio(key="w_export_vocab").value == "full"
    [b for b in ex.button if b.label == "Export and verify"][0].click().run()
    settle(ex)
    _no_exception(ex)
    assert any("Exported to" in s.value for s in ex.success), _errors(ex)


def test_the_tour_walks_its_five_steps_on_the_llama(env):
    """The guided tour on a causal LM: every step draws its content (the neuron's path and the library's score, the
    heatmaps, pruning against random, recovery, the export's counts), and the export step says what does not apply
    to a causal LM."""
    at = app_test("app.py")
    at.session_state["eval_limit"] = 24
    at.run()
    at.switch_page("pages/0_Tour.py")
    checks = (
        lambda: {"Estimate with 4 steps", "The library's ig score (4 steps)"} <= {m.label for m in at.metric},
        lambda: len(at.get("plotly_chart")) == 2,  # FFN neurons and key/value groups
        lambda: any(m.value.startswith("Dense: ") and "at **90%**" in m.value for m in at.markdown),
        lambda: {"Pruned, masks only", "Pruned + lstsq recovery"} <= {m.label for m in at.metric},
        lambda: len(at.dataframe[0].value) == 4 and any("A causal LM" in c.value for c in at.caption),
    )
    for step, check in enumerate(checks):
        settle(at)
        _no_exception(at)
        assert not _errors(at), _errors(at)
        assert at.radio(key="w_tour_step").value == step and check(), step + 1
        if step < len(checks) - 1:
            at.button(key="tour_next").click()


def test_prompt_views_keep_sessions_and_jobs_apart(llama_folder):
    """Jobs with different prompts for one task each compute on their own view of the workers' one copy."""
    base = get_model(ModelRef(llama_folder))  # the copy the app's pages and in-process workers share
    assert loaded_model(llama_folder) is base
    default = base.prompts[base.resolve_task("sst2")]
    other = PromptTask("text : {text} label :", (("bad",), ("good",)))
    view = prompt_view(base, {"sst2": other})
    assert view.prompts["sst2"] == other and base.prompts["sst2"] == default  # the shared model is unchanged
    assert view.encoder is base.encoder and view.fingerprint() == base.fingerprint()
    ref = model_ref(view, tasks=["sst2"])
    assert ref.spec == llama_folder and ref.prompts == prompts_key(view, ["sst2"]) and "ag_news" not in ref.prompts
    worker = get_model(ref)
    assert worker is not base and worker.prompts["sst2"] == other and get_model(ref) is worker
    assert get_model(model_ref(base, tasks=["sst2"])).prompts["sst2"] == default
