"""The passes over the model's blocks that recovery (recovery.py) fits on: the block arguments of the calibration
batches, temporary hooks that record the ungated inputs of a block's projections, and the dense model's pass (the
teacher), cached for one calibration set so that several levels or masks on the same texts share it.

Hooks record only in the thread that installed them: the model may be shared by other threads meanwhile.

A decoder's calibration prompts all start with the same demonstrations. Run whole, they would cost every prompt its
demonstrations in every pass and hold them once per prompt at every layer (SmolLM2's ag_news prompts are ~450 tokens, of
which ~50 are the example's own). So the passes run the shared first tokens once, as one more batch in front (the
*prefix batch*: its keys and values are what every other batch's tokens attend to, through `PrefixKV`), and the fits
count its tokens once per prompt that shares them (`weights`): the normal equations are the whole prompts' (float
rounding; a test holds the corrections equal).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .data import TaskData
from .decoder import MIN_SHARED_PREFIX, _cache_argument, prompt_key, shared_prefix
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
    weights: list = field(default_factory=list)  # [batch] prompts whose tokens a row stands for (prefix batch: all)


_TEACHERS: dict = {}  # one cached teacher pass (model, data, lengths) -> Teacher: levels and masks share it
_TEACHERS_LOCK = threading.Lock()


def _data_key(data: TaskData) -> int:
    return hash((tuple(data.texts), tuple(data.pairs) if data.pairs is not None else None))


class PrefixKV:
    """The key/value cache a decoder's blocks get in the recovery passes: the prefix batch's block stores its keys and
    values (per layer and thread, overwritten on every pass: teacher and student differ); every other batch's tokens
    attend to them before their own. Nothing accumulates, so a block may run on a batch several times. Blocks must
    run on the prefix batch before the others, layer by layer: the passes go through the batches in order."""

    def __init__(self, store: dict, writes: bool):
        self.store, self.writes = store, writes

    def update(self, key, value, layer_idx, *args, **kwargs):
        slot = (threading.get_ident(), layer_idx)
        if self.writes:
            self.store[slot] = (key, value)
            return key, value
        k, v = self.store[slot]
        n = key.shape[0]
        return torch.cat([k.expand(n, -1, -1, -1), key], 2), torch.cat([v.expand(n, -1, -1, -1), value], 2)


def _grab_layer0(model, forward, **inputs) -> tuple:
    """Block 0's (args, kwargs) of `forward(**inputs)` (stopped there), recorded in this thread only."""
    layers = model.adapter.layers(model.base)
    owner = threading.get_ident()

    def grab(module, args, kwargs):
        if threading.get_ident() == owner:
            grab.got = (args, kwargs)
            raise _Stop

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with gated(GateState()):
            forward(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return grab.got


def _common_prefix(model, batches) -> int:
    """First tokens every calibration prompt of a decoder shares (0 for other models or below MIN_SHARED_PREFIX)."""
    if getattr(model, "kind", None) != "causal_lm" or not batches:
        return 0
    width = max(b["input_ids"].shape[1] for b in batches)  # every prompt in one right-padded batch

    def padded(key: str) -> torch.Tensor:
        return torch.cat([F.pad(b[key], (0, width - b[key].shape[1])) for b in batches])

    P = shared_prefix(padded("input_ids"), padded("attention_mask"))
    return P if P >= MIN_SHARED_PREFIX else 0


def block_args(model, task: str, data: TaskData, cfg, share_prefix: bool = True):
    """Per batch: block 0's input (embeddings), the remaining block arguments, the real-token mask and the number of
    prompts a row stands for. `cfg` (a RecoveryConfig) gives the batch size and the maximum length. With
    `share_prefix`, a decoder's shared first tokens come first as the prefix batch (module doc); K-prune, which
    back-propagates through each batch on its own, passes False."""
    batches = [b for _, b in model.batches(data.texts, data.pairs, cfg.batch_size, cfg.max_length, task=task)]
    P = _common_prefix(model, batches) if share_prefix else 0
    if P:
        return _prefix_block_args(model, batches, P)
    out = []
    for batch in batches:
        args, kwargs = _grab_layer0(model, model, **batch, task=task)
        out.append((args[0], (tuple(args[1:]), dict(kwargs)), batch["attention_mask"].bool(), 1))
    return out


def _prefix_block_args(model, batches, P: int):
    """`block_args` of a decoder whose prompts share their first P tokens: the prefix batch, then every batch's own
    tokens at positions P.. attending to it (their masks and rotary positions as the model builds them with a cache
    of P tokens)."""
    name = _cache_argument(model.base)
    store: dict = {}
    head = batches[0]["input_ids"][:1, :P]
    args, kwargs = _grab_layer0(model, model.base, input_ids=head, attention_mask=torch.ones_like(head))
    kwargs = dict(kwargs, **{name: PrefixKV(store, writes=True)})
    n_prompts = sum(int(b["input_ids"].shape[0]) for b in batches)
    out = [(args[0], (tuple(args[1:]), kwargs), torch.ones_like(head, dtype=torch.bool), n_prompts)]
    with torch.no_grad(), gated(GateState()):
        past = getattr(model.base(input_ids=head, attention_mask=torch.ones_like(head), use_cache=True), name)
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        positions = torch.arange(P, ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
        args, kwargs = _grab_layer0(model, model.base, input_ids=ids[:, P:], attention_mask=mask,
                                    position_ids=positions, use_cache=True, **{name: past})
        kwargs = dict(kwargs, **{name: PrefixKV(store, writes=False)})
        out.append((args[0], (tuple(args[1:]), kwargs), mask[:, P:].bool(), 1))
    return out


def run_block(model, l: int, h: torch.Tensor, rest, state: GateState, stop_at: str | None = None) -> Capture:
    """Run block `l` on `h` under the gates of `state`, recording its projections' inputs (see `Capture`); the
    block's output is `cap.out` (unset when `stop_at` ended the forward early)."""
    block = model.adapter.layers(model.base)[l]
    with Capture(model.layer_parts(l), stop_at) as cap, gated(state):
        out = block(h, *rest[0], **rest[1])
        cap.out = out[0] if isinstance(out, tuple) else out
    return cap


def dense_teacher(model, task: str, data: TaskData, cfg, share_prefix: bool = True) -> Teacher:
    """The dense model's pass over `data` (batched as `cfg` says), from the cache when it holds this one. A decoder's
    inputs are the task's prompts: its key includes the prompt (an encoder's inputs do not depend on the task).
    `share_prefix`: as for `block_args`."""
    key = (id(model), model.fingerprint(), prompt_key(model, task), _data_key(data), cfg.batch_size, cfg.max_length,
           share_prefix)
    with _TEACHERS_LOCK:
        if key in _TEACHERS:
            return _TEACHERS[key]
    batches = block_args(model, task, data, cfg, share_prefix)
    L = model.num_layers
    h = [b[0] for b in batches]
    t = Teacher([b[1] for b in batches], [b[2] for b in batches], [], [], [], weights=[b[3] for b in batches])
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

