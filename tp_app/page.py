"""Every page's frame: page set-up (title, style, logo, the session's state), the sidebar (current settings and the
jobs panel), friendly errors instead of tracebacks, and the installation's folders and caps the pages show."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import streamlit as st

from tp_core.errors import TPError
from tp_core.limits import limits
from tp_core.paths import REPO_ROOT
from tp_core.settings import app_settings

from . import runlog
from .progress import jobs_panel, note_session
from .share import link_note, open_link, share_control
from .state import init_state, remember_session, save_settings

ASSETS = REPO_ROOT / "assets"


def page(title: str, icon: str = "✂️", caption: str | None = None) -> None:
    """Set up a page: its title, style and logo, the session's state, a pending flash message and the sidebar."""
    st.set_page_config(page_title=f"{title} · TaskPrune Studio", page_icon=str(ASSETS / "icon.svg"), layout="wide")
    st.html(f"<style>{(ASSETS / 'style.css').read_text()}</style>")
    st.logo(str(ASSETS / "logo.svg"), icon_image=str(ASSETS / "icon.svg"), size="large")
    try:
        app_settings()  # a bad TP_APP_* variable: one clear message on every page, not a redacted traceback
    except TPError as exc:
        st.error(f"The app's settings are not valid: {exc} Correct the variable and restart the app.")
        st.stop()
    runlog.install()  # TP_APP_RUN_LOG: once per server (tp_app.launch installs it before the first session)
    init_state()
    open_link(title)  # a shared link's settings, before any widget reads them
    st.session_state["_page_run_at"] = time.time()
    note_session()
    st.title(title)
    if st.session_state.get("_flash"):
        st.success(st.session_state.pop("_flash"))
    link_note(title)
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


def sidebar_status() -> None:
    """The sidebar: the session's model, task and pruning settings, the copy-link box, then its jobs panel."""
    ss = st.session_state
    cur = lambda k: ss.get(f"w_{k}", ss.get(k))  # noqa: E731  (a moved widget's new value is already in w_<key>)
    with st.sidebar:
        st.markdown("**Current model**")
        st.code(ss["model_spec"], language=None)
        if cur("task"):
            st.markdown(f"**Task:** `{cur('task')}`")
        st.markdown(f"**Method:** `{cur('attr_method')}` · **FFN** {cur('ffn_sparsity'):.0%} · "
                    f"**heads** {cur('head_sparsity'):.0%} · {cur('allocation')}")
        share_control()
        jobs_panel()


def limits_rows() -> list[dict]:
    """The installation's caps as table rows (shown on the home page)."""
    return [{"limit": what, "value": value, "environment variable": env} for what, value, env in limits().describe()]


def exports_root() -> Path:
    """The folder the Export page writes into (TP_EXPORTS_DIR), created when missing."""
    root = app_settings().exports_dir
    root.mkdir(parents=True, exist_ok=True)
    return root
