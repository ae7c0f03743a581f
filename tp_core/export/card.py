"""Model cards (README.md): `folder_card` for the TaskPrune folder of `export_pruned`, `model_card` (a Hugging Face
card: YAML metadata + markdown) with every measured number of an `export_formats` report, and the copy-paste code
the card gives for each format."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from .hf import HEAD_FILE
from .prompt_file import PROMPT_FILE, render_prompts
from .report import ExportReport, metric_text

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SETTINGS = ("samples", "steps", "labels", "target", "aggregation")  # the attribution settings a card names
CREDIT = ("Made with TaskPrune Studio (training-free, task-specific pruning by neuron attribution; Yang et al., "
          "EACL 2023 Findings).")
PARTS = ("embeddings", "attention", "ffn", "other", "heads", "total")


def _settings(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if k in SETTINGS)


def folder_card(model, task: str, scores, cfg, masks, metric_name: str, before: float | None, after: float | None,
                params_before: int, params_after: int, command: str, recovery=None) -> str:
    """The README.md of a TaskPrune folder written by `export_pruned`."""
    recovery_note = "" if recovery is None or not recovery.corrections else (
        f", then a training-free recovery ({recovery.level}, fitted in {recovery.seconds:.1f}s on "
        f"{recovery.n_examples} unlabeled train texts) was folded into the output projections")
    fmt = lambda v: "not evaluated" if v is None else f"{v:.4f}"  # noqa: E731
    kept_ffn, kept_heads = [int(m.sum()) for m in masks.ffn], [int(m.sum()) for m in masks.heads]
    return f"""# Task-pruned model: {task}

{CREDIT}

| | |
|---|---|
| base model | {model.base_model} (loaded from `{model.source}`) |
| task | {task} |
| attribution method | {scores.method} ({_settings(scores.settings)}) |
| allocation | {cfg.allocation} |
| FFN sparsity | {masks.ffn_sparsity():.1%} (target {cfg.ffn_sparsity:.0%}) |
| head sparsity | {masks.head_sparsity():.1%} (target {cfg.head_sparsity:.0%}) |
| {metric_name} before | {fmt(before)} |
| {metric_name} after | {fmt(after)} |
| parameters before | {params_before:,} |
| parameters after | {params_after:,} ({params_after / params_before:.1%}) |

No retraining was done: units were removed by slicing weights{recovery_note}.
Kept FFN neurons per layer: {kept_ffn}; kept heads per layer: {kept_heads}.
{(chr(10) + prompt_text(model, task) + chr(10)) if model.kind == "causal_lm" else ""}
Reload in Python:

```python
import tp_core
model = tp_core.load_model("<this folder>")
```

Command that made it:

