"""The session's model, task and evaluation data: shared loaded models and task splits (process-wide caches, so
sessions share them), which tasks a model can run (bundle tasks, or uploaded data through a head the user picked)
and the capped validation subset every evaluation in the app uses."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import streamlit as st

from tp_core.data import TaskData, list_tasks, load_split
from tp_core.errors import TPError
from tp_core.limits import limits
from tp_core.settings import app_settings

UPLOAD_PREFIX = "upload:"  # an app task name for uploaded data: "upload:<file's task name>"


def default_model_spec() -> str:
    """The model a new session opens (TP_APP_MODEL)."""
    return app_settings().model


_LOADED: dict[str, None] = {}  # specs this process loaded without custom code, newest last
_LOADED_LOCK = threading.Lock()


def loaded_specs() -> list[str]:
    """The models this app process has loaded without custom code, by the spec the Model page took (the newest 16):
    the only models besides the demos that a shared link may name, since they need no new file or download."""
    with _LOADED_LOCK:
        return list(_LOADED)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model_cached(spec: str, trust_remote_code: bool = False):
    from tp_core.llm_source import is_causal_lm_spec
    from tp_core.model import load_model
    from tp_core.refs import ModelRef, get_model

    if is_causal_lm_spec(spec):  # one copy for the pages and the in-process workers: the workers' model cache
        model = get_model(ModelRef(spec, trust_remote_code))
    else:
        model = load_model(spec, trust_remote_code=trust_remote_code)
    if not trust_remote_code:
        with _LOADED_LOCK:
            _LOADED.pop(spec, None)
            _LOADED[spec] = None
            while len(_LOADED) > 16:
                _LOADED.pop(next(iter(_LOADED)))
    return model


def _gguf(spec: str) -> Path | None:
    """The GGUF file of `spec` (`smollm2` or a .gguf path), or None for any other spec."""
    from tp_core.llm_source import EMBEDDED, embedded_gguf

    if spec in EMBEDDED:
        return embedded_gguf(spec)
    if spec.lower().endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise TPError(f"GGUF file {path} does not exist.")
        return path
    return None


def needs_conversion(spec: str) -> bool:
    """Whether `spec` is a GGUF model not dequantized yet (only a job does that, never a page run)."""
    from tp_core.llm_source import converted_folder

    path = _gguf(spec.strip())
    return path is not None and converted_folder(path) is None


def preparation_job(spec: str):
    """The job that gets a GGUF model (`smollm2` or a .gguf file) ready: dequantized once if it is not yet, then
    loaded in this process. None when it is loaded already, or for any other spec."""
    from tp_core.refs import loaded_model
    from tp_core.work import prepare_llm_job

    spec = spec.strip()
    path = _gguf(spec)
    if path is None or loaded_model(spec) is not None:
        return None
    return prepare_llm_job(spec, path.stat().st_size, needs_conversion(spec))


_LOADING: dict[str, tuple[threading.Thread, list]] = {}  # spec -> (its loading thread, [error message])
_LOADING_LOCK = threading.Lock()


def loading_in_background(spec: str) -> str | None:
    """For a causal LM the app has not loaded yet: load it in a thread of the app's process (a page run never
    waits for its seconds of loading; the workers' process may hold its own copy already). Returns "loading"
    while it loads, an error message if it failed, None once it is loaded (or for any other spec)."""
    from tp_core.llm_source import is_causal_lm_spec
    from tp_core.refs import loaded_model

    if not is_causal_lm_spec(spec) or loaded_model(spec) is not None or needs_conversion(spec):
        return None
    with _LOADING_LOCK:
        thread, error = _LOADING.get(spec, (None, []))
        if thread is None or (not thread.is_alive() and not error):
            error = []
            thread = threading.Thread(target=_load_into, args=(spec, error), name=f"tp-load-{spec}", daemon=True)
            _LOADING[spec] = (thread, error)
            thread.start()
    if error:
        with _LOADING_LOCK:
            _LOADING.pop(spec, None)  # the next visit tries again
        return error[0]
    return "loading" if thread.is_alive() else None


def any_loading() -> bool:
    """Whether a background load of a causal LM is running in this process."""
    with _LOADING_LOCK:
        return any(thread.is_alive() for thread, _ in _LOADING.values())


def wait_for_load(spec: str) -> None:
    """Redraw the page once the app's background load of `spec` has ended (polled, as job progress is)."""
    ss = st.session_state
    started = ss.setdefault(f"_load_started::{spec}", time.time())

    def body():
        if loading_in_background(spec) != "loading":
            ss.pop(f"_load_started::{spec}", None)
            st.rerun(scope="app")
        st.caption(f"loading... {time.time() - started:.0f} s")

    st.fragment(body, run_every=1.0)()


def _load_into(spec: str, error: list) -> None:
    try:
        _load_model_cached(spec, False)
    except Exception as exc:  # noqa: BLE001 - shown on the Model page
        error.append(str(exc) if isinstance(exc, TPError) else f"{type(exc).__name__}: {str(exc)[:300]}")


@st.cache_resource(show_spinner=False, max_entries=16)
def _prompt_view(spec: str, trust_remote_code: bool, edits: str):
    from tp_core.decoder import PromptTask, prompt_view

    prompts = {task: PromptTask.from_dict(d) for task, d in json.loads(edits).items()}
    return prompt_view(_load_model_cached(spec, trust_remote_code), prompts)


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
    if needs_conversion(spec):  # a page run never dequantizes: the Model page's job does
        raise TPError(f"{spec} is not dequantized yet: the Model page prepares it as a background job.")
    return _load_model_cached(spec, bool(trust_remote_code))


