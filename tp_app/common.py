"""Streamlit glue shared by the pages: state, caches, progress bars, friendly errors, colours.

No ML logic lives here: everything is a call into `tp_core`. Per-browser-session choices live in
`st.session_state` (isolated per session by Streamlit); loaded models, data and scores are shared through
process-wide caches (`st.cache_resource` and small locked dicts) plus the engine's on-disk caches.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import streamlit as st

from tp_core.attribution import AttributionConfig, UnitScores, cached_scores_path
from tp_core.data import TaskData, list_tasks, load_split
from tp_core.errors import TPError
from tp_core.limits import limits
from tp_core.paths import REPO_ROOT
from tp_core.serve import COARSE_EXAMPLES as _COARSE
from tp_core.serve import SLIDER_FIRST_EXAMPLES as _SLIDER_FIRST
from tp_core.serve import DEFAULT_BASELINES, DEFAULT_EVAL_LIMIT, DEFAULT_TASKS, default_grid

# One colour per method, used by every chart.
METHOD_COLORS = {
    "ig": "#1f77b4",
    "grad_x_act": "#ff7f0e",
    "activation": "#2ca02c",
    "magnitude": "#9467bd",
    "random": "#7f7f7f",
    "dense": "#111111",
}
METHOD_LABELS = {
    "ig": "integrated gradients (ig)",
    "grad_x_act": "gradient x activation",
    "activation": "mean |activation|",
    "magnitude": "weight magnitude (data-free)",
    "random": "random (seeded)",
}
ATTRIBUTION_HELP = (
    "The attribution of a neuron for a task says how much the model's confidence in the right answer depends on "
    "that neuron. Integrated gradients (ig) turns the neuron's activation down from its real value to 0 in small "
    "steps and adds up how much the target-class probability changes along the way; the result is averaged over the "
    "N scoring examples. Neurons with low attribution can be removed with little loss - for this task."
)


# ----- settings from the environment (tests and the benchmark pick the quick model here) ---------------------------
def default_model_spec() -> str:
    return os.environ.get("TP_APP_MODEL", "demo")


def upload_limits_caption() -> str:
    cap = limits()
    return (f"Limits: files up to {cap.max_file_mb} MB, {cap.max_rows:,} rows and {cap.max_text_chars:,} characters "
            "per text; UTF-8 CSV/TSV with a header row, JSONL, or a JSON list of objects.")


def limits_rows() -> list[dict]:
    """The installation's caps as table rows (shown on the home page)."""
    return [{"limit": what, "value": value, "environment variable": env} for what, value, env in limits().describe()]


curve_grid = default_grid  # the warm start's grid (tp_core/serve.py), so its jobs are the pages' jobs


def eval_limit_default() -> int:
    return int(os.environ.get("TP_APP_EVAL_LIMIT", DEFAULT_EVAL_LIMIT))


def exports_root() -> Path:
    root = Path(os.environ.get("TP_EXPORTS_DIR") or REPO_ROOT / "exports")
    root.mkdir(parents=True, exist_ok=True)
    return root


# ----- page set-up and errors ----------------------------------------------------------------------------------
ASSETS = REPO_ROOT / "assets"


def page(title: str, icon: str = "✂️", caption: str | None = None) -> None:
    st.set_page_config(page_title=f"{title} · TaskPrune Studio", page_icon=str(ASSETS / "icon.svg"), layout="wide")
    st.html(f"<style>{(ASSETS / 'style.css').read_text()}</style>")
    st.logo(str(ASSETS / "logo.svg"), icon_image=str(ASSETS / "icon.svg"), size="large")
    init_state()
    st.session_state["_page_run_at"] = time.time()
    st.title(title)
    if st.session_state.get("_flash"):
        st.success(st.session_state.pop("_flash"))
    if caption:
        st.caption(caption)
    sidebar_status()
    save_settings()
    remember_session()


