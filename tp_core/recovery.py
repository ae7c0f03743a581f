"""Training-free recovery after pruning: make the pruned model's layers give what the dense model's gave.

Three levels, for FFN neurons and attention heads alike, for masks from any criterion, fitted on a few hundred
*unlabeled* task examples with the dense model as teacher (METHOD.md, "Recovery after pruning"):

* ``bias``  - FLAP-style bias compensation (An et al. 2024): ``b' = b + W[:, removed] @ mean(a_removed)`` on the FFN
  output projection and the attention output projection (mean over the calibration tokens of the pruned model).
* ``scale`` - per-unit scale tuning (the mask tuning of Kwon et al. 2022): one multiplier per kept unit, by damped
  least squares (pulled toward 1), with a guard: when a scale leaves ``scale_bounds`` the damping grows tenfold (up
  to 10^4 times), and if that does not help the projection keeps plain 0/1 gates (recorded as a fallback).
* ``lstsq`` - ridge least-squares re-fit of the kept columns and the bias of the output projection
  (``[W2[:, kept] | b2]``, ``[Wo[:, kept head columns] | bo]``), pulled toward the original weights.

``scale`` and ``lstsq`` go layer by layer from the bottom, attention then FFN, with the pruned model's own inputs
(already corrected below): the target of a projection is what the dense model feeds the LayerNorm after it
(projection output + residual), minus the pruned model's own residual. Only real tokens count (no padding).
Normal equations are accumulated and solved in float64 (per-batch products in float32). The dense model's pass
over the calibration set is cached (one entry), so several levels or masks on the same texts share it.

A `Recovery` never changes the model's weights: it becomes part of the per-thread `GateState` (non-binary gate
values for scales, additive output corrections for biases and re-fitted columns; see gates.py), so many masks and
recoveries can be evaluated on one shared model at once. `prune_physically(..., recovery=)` folds it into the sliced
weights, and mask files carry it (`save_mask_file(..., recovery=)`, `load_plan`).
"""
from __future__ import annotations

import base64
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data import TaskData
from .errors import TPError
from .gates import GateState, OutputCorrection, gated

LEVELS = ("none", "bias", "scale", "lstsq")
# Unlabeled calibration texts per task. 1,024 rather than "a few hundred": on the full demo, sst2 (all 872 validation
# examples), ig masks (32 examples, 12 steps) at 90% FFN + 50% heads, lstsq kept 0.947 of dense with 256 texts and
# 0.983 with 1,024 (fit 4 s vs 10 s, 2 threads); at 85% + 50%, 0.981 vs 0.987; 2,048 added nothing at 90-95% FFN.
# One seed, no interval (`benchmarks/calibration_size.py`, 2026-11-30); `bench_recovery.py --recover-samples N`
# measures it with intervals.
DEFAULT_SAMPLES = 1024
# The head re-fit solves in_features + 1 unknowns per output from one pooled vector per text: it runs only with at
# least this many texts per unknown (MiniLM: 770 of the default 1,024), never on an underdetermined system.
HEAD_MIN_SAMPLES = 2
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class RecoveryConfig:
    """How to recover. `samples` calibration texts are drawn (seeded) from the task's train split."""

    level: str = "lstsq"
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    ridge: float = 1e-2  # lstsq: lambda = ridge * mean diagonal of A1'A1, pulling toward the original weights
    damping: float = 1e-2  # scale: lambda = damping * mean diagonal of the Gram matrix, pulling toward scale 1
    scale_bounds: tuple[float, float] = (0.0, 10.0)  # a scale outside this range triggers more damping / fallback
    fit_all: bool = False  # also fit projections below the first removed unit (where pruned == dense)
    # lstsq: also re-fit the task head's first projection on the pooled sequence (_fit_head). Full demo, ig masks
    # (the app's settings), 1,024 texts, one seed, no interval (benchmarks/head_refit_check.py, 2026-11-30): sst2
    # (872 examples) kept vs dense +0.53/+0.14/+0.80/+0.53 points at FFN + heads 85+70/80+50/90+50/70+70%; ag_news
    # (1,000) -0.11/-0.23/+0.11/0.00. benchmarks/export_levers.py --variants 1 (sst2, 7 plans at 0.29-0.34 of the
    # parameters, task vocabulary): +0.50 [-0.82, +1.86] points on the selection half, +0.60 [-0.60, +1.75] on the
    # reported half - the same direction everywhere, not significant; kept on (one more small solve per recovery).
    head: bool = True
    batch_size: int = 32
    max_length: int = 128

    def validate(self) -> "RecoveryConfig":
        if self.level not in LEVELS:
            raise TPError(f"Recovery level must be one of {', '.join(LEVELS)}, got {self.level!r}.")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise TPError(f"The number of recovery samples must be a positive integer, got {self.samples!r}.")
        for name, v in (("ridge", self.ridge), ("damping", self.damping)):
            if not (v >= 0) or v != v:
                raise TPError(f"Recovery {name} must be >= 0, got {v}.")
        lo, hi = self.scale_bounds
        if not lo < hi:
            raise TPError(f"Recovery scale bounds must be (low, high) with low < high, got {self.scale_bounds}.")
        return self


