"""Prune page: sparsity sliders and a live metric-vs-size chart that fills in as the engine's point jobs land."""
from dataclasses import replace

import plotly.graph_objects as go
import streamlit as st

from tp_app import common as C
from tp_app.task_flags import near_majority_tasks, warn_near_majority
from tp_core.attribution import METHODS
from tp_core.budget import HEAD_GRID
from tp_core.curves import record_dict
from tp_core.evaluation import majority_baseline
from tp_core.engine import ACTIVE
from tp_core.masks import ALLOCATIONS, units_for
from tp_core.recovery import LEVELS as RECOVERY_LEVELS
from tp_core.settings import app_settings
from tp_core.policy import PRIORITY, curve_plan, plan_results, recovered_method
from tp_core.work import budget_job, search_job

C.page("Prune", caption="Remove the least important units for the task and watch the metric against model size.")
ss = st.session_state
model, task = C.require_model_and_task()
warn_near_majority(near_majority_tasks(model), task)
FFN_MAX, FFN_STEP = C.FFN_MAX, C.FFN_STEP  # the sliders' range and steps (a budget's plan lies on them)
HEAD_MAX, HEAD_STEP = C.HEAD_MAX, C.HEAD_STEP

controls, chart = st.columns([1, 3])
with controls:
    st.markdown(f"**Task:** `{task}` · **method:** `{ss['attr_method']}`")
    ffn = C.persisted(st.slider, "FFN sparsity", "ffn_sparsity", min_value=0.0, max_value=FFN_MAX, step=FFN_STEP,
                      help="Fraction of FFN neurons removed (the lowest-scoring ones for this task).")
    heads = C.persisted(st.slider, "Head sparsity", "head_sparsity", min_value=0.0, max_value=HEAD_MAX, step=HEAD_STEP,
                        help="Fraction of attention heads removed. Curves are drawn over FFN sparsity at this "
                             "head sparsity.")
    alloc = C.persisted(st.radio, "Allocation", "allocation", options=list(ALLOCATIONS), horizontal=True,
                        help="global: drop the lowest-scoring units across all layers (layers lose different "
                             "amounts). per-layer: drop the same fraction in every layer.")
    others = [m for m in METHODS if m != ss["attr_method"]]
    if not set(ss["baselines"]) <= set(others):
        ss["baselines"] = [m for m in ss["baselines"] if m in others]
    baselines = C.persisted(st.multiselect, "Compare with", "baselines", options=others,
                            format_func=lambda m: C.METHOD_LABELS[m],
                            help="Baseline methods drawn as extra lines (same settings, same evaluation data).")
    recover_on = C.persisted(st.toggle, "+ recovery", "recover_on",
                             help="Training-free recovery after pruning (no gradient step): fitted on about a thousand "
                                  "unlabeled examples of the task with the dense model as teacher. Adds dashed "
                                  "'<method> + recovery' curves beside the plain ones.")
    recover_level = C.persisted(st.radio, "Recovery level", "recover_level",
                                options=[x for x in RECOVERY_LEVELS if x != "none"], horizontal=True,
                                disabled=not recover_on,
                                help="bias: fold the removed units' mean output into the bias (nearly free, but on the "
                                     "demo it lowered the metric for every criterion: docs/RESULTS.md, section 9b). "
                                     "scale: one scale per kept unit, layer by layer. lstsq: ridge least-squares "
                                     "re-fit of the kept output columns, layer by layer, then of the task "
                                     "head's first projection (strongest).")

method = ss["attr_method"]
methods = [method] + list(baselines)
cfg = C.attribution_config()
cfg = replace(cfg, units=units_for(ffn, heads, cfg.units))  # scores for what the slider prunes
head = C.head_for(task)
mref = C.ref(model, task)
n_full = C.eval_size(task)
settings = app_settings()
n_small = min(settings.coarse_examples, n_full)
stages = [(C.data_ref(task, n_small), n_small)] + ([(C.data_ref(task), n_full)] if n_full > n_small else [])
known = {m: C.known_scores(model, task, replace(cfg, method=m)) for m in methods}
n_first = C.first_examples(model, task, head, min(settings.slider_first_examples, n_small))  # a causal LM's: by cost
first = (C.data_ref(task, n_first), n_first) if 0 < n_first < n_small else None

