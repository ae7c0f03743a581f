"""The session's model, task and evaluation data: shared loaded models and task splits (process-wide caches, so
sessions share them), which tasks a model can run (bundle tasks, or uploaded data through a head the user picked)
and the capped validation subset every evaluation in the app uses."""
from __future__ import annotations

import streamlit as st

from tp_core.data import TaskData, list_tasks, load_split
from tp_core.errors import TPError
from tp_core.limits import limits
from tp_core.settings import app_settings

UPLOAD_PREFIX = "upload:"  # an app task name for uploaded data: "upload:<file's task name>"


def default_model_spec() -> str:
    """The model a new session opens (TP_APP_MODEL)."""
    return app_settings().model


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model_cached(spec: str, trust_remote_code: bool = False):
    from tp_core.model import load_model

    return load_model(spec, trust_remote_code=trust_remote_code)


def trusted(spec: str) -> bool:
    """Whether custom model code may run for `spec`: only when the session loaded this very spec with the Model
    page's opt-in box ticked."""
    ss = st.session_state
    return bool(ss.get("model_trust_code")) and spec == str(ss.get("model_spec") or "").strip()


def load_model(spec: str, trust_remote_code: bool | None = None):
    """Shared loaded model (raises TPError with a friendly message). Custom model code is allowed only when asked
    for, or (None) when the session loaded this very spec with the Model page's opt-in box ticked."""
    spec = spec.strip()
    if not spec:
        raise TPError("Type a model folder or hub id first.")
    if trust_remote_code is None:
        trust_remote_code = trusted(spec)
    return _load_model_cached(spec, bool(trust_remote_code))


def current_model():
    """The session's model, or None with a note telling the user where to go."""
    spec = st.session_state["model_spec"]
    try:
        return load_model(spec)
    except TPError as exc:
        st.warning(f"No model loaded: {exc} Open the **Model** page to choose one.")
        return None


@st.cache_resource(show_spinner=False, max_entries=64)
def _split(task: str, split: str, limit: int | None, seed: int = 0) -> TaskData:
    return load_split(task, split, limit=limit, seed=seed)


@st.cache_resource(show_spinner=False)
def bundle_tasks() -> dict:
    """The data bundle's tasks by name (read once per process)."""
    return {t.name: t for t in list_tasks()}


def model_tasks(model) -> list[str]:
    """Tasks the app can run on `model`: bundle tasks it has a head for (a one-task model: bundle tasks with as many
    labels), plus uploaded data."""
    try:
        bundle = bundle_tasks()
    except TPError:
        bundle = {}
    out = [t for t in model.tasks if t in bundle]
    if len(model.tasks) == 1:
        only = next(iter(model.tasks.values()))
        out += [n for n, s in bundle.items() if n not in out and s.problem == only.problem
                and s.num_labels == only.num_labels]
    custom = st.session_state.get("custom_data")
    if custom is not None:
        out.append(UPLOAD_PREFIX + custom[0].spec.name)
    return out


def current_task(model) -> str | None:
    """The session's task on `model` (a default task first when the chosen one does not fit), or None if none."""
    tasks = model_tasks(model)
    if not tasks:
        return None
    if st.session_state["task"] not in tasks:  # sst2 first: its curves tell the story best (docs/RESULTS.md)
        st.session_state["task"] = next((t for t in app_settings().tasks if t in tasks), tasks[0])
    return st.session_state["task"]


def require_model_and_task():
    """The current model and task for a page, or stop the page with a message saying where to go."""
    model = current_model()
    if model is None:
        st.stop()
    task = current_task(model)
    if task is None:
        st.warning("This model has no task with data. Upload evaluation data on the Model page.")
        st.stop()
    return model, task


def head_for(task: str) -> str:
    """The model head used for an app task (uploaded data runs through the head the user picked)."""
    if task.startswith(UPLOAD_PREFIX):
        return st.session_state["custom_data"][1]
    return task


def validation_data(task: str, limit: int | None = None) -> TaskData:
    """The capped validation subset used for every evaluation of `task` in the app (seeded, shared)."""
    limit = limit or int(st.session_state["eval_limit"])
    if task.startswith(UPLOAD_PREFIX):
        return st.session_state["custom_data"][0].sample(limit)
    return _split(task, "validation", limit)


def upload_limits_caption() -> str:
    """The caps an uploaded data file must fit, in one line to show beside the upload box."""
    cap = limits()
    return (f"Limits: files up to {cap.max_file_mb} MB, {cap.max_rows:,} rows and {cap.max_text_chars:,} characters "
            "per text; UTF-8 CSV/TSV with a header row, JSONL, or a JSON list of objects.")
