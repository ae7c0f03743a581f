"""Physical pruning: slice weights so the model is genuinely smaller (like transformers' `prune_linear_layer`,
which BERT in transformers 5.x no longer calls for us). The result computes the same logits as the masked model.

FFN neuron i removed: row i of `ffn_in` (+ bias) and column i of `ffn_out`.
Head h removed: its d rows of Q, K and V (+ biases) and its d columns of the attention output projection.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .masks import UnitMasks
from .model import MultiTaskModel


def _slice_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `index` along `dim` (0 = output features, 1 = input features)."""
    index = index.to(layer.weight.device)
    w = layer.weight.index_select(dim, index).detach().clone()
    b = None
    if layer.bias is not None:
        b = (layer.bias if dim == 1 else layer.bias.index_select(0, index)).detach().clone()
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).to(device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if b is not None:
        new.bias.data.copy_(b)
    return new


def _set_child(parent: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for name, child in parent.named_children():
        if child is old:
            setattr(parent, name, new)
            return
    raise RuntimeError("layer not found in its parent")


def _parent_of(root: nn.Module, target: nn.Module) -> nn.Module:
    for module in root.modules():
        for child in module.children():
            if child is target:
                return module
    raise RuntimeError("module not found")


def _apply(model: MultiTaskModel, ffn_keep: list[list[int]], heads_keep: list[list[int]]) -> None:
    """Slice every layer in place to the kept units (gate hooks are re-installed on the new Linears)."""
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        f_idx = torch.tensor(ffn_keep[l], dtype=torch.long)
        if len(f_idx) != p.ffn_out.in_features:
            _set_child(_parent_of(model.encoder, p.ffn_in), p.ffn_in, _slice_linear(p.ffn_in, f_idx, 0))
            _set_child(_parent_of(model.encoder, p.ffn_out), p.ffn_out, _slice_linear(p.ffn_out, f_idx, 1))
        h_keep = heads_keep[l]
        if len(h_keep) != p.num_heads:
            d = p.head_dim
            idx = torch.tensor([h * d + j for h in h_keep for j in range(d)], dtype=torch.long)
            for lin in (p.query, p.key, p.value):
                _set_child(_parent_of(model.encoder, lin), lin, _slice_linear(lin, idx, 0))
            _set_child(_parent_of(model.encoder, p.attn_out), p.attn_out, _slice_linear(p.attn_out, idx, 1))
            for attr in model.adapter.head_attrs:
                setattr(p.attention, attr, len(h_keep))
            if hasattr(p.attention, "all_head_size"):
                p.attention.all_head_size = len(h_keep) * d
    from .gates import install_gates

    install_gates(model)
    model._fingerprint = None


def reshape_to_plan(model: MultiTaskModel, ffn_keep: list[list[int]], heads_keep: list[list[int]]) -> None:
    """Give a freshly built model the shapes of a saved pruned model (before loading its weights)."""
    _apply(model, ffn_keep, heads_keep)


def prune_physically(model: MultiTaskModel, masks: UnitMasks, task: str | None = None,
                     recovery=None) -> MultiTaskModel:
    """A smaller copy of `model` without the masked units; with `task`, only that task's head is kept. A
    `recovery.Recovery` fitted for `masks` is folded into the sliced output projections (same logits as
    `masks.gates(recovery=recovery)` on the full model)."""
    small = copy.deepcopy(model)
    if task is not None and small.kind == "multitask":
        name = small.resolve_task(task)
        small.heads = nn.ModuleDict({name: small.heads[name]})
        small.tasks = {name: small.tasks[name]}
    _apply(small, masks.kept_ffn(), masks.kept_heads())
    if recovery is not None and recovery.corrections:
        from .recovery import fold_into

        fold_into(small, recovery, masks)
    previous = model.pruning or {}
    small.pruning = {
        "ffn_keep": masks.kept_ffn(),
        "heads_keep": masks.kept_heads(),
        "original_ffn": list(previous.get("original_ffn") or model.unit_shape().ffn),
        "original_heads": list(previous.get("original_heads") or model.unit_shape().heads),
    }
    if recovery is not None and recovery.corrections:
        small.pruning["recovery"] = recovery.summary()
    return small


def count_params(model: MultiTaskModel, task: str | None = None) -> int:
    """Parameters of the encoder plus (with `task`) that task's head: what serving one task needs."""
    n = sum(p.numel() for p in model.encoder.parameters())
    if task is not None and model.kind == "multitask":
        n += sum(p.numel() for p in model.heads[model.resolve_task(task)].parameters())
    return n


def kept_params(model: MultiTaskModel, masks: UnitMasks, task: str | None = None) -> int:
    """Exact parameter count of `prune_physically(model, masks, task)`, computed without building it."""
    n = count_params(model, task)
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        f_removed = len(masks.ffn[l]) - int(masks.ffn[l].sum())
        per_neuron = p.ffn_in.in_features + (1 if p.ffn_in.bias is not None else 0) + p.ffn_out.out_features
        n -= f_removed * per_neuron
        h_removed = len(masks.heads[l]) - int(masks.heads[l].sum())
        d = p.head_dim
        per_head = sum(d * lin.in_features + (d if lin.bias is not None else 0) for lin in (p.query, p.key, p.value))
        per_head += d * p.attn_out.out_features
        n -= h_removed * per_head
    return n


def param_breakdown(model: MultiTaskModel) -> dict[str, int]:
    """Parameters by part: embeddings / attention / FFN / other encoder (layer norms, pooler) / task heads."""
    att = ffn = 0
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        att += sum(x.numel() for lin in (p.query, p.key, p.value, p.attn_out) for x in lin.parameters())
        ffn += sum(x.numel() for lin in (p.ffn_in, p.ffn_out) for x in lin.parameters())
    emb = sum(x.numel() for x in model.base.embeddings.parameters())
    enc = sum(x.numel() for x in model.encoder.parameters())
    heads = sum(x.numel() for x in model.heads.parameters())
    if model.kind == "hf_classifier":
        base = sum(x.numel() for x in model.base.parameters())
        heads = enc - base
        enc = base
    return {"embeddings": emb, "attention": att, "ffn": ffn, "other": enc - emb - att - ffn, "heads": heads,
            "total": enc + heads}