recovery = C.recovery_config(recover_level if recover_on else None)  # on the app's calibration texts
# every job this view needs, most urgent first (the engine runs higher priorities first; identical jobs are shared)
plan, sjobs, slider_jobs = curve_plan(model, mref, head, cfg, methods, heads, alloc, stages, settings.grid,
                                      known=known, slider=ffn, scoring_data=C.scoring_ref(task, cfg), task_label=task,
                                      recovery=recovery, slider_first=first)
for p in plan:
    C.submit(p.job, p.priority)
C.follow("prune", [p.job.key for p in plan if p.job.kind == "point"])  # a moved slider's old points: let go
results, failed = plan_results(C.engine(), plan)
dense = results.get((None, 0.0))


def on_examples(jobs, n: int):
    """The result of the first of `jobs` that is done and was evaluated on `n` examples (None if none)."""
    for job in jobs:
        info = C.job_info(job.key)
        if info is not None and info.state == "done" and info.result is not None and info.result.n == n:
            return info.result
    return None


def landed_slider():
    """(pass index, result) of the slider's point on the most examples so far, or None."""
    out = None
    for si, job in enumerate(slider_jobs):
        info = C.job_info(job.key)
        if info is not None and info.state == "done":
            out = (si, info.result)
    return out


slider = landed_slider()

with controls:
    stopped = [p for p in plan if (C.job_info(p.job.key) is not None and
                                   C.job_info(p.job.key).state in ("error", "cancelled"))]
    if failed:
        st.error(f"Could not compute the curves: {failed[0]}")
    if stopped and st.button(f"Run the {len(stopped)} failed or cancelled job(s) again", icon=":material/replay:"):
        for p in stopped:
            C.submit(p.job, p.priority, retry=True)
        st.rerun()


def readout():
    """The slider's point, its interval and the dense metric on the same examples. A fragment: while the
    slider's first estimate is pending it polls on its own and draws the point the moment it lands, without
    waiting for a whole page rerun (which redraws the chart, and so draws the point later)."""
    slider = landed_slider()
    # the dense model on the same examples as the shown point when it has landed (the first, quick estimate
    # against the dense metric on another subset would mix the two subsets' difference into the delta)
    dense_here = None if slider is None else (on_examples([p.job for p in plan if p.method is None], slider[1].n)
                                              or (dense[1] if dense is not None else None))
    if slider is not None and dense_here is not None:
        si, point = slider
        d = record_dict(point.record, dense_here.record.metric)
        st.metric("Kept parameters", f"{d['kept_pct']:.1f} %",
                  help=f"{point.record.kept_params:,} of {point.record.total_params:,} " + (
                      "(the decoder, its tied word embeddings included), exactly what the exported model will have."
                      if model.kind == "causal_lm" else
                      "(encoder + this task's head), exactly what the exported model will have. Word embeddings "
                      "included, with the full vocabulary: the Export page's task vocabulary removes more (it "
                      "shows the count)."))
        st.metric(f"{point.record.metric_name} (pruned)", f"{point.record.metric:.4f}",
                  delta=f"{d['delta']:+.4f} vs dense",
                  help=f"On {point.n} validation examples; 95% bootstrap interval {point.low:.4f} to {point.high:.4f}.")
        st.caption(f"At FFN {ffn:.0%} · heads {heads:.0%}: 95% interval {point.low:.3f} to {point.high:.3f} on "
                   f"{point.n} examples"
                   + (" (refining on all examples...)" if si < len(slider_jobs) - 1 else ""))
        job = C.job_info(slider_jobs[si].key)  # TP_APP_RUN_LOG: the server's time to a new point's estimate
        C.mark_drawn(f"At FFN {ffn:.0%}", **({} if job is None else
                                            {k: getattr(job, k) for k in ("submitted", "started", "finished")}))
        if recover_on:
            rpoint = results.get((recovered_method(method, recover_level), round(ffn, 4)))
            if rpoint is None:
                st.caption(f"{point.record.metric_name} + recovery ({recover_level}): computing...")
            else:
                rp = rpoint[1]
                plain = on_examples(slider_jobs, rp.n)  # the plain point on the same examples
                st.metric(f"{rp.record.metric_name} (pruned + {recover_level})", f"{rp.record.metric:.4f}",
                          delta=None if plain is None else f"{rp.record.metric - plain.record.metric:+.4f} vs plain "
                                                           "masks",
                          help=f"The same masks with the {recover_level} recovery (fitted in "
                               f"{(rp.recovery or {}).get('seconds', 0):.1f}s on "
                               f"{(rp.recovery or {}).get('samples', 0)} unlabeled examples), on {rp.n} validation "
                               f"examples; 95% bootstrap interval {rp.low:.4f} to {rp.high:.4f}.")
        st.metric(f"{dense_here.record.metric_name} (dense)", f"{dense_here.record.metric:.4f}",
                  help=f"The unpruned model on {dense_here.n} examples"
                       + (" (the same as the pruned point's)." if dense_here.n == point.n else "."))
        ss["last_point"] = {"task": task, "method": method, "n": point.n, "low": point.low, "high": point.high,
                            "allocation": alloc, **d}
    else:
        waiting = [C.job_info(p.job.key) for p in plan if p.stage == -1 and p.method == method]
        what = f" (first its `{method}` scores: {C.job_line(waiting[0])})" if waiting and waiting[0] else ""
        st.info(f"Evaluating this setting{what}. It runs first; the curves fill in behind it.")


