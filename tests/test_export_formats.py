"""Export formats: ONNX without torch, a plain Hugging Face folder, vocabulary pruning, model card, CLI.

Tiny random models (tests/tiny.py) with seeded random scores, so each export takes seconds; one integration test on
the quick demo build.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_support import cli
from tiny import tiny_multitask
from tp_core.attribution import UnitScores
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import predict_logits
from tp_core.export import export_formats, parse_formats
from tp_core.gates import gated
from tp_core.masks import PruneConfig, build_masks
from tp_core.model import load_model
from tp_core.vocab import check_min_count, prune_vocab, task_vocab

ROOT = Path(__file__).resolve().parent.parent


def random_scores(model, task="sst2", seed=0) -> UnitScores:
    rng = np.random.default_rng(seed)
    shape = model.unit_shape()
    return UnitScores(model.source, task, "random", {"seed": seed}, [rng.random(n) for n in shape.ffn],
                      [rng.random(n) for n in shape.heads])


def in_vocab(model_tok, kept: set[int], texts, n):
    ids = model_tok(list(texts), truncation=True, max_length=128)["input_ids"]
    return [t for t, i in zip(texts, ids) if all(x in kept for x in i)][:n]


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory):
    """One export of a tiny BERT with every format, a non-uniform plan and the task vocabulary."""
    out = tmp_path_factory.mktemp("exports") / "sst2-all"
    model = tiny_multitask("bert")
    scores = random_scores(model)
    cfg = PruneConfig(0.5, 0.25)  # global allocation: FFN widths differ per layer
    data = load_split("sst2", "validation", limit=48)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TP_HOME", str(out.parent / "home"))
        report = export_formats(model, "sst2", scores, cfg, out, "taskprune,onnx,onnx-int8,hf", vocab="task",
                                min_count=2, eval_data=data, offdomain=["cr"], offdomain_limit=24,
                                command="pytest export")
    masks = build_masks(scores, cfg, model.unit_shape())
    return model, masks, report, out


def test_onnx_runs_with_onnxruntime_tokenizers_numpy_only_and_matches_masked_torch(bert_export):
    model, masks, report, out = bert_export
    kept = set(task_vocab(model.tokenizer, load_split("sst2", "train").texts, min_count=2).kept_ids)
    texts = in_vocab(model.tokenizer, kept, load_split("sst2", "validation", limit=200).texts, 12)
    assert len(texts) >= 8
    script = r"""
import json, sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
folder, texts = sys.argv[1], json.loads(sys.argv[2])
tok = Tokenizer.from_file(folder + "/tokenizer.json")
sess = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
encs = tok.encode_batch(texts)  # one padded batch of different lengths: the attention mask matters
feed = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
out = sess.run(["logits"], {i.name: feed[i.name] for i in sess.get_inputs()})[0]
single = sess.run(["logits"], {i.name: feed[i.name][:1, :int(feed["attention_mask"][0].sum())]
                               for i in sess.get_inputs()})[0]