@contextlib.contextmanager
def friendly(what: str):
    """Show a TPError's message (or a short note for a bug) instead of a traceback."""
    try:
        yield
    except TPError as exc:
        st.error(str(exc))
    except Exception as exc:  # a bug: still no traceback on the page
        st.error(f"Something went wrong while {what}: {type(exc).__name__}: {str(exc)[:300]}")


# ----- session state -------------------------------------------------------------------------------------------
DEFAULTS = {
    "model_spec": None,  # set on first load
    "model_trust_code": False,  # the user allowed custom model code for model_spec (Model page checkbox)
    "task": None,
    "attr_method": "ig",
    "attr_samples": 64,
    "attr_steps": 2,  # tp_core.work.APP_ATTRIBUTION: the cheapest setting as faithful as 50 steps
    "attr_labels": "gold",
    "attr_units": "both",
    "ffn_sparsity": 0.5,
    "head_sparsity": 0.0,
    "allocation": "global",
    "baselines": list(DEFAULT_BASELINES),
    "recover_on": False,  # Prune page: "+ recovery" curves (tp_core/recovery.py)
    "recover_level": "lstsq",
    "eval_limit": None,
    "custom_data": None,  # (TaskData, head) from an uploaded file
}


def init_state() -> None:
    ss = st.session_state
    session_id()  # first: a reloaded session gets its saved settings back before defaults fill the gaps
    for k, v in DEFAULTS.items():
        if k not in ss:
            ss[k] = list(v) if isinstance(v, list) else v
    if ss["model_spec"] is None:
        ss["model_spec"] = default_model_spec()
    if ss["eval_limit"] is None:
        ss["eval_limit"] = eval_limit_default()
    if "_env_applied" not in ss:  # start-up defaults for scripted runs (browser test, screenshots, benchmark)
        ss["_env_applied"] = True
        for key, env in (("attr_samples", "TP_APP_ATTR_SAMPLES"), ("attr_steps", "TP_APP_ATTR_STEPS")):
            if os.environ.get(env):
                ss[key] = int(os.environ[env])


def persisted(widget: Callable, label: str, key: str, **kwargs):
    """A widget whose value survives page changes: it lives in `session_state[key]`; the widget has its own key."""
    wkey = f"w_{key}"
    options = kwargs.get("options")
    if options is not None:
        options = list(options)
        if st.session_state.get(key) not in options and not isinstance(st.session_state.get(key), list):
            st.session_state[key] = options[0]
        if wkey in st.session_state and not isinstance(st.session_state[wkey], list) \
                and st.session_state[wkey] not in options:
            del st.session_state[wkey]
    if wkey not in st.session_state:
        st.session_state[wkey] = st.session_state[key]
    value = widget(label, key=wkey, **kwargs)
    st.session_state[key] = value
    return value


def set_value(key: str, value) -> None:
    """Change a persisted widget's value (call before the widget is drawn, or st.rerun() afterwards)."""
    st.session_state[key] = value
    st.session_state.pop(f"w_{key}", None)  # the widget re-reads `key` on the next run


def flash(message: str) -> None:
    """A success message shown once at the top of the next run (survives st.rerun())."""
    st.session_state["_flash"] = message


def attribution_config(method: str | None = None) -> AttributionConfig:
    ss = st.session_state
    from tp_core.work import APP_ATTRIBUTION

    return replace(APP_ATTRIBUTION, method=method or ss["attr_method"], samples=int(ss["attr_samples"]),
                   steps=int(ss["attr_steps"]), labels=ss["attr_labels"], units=ss["attr_units"])


# ----- shared caches -------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model_cached(spec: str, trust_remote_code: bool = False):
    from tp_core.model import load_model

    return load_model(spec, trust_remote_code=trust_remote_code)


