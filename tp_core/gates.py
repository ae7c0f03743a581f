"""Per-thread interventions on units (masks, IG gates, recorders) through permanent forward-pre-hooks.

transformers 5.x has no `head_mask` for BERT, so we gate units ourselves: every FFN-output and attention-output
Linear of a model gets one pre-hook at load time. The hook does nothing unless the *current thread's context*
holds a `GateState` (a `contextvars.ContextVar`), so a masked call can never leak into a later dense call or into
another thread (Streamlit runs each browser session in its own thread) evaluating a different mask at the same time.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

# fn(layer, x) -> x' : lets attribution record or replace a unit activation
Intervention = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class GateState:
    """Multipliers per layer. FFN: broadcastable to (B, T, F). Heads: broadcastable to (B, T, H, 1)."""

    ffn: dict[int, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    ffn_fn: Optional[Intervention] = None
    heads_fn: Optional[Intervention] = None  # receives (B, T, H, d)


_STATE: contextvars.ContextVar[Optional[GateState]] = contextvars.ContextVar("taskprune_gates", default=None)


@contextlib.contextmanager
def gated(state: GateState) -> Iterator[GateState]:
    """Apply `state` to every gated model called inside the block, in this thread only."""
    token = _STATE.set(state)
    try:
        yield state
    finally:
        _STATE.reset(token)


def _ffn_hook(layer: int):
    def hook(module, args):
        st = _STATE.get()
        if st is None:
            return None
        x = args[0]
        gate = st.ffn.get(layer)
        if gate is not None:
            x = x * gate.to(x.dtype)
        if st.ffn_fn is not None:
            x = st.ffn_fn(layer, x)
        return (x,) + tuple(args[1:])

    return hook


def _head_hook(layer: int, head_dim: int):
    def hook(module, args):
        st = _STATE.get()
        if st is None:
            return None
        x = args[0]
        gate = st.heads.get(layer)
        if gate is None and st.heads_fn is None:
            return None
        shape = x.shape
        xh = x.reshape(*shape[:-1], shape[-1] // head_dim, head_dim)
        if gate is not None:
            xh = xh * gate.to(x.dtype)
        if st.heads_fn is not None:
            xh = st.heads_fn(layer, xh)
        return (xh.reshape(shape),) + tuple(args[1:])

    return hook


def install_gates(model) -> None:
    """(Re-)register the gate hooks on a `MultiTaskModel`: exactly one per gated Linear, also after slicing."""
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "_taskprune_gate", False):
                del module._forward_pre_hooks[key]
    for layer in range(model.num_layers):
        parts = model.layer_parts(layer)
        for linear, hook in ((parts.ffn_out, _ffn_hook(layer)), (parts.attn_out, _head_hook(layer, parts.head_dim))):
            hook._taskprune_gate = True
            linear.register_forward_pre_hook(hook)