first_info = C.job_info(slider_jobs[0].key) if slider_jobs else None
first_pending = first_info is not None and first_info.state in ACTIVE
with controls:
    st.fragment(readout, run_every=C.poll_every(urgent=True) if first_pending else None)()

keys = [p.job.key for p in plan]
with chart:
    C.show_progress_compact(keys, "Curves")  # the slider's own point: the readout fragment polls for it
    fig = go.Figure()
    lines = [(m, m) for m in methods] + ([(m, recovered_method(m, recover_level)) for m in methods]
                                         if recover_on else [])
    for m, line in lines:
        recovered = line != m
        pts = sorted(((g, si, r) for (mm, g), (si, r) in results.items() if mm == line and (g > 0 or heads > 0)),
                     key=lambda t: t[0])
        if dense is not None and heads == 0:
            pts = [(0.0, dense[0], dense[1])] + pts
        if not pts:
            continue
        xs = [100.0 * r.record.kept_params / r.record.total_params for _, _, r in pts]
        color = C.METHOD_COLORS[m]
        fig.add_scatter(x=xs + xs[::-1], y=[r.high for *_, r in pts] + [r.low for *_, r in pts][::-1],
                        mode="lines", fill="toself", fillcolor=C.rgba(color, 0.06 if recovered else 0.12),
                        line=dict(width=0), hoverinfo="skip",
                        showlegend=False, name=f"{m} 95% interval")
        fig.add_scatter(x=xs, y=[r.record.metric for *_, r in pts], mode="lines+markers",
                        name=C.METHOD_LABELS[m] + (" + recovery" if recovered else ""),
                        line=dict(color=color, width=3 if m == method else 1.5, dash="dash" if recovered else None),
                        marker=dict(symbol=["circle" if si == len(stages) - 1 else "circle-open" for _, si, _ in pts],
                                    size=8),
                        customdata=[[g, r.n, r.low, r.high] for g, _, r in pts],
                        hovertemplate="%{x:.1f}% kept (FFN sparsity %{customdata[0]:.0%})<br>%{y:.4f} "
                                      "[%{customdata[2]:.3f}, %{customdata[3]:.3f}] on %{customdata[1]} examples"
                                      "<extra>" + line + "</extra>")
    base_name, base_value = majority_baseline(C.validation_data(task))
    if dense is not None:
        fig.add_hline(y=dense[1].record.metric, line_dash="dash", line_color=C.METHOD_COLORS["dense"],
                      annotation_text=f"dense {dense[1].record.metric:.4f}", annotation_position="bottom left")
    fig.add_hline(y=base_value, line_dash="dot", line_color="#d62728",
                  annotation_text=f"chance: {base_name} {base_value:.3f}", annotation_position="top left")
    if slider is not None:
        fig.add_scatter(x=[100.0 * slider[1].record.kept_params / slider[1].record.total_params],
                        y=[slider[1].record.metric], mode="markers", name="current setting",
                        marker=dict(size=16, symbol="star", color=C.METHOD_COLORS[method],
                                    line=dict(width=1.5, color="black")))
    fig.update_layout(height=460, xaxis_title="kept parameters (%)", yaxis_title=f"{model.task_info(head).metric} on "
                      f"{task}", xaxis=dict(autorange="reversed") if fig.data else dict(range=[101, 0]),
                      yaxis=dict() if fig.data else dict(range=[0, 1]), margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.08))
    C.chart(fig, f"curves-{task}-{method}", key="curve_chart")
    st.caption(f"Each point is a real masked evaluation with a 95% bootstrap band. Open markers: first pass on a "
               f"seeded subset of {n_small} validation examples; filled: all {n_full}, at FFN sparsity "
               f"{', '.join(f'{g:.0%}' for g in settings.grid if g > 0)} (any other: move the slider). Head "
               f"sparsity {heads:.0%}, {alloc} allocation.")
    shown = ss.get("last_point")  # the readout's point, when it is this setting's
    shown = shown if shown and (shown["task"], shown["method"], round(shown["ffn_sparsity"], 4), shown["head_sparsity"],
                                shown.get("allocation")) == (task, method, round(ffn, 4), heads, alloc) else None
    C.report_button(
        f"TaskPrune report: {task}, {C.METHOD_LABELS[method]}", f"Model {ss['model_spec']}",
        {"model": ss["model_spec"], "task": task, "method": C.METHOD_LABELS[method],
         "compared with": ", ".join(C.METHOD_LABELS[m] for m in baselines) or "none",
         "FFN sparsity": f"{ffn:.0%}", "head sparsity": f"{heads:.0%}", "allocation": alloc,
         "recovery": recover_level if recover_on else "off",
         "attribution": f"samples={cfg.samples}, steps={cfg.steps}, labels={cfg.labels}, units={cfg.units}",
         "validation examples": f"{n_small} (first pass), {n_full} (all)",
         "curve grid (FFN sparsity)": ", ".join(f"{g:.0%}" for g in settings.grid)},
        shown, [("Metric against kept parameters", fig, "Each point is a masked evaluation with "
                                  "its 95% bootstrap band; open markers: the first pass on a subset.")],
        f"taskprune-report-{task}-{method}-ffn{round(ffn * 100)}-heads{round(heads * 100)}")

