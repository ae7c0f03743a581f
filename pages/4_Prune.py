"""Prune page: sparsity sliders, live metric-vs-size chart per method, smallest model keeping X% of dense."""
from dataclasses import replace

import plotly.graph_objects as go
import streamlit as st

from tp_app import common as C
from tp_core.attribution import METHODS
from tp_core.curves import cached_point, curve_from_scores, evaluate_point, find_smallest, record_dict
from tp_core.masks import ALLOCATIONS, PruneConfig

C.page("Prune", caption="Remove the least important units for the task and watch the metric against model size.")
ss = st.session_state
model, task = C.require_model_and_task()

controls, chart = st.columns([1, 3])
with controls:
    st.markdown(f"**Task:** `{task}` · **method:** `{ss['attr_method']}`")
    ffn = C.persisted(st.slider, "FFN sparsity", "ffn_sparsity", min_value=0.0, max_value=0.95, step=0.01,
                      help="Fraction of FFN neurons removed (the lowest-scoring ones for this task).")
    heads = C.persisted(st.slider, "Head sparsity", "head_sparsity", min_value=0.0, max_value=0.9, step=0.1,
                        help="Fraction of attention heads removed. Curves are drawn over FFN sparsity at this "
                             "head sparsity (a new head sparsity computes new curves once).")
    alloc = C.persisted(st.radio, "Allocation", "allocation", options=list(ALLOCATIONS), horizontal=True,
                        help="global: drop the lowest-scoring units across all layers (layers lose different "
                             "amounts). per-layer: drop the same fraction in every layer.")
    others = [m for m in METHODS if m != ss["attr_method"]]
    if not set(ss["baselines"]) <= set(others):
        ss["baselines"] = [m for m in ss["baselines"] if m in others]
    baselines = C.persisted(st.multiselect, "Compare with", "baselines", options=others,
                            format_func=lambda m: C.METHOD_LABELS[m],
                            help="Baseline methods drawn as extra lines (same settings, same evaluation data).")

method = ss["attr_method"]
cfg = C.scores_for_units(C.attribution_config(), heads)
if ffn > 0 and cfg.units == "heads":
    cfg = replace(cfg, units="both")
data = C.validation_data(task)
grid = C.curve_grid()
pcfg = PruneConfig(ffn, heads, alloc)

curves = {}
with chart:
    with C.friendly("computing the pruning curves"):
        methods = [method] + list(baselines)
        bar = C.progress_cb("Curves (computed once, then cached)")
        for i, m in enumerate(methods):
            mcfg = replace(cfg, method=m)
            scores = C.get_scores(model, task, mcfg,
                                  progress=lambda f, msg, i=i: bar((i + 0.3 * f) / len(methods), msg))
            curves[m] = (scores, curve_from_scores(
                model, C.head_for(task), scores, data, grid, heads, alloc,
                progress=lambda f, msg, i=i: bar((i + 0.3 + 0.7 * f) / len(methods), msg)))
        bar(1.0, f"{len(methods)} curve(s) ready on {len(data)} validation examples")

if method not in curves:
    st.stop()
scores, main_curve = curves[method]
dense = main_curve.dense
with controls:
    with C.friendly("evaluating this sparsity"):
        if cached_point(model, C.head_for(task), scores, pcfg, data) is None:
            with st.spinner(f"Evaluating this setting on {len(data)} validation examples..."):
                point = evaluate_point(model, C.head_for(task), scores, pcfg, data)
        else:
            point = evaluate_point(model, C.head_for(task), scores, pcfg, data)
        d = record_dict(point, dense.metric)
        st.metric("Kept parameters", f"{d['kept_pct']:.1f} %", help=f"{point.kept_params:,} of {point.total_params:,} "
                  "(encoder + this task's head), exactly what the exported model will have.")
        st.metric(f"{point.metric_name} (pruned)", f"{point.metric:.4f}", delta=f"{d['delta']:+.4f} vs dense",
                  help=f"On {len(data)} validation examples (seeded subset).")
        st.metric(f"{dense.metric_name} (dense)", f"{dense.metric:.4f}",
                  help=f"The unpruned model on the same {len(data)} examples.")
        ss["last_point"] = {"task": task, "method": method, **d}

with chart:
    fig = go.Figure()
    for m, (_, c) in curves.items():
        xs = [100.0 * r.kept_params / r.total_params for r in c.records]
        fig.add_scatter(x=xs, y=[r.metric for r in c.records], mode="lines+markers", name=C.METHOD_LABELS[m],
                        line=dict(color=C.METHOD_COLORS[m], width=3 if m == method else 1.5),
                        customdata=[[r.ffn_sparsity, r.head_sparsity] for r in c.records],
                        hovertemplate="%{x:.1f}% kept (FFN sparsity %{customdata[0]:.0%}, heads "
                                      "%{customdata[1]:.0%})<br>" + dense.metric_name + " %{y:.4f}<extra>" + m +
                                      "</extra>")
    fig.add_hline(y=dense.metric, line_dash="dash", line_color=C.METHOD_COLORS["dense"],
                  annotation_text=f"dense {dense.metric:.4f}", annotation_position="bottom left")
    fig.add_scatter(x=[d["kept_pct"]], y=[point.metric], mode="markers", name="current setting",
                    marker=dict(size=16, symbol="star", color=C.METHOD_COLORS[method], line=dict(width=1.5, color="black")))
    fig.update_layout(height=460, xaxis_title="kept parameters (%)", yaxis_title=f"{dense.metric_name} on {task}",
                      xaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.08))
    st.plotly_chart(fig, width="stretch", key="curve_chart")
    st.caption(f"Each point is a real masked evaluation on {len(data)} validation examples; the star is the slider "
               f"position (head sparsity {heads:.0%}, {alloc} allocation).")

with controls:
    st.divider()
    target = st.number_input("Keep at least (% of dense)", min_value=50.0, max_value=100.0, value=98.0, step=0.5,
                             key="target_pct", help="Find the smallest model (fewest kept parameters) whose metric "
                                                    "is at least this share of the dense metric, for the current method.")
    if st.button("Find smallest model", help="Searches the curve, refines between grid points with real "
                                             "evaluations, then moves the FFN slider there."):
        with C.friendly("searching the smallest model"):
            best = find_smallest(model, C.head_for(task), scores, data, target / 100.0, grid, heads, alloc,
                                 progress=C.progress_cb("Searching"))
            if best is None:
                st.warning(f"No evaluated setting keeps {target:.1f}% of the dense metric at head sparsity {heads:.0%}.")
            else:
                C.set_value("ffn_sparsity", round(best.ffn_sparsity, 4))
                C.flash(f"Smallest model keeping {target:.1f}% of dense: FFN sparsity {best.ffn_sparsity:.1%}, "
                        f"{100 * best.kept_params / best.total_params:.1f}% of the parameters, "
                        f"{best.metric_name} {best.metric:.4f}.")
                st.rerun()
