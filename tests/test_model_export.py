"""Model folders (save/load, plain HF classifier, unsupported family) and export (atomic, reloadable, model card)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny import FAMILIES, tiny_multitask
from tp_core.attribution import AttributionConfig, attribute
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import predict_logits
from tp_core.export import export_pruned, safe_export_dir
from tp_core.masks import PruneConfig, load_mask_file
from tp_core.model import load_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("family", FAMILIES)
def test_multitask_folder_round_trip(family, tmp_path):
    model = tiny_multitask(family)
    model.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"taskprune.json", "config.json", "encoder.safetensors", "heads.safetensors", "tokenizer.json"} <= files
    back = load_model(tmp_path / "m")
    data = load_split("ag_news", "validation", limit=8)
    np.testing.assert_allclose(predict_logits(back, "ag_news", data), predict_logits(model, "ag_news", data), atol=1e-5)
    assert back.fingerprint() == model.fingerprint()


def test_plain_hf_classifier_folder_loads_as_one_task_model(tmp_path):
    model = tiny_multitask("bert", kind="hf_classifier")
    model.encoder.save_pretrained(tmp_path / "hf")
    model.tokenizer.save_pretrained(tmp_path / "hf")
    back = load_model(tmp_path / "hf")
    assert back.kind == "hf_classifier" and list(back.tasks) == ["hf"]
    assert back.resolve_task("sst2") == "hf"  # a one-task model serves any task with its head
    data = load_split("sst2", "validation", limit=8)
    np.testing.assert_allclose(predict_logits(back, "sst2", data), predict_logits(model, "sst2", data), atol=1e-5)


def test_bad_model_inputs_are_clear_errors(tmp_path):
    with pytest.raises(TPError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TPError, match="not a model folder"):
        load_model(tmp_path / "empty")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(TPError, match="Unsupported model family 'gpt2'"):
        load_model(tmp_path / "gpt")
    with pytest.raises(TPError, match="offline|Cannot read"):
        load_model("nobody/no-such-model-offline")


def test_export_is_smaller_reloads_in_fresh_process_and_has_card(tmp_path):
    model = tiny_multitask("bert")
    data = load_split("sst2", "validation", limit=16)
    scores = attribute(model, "sst2", AttributionConfig(method="ig", samples=8, steps=3))
    cfg = PruneConfig(0.5, 0.25)
    res = export_pruned(model, "sst2", scores, cfg, tmp_path / "exp", data, command="pytest export")
    assert res.params_after < res.params_before
    card = (tmp_path / "exp" / "README.md").read_text()
    for needle in ("sst2", "ig", "50.0%", "pytest export", f"{res.params_after:,}"):
        assert needle in card
    manifest = json.loads((tmp_path / "exp" / "taskprune.json").read_text())
    assert manifest["pruning"]["method"] == "ig" and manifest["pruning"]["ffn_sparsity"] == 0.5
    # reload in a fresh process with one call and compare logits
    code = (f"import tp_core, json; from tp_core.data import load_split; from tp_core.evaluation import predict_logits;"
            f"m = tp_core.load_model({str(tmp_path / 'exp')!r}); d = load_split('sst2', 'validation', limit=16);"
            f"print(json.dumps(predict_logits(m, 'sst2', d).tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    fresh = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    masks, _ = load_mask_file(res.mask_file, model)
    np.testing.assert_allclose(fresh, predict_logits(model, "sst2", data, masks.gates()), atol=1e-4)
    with pytest.raises(TPError, match="already exists"):
        export_pruned(model, "sst2", scores, cfg, tmp_path / "exp")


def test_interrupted_export_leaves_no_half_folder(tmp_path, monkeypatch):
    model = tiny_multitask("bert")
    scores = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    import tp_core.model as model_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_mod, "_swap_in", boom)
    out = tmp_path / "exports"
    with pytest.raises(KeyboardInterrupt):
        export_pruned(model, "sst2", scores, PruneConfig(0.5), out / "exp")
    assert list(out.iterdir()) == []  # neither the folder nor its temp folder


@pytest.mark.parametrize("name", ["../evil", "/etc", "a/b", ".hidden", "", "x" * 200])
def test_export_names_cannot_escape(name, tmp_path):
    with pytest.raises(TPError):
        safe_export_dir(tmp_path, name)
    assert safe_export_dir(tmp_path, "ok-name_1.v2") == (tmp_path / "ok-name_1.v2").resolve()
