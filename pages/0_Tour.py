"""Tour page: the method on the loaded model in five steps, one idea each, with back and next: one neuron's
integrated gradients, a task's heatmap, pruning against a baseline, what recovery adds, what the export costs and
gains. The heavy work runs as the engine's jobs (tp_core.tour: the Prune page's own point jobs, shared with it)."""
from dataclasses import replace

import pandas as pd
import streamlit as st

from tp_app import common as C
from tp_app.task_flags import near_majority_tasks, task_label, warn_near_majority
from tp_app.heatmaps import ffn_figure, head_figure
from tp_app.tour import RULE_LABELS, convergence_figure, ig_path_figure, line_name, points_figure
from tp_core.attribution import METHODS
from tp_core.evaluation import majority_baseline
from tp_core.defaults import RECOVERY_LEVEL
from tp_core.inspector import IG_STEP_CHOICES, UnitRef
from tp_core.masks import units_for
from tp_core.policy import PRIORITY, plan_results, recovered_method
from tp_core.settings import app_settings
from tp_core.tour import TOUR_SPARSITIES, export_trade, neuron_path_job, top_neuron, tour_plan

C.page("Tour", caption="The method on the loaded model, one idea per step: what a neuron's score is, where the "
                       "important units are, what pruning keeps, what recovery adds and what the export buys.")
ss = st.session_state
model, task = C.require_model_and_task()
head = C.head_for(task)
STEPS = ("1 · One neuron's score", "2 · A task's heatmap", "3 · Pruning", "4 · Recovery", "5 · Export")
session_cfg = C.attribution_config("ig")
cfg = replace(session_cfg, units=units_for(max(TOUR_SPARSITIES), 0.0, session_cfg.units))  # the Prune page's
RECOVERY = RECOVERY_LEVEL  # the measured default of every entry point


def go_to(step: int) -> None:
    C.set_value("tour_step", step)


def ig_scores(t: str = task):
    """The task's ig scores if computed; else submit them and show their progress (None)."""
    scores = C.known_scores(model, t, cfg)
    if scores is None:
        key = C.submit(C.scores_job(model, t, cfg), PRIORITY["scores"])
        st.info(f"First the `ig` scores of {t} ({cfg.samples} examples, {cfg.steps} steps): every step of the "
                "tour starts from them.")
        C.show_progress([key])
    return scores


