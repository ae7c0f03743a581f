"""Export of a decoder LLM (tiny random Llama with grouped-query attention, tests/tiny.py): the sliced TaskPrune
folder with its prompt, a plain Hugging Face folder that `AutoModelForCausalLM` loads (padded to one width), the ONNX
scoring forward with only the label words' rows (fp32 and int8) that runs without torch, the CLI and the app's job.
Every format's task logits are compared with the masked full model's."""
import ast
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from tiny import tiny_bpe_llama, tiny_llama
from tp_core.attribution import UnitScores
from tp_core.data import load_split
from tp_core.decoder import PromptTask, attach_prompt
from tp_core.errors import TPError
from tp_core.evaluation import predict_logits
from tp_core.export import export_formats, export_pruned, hf_padding_params, load_export, onnx_logits, ort_session
from tp_core.masks import PruneConfig, build_masks

# two words for each label: the task logit is the logsumexp of its words' logits, from k = 4 label rows
TWO_WORDS = PromptTask("review : {text} sentiment :", (("negative", "bad"), ("positive", "good")),
                       demos=(("a great fun movie", None, 1), ("a boring bad film", None, 0)))
CFG = PruneConfig(0.5, 0.25)  # global: MLP widths and kept key/value groups differ per layer


def plan_scores(model) -> UnitScores:
    """Seeded random MLP scores; group scores that make the 25% head plan drop one group of layer 0 only."""
    rng = np.random.default_rng(0)
    return UnitScores(model.source, "sst2", "random", {"seed": 0}, [rng.random(n) for n in model.unit_shape().ffn],
                      [np.array([0.9, 0.1]), np.array([0.8, 0.7])])


def two_word_llama(tied: bool = True):
    model = tiny_llama()
    attach_prompt(model, model.task_info("sst2"), TWO_WORDS)
    if not tied:  # an output embedding of its own
        lm = model.encoder
        lm.config.tie_word_embeddings = False
        lm.lm_head.weight = torch.nn.Parameter(lm.lm_head.weight.detach().clone() * 0.5 + 0.1)
    return model


@pytest.fixture(scope="module")
def llm_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("llm-exports") / "sst2-all"
    model = two_word_llama()
    scores = plan_scores(model)
    data = load_split("sst2", "validation", limit=24)
    report = export_formats(model, "sst2", scores, CFG, out, "taskprune,onnx,onnx-int8,hf", eval_data=data,
                            command="pytest llm export")
    masks = build_masks(scores, CFG, model.unit_shape())
    masked = predict_logits(model, "sst2", data, masks.gates())
    return model, masks, report, out, data, masked


def test_the_plan_is_non_uniform_and_every_format_matches_the_masked_model(llm_export):
    model, masks, report, out, data, masked = llm_export
    kept_ffn, kept_groups = [int(m.sum()) for m in masks.ffn], [int(m.sum()) for m in masks.heads]
    assert len(set(kept_ffn)) == 2 and kept_groups == [1, 2]
    diffs = {f.format: f.check_max_abs_diff for f in report.formats}
    assert set(diffs) == {"taskprune", "onnx", "onnx-int8", "hf"} and report.formats[0].check_examples == 24
    assert max(diffs["taskprune"], diffs["onnx"], diffs["hf"]) < 1e-4
    assert report.format("onnx").metric == pytest.approx(report.metric_pruned)


def test_taskprune_folder_reloads_as_the_causal_lm_with_its_prompt(llm_export):
    model, masks, report, out, data, masked = llm_export
    manifest = json.loads((out / "taskprune" / "taskprune.json").read_text())
    assert manifest["kind"] == "causal_lm" and PromptTask.from_dict(manifest["prompts"]["sst2"]) == TWO_WORDS
    back = load_export(out / "taskprune")
    assert back.kind == "causal_lm" and back.prompts["sst2"] == TWO_WORDS
    np.testing.assert_allclose(predict_logits(back, "sst2", data), masked, atol=1e-4)


