"""Stage 3 of the pipeline: attribution scores per unit (FFN neuron, attention head) for one task.

Methods
* `ig`         integrated gradients of the target class on the unit's activation (zero baseline). All units of
               one layer are scaled together; other layers stay as they are (what Captum's LayerIntegratedGradients
               does). Heads are scaled through a per-head gate g in [0, 1] multiplied into the head's output.
* `grad_x_act` gradient x activation (Captum's LayerGradientXActivation for FFN; gate gradient at g=1 for heads),
               i.e. IG with one step at alpha = 1.
* `activation` mean |activation| over real tokens (heads: mean L2 norm of the head's output).
* `magnitude`  weight norms, data-free: ||W_in[i]|| * ||W_out[:, i]|| per neuron, ||W_v,h|| * ||W_o,h|| per head.
* `random`     seeded uniform scores.
* `wanda_sp`   Wanda-sp, |W| x input norm per channel of the output projection (structured.py).
* `flap`       FLAP's fluctuation metric: input variance x squared column norm of the output projection
               (structured.py). Neither uses labels, targets or aggregation settings.

Aggregation: token attributions are summed over real tokens (padding excluded) per example, then the absolute
value is taken (`abs_sum`, default) - a unit that pushes the prediction either way matters - or `sum_abs`
(sum of |token attribution|) or `signed`; example scores are averaged over the N examples.

The `ig` fast path gives the same numbers as Captum (see tests) but is faster: one dense pass per batch caches every
block's inputs, FFN activations and attention contexts, so IG for a layer resumes the forward right after the scaled
units (blocks below, and the part of the block before the units, are never recomputed); the IG steps of a batch run as
one expanded batch; batches are length-sorted so padding is minimal; parameters do not record gradients.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch

from .data import TaskData, load_split
from .decoder import prompt_key
from .defaults import IG_QUADRATURE, IG_STEPS, QUADRATURES, SCORING_SAMPLES
from .errors import TPError
from .gates import GateState, gated
from .limits import limits
from .model import MAX_PADDING, MultiTaskModel, with_token_progress
from .paths import atomic_write_text, cache_dir, enforce_cache_cap, touch
from .structured import STRUCTURED, stats_batch, unit_scores

METHODS = ("ig", "grad_x_act", "activation", "magnitude", "random", *STRUCTURED)
DATA_FREE = ("magnitude", "random")
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class AttributionConfig:
    """Settings of one attribution run; all of them key the on-disk cache. The defaults of `samples`, `steps` and
    `riemann` are the measured ones every entry point shares (`tp_core/defaults.py`)."""

    method: str = "ig"
    samples: int = SCORING_SAMPLES  # N examples (low-resource = small N)
    steps: int = IG_STEPS  # integration steps for ig
    labels: str = "gold"  # gold | predicted (unsupervised)
    units: str = "both"  # ffn | heads | both
    target: str = "prob"  # prob | logit : what IG integrates the gradient of
    aggregation: str = "abs_sum"  # abs_sum | sum_abs | signed
    riemann: str = IG_QUADRATURE  # Captum approximation method name (the quadrature of ig's integral)
    seed: int = 0
    batch_size: int = 16
    max_length: int = 128
    internal_batch: int = 512  # expanded rows (examples x IG steps) per forward/backward

    def validate(self) -> AttributionConfig:
        if self.method not in METHODS:
            raise TPError(f"Unknown attribution method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.labels not in ("gold", "predicted"):
            raise TPError(f"--labels must be gold or predicted, got {self.labels!r}.")
        if self.units not in ("ffn", "heads", "both"):
            raise TPError(f"--units must be ffn, heads or both, got {self.units!r}.")
        if self.target not in ("prob", "logit"):
            raise TPError(f"target must be prob or logit, got {self.target!r}.")
        if self.aggregation not in ("abs_sum", "sum_abs", "signed"):
            raise TPError(f"aggregation must be abs_sum, sum_abs or signed, got {self.aggregation!r}.")
        if self.samples < 1:
            raise TPError(f"--samples must be at least 1, got {self.samples}.")
        if self.steps < 1:
            raise TPError(f"--steps must be at least 1, got {self.steps}.")
        if self.riemann not in QUADRATURES:
            raise TPError(f"--quadrature must be one of {', '.join(QUADRATURES)}, got {self.riemann!r}.")
        if self.max_length < 2 or self.batch_size < 1 or self.internal_batch < 1:
            raise TPError("max_length must be at least 2 and batch sizes at least 1.")
        cap = limits()
        cap.check("max_samples", self.samples, "--samples (attribution examples)")
        cap.check("max_steps", self.steps, "--steps (integrated-gradients steps)")
        cap.check("max_length", self.max_length, "max_length (tokens per input)")
        return self


@dataclass
class UnitScores:
    """Importance of every unit of a model for one task. `ffn[l][i]`: neuron i of layer l; `heads[l][h]`: head h."""

    model: str
    task: str
    method: str
    settings: dict
    ffn: list[np.ndarray] | None
    heads: list[np.ndarray] | None
    n_examples: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "task": self.task,
            "method": self.method,
            "settings": self.settings,
            "ffn": None if self.ffn is None else [s.tolist() for s in self.ffn],
            "heads": None if self.heads is None else [s.tolist() for s in self.heads],
            "n_examples": self.n_examples,
            "seconds": self.seconds,
        }

    @staticmethod
    def from_dict(d: dict) -> UnitScores:
        arr = lambda v: None if v is None else [np.asarray(x, dtype=np.float64) for x in v]  # noqa: E731
        return UnitScores(d["model"], d["task"], d["method"], d["settings"], arr(d["ffn"]), arr(d["heads"]),
                          d.get("n_examples", 0), d.get("seconds", 0.0))

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict()))

    def check_shape(self, shape) -> UnitScores:
        """Raise TPError unless the scores cover exactly the units of a model with `shape` (finite values)."""
        for kind, sizes in (("ffn", shape.ffn), ("heads", shape.heads)):
            part = getattr(self, kind)
            if part is None:
                continue
            if [len(a) for a in part] != list(sizes) or not all(np.isfinite(a).all() for a in part):
                raise TPError(f"The {kind} scores for {self.task} do not match this model's units "
                              f"({[len(a) for a in part][:8]} vs {list(sizes)[:8]}) or are not finite.")
        return self

    @staticmethod
    def load(path: str | Path) -> UnitScores:
        try:
            return UnitScores.from_dict(json.loads(Path(path).read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
                AttributeError) as exc:
            raise TPError(f"Cannot read attribution scores from {path}: {exc}") from None


# ----- helpers ---------------------------------------------------------------------------------------------------
def _target(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-example scalar whose gradient IG integrates: target-class probability or logit (regression: output)."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    if kind == "prob":
        logits = torch.softmax(logits, -1)
    return logits.gather(1, y.view(-1, 1)).squeeze(1)


def _rep(x, k: int, b: int):
    """Repeat a captured layer argument k times along the batch, if it is per-example (also inside a tuple, as
    a decoder's rotary (cos, sin))."""
    if isinstance(x, tuple):
        return tuple(_rep(v, k, b) for v in x)
    if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == b and k > 1:
        return x.repeat(k, *([1] * (x.dim() - 1)))
    return x


def _alphas(method: str, steps: int) -> tuple[list[float], list[float]]:
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    return list(step_sizes(steps)), list(alphas(steps))


class _LayerInputs:
    """One dense pass that caches, per block, its inputs (args, kwargs), its FFN input and activation and its
    attention context, so IG can resume the forward right after the units it scales.

    The capture hooks sit on the shared model for the length of one forward, so they record only this thread's call:
    another session evaluating the same model at that moment (the app serves each browser session in its own
    thread) must not overwrite the captured tensors."""

    def __init__(self, model: MultiTaskModel, batch: dict, task: str):
        self.model = model
        self._owner = threading.get_ident()
        self.adapter = model.adapter
        self.layers = model.adapter.layers(model.base)
        n = len(self.layers)
        self.captured: list[tuple[tuple, dict]] = [None] * n  # type: ignore
        self.ffn_input: list[torch.Tensor] = [None] * n  # type: ignore
        self.ffn_act: list[torch.Tensor] = [None] * n  # type: ignore
        self.context: list[torch.Tensor] = [None] * n  # type: ignore
        handles = [blk.register_forward_pre_hook(self._block_hook(i), with_kwargs=True)
                   for i, blk in enumerate(self.layers)]
        for i in range(n):
            p = model.layer_parts(i)
            handles.append(p.ffn_residual.register_forward_pre_hook(self._store(self.ffn_input, i)))
            handles.append(p.ffn_out.register_forward_pre_hook(self._store(self.ffn_act, i)))
            handles.append(p.attn_out.register_forward_pre_hook(self._store(self.context, i)))
        try:
            with torch.no_grad():
                self.logits = model(**batch, task=task)
        finally:
            for h in handles:
                h.remove()
        self.mask = batch["attention_mask"]
        self.b = self.mask.shape[0]

    def _block_hook(self, i):
        def hook(module, args, kwargs):
            if threading.get_ident() != self._owner:
                return
            self.captured[i] = (tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs))

        return hook

    def _store(self, where, i):
        def hook(module, args):
            if threading.get_ident() == self._owner:
                where[i] = args[0].detach()

        return hook

    def run_from(self, layer: int, h: torch.Tensor, k: int, task: str) -> torch.Tensor:
        """Logits of the batch repeated k times, given the hidden state `h` entering block `layer`."""
        for j in range(layer, len(self.layers)):
            a, kw = self.captured[j]
            out = self.layers[j](h, *[_rep(x, k, self.b) for x in a[1:]],
                                 **{n: _rep(v, k, self.b) for n, v in kw.items()})
            h = out[0] if isinstance(out, tuple) else out
        h = self.adapter.final_norm(self.model.base, h)
        return self.model.head_logits(task, h, _rep(self.mask, k, self.b))

    def ffn_scaled(self, layer: int, alpha: torch.Tensor, k: int, task: str):
        """(logits, scaled activation leaf) with layer's FFN activation multiplied by alpha (one per row)."""
        act = _rep(self.ffn_act[layer], k, self.b)
        s = (act * alpha.view(-1, 1, 1).to(act.dtype)).requires_grad_(True)
        h = self.adapter.ffn_tail(self.layers[layer], s, _rep(self.ffn_input[layer], k, self.b))
        return self.run_from(layer + 1, h, k, task), s

    def heads_scaled(self, layer: int, alpha: torch.Tensor, k: int, task: str, head_dim: int):
        """(logits, gate leaf) with each head's output of `layer` multiplied by a gate alpha (one per row)."""
        ctx = _rep(self.context[layer], k, self.b)
        shape = ctx.shape
        n_heads = shape[-1] // head_dim
        gate = alpha.view(-1, 1, 1, 1).to(ctx.dtype).expand(shape[0], 1, n_heads, 1).clone().requires_grad_(True)
        gated_ctx = (ctx.view(*shape[:-1], n_heads, head_dim) * gate).view(shape)
        block_input = _rep(self.captured[layer][0][0], k, self.b)
        h = self.adapter.attn_tail(self.layers[layer], gated_ctx, block_input)
        return self.run_from(layer + 1, h, k, task), gate