def step_neuron() -> None:
    """Step 1: the integrand of one neuron along alpha and the area that is its score, with a step-count slider."""
    st.markdown("Integrated gradients asks how much the task's output **F** (the probability of the right label) "
                "depends on a neuron: scale the neuron's layer from 0 (switched off, α = 0) to its real activation "
                "a (α = 1), and add up the gradient times the activation along the way. The **shaded area** under the "
                "curve is the neuron's score on this example; the bars are what a few steps estimate of it.")
    scores = ig_scores()
    if scores is None:
        return
    data = C.validation_data(task)
    rows = list(range(min(8, len(data))))
    best = top_neuron(scores) or UnitRef("ffn", 0, 0)
    shape = model.unit_shape()
    c1, c2, c3 = st.columns([3, 1, 1])
    row = c1.selectbox("Example", rows, key="tour_example",
                       format_func=lambda i: f"{data.texts[i][:90]}" + (" …" if len(data.texts[i]) > 90 else ""),
                       help="One of the task's validation examples.")
    layer = int(c2.number_input("Layer", 0, model.num_layers - 1, best.layer, key=f"tour_layer::{task}",
                                help="Default: the neuron with the highest ig score for the task."))
    if ss.get(f"tour_neuron::{task}", 0) >= shape.ffn[layer]:  # a narrower layer than the last one chosen
        ss[f"tour_neuron::{task}"] = shape.ffn[layer] - 1
    index = int(c3.number_input("Neuron", 0, shape.ffn[layer] - 1, min(best.index, shape.ffn[layer] - 1),
                                key=f"tour_neuron::{task}"))
    c4, c5 = st.columns([1, 2])
    rules = [session_cfg.riemann] + [r for r in RULE_LABELS if r != session_cfg.riemann]
    rule = c4.radio("Rule", rules, format_func=lambda r: RULE_LABELS.get(r, r), key="tour_rule",
                    help="How the steps are placed and weighted. The app scores with the first one.")
    choices = sorted(set(IG_STEP_CHOICES) | {session_cfg.steps})
    steps = c5.select_slider("Steps", choices, value=session_cfg.steps if session_cfg.steps in choices else 2,
                             key="tour_steps", help="Points along α at which the gradient is taken.")
    unit = UnitRef("ffn", layer, index)
    job = neuron_path_job(model, C.ref(model, task), head, C.data_ref(task), row, unit, session_cfg, tuple(choices))
    key = C.submit(job, PRIORITY["inspect"])
    out = C.job_result(key)
    if out is None:
        C.show_progress([key])
        return
    path = out["path"]
    if steps not in path.rules[rule]:
        st.warning(f"{RULE_LABELS.get(rule, rule)} needs at least two steps.")
        return
    C.chart(ig_path_figure(path, rule, steps), f"ig-path-{unit.label()}", key="tour_path")
    finest = max(path.rules["gausslegendre"])
    area = path.area("gausslegendre", finest)
    m1, m2, m3 = st.columns(3)
    m1.metric(f"Estimate with {steps} steps", f"{path.area(rule, steps):.5g}",
              delta=f"{path.area(rule, steps) - area:+.2g} vs the area", delta_color="off")
    m2.metric("Area under the curve", f"{area:.5g}", help=f"Gauss-Legendre with {finest} steps.")
    own = path.score(session_cfg.riemann, session_cfg.steps)
    m3.metric(f"The library's ig score ({session_cfg.steps} steps)", f"{out['library']:.5g}",
              help=f"attribution.attribute on this one example ({RULE_LABELS.get(session_cfg.riemann)}, "
                   f"{session_cfg.steps} steps): the same number as this page's estimate at that setting "
                   f"({own:.5g}), as |area| (the sign does not matter).")
    st.caption(f"{unit.label()}: rank {out['rank']} of {out['layer_size']} in its layer on this example. Averaged "
               f"over the task's {scores.n_examples} scoring examples its score is {scores.ffn[layer][index]:.4g}; "
               "those averages rank the neurons for pruning.")
    C.chart(convergence_figure(path, rule, steps, area), "ig-convergence", key="tour_convergence")
    st.caption("More steps bring each rule's estimate to the area; Gauss-Legendre gets there in far fewer steps, "
               f"which is why the app scores with {session_cfg.steps}.")


def step_heatmap() -> None:
    """Step 2: where the important units of a task are (the Heatmaps page's figures)."""
    st.markdown("Every FFN neuron and head gets such a score, averaged over the task's examples. Each row is a "
                "layer; in the FFN map each layer's neurons are sorted from most to least important, so the bright "
                "left edge is what the task relies on and the dark right side is what pruning removes first.")
    tasks = C.model_tasks(model)
    ss.setdefault("tour_hm_task", task)
    flags = near_majority_tasks(model)
    t = C.persisted(st.selectbox, "Task", "tour_hm_task", options=tasks, format_func=task_label(flags))
    warn_near_majority(flags, t)
    scores = ig_scores(t)
    if scores is None:
        return
    C.chart(ffn_figure(scores, t, "sorted", True, height=340, clickable=False), f"ffn-{t}-ig", key="tour_hm_ffn")
    if scores.heads is not None:
        C.chart(head_figure(scores, t, True, height=260, clickable=False), f"heads-{t}-ig", key="tour_hm_heads")
    st.caption("Colour: log10 of the score. The Heatmaps page compares two tasks and inspects any unit.")
    st.page_link("pages/3_Heatmaps.py", label="Open the Heatmaps page", icon=":material/grid_on:")


def stages():
    """The Prune page's first evaluation pass (its seeded subset of the validation examples): quick enough for a
    class to wait for, and shared with that page's and the warm start's coarse points."""
    n = min(app_settings().coarse_examples, C.eval_size(task))
    return [(C.data_ref(task, n), n)]