```
{command}
```
"""


def _ci(ci):
    return "" if not ci else f" (95% CI {ci[0]:.4f}–{ci[1]:.4f})"


def onnx_snippet(folder: str = "onnx", model_file: str = "model.onnx", other: str | None = None) -> str:
    """Copy-paste ONNX Runtime code for the card; `other`: a second file of the export the user may pick instead."""
    pick = f'  # or "{other}"' if other else ""
    return f'''import json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer

tok = Tokenizer.from_file("{folder}/tokenizer.json")          # truncation and padding are preset
meta = json.load(open("{folder}/taskprune_onnx.json"))
model_file = "{model_file}"{pick}
sess = ort.InferenceSession(f"{folder}/{{model_file}}", providers=["CPUExecutionProvider"],
                            **meta.get("sessions", {{}}).get(model_file, {{}}))  # the export's session settings
encs = tok.encode_batch(["a gripping, beautifully made film", "dull and far too long"])
feed = {{"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}}
feed = {{i.name: feed[i.name] for i in sess.get_inputs()}}
logits = sess.run(["logits"], feed)[0]
print([meta["labels"][i] for i in logits.argmax(-1)])'''


def prompt_onnx_snippet(folder: str = "onnx", model_file: str = "model.onnx", other: str | None = None) -> str:
    """Copy-paste ONNX Runtime code for a causal LM's export: `render_prompts` (stdlib only) turns texts into its
    prompts, the graph gives the task logits."""
    pick = f'  # or "{other}"' if other else ""
    return f'''import json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer


{inspect.getsource(render_prompts).strip()}


tok = Tokenizer.from_file("{folder}/tokenizer.json")          # right padding preset, no truncation
prompt = json.load(open("{folder}/{PROMPT_FILE}", encoding="utf-8"))
meta = json.load(open("{folder}/taskprune_onnx.json"))
model_file = "{model_file}"{pick}
sess = ort.InferenceSession(f"{folder}/{{model_file}}", providers=["CPUExecutionProvider"],
                            **meta.get("sessions", {{}}).get(model_file, {{}}))  # the export's session settings
texts = ["a gripping, beautifully made film", "dull and far too long"]
encs = tok.encode_batch(render_prompts(prompt, tok, texts, max_text_tokens=prompt["max_text_tokens"]))
feed = {{"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64)}}
logits = sess.run(["logits"], feed)[0]                        # (batch, labels): the task logits
print([prompt["labels"][i] for i in logits.argmax(-1)])'''


def prompt_hf_snippet(folder: str = "hf") -> str:
    """Copy-paste transformers code for a causal LM's hf/ folder: its prompts, the label words' next-token logits at
    the last real token, logsumexp per label."""
    return f'''import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer


{inspect.getsource(render_prompts).strip()}


tok = AutoTokenizer.from_pretrained("{folder}")
tok.padding_side = "right"
lm = AutoModelForCausalLM.from_pretrained("{folder}").eval()
prompt = json.load(open("{folder}/{PROMPT_FILE}", encoding="utf-8"))
texts = ["a gripping, beautifully made film", "dull and far too long"]
batch = tok(render_prompts(prompt, tok.backend_tokenizer, texts, max_text_tokens=prompt["max_text_tokens"]),
            padding=True, return_tensors="pt")
with torch.no_grad():
    logits = lm(**batch).logits
last = logits[torch.arange(len(texts)), batch["attention_mask"].sum(1) - 1]   # next token after each prompt
words = last[:, prompt["label_token_ids"]]
of = torch.tensor(prompt["label_of_token"])
scores = torch.stack([words[:, of == y].logsumexp(-1) for y in range(len(prompt["labels"]))], -1)
print([prompt["labels"][i] for i in scores.argmax(-1)])'''


def hf_snippet(pipeline_ok: bool, folder: str = "hf") -> str:
    """Copy-paste transformers code for the card: a pipeline, or the encoder plus the task head file."""
    if pipeline_ok:
        return f'''from transformers import pipeline

clf = pipeline("text-classification", model="{folder}")
print(clf("a gripping, beautifully made film"))'''
    return f'''import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{folder}")
enc = AutoModel.from_pretrained("{folder}", add_pooling_layer=False).eval()   # the pruned encoder
head = load_file("{folder}/{HEAD_FILE}")                                     # the task head
batch = tok(["a gripping, beautifully made film"], padding=True, return_tensors="pt")
with torch.no_grad():
    h = enc(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)                            # mean pooling
    z = torch.tanh(pooled @ head["dense.weight"].T + head["dense.bias"])
    logits = z @ head["out.weight"].T + head["out.bias"]'''


def _recovery_text(small) -> str:
    rec = (small.pruning or {}).get("recovery")
    if not rec:
        return "none"
    if isinstance(rec, dict):
        return ", ".join(f"{k}={v}" for k, v in rec.items() if not isinstance(v, (list, dict)))
    return str(rec)


def _yaml_meta(r: ExportReport) -> str:
    """The card's YAML front matter: library, base model (a hub id only), tags, and the pruned metric."""
    base = r.base_model.split(" ")[0] if r.base_model else ""
    tags = ["taskprune", "pruning", "text-classification"] + [f for f in ("onnx",) if r.format("onnx") or
                                                                r.format("onnx-int8")]
    library = "transformers" if r.format("hf") else "onnx" if "onnx" in tags else "taskprune"
    meta = ["---", "library_name: " + library]
    if HUB_ID.match(base):
        meta.append(f"base_model: {base}")
    meta.append("pipeline_tag: text-classification")
    meta.append("tags:\n" + "\n".join(f"- {t}" for t in tags))
    if r.metric_pruned is not None:
        meta.append("model-index:\n"
                    f"- name: {Path(r.out_dir).name}\n"
                    "  results:\n"
                    "  - task:\n      type: text-classification\n"
                    f"    dataset:\n      name: {r.task}\n      type: {r.task}\n      split: validation\n"
                    f"    metrics:\n    - type: {r.metric_name}\n      value: {r.metric_pruned:.4f}\n"
                    f"      name: {r.metric_name} (pruned, {r.eval_examples} examples)")
    meta.append("---")
    return "\n".join(meta)


