"""Physical pruning: slice weights (tp_core/slicing.py) so the model is genuinely smaller (like transformers'
`prune_linear_layer`, which BERT in transformers 5.x no longer calls for us). The result computes the same logits as
the masked model.

FFN neuron i removed: row i of `ffn_in` (+ bias; and of Llama's up_proj) and column i of `ffn_out`.
Head h removed: its d rows of Q, K and V (+ biases) and its d columns of the attention output projection (a
grouped-query key/value group: see slicing.py).
"""
from __future__ import annotations

import copy

from torch import nn

from .masks import UnitMasks
from .model import MultiTaskModel
from .slicing import _apply, _parent_of, _set_child, _slice_linear, reshape_to_plan  # noqa: F401  (public here as before)


def prune_physically(model: MultiTaskModel, masks: UnitMasks, task: str | None = None,
                     recovery=None, share_unchanged: bool = False) -> MultiTaskModel:
    """A smaller copy of `model` without the masked units; with `task`, only that task's head is kept. A
    `recovery.Recovery` fitted for `masks` is folded into the sliced output projections (same logits as
    `masks.gates(recovery=recovery)` on the full model).

    `share_unchanged=True` (for a throw-away copy that only runs, as in `evaluation.masked_logits`): the copy
    shares the tensors that slicing and recovery never write (the embeddings, the other tasks' heads) and the
    tokenizer with `model` instead of copying them; on the demo model that makes the copy 5x cheaper (0.2 s of
    single-threaded Python and memcpy, which a busy worker's threads otherwise queue on). Never hand such a copy
    to code that changes it in place (vocabulary pruning, saving with a new tokenizer)."""
    memo: dict[int, object] = {}
    if share_unchanged:
        emb = model.adapter.embeddings(model.base)
        shared = [*emb.parameters(), *emb.buffers()]
        if task is not None and model.kind == "multitask":
            keep = model.resolve_task(task)
            shared += [p for name, h in model.heads.items() if name != keep for p in h.parameters()]
        memo = {id(t): t for t in shared}
        memo[id(model.tokenizer)] = model.tokenizer
    small = copy.deepcopy(model, memo)
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
        per_neuron = sum(lin.in_features + (1 if lin.bias is not None else 0) for lin in p.ffn_inputs)
        per_neuron += p.ffn_out.out_features
        n -= f_removed * per_neuron
        h_removed = len(masks.heads[l]) - int(masks.heads[l].sum())
        d, kv = p.head_dim, p.kv_width
        per_head = sum(w * lin.in_features + (w if lin.bias is not None else 0)
                       for lin, w in ((p.query, d), (p.key, kv), (p.value, kv)))
        per_head += d * p.attn_out.out_features
        n -= h_removed * per_head
    return n


def param_breakdown(model: MultiTaskModel) -> dict[str, int]:
    """Parameters by part: embeddings / attention / FFN / other encoder (layer norms, pooler) / task heads."""
    att = ffn = 0
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        att += sum(x.numel() for lin in (p.query, p.key, p.value, p.attn_out) for x in lin.parameters())
        ffn += sum(x.numel() for lin in (*p.ffn_inputs, p.ffn_out) for x in lin.parameters())
    emb = sum(x.numel() for x in model.adapter.embeddings(model.base).parameters())
    enc = sum(x.numel() for x in model.encoder.parameters())
    heads = sum(x.numel() for x in model.heads.parameters())
    if model.kind == "hf_classifier":
        base = sum(x.numel() for x in model.base.parameters())
        heads = enc - base
        enc = base
    return {"embeddings": emb, "attention": att, "ffn": ffn, "other": enc - emb - att - ffn, "heads": heads,
            "total": enc + heads}
