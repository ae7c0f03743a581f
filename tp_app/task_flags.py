"""Tasks whose dense model is not clearly above always answering the majority class: marked wherever a task is
offered, since their pruning curves are mostly noise around chance (tp_core/baselines.py computes the margin, with
the dense point job)."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from tp_core.baselines import MajorityMargin
from tp_core.errors import TPError
from tp_core.work import cached_dense, point_job

from .jobs import data_ref, eval_size, job_info, job_result, ref
from .models import UPLOAD_PREFIX, head_for, model_tasks

NEAR_MAJORITY = "near majority"  # the suffix a flagged task carries in task pickers


def dense_job(model, task: str):
    """The dense point job of `task` (the Model page's dense metric and the Prune page's dense point)."""
    return point_job(model, ref(model, task), head_for(task), None, None, data_ref(task), eval_size(task),
                     task_label=task)


def cached_dense_point(model, job):
    """The dense point `job` computes when a cache on disk already holds it (the warm start, an earlier run of the
    server); None otherwise. Nothing is computed."""
    return cached_dense(job.args[0], model, job.args[1], job.args[4])


# Margins found so far, by dense job key (a key names the model, task and examples, so its result never changes):
# every page run of every session asks for each task's margin, and a disk cache read per task and run adds up.
_MARGINS: dict[str, MajorityMargin | None] = {}


def task_margin(model, task: str) -> MajorityMargin | None:
    """The task's majority baseline and margin if its dense point is known (finished here or cached on disk);
    None while it is not, or for a regression task."""
    try:
        job = dense_job(model, task)
        if job.key in _MARGINS:
            return _MARGINS[job.key]
        info = job_info(job.key)
        res = job_result(job.key) if info is not None and info.state == "done" else None
        if res is None:
            res = cached_dense_point(model, job)
    except TPError:
        return None
    if res is None:
        return None  # not known yet: asked again next time
    _MARGINS[job.key] = res.margin()
    return _MARGINS[job.key]


def near_majority_tasks(model) -> dict[str, MajorityMargin]:
    """The model's bundle tasks whose known dense margin is flagged near majority."""
    out = {}
    for t in model_tasks(model):
        if t.startswith(UPLOAD_PREFIX):
            continue
        m = task_margin(model, t)
        if m is not None and m.near_majority:
            out[t] = m
    return out


def task_label(flags: dict) -> Callable[[str], str]:
    """A format_func for task pickers: a flagged task's option reads "<task> (near majority)"."""
    return lambda t: f"{t} ({NEAR_MAJORITY})" if t in flags else t


def warn_near_majority(flags: dict, tasks) -> None:
    """A short warning for each chosen task that is flagged."""
    for t in [tasks] if isinstance(tasks, str) else tasks:
        if t in flags:
            st.warning(flags[t].note(t), icon=":material/warning:")


def margin_columns(m: MajorityMargin | None) -> dict:
    """The Model page's baseline columns of one task's row (empty cells until its dense point is known)."""
    if m is None:  # text columns: a dash where nothing is known yet
        return {"majority baseline": "–", "always positive F1": "–", "margin (95% interval)": "–",
                "near majority": "–"}
    return {"majority baseline": f"{m.majority:.3f} ({m.majority_label})",
            "always positive F1": f"{m.always_positive:.4f}" if m.always_positive is not None else "–",
            "margin (95% interval)": f"{m.margin:+.3f} ({m.lo:+.3f} to {m.hi:+.3f})",
            "near majority": "⚠ yes" if m.near_majority else "no"}
