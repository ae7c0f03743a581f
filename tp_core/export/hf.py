"""The plain Hugging Face format: `export_hf` writes hf/ (config.json, model.safetensors, tokenizer files, and for
a multi-task model the task head, which transformers has no class for) that loads with
`transformers.AutoModel.from_pretrained` (no custom code); `hf_logits` reads it back that way.

transformers' BERT config holds one FFN width and one head count for all layers and derives the head size from
hidden size / head count, so hf/ pads every layer to the widest layer's FFN and to the original head count with zero
units (outputs unchanged); `hf_padding_params` says what that padding costs in parameters. Use
`allocation="per-layer"` and head sparsity 0 for an hf/ folder without padding.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

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


def _pad_layer(enc, p, f_max: int, h0: int, head_attrs) -> int:
    """Pad one layer (its `layer_parts` `p`, inside the copied encoder `enc`) to `f_max` FFN neurons and `h0` heads;
    returns the parameters added."""
    from ..slicing import _parent_of, _set_child

    added = 0
    k = p.ffn_out.in_features
    if k < f_max:
        _set_child(_parent_of(enc, p.ffn_in), p.ffn_in, _pad_linear(p.ffn_in, out_features=f_max))
        _set_child(_parent_of(enc, p.ffn_out), p.ffn_out, _pad_linear(p.ffn_out, in_features=f_max))
        added += (f_max - k) * (p.ffn_in.in_features + (1 if p.ffn_in.bias is not None else 0)
                                + p.ffn_out.out_features)
    h, d = p.num_heads, p.head_dim
    if h < h0:
        for lin in (p.query, p.key, p.value):
            _set_child(_parent_of(enc, lin), lin, _pad_linear(lin, out_features=h0 * d))
            added += (h0 - h) * d * (lin.in_features + (1 if lin.bias is not None else 0))
        _set_child(_parent_of(enc, p.attn_out), p.attn_out, _pad_linear(p.attn_out, in_features=h0 * d))
        added += (h0 - h) * d * p.attn_out.out_features
        for attr in head_attrs:
            setattr(p.attention, attr, h0)
        if hasattr(p.attention, "all_head_size"):
            p.attention.all_head_size = h0 * d
    return added


def padded_for_hf(small, original_heads: Sequence[int]) -> tuple[nn.Module, dict]:
    """A copy of `small.encoder` whose layers all have the widest kept FFN and the original head count (zero-padded),
    so transformers' one-width config describes it. Returns (module, padding info)."""
    enc = copy.deepcopy(small.encoder)
    holder = copy.copy(small)  # adapter lookups on the copy
    object.__setattr__(holder, "_modules", dict(small._modules, encoder=enc))
    shape = small.unit_shape()
    f_max = max(shape.ffn)
    added = sum(_pad_layer(enc, holder.layer_parts(l), f_max, int(original_heads[l]), small.adapter.head_attrs)
                for l in range(small.num_layers))
    for module in enc.modules():  # the gate hooks belong to the TaskPrune model, not to a plain HF one
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "_taskprune_gate", False):
                del module._forward_pre_hooks[key]
    setattr(enc.config, _ffn_config_attr(small), f_max)
    uniform = len(set(shape.ffn)) == 1 and all(h == h0 for h, h0 in zip(shape.heads, original_heads))
    return enc, {"ffn_width": f_max, "heads": list(original_heads), "padding_params": added, "uniform": uniform}


def unpruned_heads(model) -> list[int]:
    """Each layer's head count before any pruning (what hf/ pads back to): a pruned model's record of it, else its
    own."""
    return list((model.pruning or {}).get("original_heads") or model.unit_shape().heads)


def hf_padding_params(model, masks, original_heads: Sequence[int] | None = None) -> dict:
    """What the hf/ format's padding (see `padded_for_hf`) will cost for `masks` on `model`, computed without
    building anything: {"padding_params", "ffn_width", "uniform"}. Zero for a per-layer-uniform plan that keeps
    every head."""
    heads0 = list(original_heads or unpruned_heads(model))
    kept_ffn = [int(m.sum()) for m in masks.ffn]
    f_max = max(kept_ffn) if kept_ffn else 0
    added = 0
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        per_neuron = p.ffn_in.in_features + (1 if p.ffn_in.bias is not None else 0) + p.ffn_out.out_features
        added += (f_max - kept_ffn[l]) * per_neuron
        d = p.head_dim
        per_head = sum(d * lin.in_features + (d if lin.bias is not None else 0) for lin in (p.query, p.key, p.value))
        per_head += d * p.attn_out.out_features
        added += (int(heads0[l]) - int(masks.heads[l].sum())) * per_head
    return {"padding_params": int(added), "ffn_width": f_max, "uniform": added == 0}


def export_hf(small, task: str, folder: Path, original_heads: Sequence[int]) -> dict:
    """Write a plain Hugging Face folder: config.json, model.safetensors, tokenizer files (+ the task head for a
    TaskPrune multi-task model, which transformers has no class for). Returns padding info and parameter counts."""
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
    info.update({"params": n_enc + head_params, "encoder_params": n_enc, "head_params": head_params,
                 "pipeline": small.kind == "hf_classifier"})
    return info


def notes(info: dict, pruned_total: int) -> list[str]:
    """The report's notes on an hf/ folder (`export_hf`'s `info`): what its padding costs, how to load it."""
    pad = ("every layer already has the same FFN width and the original head count: no padding" if info["uniform"]
           else f"transformers' config has one FFN width ({info['ffn_width']}) and one head count for all layers: "
                f"zero units pad the plan (outputs unchanged), costing {info['padding_params']:,} parameters "
                f"({info['padding_params'] / max(pruned_total, 1):.1%} of the pruned model)")
    use = ("pipeline('text-classification', model=path) works" if info["pipeline"] else
           f"AutoModel.from_pretrained(path) gives the encoder; the task head (mean pooling, dense, tanh, out) is in "
           f"{HEAD_FILE}")
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
    """Logits from an exported hf/ folder loaded with plain transformers (plus the task head file if any)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from ..model import _quiet_transformers

    folder = Path(folder)
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