def load_model(spec: str, trust_remote_code: bool | None = None):
    """Shared loaded model (raises TPError with a friendly message). Custom model code is allowed only when asked
    for, or (None) when the session loaded this very spec with the Model page's opt-in box ticked."""
    spec = spec.strip()
    if not spec:
        raise TPError("Type a model folder or hub id first.")
    if trust_remote_code is None:
        ss = st.session_state
        trust_remote_code = bool(ss.get("model_trust_code")) and spec == str(ss.get("model_spec") or "").strip()
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
    return {t.name: t for t in list_tasks()}


UPLOAD_PREFIX = "upload:"
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
    tasks = model_tasks(model)
    if not tasks:
        return None
    if st.session_state["task"] not in tasks:  # sst2 first: its curves tell the story best (docs/RESULTS.md)
        st.session_state["task"] = next((t for t in DEFAULT_TASKS if t in tasks), tasks[0])
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


# ----- jobs: every heavy computation goes through tp_core's job engine ---------------------------------------------
def engine():
    """The process's job engine (an embedded Dask cluster, or the one TP_SCHEDULER names)."""
    from tp_core.engine import get_engine

    return get_engine()


SID_RE = re.compile(r"[0-9a-f]{12}")
_SAVED_SETTINGS: dict = {}  # session id -> its choices, so a browser reload finds its settings and jobs again
_SAVED_LOCK = threading.Lock()


def _cookie(name: str) -> str | None:
    try:
        value = st.context.cookies.get(name)
    except Exception:  # no request context
        return None
    return value if isinstance(value, str) else None  # (AppTest has no real request)


def session_id() -> str:
    """This browser session's id: from `?sid=` (a shared link), the `tp_sid` cookie (a reload), or new."""
    ss = st.session_state
    if "_sid" not in ss:
        sid = st.query_params.get("sid") or _cookie("tp_sid")
        if sid and SID_RE.fullmatch(sid):
            ss["_sid"] = sid
            with _SAVED_LOCK:
                saved = dict(_SAVED_SETTINGS.get(sid, {}))
            for k, v in saved.items():
                ss[k] = v
        else:
            from tp_core.engine import new_owner_id

            ss["_sid"] = new_owner_id()
    return ss["_sid"]


def remember_session() -> None:
    """Keep the session id in a cookie (`tp_sid`, this site only, one day), so a browser reload finds the session's
    jobs and settings again (Streamlit has no cookie API; putting the id into the URL with `st.query_params` sent
    the browser to the home page's address)."""
    sid = session_id()
    if st.session_state.get("_sid_cookie") == sid:
        return
    st.session_state["_sid_cookie"] = sid
    with st.sidebar:
        st.html(f"<script>document.cookie='tp_sid={sid};path=/;max-age=86400;SameSite=Lax';</script>",
                unsafe_allow_javascript=True, width="content")


def save_settings() -> None:
    ss = st.session_state
    keep = {k: ss.get(f"w_{k}", ss[k]) for k in DEFAULTS if k in ss and k != "custom_data"}
    with _SAVED_LOCK:
        _SAVED_SETTINGS[session_id()] = keep
        while len(_SAVED_SETTINGS) > 5000:
            _SAVED_SETTINGS.pop(next(iter(_SAVED_SETTINGS)))


def submit(job, priority: int = 0, retry: bool = False) -> str:
    """Submit a job for this session (shared with any session asking for the same thing); returns its key.
    `retry`: run it again if it failed or was cancelled (a button the user pressed, not a page rerun)."""
    eng = engine()
    info = eng.status(job.key)
    key = eng.submit(job, owner=session_id(), priority=priority, retry=retry)
    if not st.session_state.get("_panel_polling") and (info is None or info.state in ("queued", "running")):
        st.session_state["_panel_stale"] = True  # the sidebar panel was drawn before this job existed
    return key