def _params_rows(r: ExportReport) -> str:
    def kept(p):
        return f"{r.params_pruned.get(p, 0) / r.params_dense[p]:.1%}" if r.params_dense.get(p) else "–"

    return "\n".join(f"| {p} | {r.params_dense.get(p, 0):,} | {r.params_pruned.get(p, 0):,} | {kept(p)} |"
                     for p in PARTS)


def _format_rows(r: ExportReport) -> str:
    def diff(f):
        return "–" if f.check_max_abs_diff is None else f"{f.check_max_abs_diff:.1e} ({f.check_examples} ex.)"

    return "\n".join(
        f"| {f.format} | `{Path(f.path).relative_to(r.out_dir) if f.path != r.out_dir else '.'}` | "
        f"{f.params:,} | {f.bytes_on_disk / 1e6:.1f} MB | {metric_text(f.metric)}{_ci(f.metric_interval)} | "
        f"{diff(f)} |" for f in r.formats)


def _vocab_text(r: ExportReport) -> str:
    if not r.vocab:
        return "Vocabulary: full (not pruned)."
    v = r.vocab
    val = v.get("validation") or {}
    od = "\n".join(f"| {t} | {x['n']} | {x['unk_share']:.2%} | {x['metric_dense']:.4f} | "
                   f"{x['metric_full_vocab']:.4f} | {x['metric_task_vocab']:.4f} |" for t, x in v["offdomain"].items())
    text = (f"Vocabulary pruned to the task's tokens: **{v['kept_tokens']:,} of {v['original_tokens']:,}** "
            f"tokens kept (seen ≥ {v['min_count']} times in the task's train texts, "
            f"{v.get('general_added', 0):,} more from the general set of the data bundle's "
            f"{v.get('general_tokens', 0):,} most frequent tokens, every special token, "
            f"and {v['char_fallback_tokens']} single-character pieces so unseen words split instead of "
            f"becoming [UNK]); word embeddings {v['embedding_params_before']:,} → "
            f"{v['embedding_params_after']:,} parameters. Text made only of kept tokens gets exactly the "
            f"same logits. On the validation texts, {val.get('unk_share', 0):.2%} of tokens became [UNK] "
            f"and {val.get('examples_changed', 0)} of {val.get('examples', 0)} examples split into "
            f"different pieces; {r.metric_name} with the full vocabulary {metric_text(v['metric_full_vocab'])}, "
            f"with the task vocabulary {metric_text(v['metric_task_vocab'])}.")
    if od:
        text += ("\n\nOff-domain (other tasks of the same kind, validation splits):\n\n"
                 "| task | examples | [UNK] share | dense | pruned, full vocab | pruned, task vocab |\n"
                 "|---|---:|---:|---:|---:|---:|\n" + od)
    return text


def _latency_text(r: ExportReport) -> str:
    if not r.latency:
        return "Latency: not measured (pass `--latency` / `latency=True`)."
    lat = r.latency
    cols = [k for k in lat if isinstance(lat[k], dict)]
    batches = list(next(iter(lat[c] for c in cols)).keys()) if cols else []
    return (f"Latency, median ms per batch of {lat['seq_len']}-token inputs on this machine, "
            f"{lat['threads']} threads (load average {lat['load_avg_before']:.2f} before, "
            f"{lat['load_avg_after']:.2f} after; ratios measured under load are not speed-ups to quote):\n\n"
            "| runner | " + " | ".join(f"batch {b}" for b in batches) + " |\n|---|" + "---:|" * len(batches)
            + "\n" + "\n".join(f"| {c} | " + " | ".join(f"{lat[c][b]['median_ms']:.1f}" for b in batches)
                               + " |" for c in cols))


def prompt_text(model, task: str) -> str:
    """A causal LM's prompt for `task`, for a card ("" for any other model)."""
    if model.kind != "causal_lm":
        return ""
    name = model.resolve_task(task)
    prompt, labels = model.prompts[name], model.tasks[name].label_names
    words = "; ".join(f"{y}: {', '.join(ws)}" for y, ws in zip(labels, prompt.label_words))
    return (f"The task is asked as a prompt: template `{prompt.template!r}`, label words ({words}), "
            f"{len(prompt.demos)} demonstrations before each query. Its logits are the label words' next-token "
            f"logits at the prompt's last token. The full prompt is in {PROMPT_FILE} beside the ONNX and Hugging "
            "Face files (and in taskprune.json of a TaskPrune folder).")


