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
One projection's system and its solve at each level are in recovery_fit.py (which knows nothing of model layouts);
the passes over the model's blocks (capture hooks, the cached dense teacher) are in recovery_passes.py.

A `Recovery` never changes the model's weights: it becomes part of the per-thread `GateState` (non-binary gate
values for scales, additive output corrections for biases and re-fitted columns; see gates.py), so many masks and
recoveries can be evaluated on one shared model at once. `prune_physically(..., recovery=)` folds it into the sliced
weights, and mask files carry it (`save_mask_file(..., recovery=)`, `load_plan`).
"""
from __future__ import annotations

import base64
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable

import numpy as np
import torch

from .data import TaskData
from .defaults import RECOVERY_LEVEL, RECOVERY_SAMPLES
from .errors import TPError
from .gates import GateState, OutputCorrection, gated
from .recovery_fit import ProjectionFit, unit_columns
from .recovery_passes import Capture, Teacher, block_args, dense_teacher, run_block

LEVELS = ("none", "bias", "scale", "lstsq")
# Unlabeled calibration texts per task: enough that lstsq's normal equations are well determined at high sparsity
# (benchmarks/calibration_size.py and `bench_recovery.py --recover-samples N` measure the trade-off).
DEFAULT_SAMPLES = RECOVERY_SAMPLES
# The head re-fit solves in_features + 1 unknowns per output from one pooled vector per text: it runs only with at
# least this many texts per unknown (MiniLM: 770 of the default 1,024), never on an underdetermined system.
HEAD_MIN_SAMPLES = 2
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class RecoveryConfig:
    """How to recover. `samples` calibration texts are drawn (seeded) from the task's train split."""

    level: str = RECOVERY_LEVEL
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    ridge: float = 1e-2  # lstsq: lambda = ridge * mean diagonal of A1'A1, pulling toward the original weights
    damping: float = 1e-2  # scale: lambda = damping * mean diagonal of the Gram matrix, pulling toward scale 1
    scale_bounds: tuple[float, float] = (0.0, 10.0)  # a scale outside this range triggers more damping / fallback
    # scale: "ridge" (above) or "lsmr", Kwon et al.'s own solver (ProjectionFit.solve_lsmr; kwon.py)
    scale_solver: str = "ridge"
    fit_all: bool = False  # also fit projections below the first removed unit (where pruned == dense)
    # lstsq: also re-fit the task head's first projection on the pooled sequence (_fit_head): one more small solve
    # per recovery that corrects what the pruned encoder's pooled vector lost (benchmarks/head_refit_check.py)
    head: bool = True
    batch_size: int = 32
    max_length: int = 128

    def validate(self) -> RecoveryConfig:
        if self.level not in LEVELS:
            raise TPError(f"Recovery level must be one of {', '.join(LEVELS)}, got {self.level!r}.")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise TPError(f"The number of recovery samples must be a positive integer, got {self.samples!r}.")
        for name, v in (("ridge", self.ridge), ("damping", self.damping)):
            if not (v >= 0) or v != v:
                raise TPError(f"Recovery {name} must be >= 0, got {v}.")
        if self.scale_solver not in ("ridge", "lsmr"):
            raise TPError(f"The scale solver must be ridge or lsmr, got {self.scale_solver!r}.")
        lo, hi = self.scale_bounds
        if not lo < hi:
            raise TPError(f"Recovery scale bounds must be (low, high) with low < high, got {self.scale_bounds}.")
        return self


def as_config(level: str | RecoveryConfig | None, samples: int | None = None) -> RecoveryConfig:
    """A validated RecoveryConfig from a level name (or a config), optionally with another sample count."""
    cfg = level if isinstance(level, RecoveryConfig) else RecoveryConfig(level=level or "none")
    if samples is not None:
        from dataclasses import replace

        cfg = replace(cfg, samples=samples)
    return cfg.validate()


def samples_for(spec, asked: int | None = None) -> int | None:
    """Calibration texts for a recovery of model `spec`: `asked` when given, else a causal LM's smaller default
    (`defaults.LLM_RECOVERY_SAMPLES`: its prompts are several times longer), else None (RecoveryConfig's own)."""
    if asked is not None:  # as given (0 or less: RecoveryConfig.validate says why not)
        return asked
    from .defaults import LLM_RECOVERY_SAMPLES
    from .llm_source import is_causal_lm_spec

    return LLM_RECOVERY_SAMPLES if is_causal_lm_spec(spec or "") else None


