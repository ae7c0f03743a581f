"""The application's scheduling policy: which attribution settings the app and the warm start use, how urgent each
kind of job is (`PRIORITY`), and the progressive curve plan (`curve_plan`) that orders a metric-vs-size view's jobs
so the most useful point lands first. `engine.Engine` runs higher priorities first; the pages, the app's helpers and
`serve.warm_start` take every priority from `PRIORITY` by name.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .attribution import AttributionConfig
from .engine import Job
from .masks import PruneConfig, units_for
from .recovery import RecoveryConfig
from .recovery import active_config
from .work import ModelRef, calibration_ref, point_job, scores_job

# The app's (and the warm start's) attribution settings: AttributionConfig's own defaults, the measured ones every
# entry point shares (tp_core/defaults.py), so the app, the command line and the API score alike.
APP_ATTRIBUTION = AttributionConfig()


def session_attribution(settings) -> AttributionConfig:
    """A new session's attribution settings: APP_ATTRIBUTION with the samples and steps the app's settings
    (TP_APP_ATTR_SAMPLES / _STEPS) set, so the warm start computes the scores the sessions ask for."""
    return replace(APP_ATTRIBUTION, samples=settings.attr_samples or APP_ATTRIBUTION.samples,
                   steps=settings.attr_steps or APP_ATTRIBUTION.steps)

# How urgent each kind of job is (higher runs first). A moved slider's point and the dense reference come first,
# then what a button asked for and waits on, then scores, then the curves' coarse and fine passes, then work nobody
# waits for; the warm start lies below everything (serve.py lowers it further per task).
PRIORITY = {
    "slider": 100,  # the slider's own point (curve_plan)
    "dense": 100,  # the dense reference of a curve (curve_plan)
    "search": 95,  # Prune page: "Find smallest model"
    "budget": 95,  # Prune page: "Find the split" for a FLOPs / latency budget
    "inspect": 80,  # Heatmaps page: one unit's ablation and top-activating examples
    "vocab": 75,  # Export page: the task-vocabulary count its size estimate needs
    "user": 70,  # Model page: the current task's dense metric
    "build": 70,  # Model page: building the demo model
    "export_files": 90,  # Export page: "Export and verify" writing the files (urgent: curve points give way)
    "export": 70,  # Export page: the export's checks after its files; the deploy preset's recovery fit
    "scores": 60,  # attribution scores (pages' buttons; a curve's scores)
    "coarse": 50,  # a curve's coarse pass (COARSE_GRID on the subset)
    "fine": 20,  # a curve's full grid on all examples
    "background": 10,  # Model page: the other tasks' dense metrics
    "warm": -1000,  # serve's warm start
}
# The coarse pass's grid: every method's first points, on the subset.
COARSE_GRID: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
# A causal LM's first estimate costs about what the demo encoder's does: its 32 sst2 examples x their ~25 tokens x
# its ~10.6M transformer-layer parameters, in token x parameter products (each about 2 FLOPs), and never fewer than
# FIRST_MIN_EXAMPLES examples (its bootstrap interval says how rough that first estimate is).
FIRST_PASS_COST = 32 * 25 * 10.6e6
FIRST_MIN_EXAMPLES = 8


def first_examples(model, default: int, own_tokens: float) -> int:
    """How many examples the slider's first estimate evaluates: `default` (TP_APP_SLIDER_FIRST_EXAMPLES) for an
    encoder; for a causal LM, as many as fit FIRST_PASS_COST at `own_tokens` tokens computed per example (its
    prompt's own tokens: the demonstrations every prompt shares run once per batch, decoder.shared_prefix_logits)
    times its transformer layers' parameters, at least FIRST_MIN_EXAMPLES and at most `default`."""
    if getattr(model, "kind", None) != "causal_lm" or default <= 0:
        return default
    layers = sum(p.numel() for p in model.adapter.layers(model.base).parameters())
    fit = int(FIRST_PASS_COST // max(1.0, own_tokens * layers))
    return max(min(FIRST_MIN_EXAMPLES, default), min(default, fit))


@dataclass(frozen=True)
class Planned:
    """One job of a curve plan: which line (`method`, None for dense), which sparsity, which pass (`stage` 0 =
    coarse subset, 1 = all examples) and at which priority."""

    priority: int
    method: str | None
    sparsity: float
    stage: int
    job: Job


def curve_plan(model, ref: ModelRef, head: str, cfg: AttributionConfig, methods: list[str], head_sparsity: float,
               allocation: str, stages: list[tuple[object, int]], grid, known: dict | None = None,
               slider: float | None = None, scoring_data=None, task_label: str | None = None,
               offset: int = 0, recovery: str | RecoveryConfig | None = None,
               slider_first: tuple[object, int] | None = None,
               ) -> tuple[list[Planned], dict[str, Job], list[Job]]:
    """Every job a progressive metric-vs-size view needs, most urgent first: the dense reference and the slider's
    own point (coarse subset, then all examples), every method on a coarse grid on the subset, then the full grid on
    all examples. `stages` = [(data, n)] from the small subset to all examples. Returns (plan, scores jobs by
    method, slider jobs from the quickest pass to the last). With `recovery` (a level, not "none"), every pruned
    point also gets a recovered twin (`recovered_twins`), line "<method>+<level>".
    `slider_first` = (data, n), a subset smaller than the first stage's: the slider's point is first evaluated on
    it, above everything else, so a moved slider shows a first estimate (with its wider interval) at once even
    when many sessions move theirs together; its recovered twin, if any, starts at the first stage."""
    known = known or {}
    sjobs = {}
    units = units_for(slider or 0.0, head_sparsity, cfg.units)  # scores that cover the slider's point
    for m in methods:
        sjobs[m] = scores_job(model, ref, head, replace(cfg, method=m, units=units), scoring_data,
                              task_label=task_label)

    def pj(m, sparsity, data, n):
        if m is None or (sparsity == 0 and head_sparsity == 0):
            return point_job(model, ref, head, None, None, data, n, task_label=task_label)
        return point_job(model, ref, head, sjobs[m], PruneConfig(sparsity, head_sparsity, allocation), data, n,
                         known=known.get(m), task_label=task_label)

    plan, slider_jobs = [], []
    last = len(stages) - 1
    for si, (data, n) in enumerate(stages):
        plan.append(Planned(PRIORITY["dense"] - 10 * si + offset, None, 0.0, si, pj(None, 0.0, data, n)))
        if slider is not None and methods:
            slider_jobs.append(pj(methods[0], slider, data, n))
            plan.append(Planned(PRIORITY["slider"] - 1 - 10 * si + offset, methods[0], slider, si, slider_jobs[-1]))
    for mi, m in enumerate(methods):
        if not any(p.job.key == sjobs[m].key for p in plan) and known.get(m) is None:
            plan.append(Planned(PRIORITY["scores"] - mi + offset, m, -1.0, -1, sjobs[m]))
        for g in COARSE_GRID:
            plan.append(Planned(PRIORITY["coarse"] - mi + offset, m, g, 0, pj(m, g, *stages[0])))
        if last > 0:
            for g in grid:
                if g > 0 or head_sparsity > 0:
                    plan.append(Planned(PRIORITY["fine"] - mi + offset, m, g, last, pj(m, g, *stages[last])))
    rcfg = active_config(recovery)
    if rcfg is not None:
        plan += recovered_twins(model, plan, sjobs, slider_jobs, rcfg, known, scoring_data, task_label)
    if slider_first is not None and slider is not None and methods and slider_first[1] < stages[0][1]:
        quick = pj(methods[0], slider, *slider_first)
        # the dense model on the same examples (once per task), so the first estimate is compared like with like;
        # both above the first stage's dense and slider points, so they take the workers' threads first
        plan.append(Planned(PRIORITY["dense"] + 2 + offset, None, 0.0, 0, pj(None, 0.0, *slider_first)))
        plan.append(Planned(PRIORITY["slider"] + 1 + offset, methods[0], slider, 0, quick))
        slider_jobs.insert(0, quick)
    # Submitted in this order: a free worker thread takes the first job that reaches the scheduler, whatever the
    # priorities of the jobs submitted after it, so the most urgent ones must be sent first.
    plan.sort(key=lambda p: -p.priority)
    return plan, sjobs, slider_jobs


def recovered_method(method: str, recovery: str | RecoveryConfig) -> str:
    """The line name of `method`'s recovered points ("ig+lstsq")."""
    return f"{method}+{recovery if isinstance(recovery, str) else recovery.level}"


def recovered_twins(model, plan: list[Planned], sjobs: dict, slider_jobs: list, rcfg: RecoveryConfig,
                    known: dict, scoring_data=None, task_label: str | None = None) -> list[Planned]:
    """For every pruned point of a curve plan, the same point with `rcfg`'s recovery (line "<method>+<level>"):
    the slider's twin right after the slider's own point, the others a few priorities below their plain point."""
    slider_keys = {j.key for j in slider_jobs}
    twins, seen = [], set()
    for p in plan:
        if p.stage < 0 or p.method is None or p.method not in sjobs or p.job.kind != "point":
            continue
        ref, head, _, pcfg, data = p.job.args[:5]
        if pcfg is None:
            continue
        job = point_job(model, ref, head, sjobs[p.method], pcfg, data, int(p.job.units), known=known.get(p.method),
                        task_label=task_label, recovery=rcfg,
                        calib=calibration_ref(data, rcfg, scoring_data))
        if job.key in seen:
            continue
        seen.add(job.key)
        drop = 1 if p.job.key in slider_keys else 5
        twins.append(Planned(p.priority - drop, recovered_method(p.method, rcfg), p.sparsity, p.stage, job))
    return twins


def plan_results(engine, plan: list[Planned]) -> tuple[dict, list[str]]:
    """{(method, sparsity): (stage, PointResult)} with the best pass landed so far (the later stage; within a stage,
    the one on more examples), and the failures' messages."""
    results, failed = {}, []
    for p in plan:
        if p.stage < 0:
            continue
        info = engine.status(p.job.key)
        if info is None:
            continue
        if info.state == "error":
            failed.append(info.error or "failed")
        elif info.state == "done" and info.result is not None:
            key = (p.method, round(p.sparsity, 4))
            old = results.get(key)
            if old is None or (p.stage, info.result.n) >= (old[0], old[1].n):
                results[key] = (p.stage, info.result)
    return results, failed