def prompt_edits(spec: str | None = None) -> dict:
    """The session's edited prompts of the causal LM `spec` (default: the session's model): {task: prompt dict}."""
    ss = st.session_state
    return dict((ss.get("prompt_edits") or {}).get(spec or ss["model_spec"], {}))


def set_prompt_edit(spec: str, task: str, prompt: dict | None) -> None:
    """Ask `task` of `spec` through `prompt` in this session (None: the default prompt again)."""
    ss = st.session_state
    edits = {k: dict(v) for k, v in (ss.get("prompt_edits") or {}).items()}
    mine = edits.setdefault(spec, {})
    if prompt is None:
        mine.pop(task, None)
    else:
        mine[task] = prompt
    ss["prompt_edits"] = {k: v for k, v in edits.items() if v}


def session_model(spec: str | None = None):
    """The session's model: the shared loaded model, or for a causal LM whose prompts this session edited, a view
    of it asking the session's prompts (decoder.prompt_view; views are shared by sessions with the same edits).
    Raises TPError with a friendly message."""
    spec = (spec or st.session_state["model_spec"]).strip()
    model = load_model(spec)
    edits = prompt_edits(spec)
    if model.kind != "causal_lm" or not edits:
        return model
    return _prompt_view(spec, trusted(spec), json.dumps(edits, sort_keys=True))


def current_model():
    """The session's model, or None with a note telling the user where to go (or that it is still loading)."""
    spec = st.session_state["model_spec"]
    if loading_in_background(spec) == "loading":
        st.info(f"`{spec}` is loading in the background (a few seconds); this page follows when it is ready.")
        wait_for_load(spec)
        return None
    try:
        return session_model()
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
    labels; a causal LM: the classification tasks it can be prompted with), plus uploaded data."""
    try:
        bundle = bundle_tasks()
    except TPError:
        bundle = {}
    if model.kind == "causal_lm":
        out = [n for n, why in askable_tasks(model, bundle).items() if why is None]
    else:
        out = [t for t in model.tasks if t in bundle]
    if len(model.tasks) == 1 and model.kind != "causal_lm":
        only = next(iter(model.tasks.values()))
        out += [n for n, s in bundle.items() if n not in out and s.problem == only.problem
                and s.num_labels == only.num_labels]
    custom = st.session_state.get("custom_data")
    if custom is not None:
        out.append(UPLOAD_PREFIX + custom[0].spec.name)
    return out


def askable_tasks(model, bundle: dict | None = None) -> dict[str, str | None]:
    """A causal LM's bundle tasks: the classification tasks with a train split (their demonstrations), the default
    ones first, each with None when the model can be asked it (its prompt resolves), else the reason why not (e.g.
    label words that are not single tokens of its vocabulary)."""
    bundle = bundle_tasks() if bundle is None else bundle
    first = [t for t in app_settings().tasks if t in bundle]
    names = [n for n in dict.fromkeys(first + sorted(bundle))
             if bundle[n].problem == "classification" and bundle[n].trainable]
    out: dict[str, str | None] = {}
    for name in names:
        try:
            model.resolve_task(name)
            out[name] = None
        except TPError as exc:
            out[name] = str(exc)
    return {n: why for n, why in out.items() if why is None} | {n: why for n, why in out.items() if why}


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


@st.cache_resource(show_spinner=False, max_entries=64)
def _prompt_tokens(source: str, prompt: str, head: str, data_id: int, _model, _data: TaskData) -> int:
    from tp_core.budget import budget_seq_len

    return budget_seq_len(_model, head, _data)


def budget_tokens(model, task: str, head: str) -> int:
    """Tokens per example for the budget helper (`budget.budget_seq_len`). A causal LM's is the mean length of its
    rendered prompts on the chart's examples: computed once per model, prompt and data, not on every page run."""
    from tp_core.budget import PROMPT_SAMPLE, budget_seq_len
    from tp_core.decoder import prompt_key

    if model.kind != "causal_lm":
        return budget_seq_len(model, head)
    data = validation_data(task, PROMPT_SAMPLE)
    return _prompt_tokens(str(model.source), prompt_key(model, head), head, id(data), model, data)


@st.cache_resource(show_spinner=False, max_entries=64)
def _first_examples(source: str, prompt: str, head: str, default: int, data_id: int, _model, _data: TaskData) -> int:
    from tp_core.decoder import own_tokens
    from tp_core.policy import first_examples as fit

    return fit(_model, default, own_tokens(_model, head, _data.texts, _data.pairs))


def first_examples(model, task: str, head: str, default: int) -> int:
    """How many examples the Prune page's first estimate is on (`policy.first_examples`): `default` for an
    encoder; for a causal LM, sized by what its prompts cost, measured on the chart's first examples once per
    model, prompt and data, not on every page run."""
    from tp_core.budget import PROMPT_SAMPLE
    from tp_core.decoder import prompt_key

    if model.kind != "causal_lm" or default <= 0:
        return default
    data = validation_data(task, PROMPT_SAMPLE)
    return _first_examples(str(model.source), prompt_key(model, head), head, default, id(data), model, data)
