"""Weight slicing for a plan of kept units (below `model`: it only needs a model's `layer_parts`, `adapter` and
`encoder`, so `model.py` can give a freshly built model the shapes of a saved pruned one, and `pruning.py` can make
a smaller copy, without importing each other).

FFN neuron i removed: row i of `ffn_in` (+ bias; and of `ffn_up`, Llama's up_proj) and column i of `ffn_out`.
Head h removed: its d rows of Q, K and V (+ biases) and its d columns of the attention output projection. Under
grouped-query attention (adapters.py) a head unit is a key/value group: its `head_dim` (= n_rep * d) rows of Q and
columns of the output projection, and its `kv_dim` (= d) rows of K and V.
"""
from __future__ import annotations

import torch
from torch import nn

from .gates import install_gates


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


def unit_rows(keep: list[int], width: int) -> torch.Tensor:
    """Rows [h*width, (h+1)*width) of every kept unit h, in order."""
    return torch.tensor([h * width + j for h in keep for j in range(width)], dtype=torch.long)


def _apply(model, ffn_keep: list[list[int]], heads_keep: list[list[int]]) -> None:
    """Slice every layer in place to the kept units (gate hooks are re-installed on the new Linears)."""
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        f_idx = torch.tensor(ffn_keep[l], dtype=torch.long)
        if len(f_idx) != p.ffn_out.in_features:
            for lin in p.ffn_inputs:
                _set_child(_parent_of(model.encoder, lin), lin, _slice_linear(lin, f_idx, 0))
            _set_child(_parent_of(model.encoder, p.ffn_out), p.ffn_out, _slice_linear(p.ffn_out, f_idx, 1))
        h_keep = heads_keep[l]
        if len(h_keep) != p.num_heads:
            d = p.head_dim
            idx, kv_idx = unit_rows(h_keep, d), unit_rows(h_keep, p.kv_width)
            for lin, rows in ((p.query, idx), (p.key, kv_idx), (p.value, kv_idx)):
                _set_child(_parent_of(model.encoder, lin), lin, _slice_linear(lin, rows, 0))
            _set_child(_parent_of(model.encoder, p.attn_out), p.attn_out, _slice_linear(p.attn_out, idx, 1))
            for attr in model.adapter.head_attrs:
                setattr(p.attention, attr, len(h_keep))
            if hasattr(p.attention, "all_head_size"):
                p.attention.all_head_size = len(h_keep) * d
    install_gates(model)
    model._fingerprint = None


def reshape_to_plan(model, ffn_keep: list[list[int]], heads_keep: list[list[int]]) -> None:
    """Give a freshly built model the shapes of a saved pruned model (before loading its weights)."""
    _apply(model, ffn_keep, heads_keep)
