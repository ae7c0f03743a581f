"""Heatmaps page: where the important units are, per task; overlap between tasks; the neuron inspector."""
import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tp_app import common as C
from tp_app.task_flags import near_majority_tasks, task_label, warn_near_majority
from tp_app.heatmaps import ffn_figure, head_figure
from tp_core.inspector import UnitRef, kept_share_per_layer, overlap_matrix, shade, unit_score_table
from tp_core.masks import PruneConfig, build_masks
from tp_core.policy import PRIORITY
from tp_core.work import ablation_job, top_job

C.page("Heatmaps", caption="Which layers, heads and neurons matter for which task - and what a single neuron does.")
ss = st.session_state
model, task = C.require_model_and_task()
tasks = C.model_tasks(model)
flags = near_majority_tasks(model)
cfg = C.attribution_config()
shape = model.unit_shape()
pcfg = PruneConfig(ss["ffn_sparsity"], ss["head_sparsity"], ss["allocation"])
st.caption(f"Method `{cfg.method}` (samples={cfg.samples}, steps={cfg.steps}, labels={cfg.labels}, units={cfg.units}); "
           f"kept units at FFN sparsity {pcfg.ffn_sparsity:.0%}, head sparsity {pcfg.head_sparsity:.0%} "
           f"({pcfg.allocation}). Change these on the Attribution and Prune pages.")

c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    ss.setdefault("hm_task_a", task)
    ta = C.persisted(st.selectbox, "Task A", "hm_task_a", options=tasks, format_func=task_label(flags),
                     help="Left column.")
with c2:
    other = [t for t in tasks if t != ta] or tasks
    ss.setdefault("hm_task_b", other[0])
    tb = C.persisted(st.selectbox, "Task B", "hm_task_b", options=tasks, format_func=task_label(flags),
                     help="Right column: compare two tasks.")
with c3:
    ss.setdefault("hm_log", True)
    log_colour = C.persisted(st.toggle, "Log colour scale", "hm_log",
                             help="Scores span orders of magnitude: a log scale shows the structure of all units; "
                                  "hover always shows the exact score.")
    ss.setdefault("hm_order", "sorted")
    order = C.persisted(st.radio, "FFN neuron order", "hm_order", options=["sorted", "index"],
                        help="sorted: each layer's neurons from most to least important (readable); index: "
                             "neurons in their original order (compare positions across tasks).")

warn_near_majority(flags, sorted({ta, tb}))
scores = {t: C.known_scores(model, t, cfg) for t in tasks}


def missing_scores(t: str) -> None:
    """In a task's column: say that its scores are missing, offer to compute them, show the job while it runs."""
    key = C.scores_job(model, t, cfg).key
    running = C.job_info(key) is not None
    if not running:
        st.warning(f"No `{cfg.method}` scores yet for {t} with the current settings.")
    if st.button(f"Compute scores for {t}", type="primary", disabled=running, key=f"hm_compute_{t}",
                 help="Runs attribution with the Attribution page's settings as a background job (cached "
                      "afterwards); the heatmaps appear when it lands."):
        C.submit(C.scores_job(model, t, cfg), PRIORITY["scores"], retry=True)
        running = True
    if running:
        C.show_progress([key])


if all(scores[t] is None for t in (ta, tb)):  # nothing to draw yet
    cols = st.columns(2) if ta != tb else [st.container()]
    for col, t in zip(cols, dict.fromkeys([ta, tb])):
        with col:
            missing_scores(t)
    st.stop()


def selected_unit(event, key: str):
    """Apply a new Plotly selection (one heatmap cell) to the inspector's inputs."""
    try:
        pts = list(event["selection"]["points"]) if event else []
    except (KeyError, TypeError, AttributeError):
        pts = []
    pts = [dict(p) for p in pts if p.get("customdata") is not None]
    sig = repr(pts[:1])
    if pts and ss.get(f"_sel_{key}") != sig:
        ss[f"_sel_{key}"] = sig
        cd = pts[0]["customdata"]
        cd = [cd[k] for k in sorted(cd, key=int)] if isinstance(cd, dict) else list(cd)
        kind, layer, index = (int(round(float(v))) for v in cd[:3])
        C.set_value("insp_kind", "ffn" if kind == 0 else "head")
        C.set_value("insp_layer", int(layer))
        C.set_value("insp_index", int(index))
        ss["insp_task"] = key.split("::")[1]
        st.rerun()


