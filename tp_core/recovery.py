"""Training-free recovery after pruning: make the pruned model's layers give what the dense model's gave.

Three levels, for FFN neurons and attention heads alike, for masks from any criterion, fitted on a few hundred
*unlabeled* task examples with the dense model as teacher (METHOD.md, "Recovery after pruning"):

* ``bias``  - FLAP-style bias compensation (An et al. 2024): ``b' = b + W[:, removed] @ mean(a_removed)`` on the FFN
  output projection and the attention output projection (mean over the calibration tokens of the pruned model).
* ``scale`` - per-unit scale tuning (the mask tuning of Kwon et al. 2022): one multiplier per kept unit, by damped
  least squares (pulled toward 1), with a guard: when a scale leaves ``scale_bounds`` the damping grows, and if that
  does not help the projection keeps plain 0/1 gates (recorded as a fallback).
* ``lstsq`` - ridge least-squares re-fit of the kept columns and the bias of the output projection
  (``[W2[:, kept] | b2]``, ``[Wo[:, kept head columns] | bo]``), pulled toward the original weights.

``scale`` and ``lstsq`` go layer by layer from the bottom, attention then FFN, with the pruned model's own inputs
(already corrected below): the target of a projection is what the dense model feeds the LayerNorm after it
(projection output + residual), minus the pruned model's own residual. Only real tokens count (no padding).
Normal equations are accumulated and solved in float64.

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
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class RecoveryConfig:
    """How to recover. `samples` calibration texts are drawn (seeded) from the task's train split."""

    level: str = "lstsq"
    samples: int = 256
    seed: int = 0
    ridge: float = 1e-2  # lstsq: lambda = ridge * mean diagonal of A1'A1, pulling toward the original weights
    damping: float = 1e-2  # scale: lambda = damping * mean diagonal of the Gram matrix, pulling toward scale 1
    scale_bounds: tuple[float, float] = (0.0, 10.0)  # a scale outside this range triggers more damping / fallback
    fit_all: bool = False  # also fit projections below the first removed unit (where pruned == dense)
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
            ms = masks.ffn if c.kind == "ffn" else masks.heads
            if c.layer >= len(ms) or np.flatnonzero(ms[c.layer]).tolist() != list(c.kept):
                raise TPError(f"This recovery was fitted for other masks (layer {c.layer} {c.kind} units differ); "
                              "recompute it for these masks.")

    def apply(self, state: GateState, masks, device: torch.device | str = "cpu") -> GateState:
        """Add the corrections to `state` (which carries the 0/1 gates of `masks`); returns `state`."""
        key = str(device)
        if key not in self._cache:
            self.check(masks)
            built = []
            for c in self.corrections:
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
        for kind, layer, gate, out in self._cache[key]:
            if gate is not None:
                (state.ffn if kind == "ffn" else state.heads)[layer] = gate
            if out is not None:
                (state.ffn_out if kind == "ffn" else state.heads_out)[layer] = out
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
        for name, lin in (("ctx", p.attn_out), ("h", p.ffn_in), ("a", p.ffn_out)):
            self.handles.append(lin.register_forward_pre_hook(self._hook(name), prepend=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return exc[0] is _Stop  # swallow our own stop signal


class _Normal:
    """Accumulates, in float64, what every level needs about one projection on the calibration tokens."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], kept: list[int], d: int, need_ls: bool):
        self.W = weight.detach().double()  # (out, in)
        self.b = bias.detach().double() if bias is not None else torch.zeros(self.W.shape[0], dtype=torch.float64)
        self.kept, self.d = list(kept), d
        n_units = self.W.shape[1] // d
        keep = set(self.kept)
        self.removed = [u for u in range(n_units) if u not in keep]
        self.kcols = torch.as_tensor(_columns(self.kept, d), dtype=torch.long)
        self.pcols = torch.as_tensor(_columns(self.removed, d), dtype=torch.long)
        k = len(self.kcols)
        self.need_ls = need_ls
        self.sum_removed = torch.zeros(len(self.pcols), dtype=torch.float64)
        self.n = 0
        if need_ls:
            self.C = torch.zeros(k + 1, k + 1, dtype=torch.float64)
            self.D = torch.zeros(k + 1, self.W.shape[0], dtype=torch.float64)
            self.bb = 0.0

    def add(self, x: torch.Tensor, target: Optional[torch.Tensor]) -> None:
        """x: (N, in) ungated projection inputs on real tokens; target: (N, out) wanted projection outputs."""
        x = x.detach().double().cpu()
        self.n += x.shape[0]
        if len(self.pcols):
            self.sum_removed += x.index_select(1, self.pcols).sum(0)
        if self.need_ls:
            a = torch.cat([x.index_select(1, self.kcols), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
            t = target.detach().double().cpu()
            self.C += a.T @ a
            self.D += a.T @ t
            self.bb += float((t * t).sum())

    # relative squared error of [Wk | b] = X^T on the accumulated system: (X'CX - 2X'D + ||T||^2) / ||T||^2
    def rel_error(self, X: torch.Tensor) -> float:
        err = float((X * (self.C @ X)).sum() - 2 * (X * self.D).sum()) + self.bb
        return max(err, 0.0) / self.bb if self.bb > 0 else 0.0

    def x0(self) -> torch.Tensor:
        return torch.cat([self.W.index_select(1, self.kcols).T, self.b.view(1, -1)], 0)

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
            return np.zeros((self.W.shape[0], k), np.float32), np.zeros(self.W.shape[0], np.float32), info
        info["err_after"] = self.rel_error(X)
        dW = (X[:k].T - X0[:k].T).float().numpy()
        db = (X[k] - X0[k]).float().numpy()
        return dW, db, info

    def unit_system(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gram matrix G and right side r of min_s ||sum_u s_u W_u x_u + b - T||^2 (units of d columns)."""
        k = len(self.kcols)
        Wk = self.W.index_select(1, self.kcols)  # (out, k)
        M = self.C[:k, :k] * (Wk.T @ Wk)
        r_col = (self.D[:k] * Wk.T).sum(1) - self.C[:k, k] * (Wk.T @ self.b)
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
        for mult in (1.0, 10.0, 100.0):
            lam = damping * mult * base
            s = ridge_solve(G, r.view(-1, 1), ones.view(-1, 1), lam).view(-1)
            if torch.isfinite(s).all() and float(s.min()) >= bounds[0] and float(s.max()) <= bounds[1]:
                Xs = X0.clone()
                Xs[:-1] *= s.repeat_interleave(self.d).view(-1, 1)
                info.update({"lambda": lam, "err_after": self.rel_error(Xs), "fallback": False,
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


def _fit(model, task: str, masks, data: TaskData, cfg: RecoveryConfig, progress: Progress):
    device = model.device
    layers = model.adapter.layers(model.base)
    L = len(layers)
    owner = threading.get_ident()
    dense = GateState()

    # block 0's inputs (embeddings) and the other block arguments (attention mask), captured once per batch
    blocks_in: list[torch.Tensor] = []
    rest: list[tuple[tuple, dict]] = []
    tok: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        if threading.get_ident() == owner:
            grab.got = (args, kwargs)
            raise _Stop

    for _, batch in model.batches(data.texts, data.pairs, cfg.batch_size, cfg.max_length):
        handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with gated(dense):
                model(**batch, task=task)
        except _Stop:
            pass
        finally:
            handle.remove()
        args, kwargs = grab.got
        blocks_in.append(args[0])
        rest.append((tuple(args[1:]), dict(kwargs)))
        tok.append(batch["attention_mask"].bool())
    n_tokens = int(sum(int(m.sum()) for m in tok))

    def run(l: int, h: torch.Tensor, b: int, state: GateState, stop_at: Optional[str] = None):
        with _Capture(model.layer_parts(l), stop_at) as cap, gated(state):
            out = layers[l](h, *rest[b][0], **rest[b][1])
            cap.out = out[0] if isinstance(out, tuple) else out
        return cap

    teacher = list(blocks_in)
    student = list(blocks_in)
    state = masks.gates(device)
    start = 0 if cfg.fit_all else _first_pruned(masks)
    solve = cfg.level in ("scale", "lstsq")
    corrections: list[Correction] = []
    for l in range(L):
        p = model.layer_parts(l)
        progress(l / L, f"recovery ({cfg.level}): layer {l + 1} of {L}")
        heads_removed, ffn_removed = not masks.heads[l].all(), not masks.ffn[l].all()
        fit_attn = heads_removed if not solve else 2 * l >= start
        fit_ffn = ffn_removed if not solve else 2 * l + 1 >= start
        identical = 2 * l + 1 < start and 2 * l < start  # nothing removed at or below: pruned == dense here
        t_attn, t_ffn = [], []
        for b in range(len(teacher) if (solve or identical) else 0):
            cap = run(l, teacher[b], b, dense)
            if solve and fit_attn:
                t_attn.append((F.linear(cap.got["ctx"], p.attn_out.weight, p.attn_out.bias) + teacher[b])[tok[b]])
            if solve and fit_ffn:
                t_ffn.append((F.linear(cap.got["a"], p.ffn_out.weight, p.ffn_out.bias) + cap.got["h"])[tok[b]])
            teacher[b] = cap.out
        if identical:
            student = list(teacher)
            continue
        for kind, fit in (("heads", fit_attn), ("ffn", fit_ffn)):
            if not fit:
                continue
            lin = p.attn_out if kind == "heads" else p.ffn_out
            kept = np.flatnonzero(masks.heads[l] if kind == "heads" else masks.ffn[l]).tolist()
            d = p.head_dim if kind == "heads" else 1
            acc = _Normal(lin.weight, lin.bias, kept, d, need_ls=solve)
            for b in range(len(student)):
                cap = run(l, student[b], b, state, stop_at="ctx" if kind == "heads" else "a")
                m = tok[b]
                if kind == "heads":
                    x, resid = cap.got["ctx"][m], student[b][m]
                    target = (t_attn[b] - resid) if solve else None
                else:
                    x = cap.got["a"][m]
                    target = (t_ffn[b] - cap.got["h"][m]) if solve else None
                acc.add(x.reshape(x.shape[0], -1).float(), target)
            c = Correction(kind, l, kept)
            if cfg.level == "bias":
                c.bias = acc.solve_bias()
            elif cfg.level == "lstsq":
                c.weight, c.bias, c.info = acc.solve_lstsq(cfg.ridge)
            else:
                c.scale, c.info = acc.solve_scale(cfg.damping, cfg.scale_bounds)
            corrections.append(c)
            one = Recovery(cfg.level, "", cfg, [c])
            one.apply(state, masks, device)  # later layers (and this layer's FFN) see the corrected model
        for b in range(len(student)):
            student[b] = run(l, student[b], b, state).out
    progress(1.0, f"recovery ({cfg.level}) done")
    return corrections, n_tokens


def fold_into(small, recovery: Recovery, masks) -> None:
    """Bake `recovery` into a model physically pruned to `masks` (kept columns are in ascending unit order)."""
    recovery.check(masks)
    with torch.no_grad():
        for c in recovery.corrections:
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
