"""The Export page's tables: an export report (`tp_core.export.ExportReport.to_dict()`) as rows ready to show, and
the labels the page gives each format. Values are formatted strings; the page only draws them. Also the check of an
uploaded text file's [UNK] share (`vocab_texts_check`)."""
from __future__ import annotations

from pathlib import Path

from tp_core.errors import TPError

FORMAT_LABELS = {"taskprune": "TaskPrune folder", "onnx": "ONNX (fp32)", "onnx-int8": "ONNX int8",
                 "hf": "Hugging Face folder"}
FORMAT_HELP = {"taskprune": "reloads with tp_core.load_model(path); the smallest torch model",
               "onnx": "onnx/model.onnx + tokenizer.json: runs with onnxruntime, tokenizers and numpy alone",
               "onnx-int8": "onnx/model.int8.onnx: dynamic int8 quantization, its metric measured",
               "hf": "hf/: config.json, model.safetensors and tokenizer files for plain transformers "
                     "(AutoModel.from_pretrained, no custom code)"}
PARTS = (("embeddings", "embeddings (word, position, type)"), ("attention", "encoder: attention heads"),
         ("ffn", "encoder: FFN"), ("other", "encoder: layer norms, pooler"), ("heads", "task head"),
         ("total", "total"))
RUNNERS = (("torch_dense", "dense (torch), before"), ("torch_pruned", "pruned (torch: TaskPrune folder)"),
           ("onnx", "pruned ONNX (fp32)"), ("onnx-int8", "pruned ONNX int8"))


def _pct(a, b) -> str:
    return f"{a / b:.1%}" if b else "–"


def _metric_cell(value, ci, pending: bool = False) -> str:
    if value is None:
        return "checking..." if pending else "not measured"
    return f"{value:.4f}" + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]")


def _diff_cell(f: dict, pending: bool) -> str:
    if f["check_max_abs_diff"] is None:
        return "checking..." if pending else "–"
    return f"{f['check_max_abs_diff']:.1e} ({f['check_examples']} ex.)"


def _format_rows(r: dict) -> list[dict]:
    """The dense model, then one row per format written: path, parameters (with hf/ padding), size on disk, metric
    and its change from dense, and the check against the masked model."""
    dense, metric, pending = r["params_dense"], r["metric_name"], bool(r.get("pending"))
    rows = [{"model": "dense (torch, float32)", "path": "", "parameters": f"{dense['total']:,}",
             "size on disk": f"{r['bytes_dense'] / 1e6:.1f} MB",
             metric: _metric_cell(r["metric_dense"], r["metric_dense_interval"], pending), "vs dense": "",
             "max |logit diff| vs masked": ""}]
    for f in r["formats"]:
        rel = Path(f["path"]).relative_to(r["out_dir"]) if f["path"] != r["out_dir"] else Path(".")
        delta = "" if f["metric"] is None or r["metric_dense"] is None else f"{f['metric'] - r['metric_dense']:+.4f}"
        rows.append({"model": FORMAT_LABELS.get(f["format"], f["format"]), "path": str(rel),
                     "parameters": f"{f['params']:,}" + (f" (+{f['params_by_part']['padding']:,} padding)"
                                                         if (f.get("params_by_part") or {}).get("padding") else ""),
                     "size on disk": f"{f['bytes_on_disk'] / 1e6:.1f} MB",
                     metric: _metric_cell(f["metric"], f["metric_interval"], pending), "vs dense": delta,
                     "max |logit diff| vs masked": _diff_cell(f, pending)})
    return rows


def _latency(lat: dict) -> tuple[list[dict], str]:
    """One row per runner (median ms and speed-up over dense torch per batch size), and how it was measured."""
    rows = []
    batches = list(lat["torch_dense"]) if "torch_dense" in lat else []
    for key, label in RUNNERS:
        if key not in lat:
            continue
        row = {"runner": label}
        for b in batches:
            ms = lat[key][b]["median_ms"]
            row[f"batch {b}: ms"] = f"{ms:.1f}"
            row[f"batch {b}: speed-up"] = "1.0x" if key == "torch_dense" else \
                f"{lat['torch_dense'][b]['median_ms'] / ms:.1f}x"
        rows.append(row)
    busy = max(lat["load_avg_before"], lat["load_avg_after"]) > lat["threads"]
    reps = max(x["repeats"] for k in lat if isinstance(lat[k], dict) for x in lat[k].values())
    note = (f"Median of up to {reps} runs of {lat['seq_len']}-token inputs, {lat['threads']} "
            f"thread(s), on the server that runs the jobs; load average {lat['load_avg_before']:.2f}"
            f" before, {lat['load_avg_after']:.2f} after." +
            (" The machine was busy while timing: other work slows torch more than onnxruntime, "
             "so these ratios overstate the speed-up." if busy else ""))
    return rows, note


