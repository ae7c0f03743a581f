"""Iterative pruning (TextPruner's `n_iters`): reach the target sparsity in `n_iters` equal steps, re-scoring the
surviving units on the pruned (and, with a recovery level, recovered) model before each step.

Step i of n prunes to `i/n` of the target FFN and head sparsities. Before each step after the first, the model is
physically pruned to the current masks (`prune_physically`, with the current recovery folded in), the surviving
units are scored on that smaller model with the same criterion and the same scoring examples, and their scores are
mapped back to the original unit indices; units already removed get -inf, so they stay removed (allocation drops the
lowest scores first and each step removes at least as many units as the one before). With `n_iters=1` this is plain
one-shot pruning: `build_masks(attribute(model, ...), ...)`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from collections.abc import Callable

import numpy as np

from .attribution import DATA_FREE, AttributionConfig, UnitScores, attribute, scoring_data
from .data import TaskData
from .errors import TPError
from .masks import PruneConfig, UnitMasks, build_masks, units_for
from .pruning import prune_physically
from .recovery import Recovery, as_config, calibration_data, recover

Progress = Callable[[float, str], None]
Scorer = Callable[[object, str], UnitScores]  # (model, task) -> scores of that model's units


@dataclass
class IterativeResult:
    """The final masks, the recovery fitted for them (None without a level) and one entry per step."""

    masks: UnitMasks
    recovery: Recovery | None
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _mapped(small_scores: list | None, masks: list[np.ndarray]) -> list[np.ndarray] | None:
    """Scores of the surviving units (per layer, in kept order) placed at their original indices; -inf elsewhere."""
    if small_scores is None:
        return None
    out = []
    for s, m in zip(small_scores, masks):
        full = np.full(len(m), -np.inf)
        kept = np.flatnonzero(m)
        if len(s) != len(kept):
            raise TPError("Iterative pruning: the pruned model's scores do not match its kept units.")
        full[kept] = np.asarray(s, dtype=np.float64)
        out.append(full)
    return out


def iterative_masks(model, task: str, cfg: AttributionConfig, prune: PruneConfig, n_iters: int = 1,
                    recovery=None, data: TaskData | None = None, calib: TaskData | None = None,
                    scorer: Scorer | None = None, progress: Progress | None = None) -> IterativeResult:
    """Masks reaching `prune` in `n_iters` steps, re-scoring surviving units on the pruned (and recovered) model.

    `cfg` is the criterion (its `units` are widened to what `prune` needs); `data` the scoring examples (default:
    the criterion's usual seeded sample, the same at every step); `recovery` a level / RecoveryConfig (None or
    "none": plain masks) fitted after every step on `calib` (default: the level's seeded train sample); `scorer`
    replaces `attribute` (e.g. another library's criterion: a function (model, task) -> UnitScores)."""
    if not isinstance(n_iters, int) or n_iters < 1:
        raise TPError(f"The number of pruning iterations must be a positive integer, got {n_iters!r}.")
    prune.validate()
    progress = progress or (lambda f, m: None)
    rcfg = as_config(recovery) if recovery is not None else None
    if rcfg is not None and rcfg.level == "none":
        rcfg = None
    cfg = replace(cfg, units=units_for(prune.ffn_sparsity, prune.head_sparsity, cfg.units)).validate()
    if scorer is None and cfg.method not in DATA_FREE and data is None:
        data = scoring_data(task, cfg)
    if rcfg is not None and calib is None:
        calib = calibration_data(task, rcfg.samples, rcfg.seed)
    shape = model.unit_shape()

    def score(m) -> UnitScores:
        if scorer is not None:
            return scorer(m, task)
        return attribute(m, task, cfg, data=data, use_cache=m is model)

    t0 = time.perf_counter()
    masks = UnitMasks.dense(shape)
    rec: Recovery | None = None
    steps = []
    for i in range(1, n_iters + 1):
        ts = time.perf_counter()
        base = (i - 1) / n_iters
        progress(base, f"iteration {i} of {n_iters}: scoring")
        if i == 1:
            sc = score(model)
        else:
            small = prune_physically(model, masks, task, recovery=rec)
            small_sc = score(small)
            sc = replace(small_sc, ffn=_mapped(small_sc.ffn, masks.ffn), heads=_mapped(small_sc.heads, masks.heads))
        step = PruneConfig(prune.ffn_sparsity * i / n_iters, prune.head_sparsity * i / n_iters, prune.allocation)
        new = build_masks(sc, step, shape)
        for old_m, new_m in zip(masks.ffn + masks.heads, new.ffn + new.heads):
            if (new_m & ~old_m).any():  # cannot happen with -inf scores; a guard against a scorer returning NaN
                raise TPError("Iterative pruning would bring back a removed unit (do the scores contain NaN?).")
        masks = new
        if rcfg is not None:
            progress(base + 0.7 / n_iters, f"iteration {i} of {n_iters}: recovery ({rcfg.level})")
            rec = recover(model, task, masks, calib, rcfg)
        steps.append({"iteration": i, "ffn_sparsity": round(masks.ffn_sparsity(), 6),
                      "head_sparsity": round(masks.head_sparsity(), 6), "seconds": round(time.perf_counter() - ts, 3),
                      "recovery_seconds": round(rec.seconds, 3) if rec is not None else None})
    progress(1.0, f"iterative pruning done ({n_iters} steps)")
    return IterativeResult(masks, rec, steps, time.perf_counter() - t0)
