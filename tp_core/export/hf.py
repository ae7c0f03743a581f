"""The plain Hugging Face format: `export_hf` writes hf/ (config.json, model.safetensors, tokenizer files, and for
a multi-task model the task head, which transformers has no class for) that loads with
`transformers.AutoModel.from_pretrained` (no custom code; a causal LM with `AutoModelForCausalLM`, plus its
prompt.json); `hf_logits` reads it back that way.

transformers' BERT config holds one FFN width and one head count for all layers and derives the head size from
hidden size / head count, so hf/ pads every layer to the widest layer's FFN and to the original head count with zero
units (outputs unchanged); `hf_padding_params` says what that padding costs in parameters. Use
`allocation="per-layer"` and head sparsity 0 for an hf/ folder without padding.

A Llama-layout config likewise holds one `intermediate_size` and one head count, but names its head size
(`head_dim`), so a causal LM is padded to the widest layer's MLP and to the most key/value groups any layer kept
(`num_key_value_heads` = that many, `num_attention_heads` = that times the query heads per group). A padded MLP
neuron has zero rows in `gate_proj`/`up_proj` and a zero column in `down_proj`; a padded group has zero `q_proj`,
`k_proj` and `v_proj` rows and zero `o_proj` columns: both add exactly 0 to the residual stream. Costs per padded
unit: an MLP neuron 3 x hidden parameters, a group (q rows + k, v rows + o columns) 2 x n_rep x d x hidden +
2 x d x hidden. The output embedding is untouched (`tie_word_embeddings` as in the source model).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .prompt_file import PROMPT_FILE, label_scores, read_prompt_json, render_prompts, standalone_tokenizer, \
    write_prompt_json

HEAD_FILE = "task_head.safetensors"


def _pad_linear(layer: nn.Linear, out_features: int | None = None, in_features: int | None = None) -> nn.Linear:
    """A copy of `layer` padded with zero rows (outputs) or zero columns (inputs): padded units add exactly 0."""
    o, i = layer.out_features, layer.in_features
    o2, i2 = out_features or o, in_features or i
    new = nn.Linear(i2, o2, bias=layer.bias is not None).to(layer.weight.device, layer.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:o, :i].copy_(layer.weight)
        if layer.bias is not None:
            new.bias.zero_()
            new.bias[:o].copy_(layer.bias)
    return new


def _ffn_config_attr(model) -> str:
    return "hidden_dim" if model.config.model_type == "distilbert" else "intermediate_size"


def _per_neuron(p) -> int:
    """Parameters of one FFN neuron of the layer `p`: its rows of the input projection(s), its output column."""
    return sum(lin.in_features + (1 if lin.bias is not None else 0) for lin in p.ffn_inputs) + p.ffn_out.out_features


def _per_head(p) -> int:
    """Parameters of one head unit of the layer `p` (a key/value group under GQA): q rows, k and v rows, o columns."""
    q = p.head_dim * (p.query.in_features + (1 if p.query.bias is not None else 0))
    kv = sum(p.kv_width * (lin.in_features + (1 if lin.bias is not None else 0)) for lin in (p.key, p.value))
    return q + kv + p.head_dim * p.attn_out.out_features


def _pad_layer(enc, p, f_max: int, h0: int, head_attrs) -> int:
    """Pad one layer (its `layer_parts` `p`, inside the copied encoder `enc`) to `f_max` FFN neurons and `h0` heads;
    returns the parameters added."""
    from ..slicing import _parent_of, _set_child

    added = 0
    k = p.ffn_out.in_features
    if k < f_max:
        for lin in p.ffn_inputs:
            _set_child(_parent_of(enc, lin), lin, _pad_linear(lin, out_features=f_max))
        _set_child(_parent_of(enc, p.ffn_out), p.ffn_out, _pad_linear(p.ffn_out, in_features=f_max))
        added += (f_max - k) * _per_neuron(p)
    h, d = p.num_heads, p.head_dim
    if h < h0:
        added += (h0 - h) * _per_head(p)
        _set_child(_parent_of(enc, p.query), p.query, _pad_linear(p.query, out_features=h0 * d))
        for lin in (p.key, p.value):
            _set_child(_parent_of(enc, lin), lin, _pad_linear(lin, out_features=h0 * p.kv_width))
        _set_child(_parent_of(enc, p.attn_out), p.attn_out, _pad_linear(p.attn_out, in_features=h0 * d))
        for attr in head_attrs:
            setattr(p.attention, attr, h0)
        if hasattr(p.attention, "all_head_size"):
            p.attention.all_head_size = h0 * d
    return added


def head_targets(model, kept_heads: Sequence[int], original_heads: Sequence[int]) -> list[int]:
    """The head units every layer of hf/ has: an encoder's original count (its config derives the head size from
    it); a causal LM's most kept key/value groups of any layer, at least one (its config names the head size)."""
    if model.adapter.causal_lm:
        return [max(1, max(kept_heads, default=1))] * len(kept_heads)
    return [int(h) for h in original_heads]


