"""Metric-vs-size curves for the interactive Prune view, from real masked evaluations.

* `evaluate_point` – the metric and exact kept parameters at one (FFN sparsity, head sparsity, allocation) for
  given scores, on given data. Results are memoised in-process (thread-safe LRU), so returning to a point is free.
* `compute_curve` – one line per (model, task, method, attribution settings, head sparsity, allocation, data):
  `evaluate_point` over an FFN-sparsity grid. Curves are cached on disk under `TP_HOME/curves/`, so they are
  computed once and reused by every page, session and process.
* `smallest_within` / `find_smallest` – the smallest model (fewest kept parameters) whose metric keeps at least
  a fraction of the dense metric; `find_smallest` refines between grid points by bisection on real evaluations.

Every number here comes from evaluating the model; nothing is interpolated or hard-coded.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .attribution import AttributionConfig, UnitScores, attribute
from .data import TaskData
from .errors import TPError
from .evaluation import SweepRecord, evaluate, evaluate_masked
from .masks import PruneConfig, build_masks, units_for
from .model import MultiTaskModel
from .paths import atomic_write_text, cache_dir, enforce_cache_cap, touch
from .pruning import count_params, kept_params

Progress = Callable[[float, str], None]
DEFAULT_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Curve:
    """One method's line: `records` sorted by FFN sparsity, plus the dense reference record."""

    method: str
    head_sparsity: float
    allocation: str
    dense: SweepRecord
    records: list[SweepRecord]

    def to_dict(self) -> dict:
        return {"method": self.method, "head_sparsity": self.head_sparsity, "allocation": self.allocation,
                "dense": self.dense.to_dict(), "records": [r.to_dict() for r in self.records]}

    @staticmethod
    def from_dict(d: dict) -> "Curve":
        return Curve(d["method"], d["head_sparsity"], d["allocation"], SweepRecord(**d["dense"]),
                     [SweepRecord(**r) for r in d["records"]])


# ----- keys ------------------------------------------------------------------------------------------------------
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


# ----- points ----------------------------------------------------------------------------------------------------
class _LRU:
    def __init__(self, size: int = 4096):
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
            return None

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


_POINTS = _LRU()


def clear_memory_cache() -> None:
    _POINTS.clear()


def _point_key(model: MultiTaskModel, task: str, skey: str, cfg: PruneConfig, dkey: str) -> tuple:
    return (model.fingerprint(), task, skey, round(cfg.ffn_sparsity, 6), round(cfg.head_sparsity, 6),
            cfg.allocation, dkey)


def cached_point(model: MultiTaskModel, task: str, scores: UnitScores, cfg: PruneConfig,
                 data: TaskData) -> SweepRecord | None:
    """The memoised record for this point, or None if it was never evaluated in this process."""
    return _POINTS.get(_point_key(model, task, scores_key(scores), cfg, data_key(data)))


def evaluate_dense(model: MultiTaskModel, task: str, data: TaskData) -> SweepRecord:
    """The unpruned model's record (method "dense"), memoised."""
    key = (model.fingerprint(), task, "dense", data_key(data))
    hit = _POINTS.get(key)
    if hit is not None:
        return hit
    total = count_params(model, task)
    res = evaluate(model, task, data)
    rec = SweepRecord("dense", 0.0, 0.0, total, total, res.metric_name, float(res.metric))
    _POINTS.put(key, rec)
    return rec


def evaluate_point(model: MultiTaskModel, task: str, scores: UnitScores, cfg: PruneConfig,
                   data: TaskData, recovery=None, calib: TaskData | None = None) -> SweepRecord:
    """Masked evaluation at one point (memoised). The model itself is never changed; safe across threads.
    With `recovery` (a `recovery.RecoveryConfig` or level name, not "none"), the point's recovery is fitted on the
    task's calibration texts (`calib`, default `recovery.calibration_data`) first and applied."""
    cfg.validate()
    from .recovery import active_config

    rcfg = active_config(recovery)
    key = _point_key(model, task, scores_key(scores), cfg, data_key(data))
    if rcfg is not None:
        key = (*key, repr(rcfg), None if calib is None else data_key(calib))
    hit = _POINTS.get(key)
    if hit is not None:
        return hit
    masks = build_masks(scores, cfg, model.unit_shape())
    fitted = None
    if rcfg is not None:
        from .recovery import recover

        fitted = recover(model, task, masks, calib, rcfg)
    res = evaluate_masked(model, task, data, masks, recovery=fitted)
    rec = SweepRecord(scores.method if rcfg is None else f"{scores.method}+{rcfg.level}", float(cfg.ffn_sparsity),
                      float(cfg.head_sparsity), kept_params(model, masks, task), count_params(model, task), res.metric_name, float(res.metric))
    _POINTS.put(key, rec)
    return rec


# ----- curves ----------------------------------------------------------------------------------------------------
def curve_path(model: MultiTaskModel, task: str, scores: UnitScores, head_sparsity: float, allocation: str,
               grid: Sequence[float], data: TaskData):
    h = hashlib.sha256()
    h.update(json.dumps([model.fingerprint(), task, scores_key(scores), round(head_sparsity, 6), allocation,
                         [round(g, 6) for g in grid], data_key(data)]).encode())
    return cache_dir("curves") / f"{h.hexdigest()[:24]}.json"