def as_config(level: "str | RecoveryConfig | None", samples: int | None = None) -> RecoveryConfig:
    """A validated RecoveryConfig from a level name (or a config), optionally with another sample count."""
    cfg = level if isinstance(level, RecoveryConfig) else RecoveryConfig(level=level or "none")
    if samples is not None:
        from dataclasses import replace

        cfg = replace(cfg, samples=samples)
    return cfg.validate()


def active_config(level: "str | RecoveryConfig | None") -> "RecoveryConfig | None":
    """A validated RecoveryConfig for `level` (a name or a config), or None for no recovery (None or "none")."""
    if level is None:
        return None
    cfg = as_config(level)
    return None if cfg.level == "none" else cfg


@dataclass
class Correction:
    """One projection's recovery. `kind` "ffn" = FFN output projection, "heads" = attention output projection.

    The recovered projection computes ``(W[:, kept] + weight) @ (scale * x[kept]) + b + bias`` (each part optional;
    `scale` is per kept unit, `weight` covers the kept input columns, a head being `head_dim` columns)."""

    kind: str
    layer: int
    kept: list[int]
    scale: Optional[np.ndarray] = None  # (len(kept),)
    weight: Optional[np.ndarray] = None  # (out, kept columns)
    bias: Optional[np.ndarray] = None  # (out,)
    info: dict = field(default_factory=dict)  # lambda, relative errors before/after, fallback