def run_plan(baseline: str, recovery: str | None = None, at: float | None = None) -> dict:
    """Submit the tour's points (tp_core.tour.tour_plan) and return those landed, {(line, sparsity): result}."""
    known = {m: C.known_scores(model, task, replace(cfg, method=m)) for m in dict.fromkeys([cfg.method, baseline])}
    plan = tour_plan(model, C.ref(model, task), head, cfg, baseline, stages(), known=known,
                     scoring_data=C.scoring_ref(task, cfg), task_label=task,
                     recovery=C.recovery_config(recovery), recovered_at=at)
    for p in plan:
        C.submit(p.job, p.priority)
    results, failed = plan_results(C.engine(), plan)
    if failed:
        st.error(f"Could not compute these points: {failed[0]}")
    C.show_progress_compact([p.job.key for p in plan], "Points")
    return {k: r for k, (_, r) in results.items()}


def x_label(point) -> str:
    return f"{point.record.ffn_sparsity:.0%} of FFN removed"


def step_pruning() -> None:
    """Step 3: pruning at 50/70/90% of the FFN neurons, ig against a baseline."""
    st.markdown("Pruning removes the lowest-scoring FFN neurons of the whole model and measures the task again, "
                "without any training. Good scores keep the metric up; a baseline shows what a worse ranking loses.")
    others = [m for m in METHODS if m != cfg.method]
    ss.setdefault("tour_baseline", "random")
    baseline = C.persisted(st.selectbox, "Baseline", "tour_baseline", options=others,
                           format_func=lambda m: C.METHOD_LABELS[m])
    results = run_plan(baseline)
    dense = results.get((None, 0.0))
    bars = []
    for m in (cfg.method, baseline):
        pts = {x_label(r): r for s in TOUR_SPARSITIES if (r := results.get((m, round(s, 4)))) is not None}
        if pts:
            bars.append((m, line_name(m), pts))
    C.chart(points_figure(bars, dense, majority_baseline(C.validation_data(task)), model.task_info(head).metric),
            f"pruning-{task}", key="tour_pruning")
    lines = []
    for s in TOUR_SPARSITIES:
        a, b = results.get((cfg.method, round(s, 4))), results.get((baseline, round(s, 4)))
        if a is not None and b is not None:
            lines.append(f"at **{s:.0%}** {C.METHOD_LABELS[cfg.method]} keeps **{a.record.metric:.3f}** and "
                         f"{C.METHOD_LABELS[baseline]} {b.record.metric:.3f} ({a.n} examples, "
                         f"{100 * a.record.kept_params / a.record.total_params:.0f}% of the parameters left)")
    if lines and dense is not None:
        st.markdown(f"Dense: {dense.record.metric:.3f}; " + "; ".join(lines) + ".")
    st.caption(f"Bars: the metric on {stages()[0][1]} validation examples (the Prune page's first pass) with a 95% "
               "bootstrap interval. The Prune page draws the whole curve, on all examples, at any sparsity.")


def step_recovery() -> None:
    """Step 4: the same pruned model with and without the least-squares recovery."""
    st.markdown("Removing neurons shifts what each layer passes on. **Recovery** re-fits the kept output weights "
                "of every pruned layer by least squares, so that the layer's output matches the dense model's on "
                "about a thousand unlabeled examples of the task - still no gradient step, no labels.")
    ss.setdefault("tour_rec_sparsity", 0.9)
    at = C.persisted(st.radio, "FFN sparsity", "tour_rec_sparsity", options=list(TOUR_SPARSITIES), horizontal=True,
                     format_func=lambda s: f"{s:.0%}")
    results = run_plan(cfg.method, RECOVERY, at)
    dense = results.get((None, 0.0))
    plain = results.get((cfg.method, round(at, 4)))
    twin = recovered_method(cfg.method, RECOVERY)
    fitted = results.get((twin, round(at, 4)))
    bars = [(line, line_name(line), {x_label(r): r}) for line, r in ((cfg.method, plain), (twin, fitted))
            if r is not None]
    C.chart(points_figure(bars, dense, None, model.task_info(head).metric), f"recovery-{task}", key="tour_recovery")
    if plain is not None and fitted is not None:
        c1, c2 = st.columns(2)
        c1.metric("Pruned, masks only", f"{plain.record.metric:.4f}",
                  delta=None if dense is None else f"{plain.record.metric - dense.record.metric:+.4f} vs dense")
        c2.metric(f"Pruned + {RECOVERY} recovery", f"{fitted.record.metric:.4f}",
                  delta=f"{fitted.record.metric - plain.record.metric:+.4f} vs masks only",
                  help=f"Fitted in {(fitted.recovery or {}).get('seconds', 0):.1f}s on "
                       f"{(fitted.recovery or {}).get('samples', 0)} unlabeled examples.")