# While jobs land one after another, the page is redrawn at most this often (a full rerun redraws every chart, in
# the app server and in each browser: on 2 cores, one rerun per landed point took CPU from the workers).
RERUN_GAP_S = 2.5
# How often a progress fragment (jobs panel, page progress) polls while jobs run. Each poll redraws its bars in every
# open browser; at 1 s, a Chromium on the same 2 cores as the workers spent 0.3 of a core on it, and the default
# curves took 121 s instead of 91 s (the workers lost more than that share: preempted sgemm). 2 s: still live.
POLL_S = 2.0
# ... and while a result the user waits for is pending (the Prune page's slider readout, a job about to end): the
# poll is cheap (job states only), and the result is drawn when it lands, not up to POLL_S + RERUN_GAP_S later.
URGENT_POLL_S = 0.5


def page_due(final: bool = False) -> bool:
    """Whether a progress fragment may redraw the whole page now: at the last landing at once, otherwise when
    the page was last drawn at least RERUN_GAP_S ago."""
    return final or time.time() - st.session_state.get("_page_run_at", 0.0) >= RERUN_GAP_S


def _refresh_stale_panel(state: dict) -> None:
    """Called by the page's progress fragments: on their first own rerun, redraw the whole page once if a job
    was submitted after the sidebar's jobs panel was drawn (so the panel starts following it)."""
    if state.get("first", True):
        state["first"] = False
    elif st.session_state.pop("_panel_stale", False):
        st.rerun(scope="app")


def job_info(key: str):
    return engine().status(key)


def job_result(key: str):
    """The job's result, or None while it runs; raises TPError (JobFailed) with the job's message if it failed."""
    return engine().result(key)


def ref(model):
    from tp_core.work import model_ref

    spec = str(model.source)
    ss = st.session_state
    trust = bool(ss.get("model_trust_code")) and spec == str(ss.get("model_spec") or "").strip()
    return model_ref(model, trust)


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
    from tp_core.work import scores_job as build

    return build(model, ref(model), head_for(task), cfg, scoring_ref(task, cfg), task_label=task)


_DISK_SCORES: dict = {}
_DISK_LOCK = threading.Lock()
_SCORE_PATHS: dict = {}  # scores job key -> its disk cache file name (py-spy: the Heatmaps page spent 96% of a rerun
#                           re-reading the 9 tasks' train splits to find out that their scores were not on disk)


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


def scores_for_units(cfg: AttributionConfig, head_sparsity: float) -> AttributionConfig:
    """Pruning heads needs head scores: widen `units` when needed."""
    if head_sparsity > 0 and cfg.units == "ffn":
        return replace(cfg, units="both")
    return cfg


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0.0, float(s))
    return "<1 s" if s < 1 else f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def job_line(info) -> str:
    """One line on a job: what, state, elapsed and remaining time."""
    from tp_core.engine import ACTIVE

    if info.state == "queued":
        ahead = engine().queue_position(info.key)
        est = f", ~{fmt_seconds(info.estimate_s)} once started" if info.estimate_s else ""
        return f"waiting ({ahead} ahead{est})"
    if info.state == "running":
        rem = info.remaining
        return f"{info.progress:.0%} · {fmt_seconds(info.elapsed)} elapsed · " + \
            ("estimating after the first batch" if rem is None else f"~{fmt_seconds(rem)} left")
    if info.state == "done":
        return f"done in {fmt_seconds(info.elapsed)}"
    if info.state == "cancelled":
        return "cancelled"
    return "failed" if info.state not in ACTIVE else info.state


def coarse_examples() -> int:
    return int(os.environ.get("TP_APP_COARSE_EXAMPLES", _COARSE))


COARSE_EXAMPLES = coarse_examples()
# the slider's quick first pass (0: none; the slider's point then starts on the coarse subset)
SLIDER_FIRST_EXAMPLES = int(os.environ.get("TP_APP_SLIDER_FIRST_EXAMPLES", _SLIDER_FIRST))


def rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def show_progress_compact(keys: list[str], what: str) -> None:
    """One progress bar for many jobs (jobs done / all, and what runs now), updated in place; the page reruns
    whenever one of them lands (at most every RERUN_GAP_S), so results are drawn as they come."""
    from tp_core.engine import ACTIVE

    keys = list(dict.fromkeys(keys))

    def counts():
        infos = [job_info(k) for k in keys]
        return infos, sum(1 for i in infos if i is not None and i.state not in ACTIVE)

    _, done0 = counts()
    active = done0 < len(keys)
    state: dict = {}

    def body():
        _refresh_stale_panel(state)
        now, done = counts()
        if done < len(keys):
            running = [i for i in now if i is not None and i.state == "running"]
            msg = f"{what}: {done}/{len(keys)} jobs done" + (f" · now: {running[0].label} ({job_line(running[0])})"
                                                             if running else " · waiting for a worker")
            st.progress(done / max(1, len(keys)), text=msg)
        if active and done != st.session_state.get(f"_compact_{what}") and page_due(done == len(keys)):
            st.session_state[f"_compact_{what}"] = done
            st.rerun(scope="app")

    st.session_state[f"_compact_{what}"] = done0
    st.fragment(body, run_every=POLL_S if active else None)()


def job_answer(slot: str, here: tuple, answer: Callable[[dict, object], dict], failed: str) -> None:
    """A one-off job a button started (`st.session_state[slot]` = {"key": ..., what the answer needs}): its
    progress while it runs; when it ends, its answer (`answer(pending, result)` -> {"where", "kind", "message"},
    kind success / warning / error), kept on screen as long as the page shows the setting it belongs to (`here`):
    a one-off message would vanish at the next rerun, which a landing point triggers a moment later."""
    ss = st.session_state
    pending = ss.get(slot)
    info = job_info(pending["key"]) if pending else None
    if pending and (info is None or info.state == "cancelled"):
        ss.pop(slot, None)
    elif pending and info.state == "error":
        ss.pop(slot, None)
        ss[f"{slot}_found"] = {"where": here, "kind": "error", "message": f"{failed}: {info.error}"}
    elif pending and info.state == "done":
        ss.pop(slot, None)
        ss[f"{slot}_found"] = answer(pending, info.result)
        st.rerun()
    elif pending:
        show_progress([pending["key"]])
    found = ss.get(f"{slot}_found")
    if found and found["where"] == here:
        {"success": st.success, "warning": st.warning, "error": st.error}[found["kind"]](found["message"])


def show_progress(keys: list[str], title: str | None = None) -> None:
    """Progress of the page's jobs, updated in place while they run; the page reruns when one of them ends
    (so results appear as they land) and failures are shown with the job's message."""
    keys = [k for k in dict.fromkeys(keys) if k]
    if not keys:
        return
    from tp_core.engine import ACTIVE

    infos = [job_info(k) for k in keys]
    active = any(i is not None and i.state in ACTIVE for i in infos)
    # a job about to end is polled every URGENT_POLL_S, so its result appears when it lands, not up to a poll
    # later (a fragment's interval is fixed when the page draws it: the page is redrawn once to switch)
    fast = active and _ending_soon(infos)
    state: dict = {}

    def body():
        _refresh_stale_panel(state)
        now = [job_info(k) for k in keys]
        if active and not fast and _ending_soon(now):
            st.rerun(scope="app")
        if title:
            st.markdown(title)
        for info in now:
            if info is None:
                continue
            if info.state in ACTIVE:
                st.progress(float(info.progress), text=f"{info.label}: {job_line(info)}")
            elif info.state == "error":
                st.error(f"{info.label} failed: {info.error}")
        if active and not any(i is not None and i.state in ACTIVE for i in now):
            st.rerun(scope="app")

    st.fragment(body, run_every=(URGENT_POLL_S if fast else POLL_S) if active else None)()


def _ending_soon(infos) -> bool:
    """Whether a running job is estimated to end within the next regular poll."""
    for i in infos:
        left = i.remaining if i is not None and i.state == "running" else None
        if left is not None and left < POLL_S:
            return True
    return False