def curve_from_scores(model: MultiTaskModel, task: str, scores: UnitScores, data: TaskData,
                      grid: Sequence[float] = DEFAULT_GRID, head_sparsity: float = 0.0, allocation: str = "global",
                      progress: Progress | None = None, use_cache: bool = True) -> Curve:
    """The curve of `scores` over the FFN-sparsity `grid` (disk-cached; points also fill the in-process cache)."""
    progress = progress or (lambda f, m: None)
    grid = sorted({float(g) for g in grid})
    if not grid:
        raise TPError("The sparsity grid is empty.")
    for g in grid:
        PruneConfig(g, head_sparsity, allocation).validate()
    path = curve_path(model, task, scores, head_sparsity, allocation, grid, data)
    dkey, skey = data_key(data), scores_key(scores)
    if use_cache and path.is_file():
        try:
            curve = Curve.from_dict(json.loads(path.read_text()))
            if [round(r.ffn_sparsity, 6) for r in curve.records] != [round(g, 6) for g in grid]:
                raise ValueError("cached curve does not cover the grid")
            touch(path)
            _POINTS.put((model.fingerprint(), task, "dense", dkey), curve.dense)
            for r in curve.records:
                _POINTS.put(_point_key(model, task, skey, PruneConfig(r.ffn_sparsity, r.head_sparsity, allocation),
                                       dkey), r)
            progress(1.0, f"{scores.method}: loaded cached curve")
            return curve
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # damaged entry: recompute, replace
            path.unlink(missing_ok=True)
    dense = evaluate_dense(model, task, data)
    records = []
    for i, g in enumerate(grid):
        records.append(evaluate_point(model, task, scores, PruneConfig(g, head_sparsity, allocation), data))
        progress((i + 1) / len(grid), f"{scores.method}: FFN sparsity {g:.0%} -> {records[-1].metric_name} "
                                      f"{records[-1].metric:.4f} ({i + 1}/{len(grid)})")
    curve = Curve(scores.method, float(head_sparsity), allocation, dense, records)
    if use_cache:
        atomic_write_text(path, json.dumps(curve.to_dict()))
        enforce_cache_cap(keep=path)
    return curve


def compute_curve(model: MultiTaskModel, task: str, method: str, attribution: AttributionConfig, data: TaskData,
                  grid: Sequence[float] = DEFAULT_GRID, head_sparsity: float = 0.0, allocation: str = "global",
                  progress: Progress | None = None, scoring_data: TaskData | None = None) -> Curve:
    """Attribute with `method` (disk-cached) and return its curve (disk-cached). Progress: 30% scores, 70% curve."""
    progress = progress or (lambda f, m: None)
    units = units_for(max(grid, default=0.0), head_sparsity, attribution.units)  # scores for every point of the grid
    cfg = replace(attribution, method=method, units=units)
    scores = attribute(model, task, cfg, data=scoring_data, progress=lambda f, m: progress(0.3 * f, m))
    return curve_from_scores(model, task, scores, data, grid, head_sparsity, allocation,
                             progress=lambda f, m: progress(0.3 + 0.7 * f, m))


# ----- smallest model keeping X% ---------------------------------------------------------------------------------
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


def find_smallest(model: MultiTaskModel, task: str, scores: UnitScores, data: TaskData, fraction: float,
                  grid: Sequence[float] = DEFAULT_GRID, head_sparsity: float = 0.0, allocation: str = "global",
                  refine_steps: int = 3, progress: Progress | None = None, recovery=None,
                  calib: TaskData | None = None) -> SweepRecord | None:
    """Smallest model keeping `fraction` of the dense metric: the best grid point, then `refine_steps` bisection
    steps towards the next (failing) grid point, each a real masked evaluation. None if no point qualifies.
    With `recovery` (a level or RecoveryConfig), every point is evaluated with its recovery fitted on `calib`."""
    if not 0 < fraction <= 1.5:
        raise TPError(f"The target fraction of the dense metric must be in (0, 1.5], got {fraction}.")
    progress = progress or (lambda f, m: None)
    if recovery is None:
        curve = curve_from_scores(model, task, scores, data, grid, head_sparsity, allocation,
                                  progress=lambda f, m: progress(0.7 * f, m))
        dense, records = curve.dense.metric, curve.records
    else:
        dense, records = evaluate_dense(model, task, data).metric, []
        grid = sorted({float(g) for g in grid})
        for i, g in enumerate(grid):
            records.append(evaluate_point(model, task, scores, PruneConfig(g, head_sparsity, allocation), data,
                                          recovery, calib))
            progress(0.7 * (i + 1) / len(grid), f"FFN sparsity {g:.0%} with recovery ({i + 1}/{len(grid)})")
    best = smallest_within(records, dense, fraction)
    if best is None:
        return None
    higher = [r.ffn_sparsity for r in records if r.ffn_sparsity > best.ffn_sparsity]
    if higher:
        lo, hi = best.ffn_sparsity, min(higher)
        for i in range(refine_steps):
            mid = round((lo + hi) / 2, 2)  # whole percent: what the app's slider can show
            if mid in (lo, hi):
                break
            rec = evaluate_point(model, task, scores, PruneConfig(mid, head_sparsity, allocation), data, recovery,
                                 calib)
            progress(0.7 + 0.3 * (i + 1) / refine_steps, f"refining at FFN sparsity {mid:.1%}")
            if keeps(rec, dense, fraction):
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
