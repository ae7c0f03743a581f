"""The server's own clock on page runs (`TP_APP_RUN_LOG`): a JSON-lines file, one line per finished script run, so
an operator (or benchmarks/class30.py) can see how long the server takes to answer its users, apart from the time
their browsers take to draw the answer.

Lines, times in seconds since the epoch (`time.time()`, the clock a browser on the same machine reads as Date.now()):
* `{"kind": "run", "session", "page", "started", "ended", "requested": [...]}`: a whole script run that finished
  (with success, an error on the page, or `st.stop`), with the arrival times of the users' rerun requests it answered
  (a click, a navigation, a slider's value: each key press on a slider sends one; a request that comes in while a
  run goes on restarts that run, so the first whole run to finish after a request answers it). Runs the app asks for
  itself (`st.rerun`, e.g. a progress fragment redrawing the page when a job lands) have no requests;
* `{"kind": "fragment", "session", "started", "ended"}`: a fragment's run (progress polls, the slider's readout);
* `{"kind": "mark", "session", "label", "t", ...}`: a page said it drew something worth timing (`mark`, e.g. the
  slider's first estimate: "At FFN 51%", with its job's `submitted`, `started` and `finished` times on the engine),
  during the run that draws it.

Streamlit has no public hook at the end of a script run: `install` wraps two methods of its `AppSession` (the rerun
request, the script runner's events). Should a Streamlit release rename them, `install` says so once and the app
runs as before, without the log.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from tp_core.settings import app_settings

_LOCK = threading.Lock()
_STATE: dict = {"installed": False, "path": None, "pending": {}, "started": {}}


def _write(line: dict) -> None:
    path = _STATE["path"]
    if path is None:
        return
    data = (json.dumps(line) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one append per line: lines never mix
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError:  # a full disk or a removed folder: the timing log never breaks a page run
        pass


def _on_request(session_id: str, client_state) -> None:
    """A user's rerun request arrived: remember when (a fragment's own rerun is not a page run)."""
    if client_state is not None and getattr(client_state, "fragment_id", ""):
        return
    with _LOCK:
        _STATE["pending"].setdefault(session_id, []).append(time.time())


def _on_event(session_id: str, runner: int, event, kwargs: dict) -> None:
    """A script runner's event: a run started, or a whole run or a fragment's run finished. Starts are kept per
    runner: a session's next runner can start before the last events of its previous one arrive. A run that began
    before the log was installed is logged with `started` None."""
    from streamlit.runtime.scriptrunner import ScriptRunnerEvent as E

    now = time.time()
    key = (session_id, runner)
    if event == E.SCRIPT_STARTED:
        pages = kwargs.get("pages") or {}
        page = pages.get(kwargs.get("page_script_hash"), {})
        with _LOCK:
            _STATE["started"][key] = (now, bool(kwargs.get("fragment_ids_this_run")),
                                             page.get("page_name", "") if isinstance(page, dict) else "")
        return
    whole = event in (E.SCRIPT_STOPPED_WITH_SUCCESS, E.SCRIPT_STOPPED_WITH_COMPILE_ERROR)
    if not whole and event != E.FRAGMENT_STOPPED_WITH_SUCCESS:
        return  # SCRIPT_STOPPED_FOR_RERUN: the run goes on as the next one
    with _LOCK:
        started, _, page = _STATE["started"].pop(key, (None, False, ""))
        requested = _STATE["pending"].pop(session_id, []) if whole else []
    if whole:
        _write({"kind": "run", "session": session_id, "page": page, "started": started, "ended": now,
                "requested": requested})
    else:
        _write({"kind": "fragment", "session": session_id, "started": started, "ended": now})


def install(path: Path | None = None) -> bool:
    """Start the log at `path` (default: the `TP_APP_RUN_LOG` setting; none: nothing to do). Idempotent; False
    where this Streamlit release lacks what it wraps (said once on stderr)."""
    if _STATE["installed"]:  # every page run calls it: no settings parsed once the log is on
        return True
    path = path if path is not None else app_settings().run_log
    if path is None:
        return False
    with _LOCK:
        if _STATE["installed"]:
            return True
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"TaskPrune Studio: TP_APP_RUN_LOG ignored: cannot create its folder ({exc})", flush=True)
            return False
        try:
            from streamlit.runtime.app_session import AppSession
            from streamlit.runtime.scriptrunner import ScriptRunnerEvent  # noqa: F401 - checked here, used later

            request, on_event = AppSession.request_rerun, AppSession._on_scriptrunner_event
        except (ImportError, AttributeError) as exc:
            print(f"TaskPrune Studio: TP_APP_RUN_LOG ignored: this Streamlit has no {exc}", flush=True)
            return False

        def request_rerun(self, client_state=None, *a, **kw):
            _on_request(self.id, client_state)
            return request(self, client_state, *a, **kw)

        def _on_scriptrunner_event(self, sender, event, *a, **kw):
            try:
                _on_event(self.id, id(sender), event, kw)
            except Exception:  # noqa: BLE001 - a timing log never breaks a page run
                pass
            return on_event(self, sender, event, *a, **kw)

        AppSession.request_rerun = request_rerun
        AppSession._on_scriptrunner_event = _on_scriptrunner_event
        _STATE.update(installed=True, path=str(path))
    return True


def mark(label: str, **extra) -> None:
    """Log that this page run drew `label` now, with `extra` figures (e.g. the drawn job's engine times); nothing when
    the log is off."""
    if _STATE["path"] is None:
        return
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None:
        _write({"kind": "mark", "session": ctx.session_id, "label": label, "t": time.time(), **extra})