def active_config(level: str | RecoveryConfig | None) -> RecoveryConfig | None:
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
    scale: np.ndarray | None = None  # (len(kept),)
    weight: np.ndarray | None = None  # (out, kept columns)
    bias: np.ndarray | None = None  # (out,)
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
                        cols = unit_columns(c.kept, c.weight.shape[1] // max(len(c.kept), 1))
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
    def from_doc(doc: dict) -> Recovery:
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


def recovery_from_doc(doc: dict) -> Recovery | None:
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
def _first_pruned(masks) -> int:
    """Index (2*layer for attention, 2*layer+1 for FFN) of the first projection with removed units."""
    for l in range(len(masks.ffn)):
        if not masks.heads[l].all():
            return 2 * l
        if not masks.ffn[l].all():
            return 2 * l + 1
    return 2 * len(masks.ffn)


@torch.no_grad()
def recover(model, task: str, masks, data: TaskData | None = None, level: str | RecoveryConfig = RECOVERY_LEVEL,
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
    L = model.num_layers
    solve = cfg.level in ("scale", "lstsq")
    start = 0 if cfg.fit_all else _first_pruned(masks)
    if start >= 2 * L or (not solve and masks.ffn_sparsity() == 0 and masks.head_sparsity() == 0):
        return [], 0  # nothing removed: nothing to correct
    if solve:
        teacher = dense_teacher(model, task, data, cfg)
        rest, tok, weights = teacher.rest, teacher.tok, teacher.weights
        first_layer = min(start // 2, L)
        student = list(teacher.inputs[first_layer]) if first_layer < L else []
    else:  # bias compensation needs no teacher: the pruned model's own activations of the removed units
        teacher = None
        batches = block_args(model, task, data, cfg)
        student, rest, tok = [b[0] for b in batches], [b[1] for b in batches], [b[2] for b in batches]
        weights = [b[3] for b in batches]
        first_layer = 0
    n_tokens = int(sum(w * int(m.sum()) for w, m in zip(weights, tok)))
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
        ctx: list[torch.Tensor | None] = [None] * len(student)
        if fit_attn:
            kept = np.flatnonzero(masks.heads[l]).tolist()
            acc = ProjectionFit(p.attn_out.weight, p.attn_out.bias, kept, p.head_dim, need_ls=solve)
            for b in range(len(student)):
                ctx[b] = run_block(model, l, student[b], rest[b], state, stop_at="ctx").got["ctx"]
                m = tok[b]
                acc.add(ctx[b][m], (teacher.t_attn[l][b] - student[b][m]) if solve else None, weights[b])
            corrections.append(_solved(acc, "heads", l, kept, cfg, state, masks, device))
        acts: list = []
        if fit_ffn:
            kept = np.flatnonzero(masks.ffn[l]).tolist()
            acc = ProjectionFit(p.ffn_out.weight, p.ffn_out.bias, kept, 1, need_ls=solve)
        for b in range(len(student)):
            with Capture(p, "a") as cap, gated(state):
                if ctx[b] is not None:
                    model.adapter.attn_tail(block, ctx[b], student[b])
                else:
                    block(student[b], *rest[b][0], **rest[b][1])
            a, h = cap.got["a"], cap.got["h"]
            acts.append((a, h))
            ctx[b] = None
            if fit_ffn:
                m = tok[b]
                acc.add(a[m], (teacher.t_ffn[l][b] - h[m]) if solve else None, weights[b])
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


def _fit_head(model, task: str, teacher: Teacher, student: list, tok: list, cfg: RecoveryConfig):
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

    acc = ProjectionFit(proj.weight, proj.bias, list(range(proj.in_features)), 1, need_ls=True)
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


def _solved(acc: ProjectionFit, kind: str, layer: int, kept: list[int], cfg: RecoveryConfig, state: GateState, masks,
            device) -> Correction:
    """Solve one projection at the configured level and apply it to `state` (later projections see it)."""
    c = Correction(kind, layer, kept)
    if cfg.level == "bias":
        if not acc.has_bias:
            raise TPError("Recovery level 'bias' folds into the output projections' biases, and this model's have "
                          "none (a Llama-layout decoder): use scale or lstsq.")
        c.bias = acc.solve_bias()
    elif cfg.level == "lstsq":
        c.weight, c.bias, c.info = acc.solve_lstsq(cfg.ridge)
    elif cfg.scale_solver == "lsmr":
        c.scale, c.info = acc.solve_lsmr()
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