here = (task, method, round(ffn, 4), heads, alloc)  # the setting an answer of the search or budget belongs to
with controls:
    st.divider()
    target = st.number_input("Keep at least (% of dense)", min_value=50.0, max_value=100.0, value=98.0, step=0.5,
                             key="target_pct", help="Find the smallest model (fewest kept parameters) whose metric "
                                                    "is at least this share of the dense metric, for the current "
                                                    "method.")
    sj = search_job(mref, head, sjobs[method], known[method], C.data_ref(task), target / 100.0,
                    settings.grid, heads, alloc, n_full, recovery=recovery)
    if st.button("Find smallest model", help="Searches the curve, refines between grid points with real "
                                             "evaluations, then moves the FFN slider there (runs as a job). With "
                                             "'+ recovery' on, every point it evaluates is recovered."):
        ss["_search"] = {"key": C.submit(sj, PRIORITY["search"], retry=True), "target": target,
                         "recovery": recover_level if recover_on else None}

    def search_answer(pending: dict, best) -> dict:
        if best is None:
            return {"where": here, "kind": "warning", "message": f"No evaluated setting keeps "
                                                                f"{pending['target']:.1f}% of the dense metric at "
                                                                f"head sparsity {heads:.0%}."}
        found_ffn = round(best.ffn_sparsity, 4)
        C.set_value("ffn_sparsity", found_ffn)
        with_rec = f" with {pending['recovery']} recovery" if pending.get("recovery") else ""
        return {"where": (task, method, found_ffn, heads, alloc), "kind": "success",
                "message": f"Smallest model keeping {pending['target']:.1f}% of dense{with_rec}: FFN sparsity "
                           f"{found_ffn:.1%}, {100 * best.kept_params / best.total_params:.1f}% of the parameters, "
                           f"{best.metric_name} {best.metric:.4f}."}

    C.job_answer("_search", here, search_answer, "The search failed")


