"""Attribution page: score every FFN neuron and attention head for one or more tasks."""
import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tp_app import common as C
from tp_core.attribution import DATA_FREE, METHODS
from tp_core.limits import limits

C.page("Attribution", caption="How much does each neuron and head matter for a task? Scores are computed once and cached.")
ss = st.session_state
model, task = C.require_model_and_task()
tasks = C.model_tasks(model)

st.info(C.ATTRIBUTION_HELP, icon="ℹ️")
left, right = st.columns([2, 3])
with left:
    if "attr_tasks" not in ss or not set(ss["attr_tasks"]) <= set(tasks) or not ss["attr_tasks"]:
        ss["attr_tasks"] = [task]
    chosen = C.persisted(st.multiselect, "Tasks", "attr_tasks", options=tasks,
                         help="Scores are per task: a neuron can matter for one task and not for another.")
    method = C.persisted(st.selectbox, "Method", "attr_method", options=list(METHODS),
                         format_func=lambda m: C.METHOD_LABELS[m], help=C.ATTRIBUTION_HELP + " Baselines: gradient x "
                         "activation (ig with one step), mean |activation|, weight magnitude (no data), random.")
    data_free = method in DATA_FREE
    C.persisted(st.slider, "Scoring examples (N)", "attr_samples", min_value=4, max_value=min(512, limits().max_samples), step=4,
                disabled=data_free, help="How many training examples the scores are averaged over. Small N is the "
                                         "low-resource setting; the paper's method works with a few dozen.")
    C.persisted(st.slider, "IG steps", "attr_steps", min_value=1, max_value=min(64, limits().max_steps), disabled=method != "ig",
                help="Riemann steps of the integral from 0 to the real activation. More steps: more exact, slower.")
    C.persisted(st.radio, "Target labels", "attr_labels", options=["gold", "predicted"], horizontal=True,
                disabled=data_free, help="gold: the true labels. predicted: the model's own predictions "
                                         "(unsupervised - no labels needed).")
    C.persisted(st.radio, "Units", "attr_units", options=["both", "ffn", "heads"], horizontal=True,
                help="FFN neurons (each coordinate of a layer's intermediate activation), attention heads, or both.")
    cfg = C.attribution_config()
    cached = {t: C.known_scores(model, t, cfg) for t in chosen}
    todo = [t for t in chosen if cached[t] is None]
    per_ex = {"ig": 0.05 * cfg.steps, "grad_x_act": 0.05, "activation": 0.02}.get(method, 0.0)
    if todo:
        est = per_ex * cfg.samples * len(todo) * max(1, model.num_layers / 6)
        st.caption(f"To compute: {', '.join(todo)} - rough estimate {est:.0f} s on 2 CPU cores "
                   f"({'data-free' if data_free else f'{cfg.samples} examples'}).")
    else:
        st.caption("All chosen tasks are already scored with these settings (cached).")
    run = st.button("Run attribution", type="primary", disabled=not chosen,
                    help="Compute the missing scores (with progress); cached results are reused everywhere.")

with right:
    if run:
        with C.friendly("computing attribution scores"):
            for i, t in enumerate(chosen):
                t0 = time.time()
                cached[t] = C.get_scores(model, t, cfg, progress=C.progress_cb(f"{method} on {t} ({i + 1}/{len(chosen)})"))
            st.success(f"Scores ready for {', '.join(chosen)}.")
    done = {t: s for t, s in cached.items() if s is not None}
    if not done:
        st.markdown("No scores for these settings yet: press **Run attribution**.")
    for t, s in done.items():
        st.subheader(f"{t} · {C.METHOD_LABELS[s.method]}")
        st.caption(f"{s.n_examples} examples · computed in {s.seconds:.1f} s · settings: samples={cfg.samples}, "
                   f"steps={cfg.steps}, labels={cfg.labels}, units={cfg.units}")
        fig = go.Figure()
        if s.ffn is not None:
            fig.add_bar(x=list(range(len(s.ffn))), y=[float(np.mean(a)) for a in s.ffn], name="FFN neurons (mean)",
                        marker_color=C.METHOD_COLORS[s.method])
        if s.heads is not None:
            fig.add_bar(x=list(range(len(s.heads))), y=[float(np.mean(a)) for a in s.heads], name="heads (mean)",
                        marker_color=C.METHOD_COLORS[s.method], marker_pattern_shape="/", opacity=0.6)
        fig.update_layout(height=260, barmode="group", xaxis_title="layer", yaxis_title="mean score",
                          margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h"))
        st.plotly_chart(fig, width="stretch", key=f"attr_bar_{t}")
    if done:
        st.markdown("Next: **Heatmaps** to see where the important units are, or **Prune** to shrink the model.")
