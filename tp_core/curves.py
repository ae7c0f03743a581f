"""Metric-vs-size helpers for the Prune view, on records from real masked evaluations (`work.point`, the one path
that evaluates a curve's points, with its on-disk caches).

* `data_key` / `scores_key` – identities of an evaluation set and of a set of unit scores, for cache keys.
* `smallest_within` / `find_smallest` – the smallest model (fewest kept parameters) whose metric keeps at least
  a fraction of the dense metric; `find_smallest` refines between grid points by bisection, each step a real
  evaluation made by the caller's `evaluate`.
* `record_dict` – a record with the derived fields the page shows.

Every number comes from evaluating the model; nothing is interpolated or hard-coded.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from collections.abc import Callable, Sequence

import numpy as np

from .attribution import UnitScores
from .data import TaskData
from .errors import TPError
from .evaluation import SweepRecord
from .masks import PruneConfig

Progress = Callable[[float, str], None]
Evaluate = Callable[[PruneConfig], SweepRecord]  # the record of one setting, from a real masked evaluation
DEFAULT_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def data_key(data: TaskData) -> str:
    """Identity of an evaluation set (task, split, size, rows, labels)."""
    h = hashlib.sha256()
    h.update(repr((data.spec.name, data.split, len(data), data.rows[:2000], [str(x) for x in data.labels[:2000]],
                   data.texts[:3])).encode())
    return h.hexdigest()[:16]


def scores_key(scores: UnitScores) -> str:
    """Identity of a set of unit scores (its values, not just its settings)."""
    h = hashlib.sha256()
    h.update(f"{scores.task}|{scores.method}".encode())
    for part in (scores.ffn, scores.heads):
        if part is None:
            h.update(b"none")
        else:
            for a in part:
                h.update(np.asarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def keeps(record: SweepRecord, dense_metric: float, fraction: float) -> bool:
    """Does `record` keep at least `fraction` of the dense metric? (For a non-positive dense metric: >= dense.)"""
    target = fraction * dense_metric if dense_metric > 0 else dense_metric
    return record.metric >= target - 1e-12


def smallest_within(records: Sequence[SweepRecord], dense_metric: float, fraction: float) -> SweepRecord | None:
    """Among evaluated records, the one with fewest kept parameters that keeps `fraction` of dense (or None)."""
    ok = [r for r in records if r.method != "dense" and keeps(r, dense_metric, fraction)]
    if not ok:
        return None
    return min(ok, key=lambda r: (r.kept_params, -r.metric))


def find_smallest(evaluate: Evaluate, dense_metric: float, fraction: float, grid: Sequence[float] = DEFAULT_GRID,
                  head_sparsity: float = 0.0, allocation: str = "global", refine_steps: int = 3,
                  progress: Progress | None = None) -> SweepRecord | None:
    """Smallest model keeping `fraction` of `dense_metric`: the best point of the FFN-sparsity `grid`, then
    `refine_steps` bisection steps towards the next (failing) grid point, each point evaluated by `evaluate`. None
    if no point qualifies."""
    if not 0 < fraction <= 1.5:
        raise TPError(f"The target fraction of the dense metric must be in (0, 1.5], got {fraction}.")
    progress = progress or (lambda f, m: None)
    grid = sorted({float(g) for g in grid})
    if not grid:
        raise TPError("The sparsity grid is empty.")
    configs = [PruneConfig(g, head_sparsity, allocation).validate() for g in grid]
    records = []
    for i, cfg in enumerate(configs):
        records.append(evaluate(cfg))
        progress(0.7 * (i + 1) / len(grid), f"FFN sparsity {cfg.ffn_sparsity:.0%} ({i + 1}/{len(grid)})")
    best = smallest_within(records, dense_metric, fraction)
    if best is None:
        return None
    higher = [r.ffn_sparsity for r in records if r.ffn_sparsity > best.ffn_sparsity]
    if higher:
        lo, hi = best.ffn_sparsity, min(higher)
        for i in range(refine_steps):
            mid = round((lo + hi) / 2, 2)  # whole percent: what the app's slider can show
            if mid in (lo, hi):
                break
            rec = evaluate(PruneConfig(mid, head_sparsity, allocation))
            progress(0.7 + 0.3 * (i + 1) / refine_steps, f"refining at FFN sparsity {mid:.1%}")
            if keeps(rec, dense_metric, fraction):
                lo = mid
                if rec.kept_params < best.kept_params:
                    best = rec
            else:
                hi = mid
    return best


def record_dict(r: SweepRecord, dense_metric: float | None = None) -> dict:
    """A record with derived fields for display: kept %, change against dense."""
    d = asdict(r)
    d["kept_pct"] = 100.0 * r.kept_params / r.total_params if r.total_params else 100.0
    if dense_metric is not None:
        d["delta"] = r.metric - dense_metric
        d["relative"] = r.metric / dense_metric if dense_metric else float("nan")
    return d
