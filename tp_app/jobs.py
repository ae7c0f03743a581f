"""The app's side of the job engine: every heavy computation is a `tp_core` job submitted for this session (shared
with any session asking for the same thing), with what a worker needs to run it (model and data references), and
scores looked up without computing anything."""
from __future__ import annotations

import threading

import streamlit as st

from tp_core.attribution import AttributionConfig, UnitScores, cached_scores_path
from tp_core.errors import TPError

from .models import UPLOAD_PREFIX, head_for, trusted, validation_data
from .state import session_id


def engine():
    """The process's job engine (an embedded Dask cluster, or the one TP_SCHEDULER names)."""
    from tp_core.engine import get_engine

    return get_engine()


def submit(job, priority: int, retry: bool = False) -> str:
    """Submit a job for this session (shared with any session asking for the same thing); returns its key.
    `retry`: run it again if it failed or was cancelled (a button the user pressed, not a page rerun)."""
    eng = engine()
    info = eng.status(job.key)
    key = eng.submit(job, owner=session_id(), priority=priority, retry=retry)
    if not st.session_state.get("_panel_polling") and (info is None or info.state in ("queued", "running")):
        st.session_state["_panel_stale"] = True  # the sidebar panel was drawn before this job existed
    return key


def follow(view: str, keys) -> int:
    """The jobs `view` draws now (`keys`): those it asked for on its previous run and no longer draws are released
    for this session (a slider moved on: the earlier value's points would only delay the new one's behind them on
    a shared server); a job another session still wants goes on. Returns how many stopped."""
    ss, eng, sid, keys = st.session_state, engine(), session_id(), set(keys)
    # release ignores jobs that ended or were never this session's; a stopped one runs again for whoever asks next
    stopped = sum(eng.release(key, sid) for key in ss.get(f"_follow_{view}", set()) - keys)
    ss[f"_follow_{view}"] = keys
    return stopped


def job_info(key: str):
    """The engine's JobInfo for `key` (state, progress, result), or None if it never ran here."""
    return engine().status(key)


def job_result(key: str):
    """The job's result, or None while it runs; raises TPError (JobFailed) with the job's message if it failed."""
    return engine().result(key)


def ref(model, task: str):
    """What a worker needs to load the session's `model` (with custom code only when the session allowed it) for
    an app task: a causal LM's ref carries that task's prompt (the session's, when edited) and no other."""
    from tp_core.work import model_ref

    return model_ref(model, trusted(str(model.source)), tasks=[head_for(task)])


def data_ref(task: str, limit: int | None = None, split: str = "validation", seed: int = 0):
    """What a worker needs to load an app task's evaluation examples (the upload itself, for uploaded data)."""
    from tp_core.work import DataRef

    limit = limit or int(st.session_state["eval_limit"])
    if task.startswith(UPLOAD_PREFIX):
        return st.session_state["custom_data"][0].sample(limit)
    return DataRef(task, split, limit, seed)


def eval_size(task: str, limit: int | None = None) -> int:
    """How many examples `data_ref(task, limit)` holds."""
    return len(validation_data(task, limit))


def scoring_ref(task: str, cfg: AttributionConfig):
    """Attribution examples: None for bundle tasks (the engine samples the task's scoring split), the upload else."""
    if task.startswith(UPLOAD_PREFIX):
        return st.session_state["custom_data"][0].sample(cfg.samples, seed=cfg.seed)
    return None


def scores_job(model, task: str, cfg: AttributionConfig):
    """The attribution job for an app task (uploaded data: scored through the head the user picked)."""
    from tp_core.work import scores_job as build

    return build(model, ref(model, task), head_for(task), cfg, scoring_ref(task, cfg), task_label=task)


_DISK_SCORES: dict = {}
_DISK_LOCK = threading.Lock()
_SCORE_PATHS: dict = {}  # scores job key -> its disk cache file name (computing it reads the task's scoring split)


def known_scores(model, task: str, cfg: AttributionConfig) -> UnitScores | None:
    """Scores already computed (a finished job, or the engine's disk cache), without computing anything."""
    job = scores_job(model, task, cfg)
    info = job_info(job.key)
    if info is not None and info.state == "done":
        return info.result
    if info is not None and info.state in ("queued", "running"):
        return None  # being computed: no need to look on disk (that reads the scoring split) on every rerun
    with _DISK_LOCK:
        if job.key in _DISK_SCORES:
            return _DISK_SCORES[job.key]
    try:
        from tp_core.paths import cache_dir

        name = _SCORE_PATHS.get(job.key)
        if name is None:  # computing the name reads the task's scoring split: once per job key, not every rerun
            name = cached_scores_path(model, head_for(task), cfg, scoring_ref(task, cfg)).name
            with _DISK_LOCK:
                _SCORE_PATHS[job.key] = name
        path = cache_dir("scores") / name  # the folder of the TP_HOME in force now
        if not path.is_file():
            return None
        scores = UnitScores.load(path).check_shape(model.unit_shape())
    except TPError:
        return None
    with _DISK_LOCK:
        _DISK_SCORES[job.key] = scores
        while len(_DISK_SCORES) > 256:
            _DISK_SCORES.pop(next(iter(_DISK_SCORES)))
    return scores