def _aggregate_tokens(attr: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, F) token attributions -> (B, F) example scores over real tokens."""
    m = mask.unsqueeze(-1).to(attr.dtype)
    if how == "sum_abs":
        return (attr.abs() * m).sum(1)
    s = (attr * m).sum(1)
    return s if how == "signed" else s.abs()


def _example_agg(x: torch.Tensor, how: str) -> torch.Tensor:
    return x if how == "signed" else x.abs()


# ----- per-batch scorers (each returns per-layer sums over the batch's examples) -----------------------------------
def _ig_batch(model, task, batch, y, cfg: AttributionConfig, want_ffn: bool, want_heads: bool):
    inputs = _LayerInputs(model, batch, task)
    b = inputs.b
    sizes, alphas = _alphas(cfg.riemann, cfg.steps)
    k_max = max(1, cfg.internal_batch // b)
    L = len(inputs.layers)
    ffn_out = [None] * L
    head_out = [None] * L
    for layer in range(L):
        for kind in (["ffn"] if want_ffn else []) + (["heads"] if want_heads else []):
            grad_sum = None
            for c in range(0, len(alphas), k_max):
                k = len(alphas[c : c + k_max])
                w = torch.tensor(sizes[c : c + k_max], device=y.device)
                alpha = torch.tensor(alphas[c : c + k_max], device=y.device).repeat_interleave(b)
                with torch.enable_grad():
                    if kind == "ffn":
                        logits, leaf = inputs.ffn_scaled(layer, alpha, k, task)
                    else:
                        logits, leaf = inputs.heads_scaled(layer, alpha, k, task, model.layer_parts(layer).head_dim)
                    tgt = _target(logits, y.repeat(k), cfg.target).sum()
                g = torch.autograd.grad(tgt, leaf)[0]
                g = (g.view(k, b, *g.shape[1:]) * w.view(k, *([1] * g.dim())).to(g.dtype)).sum(0)
                grad_sum = g if grad_sum is None else grad_sum + g
            if kind == "ffn":  # attribution = (a - 0) * integral of the gradient
                ffn_out[layer] = _aggregate_tokens(inputs.ffn_act[layer] * grad_sum, inputs.mask,
                                                   cfg.aggregation).sum(0)
            else:  # gate baseline 0 -> 1: attribution = (1 - 0) * integral of dF/dg
                head_out[layer] = _example_agg(grad_sum[:, 0, :, 0], cfg.aggregation).sum(0)
    return ffn_out, head_out


def _gxa_batch(model, task, batch, y, cfg, want_ffn, want_heads):
    """Gradient x activation of the FFN neurons and the head gates from one forward and one backward pass: the head
    gates sit at 1 and the FFN activations pass through unchanged, so neither changes the other's gradient."""
    L = model.num_layers
    ffn_out, head_out = [None] * L, [None] * L
    # What Captum's LayerGradientXActivation gives on each layer's FFN activation, but through this thread's gate
    # context instead of forward hooks on the shared model (those would also fire for - and be overwritten by -
    # another session's forward pass running at the same time).
    acts: dict[int, torch.Tensor] = {}

    def ffn_fn(l, x):  # keep x in the graph (later layers depend on it); only a grad-free x becomes a leaf
        acts[l] = x if x.requires_grad else x.detach().requires_grad_(True)
        return acts[l]

    b = y.shape[0]
    gates = {i: torch.ones(b, 1, model.layer_parts(i).num_heads, 1, device=y.device, requires_grad=True)
             for i in range(L)} if want_heads else {}
    with torch.enable_grad(), gated(GateState(ffn_fn=ffn_fn if want_ffn else None, heads=gates)):
        tgt = _target(model(**batch, task=task), y, cfg.target).sum()
    leaves = ([acts[i] for i in range(L)] if want_ffn else []) + [gates[i] for i in range(len(gates))]
    grads = torch.autograd.grad(tgt, leaves)
    if want_ffn:
        for i, g in enumerate(grads[:L]):
            ffn_out[i] = _aggregate_tokens(acts[i].detach() * g, batch["attention_mask"], cfg.aggregation).sum(0)
    for i, g in enumerate(grads[L if want_ffn else 0:]):
        head_out[i] = _example_agg(g[:, 0, :, 0], cfg.aggregation).sum(0)
    return ffn_out, head_out


