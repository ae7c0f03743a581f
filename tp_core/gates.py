"""Per-thread interventions on units (masks, IG gates, recorders) through permanent forward-pre-hooks.

transformers 5.x has no `head_mask` for BERT, so we gate units ourselves: every FFN-output and attention-output
Linear of a model gets one pre-hook at load time. The hook does nothing unless the *current thread's context*
holds a `GateState` (a `contextvars.ContextVar`), so a masked call can never leak into a later dense call or into
another thread (Streamlit runs each browser session in its own thread) evaluating a different mask at the same time.
The same Linears also carry one forward hook that adds a per-thread `OutputCorrection` to their output: that is how a
training-free recovery (recovery.py) re-fits kept columns and biases without touching the shared weights.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator

import torch

# fn(layer, x) -> x' : lets attribution record or replace a unit activation
Intervention = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class GateState:
    """Multipliers per layer. FFN: broadcastable to (B, T, F). Heads: broadcastable to (B, T, H, 1)."""

    ffn: dict[int, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    ffn_fn: Intervention | None = None
    heads_fn: Intervention | None = None  # receives (B, T, H, d)
    # Additive corrections of the projection's *output* (training-free recovery, see recovery.py), per layer:
    ffn_out: dict[int, OutputCorrection] = field(default_factory=dict)
    heads_out: dict[int, OutputCorrection] = field(default_factory=dict)
    # ... and of a task head's first projection (recovery's head re-fit), by head name
    head_out: dict[str, OutputCorrection] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputCorrection:
    """`delta(x) = x[..., index] @ weight.T + bias`, added to a projection's output; `x` is its (gated) input.

    With `index` = the kept input features, `weight` = W'[:, kept] - W[:, kept] and `bias` = b' - b, the gated
    projection computes exactly what a projection with the re-fitted kept columns W' and bias b' would."""

    index: torch.Tensor | None = None  # long (k,): input features read; None = all of them
    weight: torch.Tensor | None = None  # (out, k)
    bias: torch.Tensor | None = None  # (out,)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        delta = None
        if self.weight is not None:
            xs = x if self.index is None else x.index_select(-1, self.index)
            delta = xs @ self.weight.to(x.dtype).T
        if self.bias is not None:
            b = self.bias.to(x.dtype)
            delta = b if delta is None else delta + b
        return delta


_STATE: contextvars.ContextVar[GateState | None] = contextvars.ContextVar("taskprune_gates", default=None)


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


def _out_hook(layer: int, kind: str):
    def hook(module, args, output):
        st = _STATE.get()
        if st is None:
            return None
        corr = (st.ffn_out if kind == "ffn" else st.heads_out).get(layer)
        if corr is None:
            return None
        return output + corr(args[0])  # args[0]: the input after the pre-hooks (gated)

    return hook


def _task_head_hook(name: str):
    def hook(module, args, output):
        st = _STATE.get()
        corr = None if st is None else st.head_out.get(name)
        return None if corr is None else output + corr(args[0])

    return hook


def install_gates(model) -> None:
    """(Re-)register the gate hooks on a `MultiTaskModel`: exactly one pre-hook (gates) and one forward hook
    (output corrections) per gated Linear, and one forward hook (head re-fit) per task head's first projection,
    also after slicing."""
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "_taskprune_gate", False):
                del module._forward_pre_hooks[key]
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "_taskprune_gate", False):
                del module._forward_hooks[key]
    for layer in range(model.num_layers):
        parts = model.layer_parts(layer)
        for linear, hook, kind in ((parts.ffn_out, _ffn_hook(layer), "ffn"),
                                   (parts.attn_out, _head_hook(layer, parts.head_dim), "heads")):
            hook._taskprune_gate = True
            linear.register_forward_pre_hook(hook)
            out = _out_hook(layer, kind)
            out._taskprune_gate = True
            linear.register_forward_hook(out)
    for name in model.tasks:
        proj = model.head_projection(name)
        if proj is not None:
            hook = _task_head_hook(name)
            hook._taskprune_gate = True
            proj.register_forward_hook(hook)
