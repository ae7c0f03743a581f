"""What the job engine runs: one function per kind of heavy work, plus the builders that turn a request into a
`engine.Job` with a content key. Worker functions take `progress(fraction, message)` first (it raises `JobCancelled`
when the job was cancelled) and only picklable, small arguments: a `ModelRef` (the worker loads and keeps the
model), a `DataRef` or an uploaded `TaskData`, frozen configs, and the results of other jobs (scores).

Pipeline order is kept: this module sits on top of every stage (model, data, attribution, masks, evaluation,
export) and nothing below imports it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .attribution import DATA_FREE, AttributionConfig, UnitScores, attribute
from .baselines import MajorityMargin, task_margin
from .data import TaskData
from .decoder import prompt_key
from .engine import Job, content_key
from .errors import TPError
from .evaluation import SweepRecord, compute_metric, masked_logits, metric_interval, predictions
from .masks import PruneConfig, build_masks
from .paths import atomic_write_text, cache_dir, enforce_cache_cap, touch
from .predstore import RECOVERY_KEY, PredictionStore, example_keys
from .pruning import count_params, kept_params
from .recovery import RecoveryConfig, active_config, calibration_data, recover
from .refs import DataRef, ModelRef, data_identity, get_data, get_model
from .refs import model_ref, register_model  # noqa: F401 (callers build their ModelRefs through work)

Progress = Callable[[float, str], None]


# ----- results ---------------------------------------------------------------------------------------------------
@dataclass
class PointResult:
    """One evaluated setting with its bootstrap 95% interval over the evaluation examples."""

    record: SweepRecord
    low: float
    high: float
    n: int
    recovery: dict | None = None  # with a recovery level: Recovery.summary() (level, samples, seconds, ...)
    baseline: dict | None = None  # dense classification points: baselines.MajorityMargin.to_dict()

    def to_dict(self) -> dict:
        out = {"record": self.record.to_dict(), "low": self.low, "high": self.high, "n": self.n}
        if self.recovery is not None:
            out["recovery"] = self.recovery
        if self.baseline is not None:
            out["baseline"] = self.baseline
        return out

    @staticmethod
    def from_dict(d: dict) -> PointResult:
        return PointResult(SweepRecord(**d["record"]), float(d["low"]), float(d["high"]), int(d["n"]),
                           d.get("recovery"), d.get("baseline"))

    def margin(self) -> MajorityMargin | None:
        """The dense point's majority baseline and margin (None for pruned points and regression tasks)."""
        return MajorityMargin.from_dict(self.baseline) if self.baseline else None


# ----- training-free recovery of a point (tp_core/recovery.py) ----------------------------------------------------


def calibration_ref(data, rcfg: RecoveryConfig, scoring_data=None):
    """Where a recovery's calibration texts come from: a seeded sample of `rcfg.samples` examples (labels unused)
    of the task's scoring split (train where there is one), or of the uploaded examples for uploaded data."""
    if isinstance(scoring_data, TaskData):
        return scoring_data.sample(rcfg.samples, rcfg.seed)
    if isinstance(data, TaskData):
        return data.sample(rcfg.samples, rcfg.seed)
    if isinstance(data, DataRef):
        from .data import get_task

        return DataRef(data.task, get_task(data.task).scoring_split, rcfg.samples, rcfg.seed)
    raise TPError("Recovery needs the task's examples to calibrate on.")


def _calibration(calib, data: TaskData, rcfg: RecoveryConfig) -> TaskData:
    return get_data(calib) if calib is not None else calibration_data(data.spec.name, rcfg.samples, rcfg.seed)


# ----- worker functions ------------------------------------------------------------------------------------------
def scores(progress: Progress, ref: ModelRef, head: str, cfg: AttributionConfig, data) -> UnitScores:
    model = get_model(ref)
    progress(0.0, f"{cfg.method} on {head}: starting")
    return attribute(model, head, cfg, data=get_data(data), progress=progress)


def _recovery_parts(rcfg: RecoveryConfig | None, calib) -> list:
    """Cache-key parts of a recovery: none for plain points (they keep their old cache keys)."""
    return [] if rcfg is None else [repr(rcfg), data_identity(calib)]


