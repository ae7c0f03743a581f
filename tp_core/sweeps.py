"""A sweep - every method x FFN sparsity x head sparsity, plus the dense model - as jobs on the engine. The CLI's
`sweep` (and any script) evaluates its points through the same path as the app's curves: `work.scores` and
`work.point` jobs, with their keys and their on-disk caches (`scores/`, `points/`, `preds/`), so a point evaluated
once, from either side, is not evaluated again. A point reached iteratively (`n_iters` > 1) is one
`iterative_point` job. Runs on the process's engine: an embedded cluster, or the one `TP_SCHEDULER` names.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Callable, Sequence

from .attribution import AttributionConfig
from .engine import Engine, Job, content_key
from .errors import TPError
from .evaluation import SweepRecord, evaluate_masked
from .masks import PruneConfig, units_for
from .pruning import count_params, kept_params
from .recovery import RecoveryConfig, active_config, calibration_data, recover
from .work import ModelRef, data_identity, get_data, get_model, point_job, scores_job

Progress = Callable[[float, str], None]
SWEEP_PRIORITY = 70  # a user's own request: above curve points and warm-up work on a shared cluster


@dataclass(frozen=True)
class SweepStep:
    """One job of a sweep and the name its record(s) carry when it differs from the job's own (a point at 0%
    sparsity is the dense point, listed as "<method>" or, in an iterative sweep, "<method>/iter<n>")."""

    job: Job
    method: str | None = None


def iterative_point(progress: Progress, ref: ModelRef, head: str, cfg: AttributionConfig, pcfg: PruneConfig,
                    data, n_iters: int, rcfg: RecoveryConfig | None, calib) -> list[SweepRecord]:
    """The records of one setting reached in `n_iters` pruning steps (`iterative.iterative_masks`, re-scoring the
    surviving units at each step): "<method>/iter<n>" and, with `rcfg`, "<method>/iter<n>+<level>" (the recovery
    fitted after the last step on `calib`)."""
    from .iterative import iterative_masks

    model, data, calib = get_model(ref), get_data(data), get_data(calib)
    progress(0.0, f"{cfg.method} at FFN {pcfg.ffn_sparsity:.0%}: {n_iters} pruning steps")
    it = iterative_masks(model, head, cfg, pcfg, n_iters, recovery=rcfg, calib=calib,
                         progress=lambda f, m: progress(0.8 * f, m))
    name, total, kept = f"{cfg.method}/iter{n_iters}", count_params(model, head), kept_params(model, it.masks, head)
    res = evaluate_masked(model, head, data, it.masks)
    out = [SweepRecord(name, pcfg.ffn_sparsity, pcfg.head_sparsity, kept, total, res.metric_name, res.metric)]
    if rcfg is not None:
        progress(0.9, f"{name} + {rcfg.level}")
        fitted = it.recovery if it.recovery is not None else recover(model, head, it.masks, calib, rcfg)
        res = evaluate_masked(model, head, data, it.masks, recovery=fitted)
        out.append(SweepRecord(f"{name}+{rcfg.level}", pcfg.ffn_sparsity, pcfg.head_sparsity, kept, total,
                               res.metric_name, res.metric))
    return out


def iterative_job(ref: ModelRef, head: str, cfg: AttributionConfig, pcfg: PruneConfig, data, n: int, n_iters: int,
                  rcfg: RecoveryConfig | None, calib) -> Job:
    key = content_key("iterative", ref, head, cfg, pcfg, data_identity(data), n_iters, rcfg, data_identity(calib))
    what = f"{cfg.method}/iter{n_iters} FFN {pcfg.ffn_sparsity:.0%} heads {pcfg.head_sparsity:.0%}"
    return Job("iterative", iterative_point, (ref, head, cfg, pcfg, data, n_iters, rcfg, calib), key,
               f"point · {head} · {what}" + ("" if rcfg is None else f" + {rcfg.level}") + f" · {n} ex.",
               units=float(n * (2 if rcfg is not None else 1) + n_iters * cfg.samples), rate_key="point")


def sweep_jobs(model, ref: ModelRef, task: str, methods: Sequence[str], ffn_sparsities: Sequence[float],
               head_sparsities: Sequence[float] = (0.0,), allocation: str = "global",
               attribution: AttributionConfig | None = None, data=None, n: int = 0,
               recovery: str | RecoveryConfig | None = None, n_iters: int = 1) -> list[SweepStep]:
    """The jobs of a sweep, in the order of its records: the dense model, then for each method every (FFN, head)
    sparsity, each pruned point followed by its recovered twin with `recovery` (a level name or RecoveryConfig,
    not "none"; fitted on a seeded sample of the task's train split). `data` is a `work.DataRef` or a `TaskData`
    of `n` examples."""
    attribution = attribution or AttributionConfig()
    grid = [(f, h) for f in ffn_sparsities for h in head_sparsities]
    for f, h in grid:
        PruneConfig(f, h, allocation).validate()
    units = units_for(max(ffn_sparsities), max(head_sparsities))
    rcfg = active_config(recovery)
    calib = None if rcfg is None else calibration_data(task, rcfg.samples, rcfg.seed)
    if not isinstance(n_iters, int) or n_iters < 1:
        raise TPError(f"The number of pruning iterations must be a positive integer, got {n_iters!r}.")
    steps = [SweepStep(point_job(model, ref, task, None, None, data, n))]
    for method in methods:
        mcfg = replace(attribution, method=method, units=units)
        sjob = scores_job(model, ref, task, mcfg, None)
        for f, h in grid:
            pruned = f > 0 or h > 0
            if n_iters > 1 and pruned:
                steps.append(SweepStep(iterative_job(ref, task, mcfg, PruneConfig(f, h, allocation), data, n,
                                                     n_iters, rcfg, calib)))
                continue
            if not pruned:  # nothing removed: the dense point, listed under the method (as the app's curves do)
                steps.append(SweepStep(steps[0].job, method if n_iters == 1 else f"{method}/iter{n_iters}"))
                continue
            steps.append(SweepStep(point_job(model, ref, task, sjob, PruneConfig(f, h, allocation), data, n)))
            if rcfg is not None:
                steps.append(SweepStep(point_job(model, ref, task, sjob, PruneConfig(f, h, allocation), data, n,
                                                 recovery=rcfg, calib=calib)))
    return steps


def run_sweep(engine: Engine, model, ref: ModelRef, task: str, methods: Sequence[str],
              ffn_sparsities: Sequence[float], head_sparsities: Sequence[float] = (0.0,), allocation: str = "global",
              attribution: AttributionConfig | None = None, data=None, n: int = 0, progress: Progress | None = None,
              recovery: str | RecoveryConfig | None = None, n_iters: int = 1,
              owner: str = "sweep") -> list[SweepRecord]:
    """Run a sweep's jobs (`sweep_jobs`) on `engine` and return its records: "dense" first, then each method's
    points ("<method>", "<method>+<level>" with `recovery`, "<method>/iter<n>" with `n_iters` > 1). Raises
    JobFailed with the first failed job's message."""
    steps = sweep_jobs(model, ref, task, methods, ffn_sparsities, head_sparsities, allocation, attribution, data, n,
                       recovery, n_iters)
    results = engine.run_many([s.job for s in steps], owner=owner, priority=SWEEP_PRIORITY, progress=progress)
    records: list[SweepRecord] = []
    for step, res in zip(steps, results):
        if step.job.kind == "iterative":
            records.extend(res)
        else:
            records.append(res.record if step.method is None else replace(res.record, method=step.method))
    return records