def _vocab(v: dict, metric: str, pending: bool = False) -> tuple[list[dict], list[dict]]:
    """The task vocabulary's figures, and one row per off-domain task."""
    val = v.get("validation") or {}
    rows = [
        {"": "tokens kept", "value": f"{v['kept_tokens']:,} of {v['original_tokens']:,} "
                                     f"({v['kept_tokens'] / v['original_tokens']:.1%})"},
        {"": "rule", "value": f"seen >= {v['min_count']} times in the task's train texts, "
                              f"{v.get('general_added', 0):,} more from the bundle's {v.get('general_tokens', 0):,} "
                              f"most frequent tokens, every special token, {v['char_fallback_tokens']} "
                              "single-character pieces"},
        {"": "word-embedding parameters", "value": f"{v['embedding_params_before']:,} -> "
                                                   f"{v['embedding_params_after']:,}"},
        {"": "validation tokens that became [UNK]", "value": f"{val.get('unk_share', 0):.3%}"},
        {"": "validation examples split differently",
         "value": f"{val.get('examples_changed', 0)} of {val.get('examples', 0)}"},
        {"": f"{metric}, pruned, full vocabulary", "value": _metric_cell(v.get("metric_full_vocab"), None, pending)},
        {"": f"{metric}, pruned, task vocabulary", "value": _metric_cell(v.get("metric_task_vocab"), None, pending)},
    ]
    offdomain = [{
        "task": t, "examples": x["n"], "[UNK] share": f"{x['unk_share']:.2%}",
        f"{x.get('metric_name', metric)}, dense": f"{x['metric_dense']:.4f}",
        "pruned, full vocabulary": f"{x['metric_full_vocab']:.4f}",
        "pruned, task vocabulary": f"{x['metric_task_vocab']:.4f}",
        "task / full vocabulary": _pct(x["metric_task_vocab"], x["metric_full_vocab"])}
        for t, x in v.get("offdomain", {}).items()]
    return rows, offdomain


def summary_tables(report: dict) -> dict:
    """An export report (`ExportReport.to_dict()`) as rows ready to show: parameters by part, one row per format
    (size on disk, parameters, metric, check against the masked model), latency before/after, the vocabulary
    figures and off-domain metrics, and the hf/ padding note."""
    r = report
    dense, pruned = r["params_dense"], r["params_pruned"]
    out: dict = {}
    out["params"] = [{"part": label, "dense": f"{dense.get(k, 0):,}", "pruned": f"{pruned.get(k, 0):,}",
                      "kept": _pct(pruned.get(k, 0), dense.get(k, 0))} for k, label in PARTS]
    out["formats"] = _format_rows(r)
    out["metric"] = {"name": r["metric_name"], "dense": r["metric_dense"], "pruned": r["metric_pruned"],
                     "dense_interval": r["metric_dense_interval"], "pruned_interval": r["metric_pruned_interval"],
                     "examples": r["eval_examples"]}
    out["params_ratio"] = pruned["total"] / dense["total"] if dense.get("total") else None
    hf = next((f for f in r["formats"] if f["format"] == "hf"), None)
    out["hf_padding"] = None
    if hf is not None:
        pad = (hf.get("params_by_part") or {}).get("padding", 0)
        out["hf_padding"] = {"params": pad, "share": pad / max(pruned["total"], 1), "notes": list(hf["notes"])}
    out["latency"], out["latency_note"] = [], None
    if r.get("latency"):
        out["latency"], out["latency_note"] = _latency(r["latency"])
    out["vocab"], out["offdomain"] = [], []
    if r.get("vocab"):
        out["vocab"], out["offdomain"] = _vocab(r["vocab"], r["metric_name"], bool(r.get("pending")))
    return out


def vocab_texts_check(model, head: str, vocab: str, min_count: int, raw: bytes, name: str) -> dict:
    """`tp_core.vocab.check_texts` of an uploaded text file (one text per line) with the vocabulary the export would
    keep, remembered in the session per file and settings (the page reruns on every click)."""
    import hashlib

    import streamlit as st

    from tp_core.vocab import check_texts, lines_of

    key = (hashlib.sha1(raw).hexdigest(), getattr(model, "source", None), head, vocab, int(min_count))
    memo = st.session_state.setdefault("_vocab_texts_check", {})
    if key not in memo:
        texts = lines_of(raw, name)
        if not texts:
            raise TPError(f"{name} holds no text: upload a UTF-8 text file with one text per line.")
        memo.clear()
        memo[key] = check_texts(model, head, texts, vocab, int(min_count))
    return memo[key]