def _task_parts(ref: ModelRef, model, head: str) -> list:
    """Cache-key parts naming the model and the task: a decoder's task is its prompt (decoder.prompt_key, of the
    model that computes; none for encoders, which keep their old keys)."""
    prompt = prompt_key(model, head)
    return [ref.fingerprint, head] + ([prompt] if prompt else [])


def _point_cache(task_parts: list, scores_id: str, pcfg: PruneConfig | None, data,
                 rcfg: RecoveryConfig | None = None, calib=None) -> object:
    parts = [*task_parts, scores_id, repr(pcfg), data_identity(data), *_recovery_parts(rcfg, calib)]
    h = hashlib.sha256(json.dumps(parts).encode())
    return cache_dir("points") / f"{h.hexdigest()[:24]}.json"


def _evaluate(progress: Progress, model, head: str, data: TaskData, masks, label: str,
              recovery: Callable[[], object] | None = None,
              store: PredictionStore | None = None) -> tuple[float, float, float, dict | None, np.ndarray]:
    """Metric, bootstrap interval, the summary of the recovery the predictions came from (None without one) and
    the predictions of a setting on `data`; examples the setting's `store` already holds are not evaluated again.
    `recovery` is called (to fit it) only when some example needs the model."""
    keys = example_keys(data)
    known = store.load() if store is not None else {}
    summary = known.get(RECOVERY_KEY) if recovery is not None else None
    todo = [i for i, k in enumerate(keys) if k not in known]
    if recovery is not None and summary is None:
        todo = list(range(len(keys)))  # predictions without the recovery's summary: not from a finished point
    reused = len(keys) - len(todo)
    progress(0.0, f"{label}: evaluating {len(todo)} examples" + (f" ({reused} reused)" if reused else ""))
    if todo:
        fitted = recovery() if recovery is not None else None
        if fitted is not None:
            summary = fitted.summary()
        report = lambda f, m: progress(0.9 * f, f"{label}: {m}")  # noqa: E731
        part = data if not reused else data.subset(todo)
        done: dict = {}  # what the finished batches predicted (all of them at the end; kept if the job stops)

        def keep(idx, logits):
            for i, v in zip(idx, predictions(logits, data.spec.problem).tolist()):
                done[keys[todo[i]]] = v

        try:
            masked_logits(model, head, part, masks, fitted, batch_size=32, progress=report, on_batch=keep)
        except BaseException:
            if store is not None and done:  # a preempted point resumes from here instead of from scratch
                store.add(done if summary is None else {**done, RECOVERY_KEY: summary})
            raise
        fresh = done  # every batch's predictions
        known.update(fresh)
        if store is not None:
            store.add(fresh if summary is None else {**fresh, RECOVERY_KEY: summary})
    preds = np.asarray([known[k] for k in keys])
    metric = compute_metric(data.spec.metric, preds, data.labels)
    progress(0.9, f"{label}: bootstrap interval")
    lo, hi = metric_interval(data.spec.metric, preds, data.labels)
    return float(metric), lo, hi, summary, preds


