"""Per-browser-session state: the session's choices (`st.session_state`, isolated per session by Streamlit) with
their defaults, widgets whose values survive page changes, and the session's identity, kept in a cookie so that a
browser reload finds its settings and jobs again."""
from __future__ import annotations

import re
import threading
from dataclasses import replace
from collections.abc import Callable

import streamlit as st

from tp_core.attribution import AttributionConfig
from tp_core.budget import HEAD_GRID
from tp_core.defaults import RECOVERY_LEVEL
from tp_core.limits import limits
from tp_core.policy import APP_ATTRIBUTION, session_attribution
from tp_core.recovery import RecoveryConfig, active_config, as_config, samples_for
from tp_core.settings import DEFAULT_BASELINES, app_settings

# A new session's choices (the attribution ones are the app's attribution settings, policy.APP_ATTRIBUTION).
DEFAULTS = {
    "model_spec": None,  # set on first load
    "model_trust_code": False,  # the user allowed custom model code for model_spec (Model page checkbox)
    "task": None,
    "attr_method": APP_ATTRIBUTION.method,
    "attr_samples": APP_ATTRIBUTION.samples,
    "attr_steps": APP_ATTRIBUTION.steps,
    "attr_labels": APP_ATTRIBUTION.labels,
    "attr_units": APP_ATTRIBUTION.units,
    "ffn_sparsity": 0.5,
    "head_sparsity": 0.0,
    "allocation": "global",
    "baselines": list(DEFAULT_BASELINES),
    "recover_on": False,  # Prune page: "+ recovery" curves (tp_core/recovery.py)
    "recover_level": RECOVERY_LEVEL,  # the level the command line and the API default to (tp_core/defaults.py)
    "eval_limit": None,
    "custom_data": None,  # (TaskData, head) from an uploaded file
    "prompt_edits": None,  # {model spec: {task: prompt dict}}: a causal LM's prompts edited in this session
}


LABEL_CHOICES = ("gold", "predicted")  # the Attribution page's target labels
UNIT_CHOICES = ("both", "ffn", "heads")  # the Attribution page's units

# The sliders' ranges and steps (a budget's plan lies on them; a shared link's values must too).
FFN_MAX, FFN_STEP = 0.95, 0.01
HEAD_MAX, HEAD_STEP = HEAD_GRID[-1], HEAD_GRID[1]


def ranges() -> dict[str, tuple]:
    """(lowest, highest, step) of each numeric choice as its widget allows it, within the installation's caps:
    the pages draw their widgets with them and a shared link is checked against them."""
    cap = limits()
    return {"ffn_sparsity": (0.0, FFN_MAX, FFN_STEP), "head_sparsity": (0.0, HEAD_MAX, HEAD_STEP),
            "attr_samples": (4, min(512, cap.max_samples), 4), "attr_steps": (1, min(64, cap.max_steps), 1),
            "eval_limit": (20, min(10000, cap.max_eval_examples), 1)}


def default_choices() -> dict:
    """A new session's choices: DEFAULTS with the app's settings filled in (its model, validation examples and
    start-up attribution settings)."""
    settings = app_settings()
    out = {k: list(v) if isinstance(v, list) else v for k, v in DEFAULTS.items()}
    out["model_spec"], out["eval_limit"] = settings.model, settings.eval_limit
    cfg = session_attribution(settings)
    out["attr_samples"], out["attr_steps"] = cfg.samples, cfg.steps
    return out


def init_state() -> None:
    """Fill the session's choices that are not set yet (a reloaded session first gets its saved ones back), from
    DEFAULTS and the app's settings, so every page can read them."""
    ss = st.session_state
    session_id()  # first: a reloaded session gets its saved settings back before defaults fill the gaps
    for k, v in DEFAULTS.items():
        if k not in ss:
            ss[k] = list(v) if isinstance(v, list) else v
    settings = app_settings()
    if ss["model_spec"] is None:
        ss["model_spec"] = settings.model
    if ss["eval_limit"] is None:
        ss["eval_limit"] = settings.eval_limit
    if "_env_applied" not in ss:  # start-up defaults for scripted runs (browser test, screenshots, benchmark)
        ss["_env_applied"] = True
        for key, value in (("attr_samples", settings.attr_samples), ("attr_steps", settings.attr_steps)):
            if value is not None:
                ss[key] = value


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
    if options is not None and isinstance(st.session_state[wkey], list) \
            and not set(st.session_state[wkey]) <= set(options):  # a multiselect's values that are no option now
        st.session_state[wkey] = [v for v in st.session_state[wkey] if v in options]
    # The widget's own default is the value too: a browser that draws the widget without the value set through
    # session state (its first run superseded by a second one before the page mounted it, seen under load with a
    # shared link) would otherwise show the widget's bare default (a slider's minimum, no baselines).
    current = st.session_state[wkey]
    name = getattr(widget, "__name__", "")
    if name in ("radio", "selectbox"):
        kwargs.setdefault("index", options.index(current) if current in options else 0)
    else:
        kwargs.setdefault("default" if name == "multiselect" else "value", current)
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
    """The attribution settings the session chose (on the Attribution page), for `method` or the chosen one."""
    ss = st.session_state
    return replace(APP_ATTRIBUTION, method=method or ss["attr_method"], samples=int(ss["attr_samples"]),
                   steps=int(ss["attr_steps"]), labels=ss["attr_labels"], units=ss["attr_units"])


def recovery_config(level: str | None) -> RecoveryConfig | None:
    """The app's recovery at `level` (None or "none": no recovery), fitted on the app's number of calibration texts
    (TP_APP_RECOVER_SAMPLES): the Prune page's recovered curves, the tour and the Export page's deploy preset."""
    samples = samples_for(st.session_state.get("model_spec"), app_settings().recover_samples)
    return active_config(as_config(level or "none", samples))


# ----- the session's identity ----------------------------------------------------------------------------------
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
    """Remember the session's choices under its id (process-wide, the newest 5,000 sessions), for a reload."""
    ss = st.session_state
    keep = {k: ss.get(f"w_{k}", ss[k]) for k in DEFAULTS if k in ss and k != "custom_data"}
    with _SAVED_LOCK:
        _SAVED_SETTINGS[session_id()] = keep
        while len(_SAVED_SETTINGS) > 5000:
            _SAVED_SETTINGS.pop(next(iter(_SAVED_SETTINGS)))