def test_export_pruned_folder_of_a_causal_lm_scores_the_same_prompts(tmp_path):
    """The TaskPrune-only export (`export_pruned`, the CLI's default): manifest kind and prompt, card, mask file."""
    model = tiny_llama()
    scores = plan_scores(model)
    data = load_split("sst2", "validation", limit=12)
    res = export_pruned(model, "sst2", scores, CFG, tmp_path / "e", eval_data=data, command="pytest")
    back = load_export(res.path)
    masks = build_masks(scores, CFG, model.unit_shape())
    assert back.kind == "causal_lm" and back.prompts["sst2"] == model.prompts["sst2"]
    assert back.unit_shape().heads == (1, 2) and res.params_after < res.params_before
    np.testing.assert_allclose(predict_logits(back, "sst2", data), predict_logits(model, "sst2", data, masks.gates()),
                               atol=1e-4)
    assert "asked as a prompt" in (tmp_path / "e" / "README.md").read_text()
    assert (tmp_path / "e.mask.json").is_file()


def _onnx_graph(path):
    """({initializer: shape}, operator types, element types of the initializers) of an ONNX file."""
    import onnx

    g = onnx.load(str(path)).graph
    return {i.name: tuple(i.dims) for i in g.initializer}, {n.op_type for n in g.node}, \
        {onnx.TensorProto.DataType.Name(i.data_type) for i in g.initializer}


def test_onnx_scoring_forward_holds_only_the_label_rows_and_equals_masked_torch(llm_export):
    """A right-padded batch through onnxruntime: (batch, n_labels) logits equal to the masked model's (1e-4); of the
    vocabulary-sized matrices only the input embedding is in the graph, the label words are a (4, hidden) matrix."""
    model, masks, report, out, data, masked = llm_export
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    shapes, _, _ = _onnx_graph(out / "onnx" / "model.onnx")
    assert [s for s in shapes.values() if vocab in s] == [(vocab, hidden)]  # the token embedding (a Gather table)
    assert sum(1 for s in shapes.values() if s in ((4, hidden), (hidden, 4))) == 1
    meta = json.loads((out / "onnx" / "taskprune_onnx.json").read_text())
    assert meta["inputs"] == ["input_ids", "attention_mask"] and meta["label_rows"] == 4
    sess = ort_session(out / "onnx" / "model.onnx")
    got = onnx_logits(sess, out / "onnx" / "tokenizer.json", data.texts, prompt=out / "onnx" / "prompt.json",
                      batch_size=7)
    assert got.shape == (24, 2)
    np.testing.assert_allclose(got, masked, atol=1e-4)
    parts = report.format("onnx").params_by_part
    assert parts["heads"] == 4 * hidden and parts["total"] == report.params_pruned["total"] + 4 * hidden


def test_onnx_int8_quantizes_the_decoder_graph_and_agrees_on_most_labels(llm_export):
    model, masks, report, out, data, masked = llm_export
    _, ops, types = _onnx_graph(out / "onnx" / "model.int8.onnx")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "INT8" in types
    got = onnx_logits(ort_session(out / "onnx" / "model.int8.onnx"), out / "onnx" / "tokenizer.json", data.texts,
                      prompt=out / "onnx" / "prompt.json")
    assert np.isfinite(got).all() and (got.argmax(1) == masked.argmax(1)).mean() >= 0.75