def step_export() -> None:
    """Step 5: what an export at each sparsity holds and costs (counted), and the last measured export if any."""
    st.markdown("Masks only switch units off. The **export** slices them out of the weight matrices: a genuinely "
                "smaller model that loads and runs without this app. Fewer parameters mean a smaller file and fewer "
                "multiply-adds per token; the price is the metric the pruning step measured.")
    scores = ig_scores()
    if scores is None:
        return
    seq = C.budget_tokens(model, task, head) if model.kind == "causal_lm" else 128
    known = {cfg.method: scores}
    plan = tour_plan(model, C.ref(model, task), head, cfg, cfg.method, stages(), known=known,
                     scoring_data=C.scoring_ref(task, cfg), task_label=task)
    results = {k: r for k, (_, r) in plan_results(C.engine(), plan)[0].items()}  # what step 3 measured, if landed
    rows, trade = [], export_trade(model, head, scores, (0.0, *TOUR_SPARSITIES), seq)
    for r in trade:
        point = results.get((cfg.method, round(r["sparsity"], 4)) if r["sparsity"] else (None, 0.0))
        rows.append({"FFN removed": f"{r['sparsity']:.0%}" + ("" if r["sparsity"] else " (dense)"),
                     "parameters": f"{r['params']:,}", "of dense": f"{r['params_share']:.1%}",
                     "float32 weights": f"{r['float32_mb']:.1f} MB",
                     f"FLOPs per {seq}-token example": f"{r['flops_share']:.1%} of dense",
                     model.task_info(head).metric: "step 3 first" if point is None else f"{point.record.metric:.4f}"})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(f"Counted from the ig scores, nothing built: dense float32 is {trade[0]['dense_float32_mb']:.1f} "
               "MB. ONNX int8 stores the weight matrices in one byte instead of four; the real size, speed and "
               "metric of each format are measured by the Export page.")
    last = ss.get("last_export")
    if last and "formats" in last:
        smallest = min(last["formats"], key=lambda f: f["bytes_on_disk"])
        st.success(f"Your last export (`{last['out_dir']}`): {last['params_pruned']['total']:,} parameters, the "
                   f"smallest format ({smallest['format']}) {smallest['bytes_on_disk'] / 1e6:.1f} MB on disk against "
                   f"{last['bytes_dense'] / 1e6:.1f} MB dense float32.")
    if model.kind == "causal_lm":
        st.caption("A causal LM: its task vocabulary keeps the tokens of the task's prompts and splits other words "
                   "into smaller kept pieces; a format that cannot write this model yet says why on the Export page.")
    st.page_link("pages/5_Export.py", label="Measure it on the Export page (about half a minute on the demo)",
                 icon=":material/output:")


DRAW = (step_neuron, step_heatmap, step_pruning, step_recovery, step_export)
ss.setdefault("tour_step", 0)
step = C.persisted(st.radio, "Step", "tour_step", options=list(range(len(STEPS))), format_func=STEPS.__getitem__,
                   horizontal=True, label_visibility="collapsed")
st.subheader(STEPS[step])
with C.friendly(f"drawing step {step + 1}"):
    DRAW[step]()
st.divider()
back, _, forward = st.columns([1, 4, 1])
back.button("Back", icon=":material/arrow_back:", disabled=step == 0, on_click=go_to, args=(step - 1,),
            key="tour_back", width="stretch")
forward.button("Next", icon=":material/arrow_forward:", disabled=step == len(STEPS) - 1, on_click=go_to,
               args=(step + 1,), key="tour_next", type="primary", width="stretch")