# ----- sidebar -------------------------------------------------------------------------------------------------
def sidebar_status() -> None:
    ss = st.session_state
    cur = lambda k: ss.get(f"w_{k}", ss.get(k))  # noqa: E731  (a moved widget's new value is already in w_<key>)
    with st.sidebar:
        st.markdown("**Current model**")
        st.code(ss["model_spec"], language=None)
        if cur("task"):
            st.markdown(f"**Task:** `{cur('task')}`")
        st.markdown(f"**Method:** `{cur('attr_method')}` · **FFN** {cur('ffn_sparsity'):.0%} · "
                    f"**heads** {cur('head_sparsity'):.0%} · {cur('allocation')}")
        jobs_panel()


KIND_LABELS = {"point": "curve points", "scores": "attribution runs", "ablation": "ablations", "export": "exports",
               "top_activating": "example searches", "search": "searches",
               "build_demo": "demo builds", "vocab": "vocabulary counts"}


def jobs_panel() -> None:
    """The sidebar's jobs panel: this session's running and waiting jobs (progress, elapsed, remaining, cancel)
    and the last finished ones; it refreshes itself while anything runs and reruns the page when a job ends."""
    from tp_core.engine import ACTIVE

    try:
        eng = engine()
    except TPError as exc:
        st.error(f"Job engine unavailable: {exc}")
        return
    sid = session_id()
    active = bool(eng.jobs(owner=sid, active_only=True))

    def body():
        import time as _t

        mine = eng.jobs(owner=sid)
        running = [i for i in mine if i.state in ACTIVE]
        ended = [i for i in mine if i.state not in ACTIVE and _t.time() - (i.finished or 0) < 300]
        st.markdown(f"**Jobs** · {len(running)} active" + (" (one queue for everyone on this server; yours "
                                                           "first by urgency)" if running else ""))
        order = sorted(running, key=lambda i: (i.state != "running", -i.priority, i.submitted))
        for info in order[:4]:
            withdrawn = sid in info.withdrawn
            st.progress(float(info.progress), text=f"{info.label}\n" + ("cancelled for you; another session still "
                                                                        "uses it" if withdrawn else job_line(info)))
            if not withdrawn and st.button("Cancel", key=f"cancel_{info.key}", icon=":material/close:",
                                           type="tertiary", help=f"Cancel: {info.label}"):
                eng.cancel(info.key, owner=sid)
                st.rerun(scope="app")
        rest = order[4:]
        if rest:
            kinds: dict = {}
            for i in rest:
                kinds[i.kind] = kinds.get(i.kind, 0) + 1
            st.caption("also waiting: " + ", ".join(f"{n} {KIND_LABELS.get(k, k)}" for k, n in kinds.items()))
            if st.button("Cancel the waiting ones", key="cancel_rest", icon=":material/cancel:",
                         help="Withdraw this session's waiting jobs (jobs other sessions also wait for go on)."):
                for i in rest:
                    eng.cancel(i.key, owner=sid)
                st.rerun(scope="app")
        for info in ended[-4:][::-1]:
            if info.state == "error":
                st.error(f"{info.label}: {info.error}", icon="⚠️")
            else:
                st.caption(f"{'✓' if info.state == 'done' else '✕'} {info.label} · {job_line(info)}")
        if not running and not ended:
            st.caption("No jobs yet. Heavy work (attribution, curves, exports) runs here without blocking the page.")
        seen = set(i.key for i in running)
        prev = st.session_state.get("_active_jobs", set())
        if prev - seen and page_due(not seen):  # something of this session ended: redraw the page with its result
            st.session_state["_active_jobs"] = seen
            st.rerun(scope="app")
        st.session_state["_active_jobs"] = seen | (prev - seen)  # an ending not drawn yet stays due

    st.session_state["_active_jobs"] = {i.key for i in eng.jobs(owner=sid, active_only=True)}
    st.session_state["_panel_polling"] = active
    st.session_state.pop("_panel_stale", None)
    st.divider()
    st.fragment(body, run_every=POLL_S if active else None)()