def point(progress: Progress, ref: ModelRef, head: str, unit_scores: UnitScores | None, pcfg: PruneConfig | None,
          data, recovery: str | RecoveryConfig | None = None, calib=None) -> PointResult:
    """The metric at one setting (dense when `pcfg` is None) with its interval; cached on disk. With `recovery`
    (a level or RecoveryConfig, not "none"), the masks get that training-free recovery first, fitted on `calib`
    (a DataRef / TaskData; default: `calibration_ref`), and the record's method reads "<method>+<level>"."""
    from .curves import scores_key

    model = get_model(ref)
    data = get_data(data)
    rcfg = active_config(recovery) if pcfg is not None else None
    sid = "dense" if pcfg is None else scores_key(unit_scores)
    who = _task_parts(ref, model, head)
    path = _point_cache(who, sid, pcfg, data, rcfg, calib)
    if path.is_file():
        try:
            out = PointResult.from_dict(json.loads(path.read_text()))
            # a dense point cached before it carried its majority baseline is completed below (from its
            # predictions, which the prediction store still holds unless the cache cap evicted them)
            if not (pcfg is None and out.baseline is None and data.spec.problem != "regression"):
                touch(path)
                progress(1.0, "cached")
                return out
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
    total = count_params(model, head)
    store = PredictionStore([*who, sid, repr(pcfg), *_recovery_parts(rcfg, calib)])
    baseline = None
    if pcfg is None:
        metric, lo, hi, summary, preds = _evaluate(progress, model, head, data, None, "dense", store=store)
        rec = SweepRecord("dense", 0.0, 0.0, total, total, data.spec.metric, metric)
        found = task_margin(data.spec, preds, data.labels)
        baseline = found.to_dict() if found is not None else None
    else:
        pcfg.validate()
        masks = build_masks(unit_scores, pcfg, model.unit_shape())
        base = f"{unit_scores.method} at FFN {pcfg.ffn_sparsity:.0%}"

        def fit():  # the recovery, fitted only when some example needs the model (_evaluate)
            progress(0.0, f"{base}: recovery ({rcfg.level})")
            return recover(model, head, masks, _calibration(calib, data, rcfg), rcfg,
                           progress=lambda f, m: progress(0.5 * f, f"{base}: {m}"))

        if rcfg is None:
            metric, lo, hi, summary, _ = _evaluate(progress, model, head, data, masks, base, store=store)
        else:
            metric, lo, hi, summary, _ = _evaluate(lambda f, m: progress(0.5 + 0.5 * f, m), model, head, data, masks,
                                                f"{base} + {rcfg.level}", recovery=fit, store=store)
        method = unit_scores.method + (f"+{rcfg.level}" if rcfg is not None else "")
        rec = SweepRecord(method, float(pcfg.ffn_sparsity), float(pcfg.head_sparsity),
                          kept_params(model, masks, head), total, data.spec.metric, metric)
    out = PointResult(rec, lo, hi, len(data), summary, baseline)
    atomic_write_text(path, json.dumps(out.to_dict()))
    enforce_cache_cap(keep=path)  # after both writes (the prediction store's file is the newest entry after it)
    return out


def cached_dense(ref: ModelRef, model, head: str, data) -> PointResult | None:
    """The dense point of `head` on `data` when the cache already holds it; nothing is computed (`model` is the
    caller's copy of `ref`'s model, for a causal LM's prompt key)."""
    path = _point_cache(_task_parts(ref, model, head), "dense", None, get_data(data))
    try:
        return PointResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def search(progress: Progress, ref: ModelRef, head: str, unit_scores: UnitScores, data, fraction: float,
           grid: tuple, head_sparsity: float, allocation: str, recovery: RecoveryConfig | None = None):
    """The smallest model keeping `fraction` of the dense metric (curves.find_smallest; None if none does), each
    point evaluated as a curve point (`point`, with its caches: the curves' points are reused and the search's
    are reused by the curves), with `recovery` fitted when given."""
    from .curves import find_smallest

    calib = None if recovery is None else calibration_ref(data, recovery)  # as the curves' points
    done = [0.0]  # the search's progress so far: a point's own reports keep it (and still stop a cancelled job)

    def report(fraction: float, message: str) -> None:
        done[0] = fraction
        progress(fraction, message)

    def quiet(_: float, message: str) -> None:
        progress(done[0], message)

    dense = point(quiet, ref, head, None, None, data).record.metric
    return find_smallest(lambda pcfg: point(quiet, ref, head, unit_scores, pcfg, data, recovery, calib).record,
                         dense, fraction, grid, head_sparsity, allocation, progress=report)