def budget_helper():
    """"Meet a budget": the FFN/head split within a FLOPs budget, or a latency budget measured on this machine,
    with the best measured metric among the splits on the sliders' steps (tp_core/budget.py, as a job); the
    sliders move there."""
    kind = st.radio("Budget", ["flops", "latency"], horizontal=True, key="budget_kind",
                    format_func={"flops": "FLOPs", "latency": "Latency (this machine)"}.get)
    if kind == "flops":
        value = st.number_input("FLOPs (% of dense)", min_value=1.0, max_value=100.0, value=50.0, step=5.0,
                                key="budget_flops_pct") / 100.0
        batch = 1
    else:
        value = st.number_input("Milliseconds per batch", min_value=0.1, max_value=60_000.0, value=5.0, step=0.5,
                                key="budget_ms", help="Timed on this machine with the physically pruned model "
                                                      "(median of 10 forward passes); other work running here "
                                                      "at the same time slows it.")
        batch = st.number_input("Batch size", min_value=1, max_value=256, value=1, step=1, key="budget_batch")
    # an encoder's 128; a causal LM's: the mean length of the task's prompts on the chart's examples
    tokens = max(8, C.budget_tokens(model, task, head))
    seq_len = st.number_input("Tokens per example", min_value=8, max_value=max(512, 2 * tokens), value=tokens, step=8,
                              key="budget_seq", help="Attention costs grow with the square of the length: the best "
                                                     "split depends on it. A prompted LLM's default is the mean "
                                                     "length of the task's prompts, demonstrations included.")
    bcfg = cfg if cfg.units == "both" else replace(cfg, units="both")  # a budget weighs heads against neurons
    if st.button("Find the split", help=f"For each head sparsity on the slider, the most FFN neurons the budget "
                                        f"allows; each of these splits is evaluated on the chart's {n_full} "
                                        "validation examples (recovered first when '+ recovery' is on) and the best "
                                        "one wins, so the chart's metric there is a little optimistic (chosen on "
                                        "the same examples). Then both sliders move there (runs as a job)."):
        job = budget_job(mref, head, C.scores_job(model, task, bcfg), C.known_scores(model, task, bcfg), kind,
                         float(value), int(seq_len), int(batch), alloc, head_grid=HEAD_GRID, ffn_step=FFN_STEP,
                         ffn_max=FFN_MAX, data=stages[-1][0], n=n_full,
                         recovery=recovery)
        ss["_budget"] = {"key": C.submit(job, PRIORITY["budget"], retry=True), "kind": kind, "value": float(value)}

    def budget_answer(pending: dict, plan) -> dict:
        C.set_value("ffn_sparsity", plan.ffn_sparsity)
        C.set_value("head_sparsity", plan.head_sparsity)
        lat = plan.latency
        asked = (f"{pending['value']:.0%} of the dense FLOPs" if pending["kind"] == "flops" else
                 f"{pending['value']:g} ms per batch of {lat['batch_size']} x {lat['seq_len']} tokens")
        measured = (f"; measured {lat['measured_ms']:.1f} ms (dense {lat['dense_ms']:.1f} ms, timed beside the "
                    "app's other jobs)" if lat else "")
        return {"where": (task, method, round(plan.ffn_sparsity, 4), plan.head_sparsity, alloc), "kind": "success",
                "message": f"Within {asked}: FFN sparsity {plan.ffn_sparsity:.0%}, head sparsity "
                           f"{plan.head_sparsity:.0%} ({plan.allocation}), {plan.flops_fraction:.1%} of the dense "
                           f"FLOPs at {plan.seq_len} tokens{measured}; chosen for {plan.choice(method)}. The sliders "
                           "are there now."}

    C.job_answer("_budget", here, budget_answer, "No split found")


with controls:
    with st.expander("Meet a budget", expanded=bool(ss.get("_budget") or ss.get("_budget_found"))):
        budget_helper()
