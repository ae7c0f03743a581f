"""The passes over the model's blocks that recovery (recovery.py) fits on: the block arguments of the calibration
batches, temporary hooks that record the ungated inputs of a block's projections, and the dense model's pass (the
teacher), cached for one calibration set so that several levels or masks on the same texts share it.

Hooks record only in the thread that installed them: the model may be shared by other threads meanwhile.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .data import TaskData
from .gates import GateState, gated


class _Stop(Exception):
    """Raised by a capture hook to end a block's forward once what we need is recorded."""


class Capture:
    """Temporary hooks on one block recording (this thread only) the *ungated* inputs of the projections: "ctx" of
    the attention output projection, "h" of the FFN input projection, "a" of the FFN output projection. With
    `stop_at`, the block's forward ends once that input is recorded."""

    def __init__(self, parts, stop_at: str | None = None):
        self.parts, self.stop_at, self.owner = parts, stop_at, threading.get_ident()
        self.got: dict[str, torch.Tensor] = {}
        self.handles = []

    def _hook(self, name):
        def hook(module, args):
            if threading.get_ident() != self.owner:
                return None
            self.got[name] = args[0].detach()
            if name == self.stop_at:
                raise _Stop
            return None

        return hook

    def __enter__(self):
        p = self.parts
        for name, lin in (("ctx", p.attn_out), ("h", p.ffn_residual), ("a", p.ffn_out)):
            self.handles.append(lin.register_forward_pre_hook(self._hook(name), prepend=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return exc[0] is _Stop  # swallow our own stop signal


@dataclass
class Teacher:
    """What the dense model gives on the calibration batches: per batch the block arguments after the hidden state
    (attention mask) and the real-token mask; per layer and batch the block input (padded) and, on real tokens, what
    the attention and FFN output projections feed their LayerNorm (projection output + residual)."""

    rest: list
    tok: list
    inputs: list  # [layer][batch] (B, T, hidden)
    t_attn: list  # [layer][batch] (n real tokens, hidden)
    t_ffn: list
    final: list = field(default_factory=list)  # [batch] the last block's output (B, T, hidden)


_TEACHERS: dict = {}  # one cached teacher pass (model, data, lengths) -> Teacher: levels and masks share it
_TEACHERS_LOCK = threading.Lock()


def _data_key(data: TaskData) -> int:
    return hash((tuple(data.texts), tuple(data.pairs) if data.pairs is not None else None))


def block_args(model, task: str, data: TaskData, cfg):
    """Per batch: block 0's input (embeddings), the remaining block arguments and the real-token mask.
    `cfg` (a RecoveryConfig) gives the batch size and the maximum length."""
    layers = model.adapter.layers(model.base)
    owner = threading.get_ident()
    out = []

    def grab(module, args, kwargs):
        if threading.get_ident() == owner:
            grab.got = (args, kwargs)
            raise _Stop

    for _, batch in model.batches(data.texts, data.pairs, cfg.batch_size, cfg.max_length, task=task):
        handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with gated(GateState()):
                model(**batch, task=task)
        except _Stop:
            pass
        finally:
            handle.remove()
        args, kwargs = grab.got
        out.append((args[0], (tuple(args[1:]), dict(kwargs)), batch["attention_mask"].bool()))
    return out


def run_block(model, l: int, h: torch.Tensor, rest, state: GateState, stop_at: str | None = None) -> Capture:
    """Run block `l` on `h` under the gates of `state`, recording its projections' inputs (see `Capture`); the
    block's output is `cap.out` (unset when `stop_at` ended the forward early)."""
    block = model.adapter.layers(model.base)[l]
    with Capture(model.layer_parts(l), stop_at) as cap, gated(state):
        out = block(h, *rest[0], **rest[1])
        cap.out = out[0] if isinstance(out, tuple) else out
    return cap


def dense_teacher(model, task: str, data: TaskData, cfg) -> Teacher:
    """The dense model's pass over `data` (batched as `cfg` says), from the cache when it holds this one."""
    key = (id(model), model.fingerprint(), _data_key(data), cfg.batch_size, cfg.max_length)
    with _TEACHERS_LOCK:
        if key in _TEACHERS:
            return _TEACHERS[key]
    batches = block_args(model, task, data, cfg)
    L = model.num_layers
    h = [b[0] for b in batches]
    t = Teacher([b[1] for b in batches], [b[2] for b in batches], [], [], [])
    for l in range(L):
        p = model.layer_parts(l)
        t.inputs.append(list(h))
        t.t_attn.append([])
        t.t_ffn.append([])
        for b in range(len(h)):
            cap = run_block(model, l, h[b], t.rest[b], GateState())
            m = t.tok[b]
            t.t_attn[l].append((F.linear(cap.got["ctx"], p.attn_out.weight, p.attn_out.bias) + h[b])[m])
            t.t_ffn[l].append((F.linear(cap.got["a"], p.ffn_out.weight, p.ffn_out.bias) + cap.got["h"])[m])
            h[b] = cap.out
    t.final = h
    with _TEACHERS_LOCK:
        _TEACHERS.clear()  # keep one: it holds every layer's activations for the calibration set
        _TEACHERS[key] = t
    return t