def budget(progress: Progress, ref: ModelRef, head: str, unit_scores: UnitScores, kind: str, value: float,
           seq_len: int, batch_size: int, allocation: str, head_grid: tuple | None = None,
           ffn_step: float | None = None, ffn_max: float = 0.999999, data=None,
           recovery: RecoveryConfig | None = None, prune_heads: bool = True, calib=None):
    """The FFN/head split meeting a FLOPs budget (`kind` "flops", `value` a fraction of dense) or a latency budget
    measured on this worker (`kind` "latency", `value` ms per batch of `batch_size` x `seq_len` tokens), on the
    given slider grid (tp_core/budget.py): the candidate with the best metric on `data` (recovered first with
    `recovery`, fitted on `calib`, default `calibration_ref`), or with the most score mass when `data` is None.
    `prune_heads` False keeps every head (FFN neurons only)."""
    from .budget import metric_chooser, plan_flops, plan_latency

    model = get_model(ref)
    choose = None
    if data is not None:
        if recovery is not None:  # as the curves' points
            calib = get_data(calib if calib is not None else calibration_ref(data, recovery))
        data = get_data(data)
        # a latency plan reports its own progress (its tries); a FLOPs plan's time goes to the evaluations
        choose = metric_chooser(model, head, data, recovery, calib,
                                progress=(lambda f, m: progress(0.1 + 0.85 * f, m)) if kind == "flops" else None)
    grid = dict(head_grid=head_grid, ffn_step=ffn_step, ffn_max=ffn_max, choose=choose, prune_heads=prune_heads)
    if kind == "flops":
        progress(0.05, f"planning {value:.0%} of the dense FLOPs")
        return plan_flops(model, unit_scores, value, seq_len, allocation, **grid)
    return plan_latency(model, unit_scores, head, value, seq_len, batch_size, allocation, progress=progress, **grid)


def ablation(progress: Progress, ref: ModelRef, head: str, data, unit) -> dict:
    from .inspector import unit_ablation

    progress(0.1, f"removing {unit.kind} {unit.layer}.{unit.index}")
    return unit_ablation(get_model(ref), head, get_data(data), unit)


def top_activating(progress: Progress, ref: ModelRef, head: str, data, unit, k: int = 5) -> list:
    from .inspector import top_activating as top

    progress(0.1, "running the model on the examples")
    return top(get_model(ref), head, get_data(data), unit, k=k)


def export(progress: Progress, ref: ModelRef, head: str, unit_scores: UnitScores, pcfg: PruneConfig, out: str,
           data, overwrite: bool, command: str, recovery: str | RecoveryConfig | None = None,
           calib=None) -> dict:
    """Export, then reload the folder in this worker and re-evaluate it (the verification). With `recovery` (a
    level or RecoveryConfig, not "none"), that recovery is fitted on `calib` (default: the task's scoring split),
    folded into the exported weights and stored in the mask file."""
    from .evaluation import evaluate
    from .export import export_pruned, load_export

    model = get_model(ref)
    data = get_data(data)
    rcfg, fitted = active_config(recovery), None
    if rcfg is not None:
        progress(0.02, f"fitting the recovery ({rcfg.level})")
        masks = build_masks(unit_scores, pcfg, model.unit_shape())
        fitted = recover(model, head, masks, _calibration(calib, data, rcfg), rcfg,
                         progress=lambda f, m: progress(0.02 + 0.08 * f, m))
    progress(0.1, "pruning and writing the folder")
    res = export_pruned(model, head, unit_scores, pcfg, out, eval_data=data, overwrite=overwrite, command=command,
                        recovery=fitted)
    progress(0.7, "reloading the export")
    reloaded = load_export(res.path)
    check = evaluate(reloaded, head, data)
    progress(1.0, "verified")
    return {**res.to_dict(), "reloaded_metric": check.metric, "n": len(data),
            "reloaded_params": sum(p.numel() for p in reloaded.encoder.parameters())
            + sum(p.numel() for p in reloaded.heads.parameters())}


def recovery_fit(progress: Progress, ref: ModelRef, head: str, unit_scores: UnitScores, pcfg: PruneConfig,
                 rcfg: RecoveryConfig, calib) -> object:
    """The recovery of `rcfg` for the masks of `pcfg`, fitted on `calib`: an export folds it in as it is."""
    model = get_model(ref)
    return recover(model, head, build_masks(unit_scores, pcfg, model.unit_shape()), get_data(calib), rcfg, progress)


