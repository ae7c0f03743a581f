"""Budget targets: instead of sparsities, a FLOPs budget (a fraction of the dense model's FLOPs) or a measured
latency budget (milliseconds per batch on this machine, for a sequence length and batch size); the planner finds the
FFN / head sparsity split that meets it and keeps the most score mass.

FLOPs are the encoder's matrix multiplications per example of `seq_len` tokens (multiply-add = 2 FLOPs): per layer
Q, K, V and output projections (8·T·H·d per kept head), attention scores and weighted values (4·T²·d per kept head)
and the FFN (4·T·H per kept neuron); embeddings, LayerNorms, softmax and the task head are left out (small). With
uniform layer sizes the FLOPs depend only on how many heads and neurons are kept, so for every number of kept heads
the planner keeps as many FFN neurons as the budget allows, builds the masks (the usual allocation) and scores the
candidate by the score mass it removes; the candidate removing the least wins.

Score mass: for gradient attributions (ig, grad_x_act) FFN and head scores are both estimates of the effect on the
same target, so their raw sums are compared ("raw"); for other criteria (activation, magnitude, random) the two kinds
are not on one scale and each kind counts as its share of that kind's total ("share"). This is a first-order proxy,
not a measured metric: check the chosen split with `evaluate` (or the Prune page).

A latency budget is met by measurement, not by a model of the hardware: latency is timed for the dense model and for
two planned models (the physically pruned model, `prune_physically`, median of `repeats` forward passes), a line
latency = a + b·FLOPs is fitted, the FLOPs budget the line gives is planned, and the plan is timed; while it is over
the budget the FLOPs budget is scaled down by target/measured (at most `max_tries` times).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .attribution import UnitScores
from .errors import TPError
from .masks import PruneConfig, UnitMasks, build_masks

Progress = Callable[[float, str], None]
RAW_METHODS = ("ig", "grad_x_act")


def encoder_flops(model, masks: UnitMasks | None = None, seq_len: int = 128) -> float:
    """Matrix-multiply FLOPs of the encoder for one example of `seq_len` tokens, with `masks` (None: dense)."""
    T = float(seq_len)
    shape = model.unit_shape()
    total = 0.0
    for l in range(len(shape.ffn)):
        p = model.layer_parts(l)
        H, d = p.ffn_out.out_features, p.head_dim
        heads = shape.heads[l] if masks is None else int(masks.heads[l].sum())
        ffn = shape.ffn[l] if masks is None else int(masks.ffn[l].sum())
        total += heads * (8 * T * H * d + 4 * T * T * d) + ffn * 4 * T * H
    return total


def flops_fraction(model, masks: UnitMasks, seq_len: int = 128) -> float:
    return encoder_flops(model, masks, seq_len) / encoder_flops(model, None, seq_len)


@dataclass
class BudgetPlan:
    """The chosen split: `ffn_sparsity` / `head_sparsity` (use them with the same allocation), its FLOPs fraction,
    the score mass kept, and how the budget was met."""

    ffn_sparsity: float
    head_sparsity: float
    allocation: str
    flops_fraction: float
    budget: float  # the FLOPs fraction asked for (for a latency budget: the one finally planned)
    score_kept: float  # kept share of the score mass (by the objective below)
    objective: str  # raw | share
    seq_len: int
    candidates: int
    latency: dict = field(default_factory=dict)  # latency budgets: target, measured, fit, tries

    def to_dict(self) -> dict:
        return asdict(self)

    def prune_config(self) -> PruneConfig:
        return PruneConfig(self.ffn_sparsity, self.head_sparsity, self.allocation)


def _mass(scores: list[np.ndarray] | None) -> list[np.ndarray] | None:
    return None if scores is None else [np.abs(np.nan_to_num(np.asarray(s, dtype=np.float64))) for s in scores]


def plan_flops(model, scores: UnitScores, budget: float, seq_len: int = 128, allocation: str = "global",
               prune_heads: bool = True, objective: str = "auto") -> BudgetPlan:
    """The FFN/head split with at most `budget` x dense FLOPs (0 < budget <= 1) keeping the most score mass.
    `prune_heads=False` (or scores without head scores) prunes FFN neurons only."""
    if not (0.0 < budget <= 1.0) or budget != budget:
        raise TPError(f"A FLOPs budget is a fraction of the dense model's FLOPs in (0, 1], got {budget}.")
    if seq_len < 1:
        raise TPError(f"The sequence length must be positive, got {seq_len}.")
    if scores.ffn is None:
        raise TPError("Budget targets need FFN-neuron scores (attribute with units ffn or both).")
    shape = model.unit_shape()
    if len(set(shape.ffn)) != 1 or len(set(shape.heads)) != 1:
        raise TPError("Budget targets need a model with the same number of heads and FFN neurons in every layer "
                      "(not an already pruned one).")
    if objective == "auto":
        objective = "raw" if scores.method in RAW_METHODS else "share"
    if objective not in ("raw", "share"):
        raise TPError(f"objective must be auto, raw or share, got {objective!r}.")
    L = len(shape.ffn)
    n_ffn, n_heads = sum(shape.ffn), sum(shape.heads)
    dense = encoder_flops(model, None, seq_len)
    per_ffn = encoder_flops(model, UnitMasks([np.ones(shape.ffn[0], bool)] + [np.zeros(f, bool) for f in shape.ffn[1:]],
                                             [np.zeros(h, bool) for h in shape.heads]), seq_len) / shape.ffn[0]
    per_head = encoder_flops(model, UnitMasks([np.zeros(f, bool) for f in shape.ffn],
                                              [np.ones(shape.heads[0], bool)] +
                                              [np.zeros(h, bool) for h in shape.heads[1:]]), seq_len) / shape.heads[0]
    if L * per_ffn + L * per_head > budget * dense:
        raise TPError(f"A FLOPs budget of {budget:.1%} is below the smallest model TaskPrune builds (one head and one "
                      f"FFN neuron per layer: {(L * per_ffn + L * per_head) / dense:.2%} of dense).")
    fm, hm = _mass(scores.ffn), _mass(scores.heads if prune_heads else None)
    tot_f = sum(float(s.sum()) for s in fm) or 1.0
    tot_h = (sum(float(s.sum()) for s in hm) or 1.0) if hm is not None else 1.0
    head_counts = range(n_heads, L - 1, -1) if hm is not None else [n_heads]
    best = None
    n_cand = 0
    for k_h in head_counts:
        k_f = int(np.floor((budget * dense - k_h * per_head) / per_ffn + 1e-9))
        if k_f < L:
            continue  # each layer keeps one neuron: fewer heads leave more room for neurons
        k_f = min(k_f, n_ffn)
        hs = 1.0 - k_h / n_heads
        fs = 1.0 - k_f / n_ffn
        for _ in range(4):  # allocation rounds the drop counts: step down until the masks fit the budget
            cfg = PruneConfig(min(max(fs, 0.0), 0.999999), min(max(hs, 0.0), 0.999999), allocation)
            masks = build_masks(scores, cfg, shape)
            if encoder_flops(model, masks, seq_len) <= budget * dense * (1 + 1e-9):
                break
            fs += L / n_ffn
        else:
            continue
        n_cand += 1
        kept_f = sum(float(s[m].sum()) for s, m in zip(fm, masks.ffn))
        kept_h = sum(float(s[m].sum()) for s, m in zip(hm, masks.heads)) if hm is not None else tot_h
        if objective == "raw":
            removed = (tot_f - kept_f) + (tot_h - kept_h if hm is not None else 0.0)
            kept = 1.0 - removed / (tot_f + (tot_h if hm is not None else 0.0))
        else:
            kept = (kept_f / tot_f + (kept_h / tot_h if hm is not None else 1.0)) / (2 if hm is not None else 1)
        if best is None or kept > best[0] + 1e-12:
            best = (kept, cfg, masks)
    if best is None:
        raise TPError(f"No FFN/head split meets a FLOPs budget of {budget:.1%}.")
    kept, cfg, masks = best
    return BudgetPlan(round(cfg.ffn_sparsity, 6), round(cfg.head_sparsity, 6), allocation,
                      round(flops_fraction(model, masks, seq_len), 6), budget, round(kept, 6), objective, seq_len,
                      n_cand)


def measure_latency(model, masks: UnitMasks | None, task: str, seq_len: int, batch_size: int, repeats: int = 10,
                    recovery=None) -> float:
    """Median milliseconds of one forward pass of `batch_size` examples of `seq_len` tokens through the physically
    pruned model (`masks` None: the dense model), after one warm-up pass."""
    import torch

    from .pruning import prune_physically

    m = model if masks is None else prune_physically(model, masks, task, recovery=recovery)
    m.eval()
    ids = torch.randint(1000, 2000, (batch_size, seq_len), device=m.device)
    att = torch.ones_like(ids)
    times = []
    with torch.no_grad():
        m(ids, att, task=task)
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            m(ids, att, task=task)
            times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def plan_latency(model, scores: UnitScores, task: str, target_ms: float, seq_len: int = 128, batch_size: int = 1,
                 allocation: str = "global", prune_heads: bool = True, repeats: int = 10, max_tries: int = 4,
                 progress: Progress | None = None) -> BudgetPlan:
    """The split meeting a measured latency budget (`target_ms` per batch of `batch_size` x `seq_len` tokens on
    this machine) with the most score mass; see the module docstring. Raises TPError when even the smallest plan
    measured is slower than the target."""
    progress = progress or (lambda f, m: None)
    if not target_ms > 0:
        raise TPError(f"A latency budget must be a positive number of milliseconds, got {target_ms}.")
    if batch_size < 1:
        raise TPError(f"The batch size must be positive, got {batch_size}.")
    progress(0.0, "timing the dense model")
    dense_ms = measure_latency(model, None, task, seq_len, batch_size, repeats)
    shape = model.unit_shape()
    points = [(1.0, dense_ms)]
    for i, frac in enumerate((0.5, 0.2)):
        progress(0.1 + 0.2 * i, f"timing a model at {frac:.0%} of the FLOPs")
        p = plan_flops(model, scores, frac, seq_len, allocation, prune_heads)
        points.append((p.flops_fraction, measure_latency(model, build_masks(scores, p.prune_config(), shape), task,
                                                         seq_len, batch_size, repeats)))
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    b, a = np.polyfit(x, y, 1)  # latency = a + b * flops fraction
    info = {"target_ms": target_ms, "dense_ms": round(dense_ms, 3), "seq_len": seq_len, "batch_size": batch_size,
            "fit_ms": [round(float(a), 3), round(float(b), 3)], "points": [[round(float(u), 4), round(float(v), 3)]
                                                                           for u, v in points]}
    if target_ms >= dense_ms:
        plan = plan_flops(model, scores, 1.0, seq_len, allocation, prune_heads)
        plan.latency = {**info, "measured_ms": round(dense_ms, 3), "tries": 0, "met": True}
        return plan
    budget = float(np.clip((target_ms - a) / b if b > 0 else 0.0, 0.02, 1.0))
    plan = None
    for t in range(max_tries):
        progress(0.5 + 0.5 * t / max_tries, f"planning {budget:.1%} of the FLOPs and timing it")
        try:
            plan = plan_flops(model, scores, budget, seq_len, allocation, prune_heads)
        except TPError:
            break
        ms = measure_latency(model, build_masks(scores, plan.prune_config(), shape), task, seq_len, batch_size,
                             repeats)
        plan.latency = {**info, "measured_ms": round(ms, 3), "tries": t + 1, "met": ms <= target_ms}
        if ms <= target_ms:
            return plan
        budget *= 0.97 * target_ms / ms
    if plan is None:
        raise TPError(f"No pruned model meets {target_ms} ms at batch {batch_size} x {seq_len} tokens on this "
                      f"machine (the dense model takes {dense_ms:.1f} ms).")
    raise TPError(f"The latency budget {target_ms} ms was not met at batch {batch_size} x {seq_len} tokens: the "
                  f"closest plan (FFN {plan.ffn_sparsity:.0%}, heads {plan.head_sparsity:.0%}) measured "
                  f"{plan.latency['measured_ms']:.1f} ms (dense {dense_ms:.1f} ms; timings on a busy machine vary).")