def _activation_batch(model, task, batch, y, cfg, want_ffn, want_heads):
    L = model.num_layers
    mask = batch["attention_mask"]
    n_tok = mask.sum(1, keepdim=True).clamp(min=1).to(torch.float32)
    ffn_out, head_out = [None] * L, [None] * L

    def ffn_fn(l, x):
        ffn_out[l] = ((x.abs() * mask.unsqueeze(-1)).sum(1) / n_tok).sum(0)
        return x

    def heads_fn(l, xh):
        norms = xh.norm(dim=-1)  # (B, T, H)
        head_out[l] = ((norms * mask.unsqueeze(-1)).sum(1) / n_tok).sum(0)
        return xh

    with torch.no_grad(), gated(GateState(ffn_fn=ffn_fn if want_ffn else None,
                                          heads_fn=heads_fn if want_heads else None)):
        model(**batch, task=task)
    return ffn_out, head_out


def magnitude_scores(model: MultiTaskModel) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Data-free weight-norm scores."""
    ffn, heads = [], []
    with torch.no_grad():
        for i in range(model.num_layers):
            p = model.layer_parts(i)
            w_in = torch.cat([lin.weight for lin in p.ffn_inputs], 1)  # Llama: gate_proj and up_proj rows
            ffn.append((w_in.norm(dim=1) * p.ffn_out.weight.norm(dim=0)).cpu().double().numpy())
            d = p.head_dim
            v = p.value.weight.view(p.num_heads, p.kv_width, -1).flatten(1).norm(dim=1)
            o = p.attn_out.weight.view(-1, p.num_heads, d).transpose(0, 1).flatten(1).norm(dim=1)
            heads.append((v * o).cpu().double().numpy())
    return ffn, heads


# ----- public API ------------------------------------------------------------------------------------------------
def scoring_data(task: str, cfg: AttributionConfig) -> TaskData:
    """The N scoring examples: a seeded sample of the train split (validation for evaluation-only tasks)."""
    from .data import get_task

    spec = get_task(task)
    return load_split(spec, spec.scoring_split, limit=cfg.samples, seed=cfg.seed)


def cache_key(model: MultiTaskModel, task: str, cfg: AttributionConfig, data: TaskData | None) -> str:
    h = hashlib.sha256()
    h.update(model.fingerprint().encode())
    h.update(task.encode())
    h.update(prompt_key(model, task).encode())  # a decoder's task is its prompt ("" for encoders)
    settings = asdict(cfg)
    if cfg.method in DATA_FREE:  # data-free methods do not depend on data settings
        settings = {"method": cfg.method, "seed": cfg.seed if cfg.method == "random" else 0, "units": cfg.units}
    else:
        h.update(repr((data.texts[:3], len(data), data.labels[:50])).encode() if data is not None else b"")
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:24]


def cached_scores_path(model: MultiTaskModel, task: str, cfg: AttributionConfig, data: TaskData | None = None) -> Path:
    if data is None and cfg.method not in DATA_FREE:
        data = scoring_data(task, cfg)
    return cache_dir("scores") / f"{cache_key(model, task, cfg, data)}.json"


def attribute(
    model: MultiTaskModel,
    task: str,
    cfg: AttributionConfig = AttributionConfig(),
    data: TaskData | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> UnitScores:
    """Score every unit of `model` for `task`. Results are cached on disk keyed by model, task, settings and data."""
    cfg.validate()
    model.resolve_task(task)
    progress = progress or (lambda f, m: None)
    if cfg.method not in DATA_FREE and data is None:
        data = scoring_data(task, cfg)
    path = cached_scores_path(model, task, cfg, data)
    if use_cache and path.is_file():
        try:
            cached = UnitScores.load(path)
            cached.check_shape(model.unit_shape())
            touch(path)
            progress(1.0, "loaded cached scores")
            return cached
        except TPError:  # a damaged or foreign entry: recompute and replace it
            path.unlink(missing_ok=True)
    t0 = time.time()
    want_ffn, want_heads = cfg.units in ("ffn", "both"), cfg.units in ("heads", "both")
    if cfg.method == "magnitude":
        ffn, heads = magnitude_scores(model)
        n = 0
    elif cfg.method == "random":
        rng = np.random.default_rng(cfg.seed)
        shape = model.unit_shape()
        ffn = [rng.random(f) for f in shape.ffn]
        heads = [rng.random(h) for h in shape.heads]
        n = 0
    else:
        ffn, heads, n = _data_scores(model, task, cfg, data, want_ffn, want_heads, progress)
    scores = UnitScores(
        model=model.source, task=task, method=cfg.method, settings=asdict(cfg),
        ffn=ffn if want_ffn else None, heads=heads if want_heads else None, n_examples=n,
        seconds=round(time.time() - t0, 3),
    )
    if use_cache:
        scores.save(path)
        enforce_cache_cap(keep=path)
    progress(1.0, f"{cfg.method} done in {scores.seconds:.1f}s")
    return scores


def _data_scores(model, task, cfg, data, want_ffn, want_heads, progress):
    """Scores of a data method: per-batch sums over the examples, averaged (structured criteria: per-channel input
    statistics summed over the batches, then turned into unit scores with the weights)."""
    sums_f, sums_h, n = _batch_sums(model, task, cfg, data, want_ffn, want_heads, progress)
    if cfg.method in STRUCTURED:
        return *unit_scores(cfg.method, model, sums_f if want_ffn else None, sums_h if want_heads else None, n), n
    ffn = [(s / n).numpy() for s in sums_f] if want_ffn else None
    heads = [(s / n).numpy() for s in sums_h] if want_heads else None
    return ffn, heads, n


def _structured_batch(model, task, batch, y, cfg, want_ffn, want_heads):
    return stats_batch(model, task, batch, want_ffn, want_heads)


def _batch_sums(model, task, cfg, data, want_ffn, want_heads, progress):
    L = model.num_layers
    fn = {"ig": _ig_batch, "grad_x_act": _gxa_batch, "activation": _activation_batch,
          **{m: _structured_batch for m in STRUCTURED}}[cfg.method]
    sums_f = [0.0] * L
    sums_h = [0.0] * L
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # gradients are only needed w.r.t. unit activations / gates
    is_reg = model.task_info(task).num_labels == 1
    try:
        batches = list(model.batches(data.texts, data.pairs, cfg.batch_size, cfg.max_length,
                                     max_padding=MAX_PADDING, task=task))
        t0 = time.time()
        for idx, batch, done, fraction in with_token_progress(batches):
            if is_reg or cfg.method in STRUCTURED:  # labels unused
                y = torch.zeros(len(idx), dtype=torch.long, device=model.device)
            elif cfg.labels == "gold":
                y = torch.tensor([int(data.labels[i]) for i in idx], device=model.device)
            else:
                with torch.no_grad():
                    y = model(**batch, task=task).argmax(-1)
            f, h = fn(model, task, batch, y, cfg, want_ffn, want_heads)
            for i in range(L):
                if f[i] is not None:
                    sums_f[i] = sums_f[i] + f[i].double().cpu()
                if h[i] is not None:
                    sums_h[i] = sums_h[i] + h[i].double().cpu()
            el = time.time() - t0
            progress(fraction,
                     f"{cfg.method}: {done}/{len(data)} examples, ~{el / fraction * (1 - fraction):.0f}s left")
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    return sums_f, sums_h, len(data)


def captum_reference_ffn_ig(model: MultiTaskModel, task: str, data: TaskData, layer: int,
                            cfg: AttributionConfig, batches=None) -> np.ndarray:
    """The plain way: Captum's LayerIntegratedGradients on one layer's FFN activation, run directly.

    Used as the reference the fast path is tested and benchmarked against (same examples, steps, Riemann method,
    target and aggregation). LayerIG takes its baseline activation from a forward pass on baseline *inputs*; a 0/1
    flag input multiplied into the activation (flag 0 on the baseline pass) makes that baseline exactly zero.
    `batches` (list of (indices, batch)) lets a caller choose the batching; default: our length-sorted batches."""
    from captum.attr import LayerIntegratedGradients

    parts = model.layer_parts(layer)
    act_module = parts.ffn_act if parts.ffn_act is not None else parts.ffn_out  # no module outputs Llama's act
    on_input = parts.ffn_act is None
    holder = {}

    def scale(x):
        return x * holder["flag"].view(-1, 1, 1).to(x.dtype)

    def fwd(input_ids, flag, attention_mask, token_type_ids):
        holder["flag"] = flag
        logits = model(input_ids, attention_mask, token_type_ids, task=task)
        if logits.shape[-1] > 1 and cfg.target == "prob":
            return torch.softmax(logits, -1)
        return logits

    if on_input:  # registered before Captum's own hook
        handle = act_module.register_forward_pre_hook(lambda module, args: (scale(args[0]), *args[1:]))
    else:
        handle = act_module.register_forward_hook(lambda module, inp, out: scale(out))
    was_training = model.training
    model.eval()
    try:
        lig = LayerIntegratedGradients(fwd, act_module)
        total = 0
        is_reg = model.task_info(task).num_labels == 1
        for idx, batch in batches or model.batches(data.texts, data.pairs, cfg.batch_size, cfg.max_length,
                                                   task=task):
            b = len(idx)
            y = None if is_reg else torch.tensor([int(data.labels[i]) for i in idx], device=model.device)
            attr = lig.attribute(
                inputs=(batch["input_ids"], torch.ones(b, device=model.device)),
                baselines=(batch["input_ids"], torch.zeros(b, device=model.device)),
                target=y,
                additional_forward_args=(batch["attention_mask"], batch.get("token_type_ids")),
                n_steps=cfg.steps,
                method=cfg.riemann,
                attribute_to_layer_input=on_input,
            )
            total = total + _aggregate_tokens(attr.detach(), batch["attention_mask"], cfg.aggregation).sum(0).double()
    finally:
        handle.remove()
        model.train(was_training)
    return (total / len(data)).cpu().numpy()