def vocab_estimate(progress: Progress, ref: ModelRef, head: str, min_count: int) -> dict:
    """How many tokens `--vocab task` keeps for `head` and how many embedding parameters it removes (counted on the
    task's train texts; nothing is built), with the plan itself (`plan`), which the Export page's export takes."""
    from .vocab import embedding_params_saved, plan_for_task

    model = get_model(ref)
    progress(0.1, f"counting the tokens of {head}'s train texts")
    plan = plan_for_task(model, head, min_count)
    return {"kept_tokens": plan.size, "original_tokens": plan.original_size, "min_count": int(min_count),
            "embedding_params_saved": embedding_params_saved(model, plan), "plan": plan}  # an export reuses it


def build_demo(progress: Progress, quick: bool) -> str:
    from .demo import build_demo as build

    return str(build(quick=quick, progress=progress))


def probe(progress: Progress, seconds: float, fail: str = "", steps: int = 20) -> float:
    """A diagnostic job: waits `seconds` in `steps` steps, reporting progress (so it can be cancelled), then
    returns `seconds`, or fails with the message `fail`. Checks an engine end to end without a model."""
    import time

    for i in range(steps):
        time.sleep(seconds / steps)
        progress((i + 1) / steps, f"step {i + 1}/{steps}")
    if fail:
        raise TPError(fail)
    return seconds


def probe_job(seconds: float, fail: str = "", tag: str = "", preemptible: bool = False) -> Job:
    return Job("probe", probe, (float(seconds), fail), content_key("probe", seconds, fail, tag),
               f"probe {tag or seconds}", units=float(seconds), rate_key="probe", preemptible=preemptible)


# ----- job builders (client side) ---------------------------------------------------------------------------------
def _layers(model) -> int:
    return max(1, getattr(model, "num_layers", 6))


def rate_class(model) -> str:
    """A suffix of a causal LM's rate keys naming its shape ("" for encoders, whose keys stay as they were): the
    time estimates of its jobs use its own measured speed, not an encoder's."""
    if getattr(model, "kind", None) != "causal_lm":
        return ""
    return f"@{model.config.model_type}-{model.num_layers}x{model.unit_shape().hidden}"


def _rate_of(scores: Job | None) -> str:
    """The rate class of the model a scores job is for (its rate key's suffix)."""
    return "" if scores is None or "@" not in scores.rate_key else "@" + scores.rate_key.split("@", 1)[1]


def scores_job(model, ref: ModelRef, head: str, cfg: AttributionConfig, data, task_label: str | None = None) -> Job:
    cfg.validate()
    if cfg.method in DATA_FREE:  # data-free scores depend on the weights (and the seed) only
        key = content_key("scores", ref, head, cfg.method, cfg.seed if cfg.method == "random" else 0, cfg.units)
    else:
        key = content_key("scores", ref, head, cfg, data_identity(data))
    steps = cfg.steps if cfg.method == "ig" else 1
    units = 0.0 if cfg.method in DATA_FREE else float(cfg.samples * steps * _layers(model))
    return Job("scores", scores, (ref, head, cfg, data), key,
               f"{cfg.method} scores · {task_label or head} · N={cfg.samples}" + (f", {cfg.steps} steps"
                                                                                if cfg.method == "ig" else ""),
               units=units, rate_key=f"scores:{cfg.method}{rate_class(model)}")


def point_job(model, ref: ModelRef, head: str, scores: Job | None, pcfg: PruneConfig | None, data, n: int,
              known: UnitScores | None = None, task_label: str | None = None,
              recovery: str | RecoveryConfig | None = None, calib=None) -> Job:
    """A curve/slider point (`pcfg` None: the dense model), keyed by how its scores are made (`scores`, the
    scores job); the argument is the scores themselves when `known`, else the scores job (a Dask dependency).
    With `recovery` (not "none"; ignored for the dense point) the point is recovered first, fitted on `calib`
    (default `calibration_ref(data, ...)`); the level and the calibration data are part of the key."""
    rcfg = active_config(recovery) if pcfg is not None else None
    extra: tuple = ()
    if rcfg is not None:
        calib = calib if calib is not None else calibration_ref(data, rcfg)
        extra = (rcfg, data_identity(calib))
    key = content_key("point", ref, head, None if scores is None else scores.key, pcfg, data_identity(data), *extra)
    method = "" if scores is None else scores.args[2].method
    what = "dense" if pcfg is None else f"{method} FFN {pcfg.ffn_sparsity:.0%} heads {pcfg.head_sparsity:.0%}"
    if rcfg is not None:
        what += f" + {rcfg.level}"
    arg = known if known is not None else scores
    args = (ref, head, arg, pcfg, data) + (() if rcfg is None else (rcfg, calib))
    units = float(n) + (3.0 * rcfg.samples if rcfg is not None else 0.0)  # recovery: ~3 passes over its texts
    return Job("point", point, args, key, f"point · {task_label or head} · {what} · {n} ex.", units=units,
               rate_key=f"point{rate_class(model)}", preemptible=True)


