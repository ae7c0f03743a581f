"""Job widgets: progress bars that follow a page's jobs in place, a button's one-off job and its answer, and the
sidebar's jobs panel. They poll the engine from Streamlit fragments and redraw the whole page when a result lands,
at most every RERUN_GAP_S."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import streamlit as st

from tp_core.errors import TPError
from tp_core.engine import ACTIVE
from tp_core.settings import app_settings

from .jobs import engine, job_info
from .state import session_id
from .style import fmt_seconds

# While jobs land one after another, the page is redrawn at most this often: a full rerun redraws every chart, in
# the app server and in each browser, and on a small machine that takes CPU from the workers.
RERUN_GAP_S = 2.5
# How often a progress fragment (jobs panel, page progress) polls while jobs run. Each poll redraws its bars in every
# open browser, which costs the workers CPU on a shared machine; 2 s still looks live.
POLL_S = 2.0
# ... and while a result the user waits for is pending (the Prune page's slider readout, a job about to end): the
# poll is cheap (job states only), and the result is drawn when it lands, not up to POLL_S + RERUN_GAP_S later.
URGENT_POLL_S = 0.5
# On a shared server every open session polls, and a shared job landing redraws every session waiting for it. The
# intervals above grow with the sessions that ran a script in the last LIVE_S seconds, so that all of them together
# stay within these rates (a class of 30 on two cores otherwise spends its CPU on progress polls and redraws).
POLLS_PER_S = 6.0  # regular polls per second, the whole server (per kind of poll)
URGENT_POLLS_PER_S = 12.0
# whole-page redraws triggered by landing jobs, per second, the whole server: settings.TP_APP_REDRAWS_PER_S
LIVE_S = 30.0
_SEEN: dict[str, float] = {}
_SEEN_LOCK = threading.Lock()


def note_session() -> None:
    """Count this session as open now (every page run and poll calls it)."""
    with _SEEN_LOCK:
        _SEEN[session_id()] = time.time()


def live_sessions() -> int:
    """Sessions of this server process that ran a script in the last LIVE_S seconds (at least 1)."""
    now = time.time()
    with _SEEN_LOCK:
        for sid in [sid for sid, t in _SEEN.items() if now - t > LIVE_S]:
            del _SEEN[sid]
        return max(1, len(_SEEN))


def poll_every(urgent: bool = False) -> float:
    """A progress fragment's poll interval: URGENT_POLL_S or POLL_S, longer when many sessions are open."""
    if urgent:
        return max(URGENT_POLL_S, live_sessions() / URGENT_POLLS_PER_S)
    return max(POLL_S, live_sessions() / POLLS_PER_S)


def page_due(final: bool = False) -> bool:
    """Whether a progress fragment may redraw the whole page now: at the last landing at once, otherwise when
    the page was last drawn at least RERUN_GAP_S ago (longer when many sessions are open)."""
    gap = max(RERUN_GAP_S, live_sessions() / app_settings().redraws_per_s)
    return final or time.time() - st.session_state.get("_page_run_at", 0.0) >= gap


def _refresh_stale_panel(state: dict) -> None:
    """Called by the page's progress fragments: on their first own rerun, redraw the whole page once if a job
    was submitted after the sidebar's jobs panel was drawn (so the panel starts following it)."""
    if state.get("first", True):
        state["first"] = False
    elif st.session_state.pop("_panel_stale", False):
        st.rerun(scope="app")


def job_line(info) -> str:
    """One line on a job: what, state, elapsed and remaining time."""
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


def show_progress_compact(keys: list[str], what: str) -> None:
    """One progress bar for many jobs (jobs done / all, and what runs now), updated in place; the page reruns
    whenever one of them lands (at most every RERUN_GAP_S), so results are drawn as they come."""
    keys = list(dict.fromkeys(keys))

    def counts():
        infos = [job_info(k) for k in keys]
        return infos, sum(1 for i in infos if i is not None and i.state not in ACTIVE)

    _, done0 = counts()
    active = done0 < len(keys)
    state: dict = {}

    def body():
        note_session()
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
    st.fragment(body, run_every=poll_every() if active else None)()


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
    infos = [job_info(k) for k in keys]
    active = any(i is not None and i.state in ACTIVE for i in infos)
    # a job about to end is polled every URGENT_POLL_S, so its result appears when it lands, not up to a poll
    # later (a fragment's interval is fixed when the page draws it: the page is redrawn once to switch)
    fast = active and _ending_soon(infos)
    state: dict = {}

    def body():
        note_session()
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

    st.fragment(body, run_every=poll_every(urgent=fast) if active else None)()


def _ending_soon(infos) -> bool:
    """Whether a running job is estimated to end within the next regular poll."""
    for i in infos:
        left = i.remaining if i is not None and i.state == "running" else None
        if left is not None and left < POLL_S:
            return True
    return False


KIND_LABELS = {"point": "curve points", "scores": "attribution runs", "ablation": "ablations", "export": "exports",
               "top_activating": "example searches", "search": "searches",
               "build_demo": "demo builds", "vocab": "vocabulary counts",
               "prepare_llm": "model conversions"}


def jobs_panel() -> None:
    """The sidebar's jobs panel: this session's running and waiting jobs (progress, elapsed, remaining, cancel)
    and the last finished ones; it refreshes itself while anything runs and reruns the page when a job ends."""
    try:
        eng = engine()
    except TPError as exc:
        st.error(f"Job engine unavailable: {exc}")
        return
    sid = session_id()
    active = bool(eng.jobs(owner=sid, active_only=True))

    def body():
        note_session()
        mine = eng.jobs(owner=sid)
        running = [i for i in mine if i.state in ACTIVE]
        ended = [i for i in mine if i.state not in ACTIVE and time.time() - (i.finished or 0) < 300]
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
    st.fragment(body, run_every=poll_every() if active else None)()