def _card_code(out, title):
    card = (out / "README.md").read_text()
    return card.split(title, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_card_onnx_code_renders_prompts_without_torch_and_gives_the_masked_logits(llm_export):
    """The card's ONNX code as printed (its stdlib `render_prompts`, tokenizers, onnxruntime): no torch,
    transformers or tp_core imported, and its logits are the masked model's on the card's two texts."""
    model, masks, report, out, data, masked = llm_export
    code = _card_code(out, "ONNX Runtime (no torch, no transformers):")
    code += "\nimport sys\nprint(json.dumps({'logits': logits.tolist(), 'banned': [m for m in ('torch', " \
            "'transformers', 'tp_core') if m in sys.modules]}))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=out, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["banned"] == []
    two = replace(data.subset([0, 1]), texts=["a gripping, beautifully made film", "dull and far too long"])
    np.testing.assert_allclose(doc["logits"], predict_logits(model, "sst2", two, masks.gates()), atol=1e-4)


def test_hf_folder_is_a_plain_llama_padded_to_one_width_with_tied_embeddings(llm_export):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tp_core.export.hf import causal_hf_logits

    model, masks, report, out, data, masked = llm_export
    cfg = AutoConfig.from_pretrained(out / "hf")
    kept_ffn = [int(m.sum()) for m in masks.ffn]
    assert cfg.intermediate_size == max(kept_ffn) and cfg.num_key_value_heads == 2
    assert cfg.num_attention_heads == 4 and cfg.head_dim == 8 and cfg.tie_word_embeddings
    lm = AutoModelForCausalLM.from_pretrained(out / "hf")
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()
    np.testing.assert_allclose(causal_hf_logits(out / "hf", data.texts, batch_size=5), masked, atol=1e-4)
    # padding: what the plan said it would cost, and exactly the parameters beyond the sliced model
    f = report.format("hf")
    planned = hf_padding_params(model, masks)["padding_params"]
    pad = (max(kept_ffn) * 2 - sum(kept_ffn)) * 3 * 32 + 1 * (2 * 16 * 32 + 2 * 8 * 32)  # + layer 0's group
    assert f.params_by_part["padding"] == planned == pad
    assert f.params == sum(p.numel() for p in lm.parameters()) == report.params_pruned["total"] + pad
    assert "AutoModelForCausalLM" in " ".join(f.notes) and f"{pad:,} parameters" in " ".join(f.notes)
    prompt = json.loads((out / "hf" / "prompt.json").read_text())
    assert prompt["template"] == TWO_WORDS.template and prompt["label_of_token"] == [0, 0, 1, 1]


def test_card_hf_code_runs_as_printed(llm_export):
    model, masks, report, out, data, masked = llm_export
    code = _card_code(out, "Hugging Face transformers:")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=out, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    printed = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    assert len(printed) == 2 and set(printed) <= {"negative", "positive"}


def test_untied_output_embedding_stays_untied_and_leaves_the_onnx_graph(tmp_path):
    """A model with its own output embedding: hf/ keeps it (untied, equal rows), the ONNX graph does not carry it."""
    from transformers import AutoModelForCausalLM

    model = two_word_llama(tied=False)
    rep = export_formats(model, "sst2", plan_scores(model), CFG, tmp_path / "u", "onnx,hf", command="pytest")
    assert rep.format("onnx").check_max_abs_diff < 1e-4 and rep.format("hf").check_max_abs_diff < 1e-4
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "u" / "hf")
    assert not lm.config.tie_word_embeddings
    torch.testing.assert_close(lm.lm_head.weight, model.encoder.lm_head.weight)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    shapes, _, _ = _onnx_graph(tmp_path / "u" / "onnx" / "model.onnx")
    assert [s for s in shapes.values() if vocab in s] == [(vocab, hidden)]
    head = vocab * hidden
    assert rep.format("onnx").params == rep.params_pruned["total"] - head + 4 * hidden


def test_task_vocabulary_is_refused_for_a_word_level_tokenizer_before_anything_is_written(tmp_path):
    model = tiny_llama()
    with pytest.raises(TPError, match="byte-level BPE .* WordLevel"):
        export_formats(model, "sst2", plan_scores(model), CFG, tmp_path / "v", "onnx", vocab="task")
    assert not (tmp_path / "v").exists()


@pytest.fixture(scope="module")
def bpe_vocab_export(tmp_path_factory):
    model = tiny_bpe_llama()
    out = tmp_path_factory.mktemp("llm-vocab") / "sst2-vocab"
    data = load_split("sst2", "validation", limit=16)
    rep = export_formats(model, "sst2", plan_scores(model), CFG, out, "taskprune,onnx,hf", eval_data=data,
                         vocab="task", general_tokens=0, offdomain=[], command="pytest")
    return model, rep, out, data