def search_job(ref: ModelRef, head: str, scores: Job, known: UnitScores | None, data, fraction: float,
               grid: tuple, head_sparsity: float, allocation: str, n: int,
               recovery: str | RecoveryConfig | None = None) -> Job:
    """"Smallest model keeping X%": with `recovery` (a level, not "none") every evaluated point is recovered."""
    rcfg = active_config(recovery)
    key = content_key("search", ref, head, scores.key, data_identity(data), round(fraction, 6), tuple(grid),
                      round(head_sparsity, 6), allocation, *(() if rcfg is None else (rcfg,)))
    return Job("search", search, (ref, head, known if known is not None else scores, data, fraction, tuple(grid),
                                    head_sparsity, allocation, rcfg), key,
               f"smallest model keeping {fraction:.1%}" + ("" if rcfg is None else f" + {rcfg.level}") + f" · {head}",
               units=float(n * (len(grid) + 3)), rate_key=f"point{_rate_of(scores)}")


def budget_job(ref: ModelRef, head: str, scores: Job, known: UnitScores | None, kind: str, value: float,
               seq_len: int, batch_size: int, allocation: str, head_grid: tuple | None = None,
               ffn_step: float | None = None, ffn_max: float = 0.999999, data=None, n: int = 0,
               recovery: str | RecoveryConfig | None = None, prune_heads: bool = True, calib=None) -> Job:
    """A budget target as a job (`budget` above): each candidate split is evaluated on `data` (`n` examples;
    None: chosen by score mass), recovered first with `recovery` fitted on `calib`. Its budget numbers are
    checked here, before it is queued."""
    from .budget import HEAD_GRID, LATENCY_TRIES, check_budget

    if kind not in ("flops", "latency"):
        raise TPError(f"A budget is 'flops' or 'latency', got {kind!r}.")
    check_budget(value if kind == "flops" else None, value if kind == "latency" else None, seq_len, batch_size)
    grid = tuple(head_grid) if head_grid is not None else None
    rcfg = active_config(recovery) if data is not None else None
    key = content_key("budget", ref, head, scores.key, kind, round(float(value), 6), int(seq_len), int(batch_size),
                      allocation, grid, ffn_step, ffn_max, data_identity(data), *(() if rcfg is None else (rcfg,)),
                      *(() if prune_heads else ("ffn only",)), *(() if calib is None else (data_identity(calib),)))
    what = f"{value:.0%} of the FLOPs" if kind == "flops" else f"{value:g} ms at {batch_size} x {seq_len} tokens"
    tries = 1 if kind == "flops" else LATENCY_TRIES
    units = 1.0 + tries * len(grid or HEAD_GRID) * (n + (3.0 * rcfg.samples if rcfg else 0.0))
    return Job("budget", budget, (ref, head, known if known is not None else scores, kind, float(value),
                                    int(seq_len), int(batch_size), allocation, grid, ffn_step, ffn_max, data, rcfg,
                                    bool(prune_heads), calib),
               key, f"budget {what}" + ("" if rcfg is None else f" + {rcfg.level}") + f" · {head}", units=units,
               rate_key=f"point{_rate_of(scores)}")


def ablation_job(ref: ModelRef, head: str, data, unit, n: int) -> Job:
    return Job("ablation", ablation, (ref, head, data, unit), content_key("ablation", ref, head, unit,
                                                                            data_identity(data)),
               f"ablate {unit.kind} {unit.layer}.{unit.index} · {head}", units=float(2 * n), rate_key="point")