def head_chart(t: str):
    s = scores[t]
    if s.heads is None:
        st.caption("No head scores (units = ffn).")
        return
    ev = C.chart(head_figure(s, t, log_colour), f"heads-{t}-{cfg.method}", on_select="rerun",
                 selection_mode="points", key=f"hm_heads::{t}")
    selected_unit(ev, f"heads::{t}")


def ffn_chart(t: str):
    s = scores[t]
    if s.ffn is None:
        st.caption("No FFN scores (units = heads).")
        return
    ev = C.chart(ffn_figure(s, t, order, log_colour), f"ffn-{t}-{cfg.method}", on_select="rerun",
                 selection_mode="points", key=f"hm_ffn::{t}")
    selected_unit(ev, f"ffn::{t}")


masks = {}
with C.friendly("drawing the heatmaps"):
    cols = st.columns(2)
    for col, t in zip(cols, [ta, tb]):
        with col:
            if scores[t] is None:
                missing_scores(t)
                continue
            head_chart(t)
            ffn_chart(t)
    st.subheader("Share of kept units per layer at the current sparsity")
    rows = []
    for t in [t for t in dict.fromkeys([ta, tb]) if scores[t] is not None]:
        masks[t] = build_masks(scores[t], pcfg if scores[t].heads is not None or pcfg.head_sparsity == 0
                               else PruneConfig(pcfg.ffn_sparsity, 0.0, pcfg.allocation), shape)
        share = kept_share_per_layer(masks[t])
        rows += [{"task": t, "layer": l, "units": "FFN neurons", "kept": v} for l, v in enumerate(share["ffn"])]
        rows += [{"task": t, "layer": l, "units": "heads", "kept": v} for l, v in enumerate(share["heads"])]
    df = pd.DataFrame(rows)
    fig = go.Figure()
    for (t, u), g in df.groupby(["task", "units"], sort=False):
        fig.add_bar(x=g["layer"], y=g["kept"], name=f"{t} · {u}", marker_pattern_shape="" if u == "heads" else "/",
                    hovertemplate="layer %{x}: %{y:.0%} kept<extra>" + f"{t} {u}" + "</extra>")
    fig.update_layout(barmode="group", height=280, yaxis_tickformat=".0%", xaxis_title="layer",
                      yaxis_title="kept", margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h"))
    C.chart(fig, "kept-share-per-layer", key="kept_share")

st.subheader("Overlap between tasks")
scored = [t for t in tasks if scores[t] is not None]
missing = [t for t in tasks if scores[t] is None]
if missing and st.button(f"Score the other tasks too ({', '.join(missing)})",
                         help="Compute scores for every task of the model (background jobs) so the overlap covers "
                              "all of them."):
    for t in missing:
        C.submit(C.scores_job(model, t, cfg), PRIORITY["scores"], retry=True)
C.show_progress([C.scores_job(model, t, cfg).key for t in missing if C.job_info(C.scores_job(model, t, cfg).key)])
if len(scored) >= 2:
    with C.friendly("computing the overlap"):
        units = st.radio("Units", ["ffn", "heads"], horizontal=True, key="ov_units",
                         help="Compare kept FFN neurons or kept heads.")
        all_masks = {t: build_masks(scores[t], PruneConfig(pcfg.ffn_sparsity,
                                                           pcfg.head_sparsity if scores[t].heads is not None else 0,
                                                           pcfg.allocation), shape) for t in scored}
        ov = overlap_matrix(all_masks, units)
        text = [[f"{ov['shared'][i][j]:,}<br>J={ov['jaccard'][i][j]:.2f}" for j in range(len(scored))]
                for i in range(len(scored))]
        fig = go.Figure(go.Heatmap(z=ov["jaccard"], x=scored, y=scored, zmin=0, zmax=1, colorscale="Blues",
                                   text=text, texttemplate="%{text}",
                                   hovertemplate="%{y} & %{x}<br>shared kept units %{text}<extra></extra>"))
        fig.update_layout(height=120 + 60 * len(scored), margin=dict(l=10, r=10, t=10, b=10))
        C.chart(fig, f"overlap-{units}", key="overlap")
        st.caption(f"Kept {units} units shared by two tasks at the current sparsity (count, and Jaccard J = shared / "
                   "kept by either). Low J: the tasks rely on different units.")
else:
    st.caption("Score at least two tasks to see their overlap.")

st.subheader("Neuron inspector")
st.caption("Click a cell of a heatmap above (or type a unit) to see what that unit does.")
ss.setdefault("insp_kind", "ffn")
ss.setdefault("insp_layer", 0)
ss.setdefault("insp_index", 0)
i1, i2, i3, i4 = st.columns(4)
kind = C.persisted(i1.radio, "Unit", "insp_kind", options=["ffn", "head"], horizontal=True,
                   help="An FFN neuron or an attention head.")
layer = C.persisted(i2.number_input, "Layer", "insp_layer", min_value=0, max_value=model.num_layers - 1, step=1,
                    help="Layer of the unit (0 = closest to the input).")
n_units = (shape.ffn if kind == "ffn" else shape.heads)[int(layer)]
if ss["insp_index"] >= n_units:
    C.set_value("insp_index", 0)
index = C.persisted(i3.number_input, "Index", "insp_index", min_value=0, max_value=n_units - 1, step=1,
                    help="Neuron index within the layer (or head number).")
ss.setdefault("insp_task", ta)
insp_task = C.persisted(i4.selectbox, "Examples from task", "insp_task", options=tasks, format_func=task_label(flags),
                        help="Whose validation examples to search, and whose metric to ablate.")
unit = UnitRef(kind, int(layer), int(index))
with C.friendly("inspecting the unit"):
    st.markdown(f"**{unit.label()}**")
    table = unit_score_table({t: s for t, s in scores.items() if s is not None}, unit)
    a, b = st.columns([1, 1])
    with a:
        st.markdown("Score for every task")
        st.dataframe(pd.DataFrame(table).assign(percentile=lambda d: d["percentile"].round(1)), hide_index=True,
                     width="stretch")
    n_insp = min(200, int(ss["eval_limit"]))
    data = C.validation_data(insp_task, limit=n_insp)
    head = C.head_for(insp_task)
    dref = C.data_ref(insp_task, n_insp)
    abl_spec = ablation_job(C.ref(model, insp_task), head, dref, unit, len(data))
    top_spec = top_job(C.ref(model, insp_task), head, dref, unit, len(data))
    # Two jobs (an ablation and a pass for the top examples): run for a unit the user chose - a heatmap click, a
    # changed input, the button - not for the untouched default unit on every visit (they took the workers from
    # the Prune page's curves when the user moved on).
    picked = (kind, int(layer), int(index), insp_task)
    ss.setdefault("insp_first", picked)
    asked = (picked != ss["insp_first"] or ss.get("insp_asked") == picked
             or C.job_info(abl_spec.key) is not None)
    if not asked:
        with b:
            if st.button(f"Inspect {unit.label()}", icon=":material/search:",
                         help=f"Removes this unit alone and measures the metric on {len(data)} validation "
                              f"examples of {insp_task}, and finds the examples that activate it most (two jobs)."):
                ss["insp_asked"] = picked
                st.rerun()
        st.stop()
    abl_key = C.submit(abl_spec, PRIORITY["inspect"])
    top_key = C.submit(top_spec, PRIORITY["inspect"])
    with b:
        abl = C.job_result(abl_key)
        st.markdown(f"Removing this unit alone on `{insp_task}` ({len(data)} validation examples)")
        if abl is None:
            C.show_progress([abl_key])
        else:
            st.metric(abl["metric_name"], f"{abl['ablated']:.4f}",
                      delta=f"{abl['delta']:+.4f} vs dense {abl['dense']:.4f}")
    top = C.job_result(top_key)
    if top is None:
        C.show_progress([top_key])
        st.stop()
    st.markdown(f"Top-activating validation examples of `{insp_task}` (darker = stronger activation of this unit)")
    labels = data.spec.label_names
    for ex in top:
        shades = shade(ex.values)
        spans = "".join(
            f'<span title="{v:.3f}" style="background: rgba(214,39,40,{0.85 * s:.2f}); padding:1px 2px; '
            f'margin:1px; border-radius:3px">{html.escape(tok)}</span>'
            for tok, v, s in zip(ex.tokens, ex.values, shades))
        lab = labels[int(ex.label)] if labels and isinstance(ex.label, (int, np.integer)) else ex.label
        st.markdown(f'<div style="line-height:1.9">{spans} <small>· label <b>{html.escape(str(lab))}</b> · '
                    f'peak {ex.peak:.3f} · row {ex.row}</small></div>', unsafe_allow_html=True)
