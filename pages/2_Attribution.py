"""Attribution page: score every FFN neuron and attention head for one or more tasks."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tp_app import common as C
from tp_app.task_flags import near_majority_tasks, task_label, warn_near_majority
from tp_core.attribution import DATA_FREE, METHODS
from tp_core.structured import STRUCTURED
from tp_core.policy import PRIORITY

C.page("Attribution",
       caption="How much does each neuron and head matter for a task? Scores are computed once and cached.")
ss = st.session_state
model, task = C.require_model_and_task()
tasks = C.model_tasks(model)
flags = near_majority_tasks(model)

st.info(C.ATTRIBUTION_HELP, icon="ℹ️")
left, right = st.columns([2, 3])
with left:
    if "attr_tasks" not in ss or not set(ss["attr_tasks"]) <= set(tasks) or not ss["attr_tasks"]:
        ss["attr_tasks"] = [task]
    chosen = C.persisted(st.multiselect, "Tasks", "attr_tasks", options=tasks, format_func=task_label(flags),
                         help="Scores are per task: a neuron can matter for one task and not for another.")
    warn_near_majority(flags, chosen)
    method = C.persisted(st.selectbox, "Method", "attr_method", options=list(METHODS),
                         format_func=lambda m: C.METHOD_LABELS[m], help=C.ATTRIBUTION_HELP + " Baselines: gradient x "
                         "activation (ig with one step), mean |activation|, weight magnitude (no data), random, and "
                         "the structured LLM pruning criteria Wanda-sp (|weight| x input norm) and FLAP (input "
                         "variance x weight), from the output projections' inputs on the scoring examples.")
    data_free = method in DATA_FREE
    low, high, step = C.ranges()["attr_samples"]
    C.persisted(st.slider, "Scoring examples (N)", "attr_samples", min_value=low, max_value=high, step=step,
                disabled=data_free, help="How many training examples the scores are averaged over. Small N is the "
                                         "low-resource setting; the paper's method works with a few dozen.")
    C.persisted(st.slider, "IG steps", "attr_steps", min_value=C.ranges()["attr_steps"][0],
                max_value=C.ranges()["attr_steps"][1],
                disabled=method != "ig",
                help="Quadrature steps (Gauss-Legendre) of the integral from 0 to the real activation. 2 is as "
                     "faithful as 50 on our benchmark (docs/RESULTS.md, IG fidelity) and 12x cheaper.")
    C.persisted(st.radio, "Target labels", "attr_labels", options=C.LABEL_CHOICES, horizontal=True,
                disabled=data_free or method in STRUCTURED,
                help="gold: the true labels. predicted: the model's own predictions (unsupervised - no labels "
                     "needed). Wanda-sp and FLAP use no labels.")
    C.persisted(st.radio, "Units", "attr_units", options=C.UNIT_CHOICES, horizontal=True,
                help="FFN neurons (each coordinate of a layer's intermediate activation), attention heads, or both.")
    cfg = C.attribution_config()
    jobs = {t: C.scores_job(model, t, cfg) for t in chosen}
    cached = {t: C.known_scores(model, t, cfg) for t in chosen}
    todo = [t for t in chosen if cached[t] is None]
    if todo:
        ests = [C.engine().throughput.estimate(jobs[t].rate_key, jobs[t].units) for t in todo]
        if data_free:
            st.caption(f"To compute: {', '.join(todo)} (data-free, a second or two).")
        elif all(e is not None for e in ests):
            st.caption(f"To compute: {', '.join(todo)} - about {C.fmt_seconds(sum(ests))} on this machine "
                       f"(from its measured speed; {cfg.samples} examples each).")
        else:
            st.caption(f"To compute: {', '.join(todo)} ({cfg.samples} examples each). The time estimate appears "
                       "in the jobs panel after the first batch, measured on this machine.")
    else:
        st.caption("All chosen tasks are already scored with these settings (cached).")
    run = st.button("Run attribution", type="primary", disabled=not chosen,
                    help="Submit the missing scores as jobs (they run in the background: you can keep working or "
                         "leave the page; progress is in the sidebar). Cached results are reused everywhere.")
    if run:
        for t in todo:
            C.submit(jobs[t], PRIORITY["scores"], retry=True)

with right:
    pending = [jobs[t].key for t in chosen if cached[t] is None and C.job_info(jobs[t].key) is not None]
    C.show_progress(pending)
    for t in chosen:
        info = C.job_info(jobs[t].key)
        if cached[t] is None and info is not None and info.state == "cancelled":
            st.caption(f"{t}: cancelled - press **Run attribution** to start it again.")
    done = {t: s for t, s in cached.items() if s is not None}
    if not done and not pending:
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
        C.chart(fig, f"scores-per-layer-{t}-{s.method}", key=f"attr_bar_{t}")
    if done:
        st.markdown("Next: **Heatmaps** to see where the important units are, or **Prune** to shrink the model.")