def top_job(ref: ModelRef, head: str, data, unit, n: int, k: int = 5) -> Job:
    return Job("top_activating", top_activating, (ref, head, data, unit, k),
               content_key("top", ref, head, unit, data_identity(data), k),
               f"top examples {unit.kind} {unit.layer}.{unit.index} · {head}", units=float(n), rate_key="point")


def export_job(ref: ModelRef, head: str, scores: Job | UnitScores, pcfg: PruneConfig, out: str, data,
               overwrite: bool, command: str, n: int, recovery: str | RecoveryConfig | None = None,
               calib=None) -> Job:
    """An export job; `recovery` (a level name or RecoveryConfig; None / "none" = plain masks) is fitted in the
    worker on `calib` (default: a seeded sample of the task's scoring split) and folded into the export."""
    import time

    rcfg = active_config(recovery)
    extra: tuple = ()
    if rcfg is not None:
        extra = (rcfg, calib if calib is not None else calibration_ref(data, rcfg))
    # an export writes a folder: each request is its own job (never shared), even with identical settings
    key = content_key("export", ref, head, pcfg, out, time.time(), *extra[:1])
    return Job("export", export, (ref, head, scores, pcfg, out, data, overwrite, command) + extra, key,
               f"export {out.rsplit('/', 1)[-1]}" + (f" + {rcfg.level}" if rcfg else ""),
               units=float(3 * n) + (3.0 * rcfg.samples if rcfg else 0.0), rate_key="point")


def recovery_job(ref: ModelRef, head: str, scores: Job, known: UnitScores | None, pcfg: PruneConfig, data,
                 recovery) -> Job:
    """The recovery an export at `pcfg` folds in, on a point's calibration texts: fitted before the click."""
    rcfg = active_config(recovery)
    calib = calibration_ref(data, rcfg)  # the texts a point's recovery at this setting is fitted on
    return Job("recovery", recovery_fit, (ref, head, known if known is not None else scores, pcfg, rcfg, calib),
               content_key("recovery", ref, head, scores.key, pcfg, rcfg, data_identity(calib)),
               f"{rcfg.level} recovery · {head}", units=3.0 * rcfg.samples, rate_key=f"point{_rate_of(scores)}")


def vocab_estimate_job(ref: ModelRef, head: str, min_count: int) -> Job:
    return Job("vocab", vocab_estimate, (ref, head, int(min_count)),
               content_key("vocab_estimate", ref, head, int(min_count)),
               f"task vocabulary · {head} · min count {min_count}", units=1.0, rate_key="vocab")


def prepare_llm(progress: Progress, spec: str) -> str:
    """Make `spec` (`smollm2` or a .gguf file) ready: dequantize it once into TP_HOME's fp32 cache (checked first;
    see llm_source), then load it into this process's model cache (`get_model`), where an in-process app's pages
    and workers find it. Returns the folder."""
    from .llm_source import EMBEDDED, converted_folder, embedded_gguf, resolve_causal_lm

    path = embedded_gguf(spec) if spec in EMBEDDED else spec
    if converted_folder(path) is None:
        progress(0.0, f"dequantizing {spec} to float32 (once; cached afterwards)")
    folder = resolve_causal_lm(spec)
    progress(0.7, f"loading {spec}'s float32 weights")
    get_model(ModelRef(spec)).fingerprint()  # the fingerprint too: every job key of the model needs it
    return str(folder)


def prepare_llm_job(spec: str, size_bytes: int, convert: bool) -> Job:
    """Getting a GGUF model ready (`prepare_llm`) as a job: `convert` when it is not dequantized yet (its time
    estimate then counts the conversion too); `size_bytes` of the GGUF file, for the estimate."""
    what = "dequantize and load" if convert else "load"
    return Job("prepare_llm", prepare_llm, (spec,), content_key("prepare_llm", spec, convert),
               f"{what} {spec.rsplit('/', 1)[-1]}", units=max(1.0, size_bytes / 1e6),
               rate_key=f"prepare_llm:{'convert' if convert else 'load'}")


def build_demo_job(quick: bool) -> Job:
    return Job("build_demo", build_demo, (quick,), content_key("build_demo", quick),
               f"build the {'quick ' if quick else ''}demo model", units=1.0, rate_key=f"build_demo:{quick}")