def _snippets(r: ExportReport, small) -> str:
    snippets = []
    tp = r.format("taskprune")
    if tp:
        snippets.append("Reload the TaskPrune folder:\n\n```python\nimport tp_core\nmodel = tp_core.load_model(\""
                        + ("." if tp.path == r.out_dir else "taskprune") + "\")\n```")
    causal = small.kind == "causal_lm"
    if r.format("onnx") or r.format("onnx-int8"):
        f = "model.onnx" if r.format("onnx") else "model.int8.onnx"
        other = "model.int8.onnx" if r.format("onnx") and r.format("onnx-int8") else None
        code = prompt_onnx_snippet("onnx", f, other) if causal else onnx_snippet("onnx", f, other)
        snippets.append("ONNX Runtime (no torch, no transformers):\n\n```python\n" + code + "\n```")
    if r.format("hf"):
        code = prompt_hf_snippet() if causal else hf_snippet(small.kind == "hf_classifier")
        snippets.append("Hugging Face transformers:\n\n```python\n" + code + "\n```")
    return "\n\n".join(snippets)


def _pending_text(r: ExportReport) -> str:
    """What was still being checked when the card was written (empty once every check ran)."""
    if not r.pending:
        return ""
    return ("\n**Still being checked when this card was written:** " + "; ".join(r.pending) + ". The files are "
            "complete; the numbers these checks give read \"not measured\" here until the export's README.md and "
            "export_report.json are written again with them.\n")


def model_card(report: ExportReport, small) -> str:
    """A Hugging Face model card (YAML metadata + markdown) with every measured number of the export."""
    r = report
    info = small.task_info(r.task)
    kept_ffn = [int(len(x)) for x in small.pruning.get("ffn_keep", [])]
    kept_heads = [int(len(x)) for x in small.pruning.get("heads_keep", [])]
    vocab = "" if not r.vocab else f" ({r.vocab['kept_tokens']:,} tokens, min count {r.vocab['min_count']})"
    notes = "\n".join(f"- **{f.format}**: {n}" for f in r.formats for n in f.notes)
    return _yaml_meta(r) + f"""

# Task-pruned model: {r.task}

Made with TaskPrune Studio: training-free, task-specific pruning by neuron attribution (Yang et al., EACL 2023
Findings). Units were removed by slicing weights; nothing was retrained. Recovery: {_recovery_text(small)}.
{_pending_text(r)}
| | |
|---|---|
| base model | {r.base_model} |
| task | {r.task} ({info.problem}, labels {', '.join(info.label_names)}) |
| attribution | {r.method} ({_settings(r.attribution)}) |
| allocation | {r.allocation} |
| FFN sparsity | {r.actual_ffn_sparsity:.1%} (target {r.ffn_sparsity:.0%}); kept per layer {kept_ffn} |
| head sparsity | {r.actual_head_sparsity:.1%} (target {r.head_sparsity:.0%}); kept per layer {kept_heads} |
| vocabulary | {r.vocab_mode}{vocab} |
| {r.metric_name}, dense | {metric_text(r.metric_dense)}{_ci(r.metric_dense_interval)} |
| {r.metric_name}, pruned | {metric_text(r.metric_pruned)}{_ci(r.metric_pruned_interval)} |
| evaluation examples | {r.eval_examples} (validation; intervals: 95% bootstrap) |

## Parameters by part (encoder + this task's head)

| part | dense | pruned | kept |
|---|---:|---:|---:|
{_params_rows(r)}

Dense as float32: {r.bytes_dense / 1e6:.1f} MB.

## Formats

| format | path | parameters | size on disk | {r.metric_name} | max abs. logit difference vs masked model |
|---|---|---:|---:|---:|---:|
{_format_rows(r)}

{notes}

## Vocabulary

{_vocab_text(r)}

## Latency

{_latency_text(r)}

## Use

{prompt_text(small, r.task) + chr(10) * 2 if small.kind == "causal_lm" else ""}{_snippets(r, small)}

Command that made it:

```
{r.command}
```
"""