banned = [m for m in ("torch", "transformers", "tp_core") if m in sys.modules]
print(json.dumps({"logits": out.tolist(), "single": single.tolist(), "banned": banned,
                  "inputs": [i.name for i in sess.get_inputs()], "pad": int(feed["attention_mask"].min())}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", script, str(out / "onnx"), json.dumps(texts)], capture_output=True,
                         text=True, cwd="/", env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["banned"] == []
    assert doc["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and doc["pad"] == 0
    data = load_split("sst2", "validation", limit=1).subset([0])
    data.texts, data.labels, data.rows = texts, [0] * len(texts), list(range(len(texts)))
    masked = predict_logits(model, "sst2", data, masks.gates())
    np.testing.assert_allclose(np.array(doc["logits"]), masked, atol=1e-4)
    np.testing.assert_allclose(np.array(doc["single"])[0], masked[0], atol=1e-4)
    onnx = report.format("onnx")
    assert onnx.check_max_abs_diff < 1e-4 and onnx.check_examples > 0 and onnx.metric is not None
    int8 = report.format("onnx-int8")  # measured, not assumed: a metric and a (larger) difference of its own
    assert int8.metric is not None and int8.bytes_on_disk < onnx.bytes_on_disk


def test_onnx_attention_is_one_fused_node_per_layer_with_its_own_head_count(tmp_path):
    """Each layer's attention is one onnxruntime MultiHeadAttention node carrying that layer's pruned head count
    (here 4, 1, 1); the plain-operator graph gives the same logits, and exporting leaves the torch model as it was."""
    import onnx
    import onnxruntime as ort

    from tp_core.export import export_onnx

    model = tiny_multitask("bert")
    heads = [np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.95, 0.5, 0.05, 0.04]), np.array([0.85, 0.03, 0.02, 0.01])]
    scores = UnitScores(model.source, "sst2", "random", {}, random_scores(model).ffn, heads)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TP_HOME", str(tmp_path / "home"))
        export_formats(model, "sst2", scores, PruneConfig(0.5, 0.5), tmp_path / "out", "taskprune,onnx,onnx-int8",
                       offdomain=[])
    out = tmp_path / "out"
    small = load_model(out / "taskprune", device="cpu")
    assert small.unit_shape().heads == (4, 1, 1)
    graph = onnx.load(str(out / "onnx" / "model.onnx")).graph
    assert [next(a.i for a in n.attribute if a.name == "num_heads") for n in graph.node
            if n.op_type == "MultiHeadAttention"] == [4, 1, 1]
    meta = json.loads((out / "onnx" / "taskprune_onnx.json").read_text())
    assert meta["attention"].startswith("onnxruntime") and "model.int8.onnx" in meta["sessions"]
    enc = small.tokenizer(["a film", "a much longer sentence about a film that pads the first one"], padding=True,
                          return_tensors="pt")
    with torch.no_grad():
        before = small(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], task="sst2").numpy()
    plain = export_onnx(small, "sst2", tmp_path / "plain", fused_attention=False)
    with torch.no_grad():
        after = small(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], task="sst2").numpy()
    np.testing.assert_array_equal(before, after)
    assert not any(n.domain == "com.microsoft" for n in onnx.load(str(plain)).graph.node)
    feed = {k: v.numpy() for k, v in enc.items()}
    logits = {}
    for name, path in (("fused", out / "onnx" / "model.onnx"), ("plain", plain)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits[name] = sess.run(["logits"], {i.name: feed[i.name] for i in sess.get_inputs()})[0]
    np.testing.assert_allclose(logits["fused"], logits["plain"], atol=1e-5)
    np.testing.assert_allclose(logits["fused"], before, atol=1e-4)


def test_model_card_onnx_snippet_runs_for_both_files(bert_export):
    """The card's copy-paste ONNX Runtime code runs as printed (fp32), and with the int8 file it names, which it
    opens with the export's session settings."""
    _, _, _, out = bert_export
    card = (out / "README.md").read_text()
    code = card.split("ONNX Runtime (no torch, no transformers):", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'model_file = "model.onnx"  # or "model.int8.onnx"' in code
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for variant in (code, code.replace('model_file = "model.onnx"', 'model_file = "model.int8.onnx"')):
        res = subprocess.run([sys.executable, "-c", variant], capture_output=True, text=True, cwd=out, env=env,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().startswith("[") and ("positive" in res.stdout or "negative" in res.stdout)


def test_hf_folder_loads_with_plain_transformers_and_matches(bert_export):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    model, masks, report, out = bert_export
    hf = out / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "README.md"} <= \
        {p.name for p in hf.iterdir()}
    cfg = AutoConfig.from_pretrained(hf)
    assert cfg.intermediate_size == max(int(m.sum()) for m in masks.ffn) < 48  # padded to the widest layer
    assert cfg.num_attention_heads == 4 and cfg.vocab_size == report.vocab["kept_tokens"]
    enc = AutoModel.from_pretrained(hf).eval()  # no trust_remote_code
    tok = AutoTokenizer.from_pretrained(hf)
    kept = set(task_vocab(model.tokenizer, load_split("sst2", "train").texts, min_count=2).kept_ids)
    texts = in_vocab(model.tokenizer, kept, load_split("sst2", "validation", limit=200).texts, 8)
    new = tok(texts, padding=True, return_tensors="pt")
    old = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = enc(**new).last_hidden_state
        with gated(masks.gates()):
            want = model.base(**old).last_hidden_state
    m = new["attention_mask"].bool()
    torch.testing.assert_close(got[m], want[m], atol=1e-4, rtol=0)
    hf_rep = report.format("hf")
    assert hf_rep.params > report.params_pruned["total"]  # the padding is counted, and said
    assert hf_rep.params_by_part["padding"] == hf_rep.params - report.params_pruned["total"]
    assert any("pad" in n for n in hf_rep.notes) and hf_rep.check_max_abs_diff < 1e-4


def test_hf_classifier_export_works_in_pipeline_and_uniform_plan_needs_no_padding(tmp_path):
    from transformers import AutoConfig, pipeline

    model = tiny_multitask("bert", kind="hf_classifier")
    scores = random_scores(model)
    cfg = PruneConfig(0.5, 0.0, "per-layer")  # same width in every layer, all heads: nothing to pad
    rep = export_formats(model, "sst2", scores, cfg, tmp_path / "e", ["hf"], command="pytest")
    hf_rep = rep.format("hf")
    assert hf_rep.params_by_part["padding"] == 0 and hf_rep.params == rep.params_pruned["total"]
    assert AutoConfig.from_pretrained(tmp_path / "e" / "hf").intermediate_size == 24
    clf = pipeline("text-classification", model=str(tmp_path / "e" / "hf"), top_k=None)
    texts = ["a gripping, beautifully made film", "dull"]
    got = [{d["label"]: d["score"] for d in row} for row in clf(texts)]
    data = load_split("sst2", "validation", limit=1).subset([0])
    data.texts, data.labels, data.rows = texts, [0, 0], [0, 1]
    masks = build_masks(scores, cfg, model.unit_shape())
    probs = torch.softmax(torch.tensor(predict_logits(model, "sst2", data, masks.gates())), -1).numpy()
    np.testing.assert_allclose([[g["negative"], g["positive"]] for g in got], probs, atol=1e-5)


def test_vocab_pruning_keeps_logits_identical_on_in_vocabulary_text(tmp_path):
    from transformers import BertTokenizer

    model = tiny_multitask("bert")
    train = load_split("sst2", "train", limit=2000)
    plan = task_vocab(model.tokenizer, train.texts, min_count=2)
    assert 5 < plan.size < 30522 and plan.n_special == 5
    small = tiny_multitask("bert")
    prune_vocab(small, plan)
    assert small.encoder.get_input_embeddings().weight.shape[0] == plan.size == small.config.vocab_size
    kept = set(plan.kept_ids)
    val = load_split("sst2", "validation")
    texts = in_vocab(model.tokenizer, kept, val.texts, 40)
    data = val.subset(range(len(texts)))
    data.texts = texts
    np.testing.assert_array_equal(predict_logits(small, "sst2", data), predict_logits(model, "sst2", data))
    # unseen words fall back the tokenizer's own way: greedy longest pieces of the kept vocabulary, else [UNK]
    new_vocab = small.tokenizer.get_vocab()
    removed = [t for t, i in model.tokenizer.get_vocab().items() if i not in kept and t.isalpha() and len(t) >= 5]
    assert len(removed) > 50
    for word in removed[:200]:
        assert small.tokenizer.tokenize(word) == wordpiece(word, new_vocab), word
    enc = small.tokenizer(val.texts[:200])["input_ids"]
    assert max(max(e) for e in enc) < plan.size
    # both tokenizer files were rewritten: the slow vocab.txt alone gives the same ids as tokenizer.json
    small.tokenizer.save_pretrained(tmp_path / "tok")
    from tp_core.export import write_vocab_txt

    write_vocab_txt(small.tokenizer, tmp_path / "tok")
    slow = BertTokenizer(vocab=str(tmp_path / "tok" / "vocab.txt"))
    assert len(slow) == plan.size
    assert slow(val.texts[:50])["input_ids"] == enc[:50]
    reload = load_model_roundtrip(small, tmp_path / "tp")
    np.testing.assert_array_equal(predict_logits(reload, "sst2", data), predict_logits(small, "sst2", data))


GREEK_CJK = ["Η ταινία ήταν υπέροχη και πολύ συγκινητική.", "Δεν μου άρεσε καθόλου το τέλος της ιστορίας.",
             "这部电影非常好看，演员的表演很精彩。", "剧情太无聊了，我不推荐。"]


def test_general_set_is_kept_and_logits_are_unchanged_on_in_vocabulary_text():
    """The task vocabulary plus the bundle's most frequent tokens: every general token is kept, text made of kept
    tokens gets the dense logits, and an unseen domain (sentiment_sentences) meets fewer [UNK]s than with the task's
    tokens alone."""
    from tp_core.vocab import general_ranking, texts_unk_share

    model = tiny_multitask("bert")
    train = load_split("sst2", "train", limit=2000)
    ranked, tasks = general_ranking(model.tokenizer)
    assert "sst2" in tasks and "ag_news" in tasks and "sentiment_sentences" not in tasks  # no train split
    base = task_vocab(model.tokenizer, train.texts, min_count=2)
    plan = task_vocab(model.tokenizer, train.texts, min_count=2, general_tokens=1000)
    kept = set(plan.kept_ids)
    assert set(ranked[:1000]) <= kept and plan.n_general == len(kept - set(base.kept_ids)) > 100
    small = tiny_multitask("bert")
    prune_vocab(small, plan)
    assert small.pruning["vocab"]["general_tokens"] == 1000
    unseen = load_split("sentiment_sentences", "validation", limit=300)
    texts = in_vocab(model.tokenizer, kept, unseen.texts, 40)
    assert len(texts) == 40 and len(in_vocab(model.tokenizer, set(base.kept_ids), unseen.texts, 300)) < 300
    data = unseen.subset(range(len(texts)))
    data.texts = texts
    np.testing.assert_array_equal(predict_logits(small, "sst2", data), predict_logits(model, "sst2", data))
    with_general = texts_unk_share(model.tokenizer, unseen.texts, plan.kept_ids)["unk_share"]
    assert with_general < texts_unk_share(model.tokenizer, unseen.texts, base.kept_ids)["unk_share"]


def test_unk_share_of_texts_in_an_unseen_script_warns():
    from tp_core.vocab import check_texts

    model = tiny_multitask("bert")
    res = check_texts(model, "sst2", GREEK_CJK + [""])
    assert res["texts"] == 4 and res["warn"] and res["unk_share"] > 0.3 > res["unk_share_full"]
    msg = res["message"]
    assert "\n" not in msg and "[UNK]" in msg and f"{res['unk_share']:.1%}" in msg and "full vocabulary" in msg
    english = check_texts(model, "sst2", load_split("sst2", "train", limit=50).texts)
    assert english["unk_share"] == 0 and not english["warn"] and english["message"] is None
    full = check_texts(model, "sst2", GREEK_CJK, vocab="full")
    assert full["vocab"] == "full" and full["unk_share"] == full["unk_share_full"] < res["unk_share"]


def wordpiece(word, vocab, unk="[UNK]", prefix="##"):
    """Reference greedy longest-match-first WordPiece (BERT's algorithm) over `vocab`."""
    pieces, start = [], 0
    while start < len(word):
        end, cur = len(word), None
        while start < end:
            sub = (prefix if start else "") + word[start:end]
            if sub in vocab:
                cur = sub
                break
            end -= 1
        if cur is None:
            return [unk]
        pieces.append(cur)
        start = end
    return pieces


def load_model_roundtrip(model, path):
    model.save(path)
    return load_model(path)


def test_model_card_report_and_taskprune_folder(bert_export):
    model, masks, report, out = bert_export
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "\n---\n" in card[4:]
    meta = card.split("---\n")[1]
    assert "pipeline_tag: text-classification" in meta and "model-index" in meta
    for needle in ("sst2", "random", "embeddings", "onnx/model.onnx", "model.int8.onnx", "Off-domain", "| cr |",
                   "AutoModel.from_pretrained", "onnxruntime", "tp_core.load_model", "pytest export",
                   f"{report.params_pruned['total']:,}", f"{report.vocab['kept_tokens']:,}"):
        assert needle in card, needle
    doc = json.loads((out / "export_report.json").read_text())
    assert [f["format"] for f in doc["formats"]] == ["taskprune", "onnx", "onnx-int8", "hf"]
    assert doc["params_pruned"]["embeddings"] < doc["params_dense"]["embeddings"] / 2
    assert all(f["bytes_on_disk"] > 0 for f in doc["formats"]) and (out / "mask.json").is_file()
    assert set(doc["vocab"]["offdomain"]["cr"]) >= {"unk_share", "metric_full_vocab", "metric_task_vocab"}
    from tp_core.export import zip_export
    from tp_core.vocab import embedding_params_saved, plan_for_task

    saved = embedding_params_saved(model, plan_for_task(model, "sst2", min_count=2))
    assert report.params_dense["embeddings"] - report.params_pruned["embeddings"] == saved > 0
    import zipfile

    names = zipfile.ZipFile(zip_export(out, out.parent / "all.zip")).namelist()
    assert "sst2-all/onnx/model.onnx" in names and "sst2-all/hf/config.json" in names
    back = load_model(out / "taskprune")
    assert back.config.vocab_size == report.vocab["kept_tokens"] and back.pruning["vocab"]["min_count"] == 2
    assert report.format("taskprune").check_max_abs_diff < 1e-4


def test_taskprune_only_keeps_the_folder_layout_and_failed_export_leaves_nothing(tmp_path, monkeypatch):
    model = tiny_multitask("distilbert")
    scores = random_scores(model)
    rep = export_formats(model, "sst2", scores, PruneConfig(0.5, 0.5), tmp_path / "x" / "tp", ["taskprune"],
                         vocab="task", command="pytest")
    assert (tmp_path / "x" / "tp" / "taskprune.json").is_file() and (tmp_path / "x" / "tp.mask.json").is_file()
    assert load_model(tmp_path / "x" / "tp").config.vocab_size == rep.vocab["kept_tokens"]
    import tp_core.export.formats as ef

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ef, "export_hf", boom)
    with pytest.raises(KeyboardInterrupt):
        export_formats(model, "sst2", scores, PruneConfig(0.5), tmp_path / "y" / "e", ["onnx", "hf"])
    assert list((tmp_path / "y").iterdir()) == []


def test_roberta_onnx_and_unsupported_vocab_pruning_is_a_clear_error(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    model = tiny_multitask("roberta")
    scores = random_scores(model)
    rep = export_formats(model, "sst2", scores, PruneConfig(0.3, 0.25), tmp_path / "r", ["onnx"], command="pytest")
    assert rep.format("onnx").check_max_abs_diff < 1e-4
    assert rep.formats[0].path.endswith("model.onnx")
    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")])))
    with pytest.raises(TPError, match="WordPiece tokenizers .* BPE"):
        task_vocab(bpe, ["ab ba"])


@pytest.mark.parametrize("value", ["onnx,tflite", "", " , ", "ONNX;hf"])
def test_parse_formats_rejects_bad_values(value):
    with pytest.raises(TPError, match="format"):
        parse_formats(value)


def test_parse_formats_and_min_count_accept_good_values():
    assert parse_formats("hf, ONNX,hf") == ["hf", "onnx"]
    assert check_min_count("3") == 3 and check_min_count(1) == 1


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--format", "onnx,tflite"], "Unknown export format 'tflite'"),
        (["--format", ""], "No export format"),
        (["--vocab", "task", "--vocab-min-count", "0"], "min count must be a whole number >= 1"),
        (["--vocab", "task", "--vocab-min-count", "two"], "min count must be a whole number >= 1"),
        (["--vocab", "task", "--vocab-min-count", "1.5"], "min count must be a whole number >= 1"),
        (["--vocab", "tiny"], "Vocabulary mode must be one of full, task"),
        (["--vocab", "task", "--vocab-general", "-5"], "general vocabulary size must be a whole number >= 0"),
        (["--vocab-texts", "/nonexistent/texts.txt"], "Cannot read --vocab-texts"),
    ],
)
def test_cli_bad_format_and_min_count_are_one_line_exit_2(extra, needle, tmp_path, capsys):
    from tp_core.cli import main

    code = main(["export", "--model", str(tmp_path / "never-loaded"), "--task", "sst2", "--out", str(tmp_path / "o"),
                 "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_cli_export_onnx_hf_writes_the_contract_layout(tmp_path):
    model = tiny_multitask("bert")
    model.save(tmp_path / "tiny")
    out = tmp_path / "exp"
    (tmp_path / "mine.txt").write_text("\n".join(GREEK_CJK) + "\n", encoding="utf-8")
    res = cli("export", "--model", str(tmp_path / "tiny"), "--task", "sst2", "--method", "magnitude",
              "--ffn-sparsity", "0.5", "--format", "onnx,hf", "--vocab", "task", "--vocab-min-count", "3", "--limit",
              "16", "--vocab-general", "500", "--vocab-texts", str(tmp_path / "mine.txt"), "--out", str(out),
              "--quiet", "--json", home=tmp_path / "home")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    # texts in a script the task never saw: one warning line with their [UNK] share, no traceback
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "[UNK]" in warnings[0] and "Traceback" not in res.stderr, res.stderr
    assert doc["vocab_texts"]["warn"] and f"{doc['vocab_texts']['unk_share']:.1%}" in warnings[0]
    assert doc["vocab"]["general_tokens"] == 500 and doc["vocab"]["general_added"] > 0
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "tokenizer.json").is_file()
    assert (out / "hf" / "config.json").is_file() and (out / "README.md").is_file()
    assert not (out / "taskprune").exists() and doc["vocab"]["min_count"] == 3
    assert [f["format"] for f in doc["formats"]] == ["onnx", "hf"]


@pytest.mark.integration
def test_quick_demo_onnx_with_task_vocab_matches_masked_model(tmp_path):
    """The real MiniLM (quick demo build), sst2: ONNX with the sst2 vocabulary gives the masked model's logits on
    in-vocabulary validation text, and the vocabulary is a fraction of WordPiece's."""
    from tp_core.demo import build_demo
    from tp_core.export import onnx_logits, ort_session

    build_demo(quick=True)
    model = load_model("demo-quick")
    scores = random_scores(model)
    cfg = PruneConfig(0.5, 0.25)
    rep = export_formats(model, "sst2", scores, cfg, tmp_path / "demo", ["onnx"], vocab="task", offdomain=[],
                         command="pytest")
    assert 5000 < rep.vocab["kept_tokens"] < 15000
    kept = set(task_vocab(model.tokenizer, load_split("sst2", "train").texts).kept_ids)
    val = load_split("sst2", "validation", limit=300)
    texts = in_vocab(model.tokenizer, kept, val.texts, 32)
    data = val.subset(range(len(texts)))
    data.texts = texts
    got = onnx_logits(ort_session(tmp_path / "demo" / "onnx" / "model.onnx"), tmp_path / "demo" / "onnx" /
                      "tokenizer.json", texts)
    masks = build_masks(scores, cfg, model.unit_shape())
    np.testing.assert_allclose(got, predict_logits(model, "sst2", data, masks.gates()), atol=1e-4)


def test_recovery_is_folded_into_onnx_and_named_in_the_card(tmp_path):
    from tp_core.recovery import as_config

    model = tiny_multitask("bert")
    rep = export_formats(model, "sst2", random_scores(model), PruneConfig(0.5, 0.25), tmp_path / "rec", ["onnx"],
                         recovery=as_config("bias", 32), command="pytest")
    # compared with the masked model *with the same recovery* applied through the gates
    assert rep.format("onnx").check_max_abs_diff < 1e-4
    assert "Recovery: level=bias" in (tmp_path / "rec" / "README.md").read_text()
    assert "recovery" in json.loads((tmp_path / "rec" / "mask.json").read_text())


def test_app_tables_and_counts_before_exporting_match_the_export(bert_export):
    """What the Export page shows: summary_tables of the report, and the counts it gives before exporting
    (planned_counts: parameters with the task vocabulary, hf/ padding) equal what the export then reports."""
    from tp_app.export_tables import summary_tables
    from tp_core.export import hf_padding_params, planned_counts
    from tp_core.vocab import embedding_params_saved, plan_for_task

    model, masks, report, out = bert_export
    t = summary_tables(json.loads((out / "export_report.json").read_text()))
    assert [r["part"] for r in t["params"]][0].startswith("embeddings") and t["params"][-1]["part"] == "total"
    assert t["params"][-1]["pruned"] == f"{report.params_pruned['total']:,}"
    assert [r["model"] for r in t["formats"]] == ["dense (torch, float32)", "TaskPrune folder", "ONNX (fp32)",
                                                  "ONNX int8", "Hugging Face folder"]
    assert all(r["size on disk"].endswith(" MB") for r in t["formats"])
    pad = report.format("hf").params_by_part["padding"]
    assert t["hf_padding"]["params"] == pad == hf_padding_params(model, masks)["padding_params"] > 0
    assert "padding" in t["formats"][-1]["parameters"] and any("pad" in n for n in t["hf_padding"]["notes"])
    assert any("[UNK]" in r[""] for r in t["vocab"]) and [r["task"] for r in t["offdomain"]] == ["cr"]
    assert t["latency"] == [] and t["latency_note"] is None
    saved = embedding_params_saved(model, plan_for_task(model, "sst2", min_count=2))
    counts = planned_counts(model, "sst2", random_scores(model), PruneConfig(0.5, 0.25), saved)
    assert counts["kept_task_vocab"] == report.params_pruned["total"]
    assert counts["kept"] - counts["kept_task_vocab"] == saved and counts["dense"] == report.params_dense["total"]
    assert counts["hf"]["padding_params"] == pad and not counts["hf"]["uniform"]


def test_latency_rows_before_and_after(tmp_path):
    from tp_app.export_tables import summary_tables

    model = tiny_multitask("bert")
    rep = export_formats(model, "sst2", random_scores(model), PruneConfig(0.5), tmp_path / "lat", ["onnx-int8"],
                         latency=True, latency_batches=(1, 4), latency_repeats=3, command="pytest")
    lat = rep.latency
    assert {"torch_dense", "torch_pruned", "onnx-int8"} <= set(lat) and lat["torch_dense"]["4"]["repeats"] == 3
    t = summary_tables(rep.to_dict())
    assert [r["runner"] for r in t["latency"]] == ["dense (torch), before", "pruned (torch: TaskPrune folder)",
                                                   "pruned ONNX int8"]
    assert t["latency"][0]["batch 1: speed-up"] == "1.0x" and t["latency"][2]["batch 4: speed-up"].endswith("x")
    assert "load average" in t["latency_note"]
    # the cores other processes kept busy while timing (the load average counts the timing's own threads too)
    others = lat["other_cpu_cores"]
    assert others is None or others >= 0.0


def test_other_cpu_cores_counts_other_processes_not_this_one():
    import time

    from tp_core.export.latency import _cpu_marks, other_cpu_cores

    start = _cpu_marks()
    if start is None:
        pytest.skip("no /proc/stat here")
    t = time.process_time()
    while time.process_time() - t < 0.3:  # busy in this process (CPU time, so a loaded machine cannot starve it)
        pass
    end = _cpu_marks()
    own = end[2] - start[2]
    assert own > 0.1
    assert other_cpu_cores(start, end) * (end[0] - start[0]) <= (end[1] - start[1]) - own + 0.05
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1.0: pass"])
    start = _cpu_marks()
    _, _, usage = os.wait4(child.pid, 0)
    end = _cpu_marks()
    child_cpu = usage.ru_utime + usage.ru_stime
    # another process's CPU time is counted (whatever else runs on the machine meanwhile)
    assert other_cpu_cores(start, end) * (end[0] - start[0]) >= 0.8 * child_cpu - 0.05
    assert other_cpu_cores(None, start) is None


def test_files_first_then_checks_in_place_without_evaluating_the_dense_model(tmp_path, monkeypatch):
    """The Export page's quick "ready": `export_formats(checks=False)` writes every file, the card and the report
    (naming what is still to check) and evaluates nothing; `check_formats` then reads the written files back,
    measures them and writes the card and report again. Given the dense metric, the dense model is never evaluated
    (only its masked reference on the check examples)."""
    import tp_core.evaluation as ev
    from tp_core.export import check_formats

    model = tiny_multitask("bert")
    scores, cfg = random_scores(model), PruneConfig(0.5, 0.25)
    data = load_split("sst2", "validation", limit=24)
    calls, real = [], ev.predict_logits
    monkeypatch.setattr(ev, "predict_logits", lambda m, task, d, gates=None, **kw: calls.append(
        (m is model, gates is not None)) or real(m, task, d, gates, **kw))
    out = tmp_path / "e"
    rep = export_formats(model, "sst2", scores, cfg, out, ["hf"], eval_data=data, checks=False, command="pytest")
    assert calls == [] and rep.pending and "24 validation examples" in rep.pending[0]
    assert all(f.metric is None and f.check_max_abs_diff is None for f in rep.formats)
    assert (out / "hf" / "model.safetensors").is_file() and (out / "mask.json").is_file()
    assert "Still being checked when this card was written" in (out / "README.md").read_text()
    assert json.loads((out / "export_report.json").read_text())["pending"] == rep.pending
    dense = (0.625, (0.5, 0.75))
    done = check_formats(model, "sst2", scores, cfg, out, data, dense=dense)
    assert (True, False) not in calls and (True, True) in calls  # no dense pass; the masked reference only
    assert done.pending == [] and (done.metric_dense, done.metric_dense_interval) == dense
    (hf,) = done.formats
    assert hf.metric == pytest.approx(done.metric_pruned) and hf.check_max_abs_diff < 1e-4 and hf.check_examples
    card = (out / "README.md").read_text()
    assert "Still being checked" not in card and f"{hf.metric:.4f}" in card
    assert json.loads((out / "export_report.json").read_text())["formats"][0]["metric"] == hf.metric
    with pytest.raises(TPError, match="replaced by another export"):  # a folder that is not this export any more
        check_formats(model, "sst2", scores, PruneConfig(0.3), out, data)


def test_app_tables_say_checking_while_the_checks_run(bert_export):
    """The Export page's tables of a written, not yet checked export: its metric cells read "checking...", not
    "not measured"."""
    from tp_app.export_tables import summary_tables

    _, _, report, _ = bert_export
    written = report.to_dict()
    for f in written["formats"]:
        f["metric"] = f["check_max_abs_diff"] = None
    written.update(metric_dense=None, metric_pruned=None, pending=["each format's accuracy"])
    rows = summary_tables(written)["formats"]
    assert all(r["accuracy"] == "checking..." for r in rows) and rows[1]["max |logit diff| vs masked"] == "checking..."
    assert summary_tables(report.to_dict())["formats"][1]["accuracy"] != "checking..."