def _set_decoder_heads(config, groups: int, parts) -> None:
    """A Llama config for `groups` key/value groups per layer of `parts`' layout (n_rep query heads each)."""
    n_rep = parts.head_dim // parts.kv_width
    config.num_key_value_heads = groups
    config.num_attention_heads = groups * n_rep
    config.head_dim = parts.kv_width


def padded_for_hf(small, original_heads: Sequence[int]) -> tuple[nn.Module, dict]:
    """A copy of `small.encoder` whose layers all have the widest kept FFN and the same head count (`head_targets`:
    zero-padded), so transformers' one-width config describes it. Returns (module, padding info)."""
    enc = copy.deepcopy(small.encoder)
    holder = copy.copy(small)  # adapter lookups on the copy
    object.__setattr__(holder, "_modules", dict(small._modules, encoder=enc))
    shape = small.unit_shape()
    f_max = max(shape.ffn)
    targets = head_targets(small, shape.heads, original_heads)
    added = sum(_pad_layer(enc, holder.layer_parts(l), f_max, targets[l], small.adapter.head_attrs)
                for l in range(small.num_layers))
    for module in enc.modules():  # the gate hooks belong to the TaskPrune model, not to a plain HF one
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "_taskprune_gate", False):
                del module._forward_pre_hooks[key]
    setattr(enc.config, _ffn_config_attr(small), f_max)
    if small.adapter.causal_lm:
        _set_decoder_heads(enc.config, targets[0], holder.layer_parts(0))
    uniform = len(set(shape.ffn)) == 1 and all(h == t for h, t in zip(shape.heads, targets))
    return enc, {"ffn_width": f_max, "heads": targets, "padding_params": added, "uniform": uniform,
                 "causal_lm": small.kind == "causal_lm"}


def unpruned_heads(model) -> list[int]:
    """Each layer's head count before any pruning (what hf/ pads back to): a pruned model's record of it, else its
    own."""
    return list((model.pruning or {}).get("original_heads") or model.unit_shape().heads)


def hf_padding_params(model, masks, original_heads: Sequence[int] | None = None) -> dict:
    """What the hf/ format's padding (see `padded_for_hf`) will cost for `masks` on `model`, computed without
    building anything: {"padding_params", "ffn_width", "uniform"}. Zero for a per-layer-uniform plan that keeps
    every head (a causal LM: the same number of key/value groups in every layer)."""
    heads0 = list(original_heads or unpruned_heads(model))
    kept_ffn = [int(m.sum()) for m in masks.ffn]
    kept_heads = [int(m.sum()) for m in masks.heads]
    targets = head_targets(model, kept_heads, heads0)
    f_max = max(kept_ffn) if kept_ffn else 0
    added = 0
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        added += (f_max - kept_ffn[l]) * _per_neuron(p) + (targets[l] - kept_heads[l]) * _per_head(p)
    return {"padding_params": int(added), "ffn_width": f_max, "uniform": added == 0}


def export_hf(small, task: str, folder: Path, original_heads: Sequence[int]) -> dict:
    """Write a plain Hugging Face folder: config.json, model.safetensors, tokenizer files (+ the task head for a
    TaskPrune multi-task model, which transformers has no class for; + prompt.json for a causal LM). Returns padding
    info and parameter counts."""
    from safetensors.torch import save_file

    from ..model import _quiet_transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    enc, info = padded_for_hf(small, original_heads)
    with _quiet_transformers():
        enc.save_pretrained(str(folder))
    small.tokenizer.save_pretrained(str(folder))
    write_vocab_txt(small.tokenizer, folder)
    n_enc = sum(p.numel() for p in enc.parameters())
    head_params = 0
    if small.kind == "multitask":
        head = small.heads[small.resolve_task(task)]
        state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
        save_file(state, str(folder / HEAD_FILE))
        head_params = sum(v.numel() for v in state.values())
        info_head = small.task_info(task)
        (folder / "task_head.json").write_text(json.dumps({
            "task": task, "labels": list(info_head.label_names), "problem": info_head.problem,
            "pooling": "mean over attention_mask", "layers": "dense -> tanh -> out",
            "file": HEAD_FILE}, indent=1))
    if small.kind == "causal_lm":
        write_prompt_json(small, task, folder)
    info.update({"params": n_enc + head_params, "encoder_params": n_enc, "head_params": head_params,
                 "pipeline": small.kind == "hf_classifier"})
    return info