def test_a_byte_level_bpe_task_vocabulary_cuts_both_embeddings_and_every_format_matches(bpe_vocab_export):
    """The task vocabulary of a byte-level BPE causal LM: fewer rows in the tied input/output embedding, the same
    tokens and logits on the task's texts in every format, and text from another domain still tokenizes (into
    smaller kept pieces, never an unknown token)."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model, rep, out, data = bpe_vocab_export
    kept = rep.vocab["kept_tokens"]
    assert kept < rep.vocab["original_tokens"] == len(model.tokenizer)
    assert rep.format("taskprune").check_examples == 16
    assert max(f.check_max_abs_diff for f in rep.formats) < 1e-4
    assert rep.metric_pruned == pytest.approx(rep.vocab["metric_full_vocab"])
    lm = AutoModelForCausalLM.from_pretrained(out / "hf")
    assert lm.get_input_embeddings().weight.shape[0] == kept and lm.config.vocab_size == kept
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    back = load_export(out / "taskprune")
    small_ids = back.tokenizer(list(data.texts))["input_ids"]
    full = model.tokenizer.convert_ids_to_tokens
    assert [back.tokenizer.convert_ids_to_tokens(i) for i in small_ids] == \
        [full(i) for i in model.tokenizer(list(data.texts))["input_ids"]]
    news = load_split("ag_news", "validation", limit=8).texts
    tok = Tokenizer.from_file(str(out / "onnx" / "tokenizer.json"))
    for text, enc in zip(news, tok.encode_batch(list(news))):
        assert tok.decode(enc.ids) == text and max(enc.ids) < kept
    assert sum(len(e.ids) for e in tok.encode_batch(list(news))) > \
        sum(len(i) for i in model.tokenizer(list(news))["input_ids"])


def test_vocabulary_pruning_keeps_a_bpe_tokenizer_consistent():
    """Every kept token's merge parts are kept, every kept merge is among kept tokens, and the label words stay
    single tokens (their rows found again in the new tokenizer)."""
    import copy

    from tp_core.vocab import _merges, _tokenizer_json, plan_for_task, prune_vocab

    model = tiny_bpe_llama()
    plan = plan_for_task(model, "sst2", general_tokens=0)
    assert plan.n_char_fallback > 0 and plan.size < plan.original_size
    small = copy.deepcopy(model)
    prune_vocab(small, plan)
    doc = _tokenizer_json(small.tokenizer)
    vocab = doc["model"]["vocab"]
    assert len(vocab) + 2 >= plan.size and all(a in vocab and b in vocab and a + b in vocab for a, b in _merges(doc))
    words = small.tokenizer.convert_ids_to_tokens(small.label_rows["sst2"][0].tolist())
    assert words == model.tokenizer.convert_ids_to_tokens(model.label_rows["sst2"][0].tolist()) == \
        ["Ġnegative", "Ġpositive"]


def test_cli_export_of_a_saved_tiny_llama_and_vocab_task_is_one_line(tmp_path, capsys):
    from tp_core.cli import main

    folder = str(tiny_llama().save(tmp_path / "tiny-llama"))
    out = tmp_path / "cli-export"
    args = ["export", "--model", folder, "--task", "sst2", "--method", "grad_x_act", "--samples", "4",
            "--ffn-sparsity", "0.5", "--limit", "8", "--recover", "none", "--quiet"]
    assert main(args + ["--format", "taskprune,onnx,onnx-int8,hf", "--out", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [f["format"] for f in rep["formats"]] == ["taskprune", "onnx", "onnx-int8", "hf"]
    assert all(f["check_max_abs_diff"] < 1e-4 for f in rep["formats"] if f["format"] != "onnx-int8")
    assert (out / "onnx" / "prompt.json").is_file() and (out / "hf" / "prompt.json").is_file()
    assert main(args + ["--format", "onnx", "--vocab", "task", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "byte-level BPE" in err[0] and not (tmp_path / "v").exists()


def test_the_apps_export_job_runs_for_a_causal_lm(tmp_path):
    """`work_export.export_formats` (the Export page's job): every format measured, the TaskPrune folder reloaded and
    re-evaluated, one zip."""
    from tp_core import refs, work_export

    model = tiny_llama()
    ref = refs.register_model("tiny-llama-export-job", model)
    data = load_split("sst2", "validation", limit=12)
    try:
        res = work_export.export_formats(lambda f, m: None, ref, "sst2", plan_scores(model), CFG, str(tmp_path / "job"),
                                         data, ("taskprune", "onnx", "onnx-int8", "hf"), "full", 1, False, False,
                                         "pytest")
    finally:
        refs._LOCAL.pop("tiny-llama-export-job", None)
    assert res["reloaded_metric"] == pytest.approx(res["metric_pruned"])
    assert os.path.isfile(res["zip"]) and res["eval_examples"] == 12
    assert all(f["metric"] == pytest.approx(res["metric_pruned"]) for f in res["formats"] if f["format"] != "onnx-int8")
