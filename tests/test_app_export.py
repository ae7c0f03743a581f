"""The Export page on the quick demo: ONNX + Hugging Face formats with the task vocabulary, run as a
background job; when it lands the page shows parameters by part, one row per format, the vocabulary figures, the
hf/ padding, and one zip of everything."""
import json
import zipfile
from pathlib import Path

import pytest

from test_app import env, quick_demo  # noqa: F401  (the same fixtures: quick demo model, app settings)
from ui_support import app_test, settle

pytestmark = pytest.mark.ui


def _text(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error] + \
        [i.value for i in at.info] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def test_export_page_onnx_and_hf_with_task_vocabulary(env):
    at = app_test("pages/5_Export.py")
    at.session_state["attr_method"] = "magnitude"  # data-free scores: the test is about the export
    at.session_state["ffn_sparsity"] = 0.5
    at.session_state["head_sparsity"] = 0.25  # a non-uniform plan: hf/ is padded, and the page says what it costs
    at.session_state["eval_limit"] = 40
    at.session_state["export_preset"] = "custom"
    at.session_state["export_formats"] = ["onnx", "hf"]
    at.session_state["export_vocab"] = "task"
    at.session_state["export_min_count"] = 2
    settle(at)  # the task-vocabulary count is a small job of its own
    assert not at.exception, [e.value for e in at.exception]
    before = _text(at)
    assert "with the task vocabulary" in before and "fewer embedding parameters" in before, before
    assert "padded with zero units" in before and "parameters** in hf/" in before, before
    # the user's own texts, in scripts the task never saw: their [UNK] share and a warning, no traceback
    texts = "Η ταινία ήταν υπέροχη και πολύ συγκινητική.\n这部电影非常好看，演员的表演很精彩。\n".encode()
    at.file_uploader(key="export_texts_up").set_value(("mine.txt", texts, "text/plain")).run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert len(at.warning) == 1 and "[UNK]" in at.warning[0].value and "2 texts" in at.warning[0].value
    at.text_input(key="export_name").set_value("sst2-onnx-hf").run()
    [b for b in at.button if b.label == "Export and verify"][0].click().run()
    assert at.get("progress") or at.session_state["last_export"], "the page shows the job's progress"
    settle(at)
    assert not at.exception, [e.value for e in at.exception]
    last = at.session_state["last_export"]
    out = env / "exports" / "sst2-onnx-hf"
    assert Path(last["out_dir"]) == out and [f["format"] for f in last["formats"]] == ["onnx", "hf"]
    assert (out / "onnx" / "model.onnx").is_file() and (out / "hf" / "config.json").is_file()
    assert last["params_pruned"]["embeddings"] < last["params_dense"]["embeddings"] / 2  # task vocabulary
    assert last["formats"][0]["check_max_abs_diff"] < 1e-4 and last["formats"][1]["check_max_abs_diff"] < 1e-4
    tables = [t.value for t in at.table]
    parts, formats = tables[0], tables[1]
    assert list(parts.index)[0].startswith("embeddings") and list(parts.index)[-1] == "total"
    assert parts.loc["total", "pruned"] == f"{last['params_pruned']['total']:,}"
    assert list(formats.index) == ["dense (torch, float32)", "ONNX (fp32)", "Hugging Face folder"]
    assert "padding" in formats.loc["Hugging Face folder", "parameters"]
    assert any("tokens kept" in list(t.index) for t in tables)  # the vocabulary figures
    assert any("task / full vocabulary" in t.columns for t in tables)  # off-domain (mr, cr, ...)
    text = _text(at)
    assert "Hugging Face folder: transformers' config has one FFN width" in text
    assert "# Task-pruned model: sst2" in text  # the model card
    downloads = [d for d in at.download_button]
    assert len(downloads) == 1 and downloads[0].label.startswith("Download everything (zip")
    names = zipfile.ZipFile(last["zip"]).namelist()
    assert {"sst2-onnx-hf/onnx/model.onnx", "sst2-onnx-hf/onnx/tokenizer.json", "sst2-onnx-hf/hf/config.json",
            "sst2-onnx-hf/README.md", "sst2-onnx-hf/mask.json"} <= set(names)


def test_export_page_opens_on_the_deploy_preset_and_one_click_writes_int8_onnx_and_hf(env):
    at = app_test("pages/5_Export.py")
    at.session_state["attr_method"] = "magnitude"
    at.session_state["eval_limit"] = 40
    settle(at)  # the budget helper's split, then its recovery and the vocabulary count: jobs as the page opens
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="w_export_preset").value == "deploy"
    text = _text(at)
    assert "the Prune page's budget helper at 50% of the dense FLOPs" in text, text
    for choice in ("**Recovery: lstsq**", "**Vocabulary: the task's tokens + ", "**ONNX int8**",
                   "**Hugging Face folder**"):
        assert choice in text, choice
    for buys in ("speed:", "size:", "quality:", "compatibility:"):
        assert buys in text, buys
    assert "with the task vocabulary" in text  # the planned size, counted before the click
    [b for b in at.button if b.label == "Export and verify"][0].click().run()
    settle(at)
    assert not at.exception, [e.value for e in at.exception]
    last = at.session_state["last_export"]
    out = Path(last["out_dir"])
    assert out.name.endswith("-deploy") and [f["format"] for f in last["formats"]] == ["onnx-int8", "hf"]
    assert (out / "onnx" / "model.int8.onnx").is_file() and not (out / "onnx" / "model.onnx").exists()
    assert (out / "hf" / "config.json").is_file() and (out / "hf" / "model.safetensors").is_file()
    assert last["params_pruned"]["embeddings"] < last["params_dense"]["embeddings"] / 2  # task vocabulary
    assert last["vocab"]["offdomain"] == {}  # the deploy preset skips the related tasks
    assert last["ffn_sparsity"] > 0 and "--recover lstsq" in last["command"]
    assert json.loads((out / "mask.json").read_text())["recovery"]["level"] == "lstsq"  # folded in, and recorded
    assert last["formats"][1]["check_max_abs_diff"] < 1e-3
    assert last["pending"] == [] and "Still being checked" not in (out / "README.md").read_text()  # checked after
    assert "Exported to" in _text(at) and "every format checked against the pruned model" in _text(at)


def test_switching_to_custom_withdraws_the_deploy_jobs_nobody_waits_for(env):
    """The deploy preset submits its split (the budget helper) as the page opens; choosing custom before it lands
    cancels it (nobody else asked for it), and the page stays usable; choosing deploy again asks for it again."""
    from tp_app.export_preset import DEPLOY_JOBS
    from tp_core.engine import get_engine

    at = app_test("pages/5_Export.py")
    at.session_state["attr_method"] = "magnitude"
    at.session_state["eval_limit"] = 37  # a split no other test asked for: its job is still running below
    at.run()
    keys = list(at.session_state[DEPLOY_JOBS])
    eng = get_engine()
    running = [k for k in keys if eng.status(k).state in ("queued", "running")]
    assert running, [eng.status(k).state for k in keys]
    at.radio(key="w_export_preset").set_value("custom").run()
    assert not at.exception, [e.value for e in at.exception]
    assert all(eng.status(k).state == "cancelled" for k in running), [eng.status(k).state for k in running]
    assert DEPLOY_JOBS not in at.session_state and "(set them on the Prune page)" in _text(at)
    at.radio(key="w_export_preset").set_value("deploy").run()  # back: the split is asked for again
    assert eng.status(running[0]).state in ("queued", "running", "done")
    at.radio(key="w_export_preset").set_value("custom").run()  # and left again (nothing runs on after the test)