def notes(info: dict, pruned_total: int) -> list[str]:
    """The report's notes on an hf/ folder (`export_hf`'s `info`): what its padding costs, how to load it."""
    heads = f"{info['heads'][0]} key/value groups" if info.get("causal_lm") else "one head count"
    pad = ("every layer already has the same FFN width and head count: no padding" if info["uniform"]
           else f"transformers' config has one FFN width ({info['ffn_width']}) and {heads} for all layers: "
                f"zero units pad the plan (outputs unchanged), costing {info['padding_params']:,} parameters "
                f"({info['padding_params'] / max(pruned_total, 1):.1%} of the pruned model; "
                f"{'the per-layer allocation' if info.get('causal_lm') else 'per-layer allocation, head sparsity 0'}"
                " needs none)")
    if info.get("causal_lm"):
        use = (f"AutoModelForCausalLM.from_pretrained(path) loads it; {PROMPT_FILE} holds the prompt (template, "
               "label words, demonstrations): score the label words' next-token logits at the last real token")
    else:
        use = ("pipeline('text-classification', model=path) works" if info["pipeline"] else
               f"AutoModel.from_pretrained(path) gives the encoder; the task head (mean pooling, dense, tanh, out) is "
               f"in {HEAD_FILE}")
    return [pad, use]


def write_vocab_txt(tokenizer, folder: Path) -> None:
    """transformers 5 writes only tokenizer.json; add the slow `vocab.txt` for WordPiece tokenizers."""
    try:
        doc = json.loads(tokenizer.backend_tokenizer.to_str())
    except Exception:
        return
    if (doc.get("model") or {}).get("type") == "WordPiece":
        vocab = doc["model"]["vocab"]
        ordered = sorted(vocab.items(), key=lambda kv: kv[1])
        (Path(folder) / "vocab.txt").write_text("".join(t + "\n" for t, _ in ordered), encoding="utf-8")


@torch.no_grad()
def hf_logits(folder: Path, task: str, texts: Sequence[str], pairs: Sequence[str] | None = None,
              batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """Logits from an exported hf/ folder loaded with plain transformers (plus the task head file if any; a causal
    LM's through its prompt.json, `causal_hf_logits`)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from ..model import _quiet_transformers

    folder = Path(folder)
    if (folder / PROMPT_FILE).is_file():
        return causal_hf_logits(folder, texts, pairs, batch_size, max_length)
    tok = AutoTokenizer.from_pretrained(str(folder))
    head = load_file(str(folder / HEAD_FILE)) if (folder / HEAD_FILE).is_file() else None
    with _quiet_transformers():
        if head is None:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        else:
            model = AutoModel.from_pretrained(str(folder)).eval()
    out = []
    for start in range(0, len(texts), batch_size):
        b = tok(list(texts[start:start + batch_size]),
                None if pairs is None else list(pairs[start:start + batch_size]),
                padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        if head is None:
            out.append(model(**b).logits.float().numpy())
            continue
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        z = torch.tanh(pooled @ head["dense.weight"].T + head["dense.bias"])
        out.append((z @ head["out.weight"].T + head["out.bias"]).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


@torch.no_grad()
def causal_hf_logits(folder: Path, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 64,
                     max_length: int = 128) -> np.ndarray:
    """Task logits from a causal LM's hf/ folder, the way its prompt.json says: `AutoModelForCausalLM` and
    `AutoTokenizer` from the folder, prompts rendered by `render_prompts`, right-padded batches, the full
    vocabulary's next-token logits at each last real token, of which the label words' (logsumexp per label)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..model import _quiet_transformers

    folder = Path(folder)
    prompt = read_prompt_json(folder / PROMPT_FILE)
    tok = AutoTokenizer.from_pretrained(str(folder))
    with _quiet_transformers():
        lm = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    prompts = render_prompts(prompt, standalone_tokenizer(tok), texts, pairs, max_length)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = torch.tensor(prompt["label_token_ids"])
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        enc = tok(chunk, padding=False, truncation=False)["input_ids"]
        width = max(len(e) for e in enc)
        ids = torch.tensor([e + [pad] * (width - len(e)) for e in enc])
        mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
        logits = lm(input_ids=ids, attention_mask=mask, use_cache=False).logits
        last = logits[torch.arange(len(enc)), mask.sum(1) - 1]
        out.append(label_scores(last[:, rows].float().numpy(), prompt))
    return np.concatenate(out) if out else np.zeros((0, len(prompt["labels"])))