@dataclass
class Recovery:
    """Per-layer corrections for one task's masks; apply with `masks.gates(recovery=...)` or `gate_state`."""

    level: str
    task: str
    config: RecoveryConfig
    corrections: list[Correction]
    n_examples: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ----- applying --------------------------------------------------------------------------------------------
    def check(self, masks) -> None:
        """Raise TPError unless these corrections were fitted for `masks` (same kept units)."""
        for c in self.corrections:
            if c.kind == "head":
                continue
            ms = masks.ffn if c.kind == "ffn" else masks.heads
            if c.layer >= len(ms) or np.flatnonzero(ms[c.layer]).tolist() != list(c.kept):
                raise TPError(f"This recovery was fitted for other masks (layer {c.layer} {c.kind} units differ); "
                              "recompute it for these masks.")

    def apply(self, state: GateState, masks, device: torch.device | str = "cpu") -> GateState:
        """Add the corrections to `state` (which carries the 0/1 gates of `masks`); returns `state`."""
        key = str(device)
        self.check(masks)
        if key not in self._cache:
            built = []
            for c in self.corrections:
                if c.kind == "head":
                    built.append((c.kind, c.info.get("head", self.task), None, OutputCorrection(
                        None, torch.as_tensor(c.weight, dtype=torch.float32).to(device),
                        torch.as_tensor(c.bias, dtype=torch.float32).to(device))))
                    continue
                n = len(masks.ffn[c.layer]) if c.kind == "ffn" else len(masks.heads[c.layer])
                gate = None
                if c.scale is not None:
                    g = torch.zeros(n, dtype=torch.float32)
                    g[torch.as_tensor(c.kept, dtype=torch.long)] = torch.as_tensor(c.scale, dtype=torch.float32)
                    gate = (g if c.kind == "ffn" else g.view(n, 1)).to(device)
                out = None
                if c.weight is not None or c.bias is not None:
                    index = weight = bias = None
                    if c.weight is not None:
                        cols = _columns(c.kept, c.weight.shape[1] // max(len(c.kept), 1))
                        index = torch.as_tensor(cols, dtype=torch.long, device=device)
                        weight = torch.as_tensor(c.weight, dtype=torch.float32).to(device)
                    if c.bias is not None:
                        bias = torch.as_tensor(c.bias, dtype=torch.float32).to(device)
                    out = OutputCorrection(index, weight, bias)
                built.append((c.kind, c.layer, gate, out))
            self._cache[key] = built
        for kind, where, gate, out in self._cache[key]:  # where: the layer, or the head's name
            if kind == "head":
                state.head_out[where] = out
                continue
            if gate is not None:
                (state.ffn if kind == "ffn" else state.heads)[where] = gate
            if out is not None:
                (state.ffn_out if kind == "ffn" else state.heads_out)[where] = out
        return state

    def gate_state(self, masks, device: torch.device | str = "cpu") -> GateState:
        """The GateState of `masks` with this recovery applied (for `predict_logits`, `evaluate`)."""
        return self.apply(masks.gates(device), masks, device)

    # ----- summary and persistence -----------------------------------------------------------------------------
    def summary(self) -> dict:
        fallbacks = [f"{c.kind}{c.layer}" for c in self.corrections if c.info.get("fallback")]
        return {"level": self.level, "samples": self.n_examples, "tokens": self.n_tokens,
                "seconds": round(self.seconds, 3), "corrected": len(self.corrections), "fallbacks": fallbacks}

    def to_doc(self) -> dict:
        def enc(a):
            if a is None:
                return None
            a = np.ascontiguousarray(a, dtype=np.float32)
            return {"shape": list(a.shape), "f32": base64.b64encode(a.tobytes()).decode()}

        return {"level": self.level, "task": self.task, "config": asdict(self.config), "n_examples": self.n_examples,
                "n_tokens": self.n_tokens, "seconds": self.seconds,
                "corrections": [{"kind": c.kind, "layer": c.layer, "kept": list(map(int, c.kept)),
                                 "scale": enc(c.scale), "weight": enc(c.weight), "bias": enc(c.bias),
                                 "info": c.info} for c in self.corrections]}

    @staticmethod
    def from_doc(doc: dict) -> "Recovery":
        def dec(d):
            if d is None:
                return None
            return np.frombuffer(base64.b64decode(d["f32"]), dtype=np.float32).reshape(d["shape"]).copy()

        try:
            cfg = dict(doc["config"])
            cfg["scale_bounds"] = tuple(cfg.get("scale_bounds", (0.0, 10.0)))
            cfg.setdefault("head", False)  # saved before the head re-fit existed
            corrections = [Correction(c["kind"], int(c["layer"]), [int(k) for k in c["kept"]], dec(c["scale"]),
                                      dec(c["weight"]), dec(c["bias"]), dict(c.get("info") or {}))
                           for c in doc["corrections"]]
            return Recovery(doc["level"], doc["task"], RecoveryConfig(**cfg), corrections, int(doc["n_examples"]),
                            int(doc["n_tokens"]), float(doc["seconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TPError(f"The recovery in this mask file cannot be read: {exc}") from None


def _columns(kept, d: int) -> list[int]:
    """Input columns of the kept units (a head = d columns, an FFN neuron = 1)."""
    return [k * d + j for k in kept for j in range(d)]


def recovery_from_doc(doc: dict) -> Optional[Recovery]:
    """The Recovery stored in a mask-file document, or None."""
    return Recovery.from_doc(doc["recovery"]) if doc.get("recovery") else None


def load_plan(path, model=None):
    """(masks, recovery or None, document) of a mask file."""
    from .masks import load_mask_file

    masks, doc = load_mask_file(path, model)
    rec = recovery_from_doc(doc)
    if rec is not None:
        rec.check(masks)
    return masks, rec, doc


def calibration_data(task: str, n: int, seed: int = 0) -> TaskData:
    """`n` unlabeled calibration texts, a seeded sample of the task's train split (never its validation split)."""
    from .data import get_task, load_split

    spec = get_task(task)
    if "train" not in spec.splits:
        raise TPError(f"Task {task!r} has no train split to draw recovery calibration texts from (it has "
                      f"{', '.join(spec.splits)}); recovery never calibrates on validation examples.")
    return load_split(spec, "train", limit=n, seed=seed)


# ----- fitting -----------------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a capture hook to end a block's forward once what we need is recorded."""


class _Capture:
    """Temporary hooks on one block recording (this thread only) the *ungated* inputs of the projections."""

    def __init__(self, parts, stop_at: Optional[str] = None):
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


class _Normal:
    """What every level needs about one projection on the calibration tokens (float64 sums of per-batch float32
    products): the normal equations of [x_kept | 1] against the target, and the removed units' activation sums."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], kept: list[int], d: int, need_ls: bool):
        self.W = weight.detach().double()  # (out, in)
        self.has_bias = bias is not None  # Llama-layout projections have none: no bias column, none fitted
        self.b = bias.detach().double() if bias is not None else torch.zeros(self.W.shape[0], dtype=torch.float64)
        self.kept, self.d = list(kept), d
        n_units = self.W.shape[1] // d
        keep = set(self.kept)
        self.removed = [u for u in range(n_units) if u not in keep]
        self.kcols = torch.as_tensor(_columns(self.kept, d), dtype=torch.long)
        self.pcols = torch.as_tensor(_columns(self.removed, d), dtype=torch.long)
        k = len(self.kcols) + self.has_bias
        self.need_ls = need_ls
        self.sum_removed = torch.zeros(len(self.pcols), dtype=torch.float64)
        self.n = 0
        if need_ls:
            self.C = torch.zeros(k, k, dtype=torch.float64)
            self.D = torch.zeros(k, self.W.shape[0], dtype=torch.float64)
            self.bb = 0.0

    def add(self, x: torch.Tensor, target: Optional[torch.Tensor]) -> None:
        """x: (N, in) ungated projection inputs on real tokens; target: (N, out) wanted projection outputs."""
        x = x.detach().float().cpu()
        self.n += x.shape[0]
        if len(self.pcols):
            self.sum_removed += x.index_select(1, self.pcols).double().sum(0)
        if self.need_ls:  # products of one batch in float32, sums over batches in float64
            a = torch.cat([x.index_select(1, self.kcols)] + [torch.ones(x.shape[0], 1)] * self.has_bias, 1)
            t = target.detach().float().cpu()
            self.C += (a.T @ a).double()
            self.D += (a.T @ t).double()
            self.bb += float((t.double() ** 2).sum())

    # relative squared error of [Wk | b] = X^T on the accumulated system: (X'CX - 2X'D + ||T||^2) / ||T||^2
    def rel_error(self, X: torch.Tensor) -> float:
        err = float((X * (self.C @ X)).sum() - 2 * (X * self.D).sum()) + self.bb
        return max(err, 0.0) / self.bb if self.bb > 0 else 0.0

    def x0(self) -> torch.Tensor:
        return torch.cat([self.W.index_select(1, self.kcols).T] + [self.b.view(1, -1)] * self.has_bias, 0)

    def solve_bias(self) -> np.ndarray:
        mean = self.sum_removed / max(self.n, 1)
        return (self.W.index_select(1, self.pcols) @ mean).float().numpy()

    def solve_lstsq(self, ridge: float) -> tuple[np.ndarray, np.ndarray, dict]:
        k = len(self.kcols)
        lam = ridge * float(self.C.diagonal().mean())
        X0 = self.x0()
        X = ridge_solve(self.C, self.D, X0, lam)
        info = {"lambda": lam, "err_before": self.rel_error(X0)}
        if not torch.isfinite(X).all():
            info.update(fallback=True, err_after=info["err_before"])
            no_db = np.zeros(self.W.shape[0], np.float32) if self.has_bias else None
            return np.zeros((self.W.shape[0], k), np.float32), no_db, info
        info["err_after"] = self.rel_error(X)
        dW = (X[:k].T - X0[:k].T).float().numpy()
        db = (X[k] - X0[k]).float().numpy() if self.has_bias else None
        return dW, db, info

    def unit_system(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gram matrix G and right side r of min_s ||sum_u s_u W_u x_u + b - T||^2 (units of d columns)."""
        k = len(self.kcols)
        Wk = self.W.index_select(1, self.kcols)  # (out, k)
        M = self.C[:k, :k] * (Wk.T @ Wk)
        r_col = (self.D[:k] * Wk.T).sum(1)
        if self.has_bias:
            r_col = r_col - self.C[:k, k] * (Wk.T @ self.b)
        u = k // self.d
        G = M.view(u, self.d, u, self.d).sum((1, 3))
        r = r_col.view(u, self.d).sum(1)
        return G, r

    def solve_scale(self, damping: float, bounds: tuple[float, float]) -> tuple[np.ndarray, dict]:
        G, r = self.unit_system()
        u = G.shape[0]
        base = float(G.diagonal().mean())
        ones = torch.ones(u, dtype=torch.float64)
        X0 = self.x0()
        info = {"err_before": self.rel_error(X0)}
        for mult in (1.0, 10.0, 100.0, 1e3, 1e4):  # more damping pulls the scales toward 1
            lam = (damping or 1e-6) * mult * base
            s = ridge_solve(G, r.view(-1, 1), ones.view(-1, 1), lam).view(-1)
            if torch.isfinite(s).all() and float(s.min()) >= bounds[0] and float(s.max()) <= bounds[1]:
                Xs = X0.clone()
                Xs[: len(self.kcols)] *= s.repeat_interleave(self.d).view(-1, 1)
                info.update({"lambda": lam, "damping_mult": mult, "err_after": self.rel_error(Xs), "fallback": False,
                             "scale_min": float(s.min()), "scale_max": float(s.max())})
                return s.float().numpy(), info
        info.update({"lambda": None, "err_after": info["err_before"], "fallback": True})
        return np.ones(u, np.float32), info


def ridge_solve(AtA: torch.Tensor, AtB: torch.Tensor, X0: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_X ||A X - B||^2 + lam ||X - X0||^2 from the normal equations: (A'A + lam I) X = A'B + lam X0.
    Equal to `torch.linalg.lstsq([A; sqrt(lam) I], [B; sqrt(lam) X0])`."""
    n = AtA.shape[0]
    lhs = AtA + lam * torch.eye(n, dtype=AtA.dtype)
    rhs = AtB + lam * X0
    try:
        L, info = torch.linalg.cholesky_ex(lhs)
        if int(info) == 0:
            return torch.cholesky_solve(rhs, L)
    except RuntimeError:
        pass
    return torch.linalg.lstsq(lhs, rhs).solution


def _first_pruned(masks) -> int:
    """Index (2*layer for attention, 2*layer+1 for FFN) of the first projection with removed units."""
    for l in range(len(masks.ffn)):
        if not masks.heads[l].all():
            return 2 * l
        if not masks.ffn[l].all():
            return 2 * l + 1
    return 2 * len(masks.ffn)


@torch.no_grad()
def recover(model, task: str, masks, data: TaskData | None = None, level: "str | RecoveryConfig" = "lstsq",
            progress: Progress | None = None) -> Recovery:
    """Fit the recovery of `level` for `masks` on `data` (default: `samples` texts of the task's train split).

    Labels are never used. The model's weights are not changed (it may be shared by other threads meanwhile)."""
    cfg = as_config(level)
    progress = progress or (lambda f, m: None)
    shape = model.unit_shape()
    if tuple(len(m) for m in masks.ffn) != shape.ffn or tuple(len(m) for m in masks.heads) != shape.heads:
        raise TPError("These masks do not fit this model's units.")
    t0 = time.perf_counter()
    if cfg.level == "none":
        return Recovery("none", task, cfg, [], 0, 0, 0.0)
    if data is None:
        data = calibration_data(task, cfg.samples, cfg.seed)
    was_training = model.training
    model.eval()
    try:
        corrections, n_tokens = _fit(model, task, masks, data, cfg, progress)
    finally:
        model.train(was_training)
    return Recovery(cfg.level, task, cfg, corrections, len(data), n_tokens, time.perf_counter() - t0)


@dataclass
class _Teacher:
    """What the dense model gives on the calibration batches: per batch the block arguments after the hidden state
    (attention mask) and the real-token mask; per layer and batch the block input (padded) and, on real tokens, what
    the attention and FFN output projections feed their LayerNorm (projection output + residual)."""

    rest: list
    tok: list
    inputs: list  # [layer][batch] (B, T, hidden)
    t_attn: list  # [layer][batch] (n real tokens, hidden)
    t_ffn: list
    final: list = field(default_factory=list)  # [batch] the last block's output (B, T, hidden)


_TEACHERS: dict = {}  # one cached teacher pass (model, data, lengths) -> _Teacher: levels and masks share it
_TEACHERS_LOCK = threading.Lock()


def _data_key(data: TaskData) -> int:
    return hash((tuple(data.texts), tuple(data.pairs) if data.pairs is not None else None))


def _block_args(model, task: str, data: TaskData, cfg: RecoveryConfig):
    """Per batch: block 0's input (embeddings), the remaining block arguments and the real-token mask."""
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


def _run_block(model, l: int, h: torch.Tensor, rest, state: GateState, stop_at: Optional[str] = None) -> _Capture:
    block = model.adapter.layers(model.base)[l]
    with _Capture(model.layer_parts(l), stop_at) as cap, gated(state):
        out = block(h, *rest[0], **rest[1])
        cap.out = out[0] if isinstance(out, tuple) else out
    return cap


def _teacher(model, task: str, data: TaskData, cfg: RecoveryConfig) -> _Teacher:
    key = (id(model), model.fingerprint(), _data_key(data), cfg.batch_size, cfg.max_length)
    with _TEACHERS_LOCK:
        if key in _TEACHERS:
            return _TEACHERS[key]
    batches = _block_args(model, task, data, cfg)
    L = model.num_layers
    h = [b[0] for b in batches]
    t = _Teacher([b[1] for b in batches], [b[2] for b in batches], [], [], [])
    for l in range(L):
        p = model.layer_parts(l)
        t.inputs.append(list(h))
        t.t_attn.append([])
        t.t_ffn.append([])
        for b in range(len(h)):
            cap = _run_block(model, l, h[b], t.rest[b], GateState())
            m = t.tok[b]
            t.t_attn[l].append((F.linear(cap.got["ctx"], p.attn_out.weight, p.attn_out.bias) + h[b])[m])
            t.t_ffn[l].append((F.linear(cap.got["a"], p.ffn_out.weight, p.ffn_out.bias) + cap.got["h"])[m])
            h[b] = cap.out
    t.final = h
    with _TEACHERS_LOCK:
        _TEACHERS.clear()  # keep one: it holds every layer's activations for the calibration set
        _TEACHERS[key] = t
    return t


def _fit(model, task: str, masks, data: TaskData, cfg: RecoveryConfig, progress: Progress):
    device = model.device
    L = model.num_layers
    solve = cfg.level in ("scale", "lstsq")
    start = 0 if cfg.fit_all else _first_pruned(masks)
    if start >= 2 * L or (not solve and masks.ffn_sparsity() == 0 and masks.head_sparsity() == 0):
        return [], 0  # nothing removed: nothing to correct
    if solve:
        teacher = _teacher(model, task, data, cfg)
        rest, tok = teacher.rest, teacher.tok
        first_layer = min(start // 2, L)
        student = list(teacher.inputs[first_layer]) if first_layer < L else []
    else:  # bias compensation needs no teacher: the pruned model's own activations of the removed units
        teacher = None
        batches = _block_args(model, task, data, cfg)
        student, rest, tok = [b[0] for b in batches], [b[1] for b in batches], [b[2] for b in batches]
        first_layer = 0
    n_tokens = int(sum(int(m.sum()) for m in tok))
    state = masks.gates(device)
    corrections: list[Correction] = []
    for l in range(first_layer, L):
        p = model.layer_parts(l)
        block = model.adapter.layers(model.base)[l]
        progress(l / L, f"recovery ({cfg.level}): layer {l + 1} of {L}")
        if solve:
            fit_attn, fit_ffn = 2 * l >= start, 2 * l + 1 >= start
        else:
            fit_attn, fit_ffn = not masks.heads[l].all(), not masks.ffn[l].all()
        # The pruned model passes through each block once: up to the attention output projection (fit it), resumed
        # from the recorded head contexts up to the FFN output projection (fit it), resumed from the recorded FFN
        # activation to the block output. The gate hooks apply the masks and the corrections fitted so far.
        ctx: list[Optional[torch.Tensor]] = [None] * len(student)
        if fit_attn:
            kept = np.flatnonzero(masks.heads[l]).tolist()
            acc = _Normal(p.attn_out.weight, p.attn_out.bias, kept, p.head_dim, need_ls=solve)
            for b in range(len(student)):
                ctx[b] = _run_block(model, l, student[b], rest[b], state, stop_at="ctx").got["ctx"]
                m = tok[b]
                acc.add(ctx[b][m], (teacher.t_attn[l][b] - student[b][m]) if solve else None)
            corrections.append(_solved(acc, "heads", l, kept, cfg, state, masks, device))
        acts: list = []
        if fit_ffn:
            kept = np.flatnonzero(masks.ffn[l]).tolist()
            acc = _Normal(p.ffn_out.weight, p.ffn_out.bias, kept, 1, need_ls=solve)
        for b in range(len(student)):
            with _Capture(p, "a") as cap, gated(state):
                if ctx[b] is not None:
                    model.adapter.attn_tail(block, ctx[b], student[b])
                else:
                    block(student[b], *rest[b][0], **rest[b][1])
            a, h = cap.got["a"], cap.got["h"]
            acts.append((a, h))
            ctx[b] = None
            if fit_ffn:
                m = tok[b]
                acc.add(a[m], (teacher.t_ffn[l][b] - h[m]) if solve else None)
        if fit_ffn:
            corrections.append(_solved(acc, "ffn", l, kept, cfg, state, masks, device))
        for b in range(len(student)):
            with gated(state):
                out = model.adapter.ffn_tail(block, *acts[b])
            student[b] = out[0] if isinstance(out, tuple) else out
            acts[b] = None
    if solve and cfg.level == "lstsq" and cfg.head and first_layer < L:
        head = _fit_head(model, task, teacher, student, tok, cfg)
        if head is not None:
            corrections.append(head)
    progress(1.0, f"recovery ({cfg.level}) done")
    return corrections, n_tokens


def _fit_head(model, task: str, teacher: _Teacher, student: list, tok: list, cfg: RecoveryConfig):
    """Re-fit the task head's first projection (ridge least squares, as the layers' output projections) so that
    on the pooled sequence of the pruned + recovered model it gives what it gives on the dense model's: the
    layer-wise fits leave a residual error that reaches the head; this removes what of it a linear map can.
    None when the head has no such projection."""
    proj = model.head_projection(task)
    if proj is None or sum(int(m.shape[0]) for m in tok) < HEAD_MIN_SAMPLES * (proj.in_features + 1):
        return None  # no such projection, or too few texts for its in_features + 1 unknowns per output
    got = {}

    def grab(module, args, output):
        got["x"], got["y"] = args[0].detach(), output.detach()

    acc = _Normal(proj.weight, proj.bias, list(range(proj.in_features)), 1, need_ls=True)
    handle = proj.register_forward_hook(grab)
    try:
        with gated(GateState()):
            for b in range(len(student)):
                mask = tok[b].long()
                model.head_logits(task, teacher.final[b], mask)
                target = got["y"]
                model.head_logits(task, student[b], mask)
                acc.add(got["x"], target)
    finally:
        handle.remove()
    c = Correction("head", -1, list(range(proj.in_features)))
    c.weight, c.bias, c.info = acc.solve_lstsq(cfg.ridge)
    c.info["head"] = model.resolve_task(task)
    return c


def _solved(acc: _Normal, kind: str, layer: int, kept: list[int], cfg: RecoveryConfig, state: GateState, masks,
            device) -> Correction:
    """Solve one projection at the configured level and apply it to `state` (later projections see it)."""
    c = Correction(kind, layer, kept)
    if cfg.level == "bias":
        if not acc.has_bias:
            raise TPError(f"Recovery level 'bias' folds into the output projections' biases, and this model's have "
                          "none (a Llama-layout decoder): use scale or lstsq.")
        c.bias = acc.solve_bias()
    elif cfg.level == "lstsq":
        c.weight, c.bias, c.info = acc.solve_lstsq(cfg.ridge)
    else:
        c.scale, c.info = acc.solve_scale(cfg.damping, cfg.scale_bounds)
    Recovery(cfg.level, "", cfg, [c]).apply(state, masks, device)
    return c


def fold_into(small, recovery: Recovery, masks) -> None:
    """Bake `recovery` into a model physically pruned to `masks` (kept columns are in ascending unit order)."""
    recovery.check(masks)
    with torch.no_grad():
        for c in recovery.corrections:
            if c.kind == "head":
                proj = small.head_projection(c.info.get("head", recovery.task))
                if proj is None or tuple(proj.weight.shape) != tuple(c.weight.shape):
                    raise TPError("Cannot fold the head re-fit into this model: its task head differs.")
                proj.weight.add_(torch.as_tensor(c.weight, dtype=proj.weight.dtype, device=proj.weight.device))
                proj.bias.add_(torch.as_tensor(c.bias, dtype=proj.bias.dtype, device=proj.bias.device))
                continue
            p = small.layer_parts(c.layer)
            lin = p.ffn_out if c.kind == "ffn" else p.attn_out
            d = 1 if c.kind == "ffn" else p.head_dim
            if lin.in_features != len(c.kept) * d:
                raise TPError(f"Cannot fold the recovery into layer {c.layer}: the pruned model has "
                              f"{lin.in_features} input features there, the recovery expects {len(c.kept) * d}.")
            w = lin.weight
            if c.weight is not None:
                w.add_(torch.as_tensor(c.weight, dtype=w.dtype, device=w.device))
            if c.scale is not None:
                s = torch.as_tensor(c.scale, dtype=w.dtype, device=w.device).repeat_interleave(d)
                w.mul_(s.view(1, -1))
            if c.bias is not None:
                if lin.bias is None:
                    raise TPError(f"Cannot fold a bias correction into layer {c.layer}: its projection has no bias.")
                lin.bias.add_(torch.as_tensor(c.bias, dtype=lin.bias.dtype, device=lin.bias.device))
