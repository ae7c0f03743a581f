"""RESULTS.md's section on a class on one server (benchmarks/class30.py: results.json keys `class30_page_run_p95_s`,
`class30_new_point_p95_s` and the side-by-side table under `class30`)."""
from __future__ import annotations

GOALS = {"page_run": ("every page run: action -> the end of the script run it started", 2.0),
         "first_load": ("opening the app (Streamlit's frontend loads first; not a page run)", None),
         "new_point": ("a new slider point: key press -> its first estimate shown", 15.0),
         "new_point_all_examples": ("the same point on all the task's validation examples", None)}
# the same figures on the server's own clock (TP_APP_RUN_LOG, tp_app/runlog.py): what a class whose browsers run on
# their own machines waits for, without the test browsers' drawing on the server's cores
SERVER_GOALS = {"page_run": ("on the server's clock: every rerun request -> the end of the whole run that answered it "
                             "(each slider key press is a request)", 2.0),
                "new_point": ("on the server's clock: the slider's request -> its first estimate drawn (every "
                              "moved-to value a session sent: a slow browser sends its key presses one by one)", 15.0),
                "new_point_engine": ("of which the engine: the request -> the estimate's job done (0: done before)",
                                     None),
                "new_point_drawn_after": ("of which the drawing: the job done -> the run that drew it (the "
                                          "browser asks for it: fragments poll from the browser)", None),
                "fragment_run": ("on the server's clock: a fragment's run (progress polls, the slider's readout)",
                                 None)}
NAMES = {"embedded": "embedded cluster (as `make run`)", "two-workers": "+ a second worker process (`TP_SCHEDULER`)"}
CONFIG_TEXT = {"embedded": "`embedded`, the server's own cluster as `make run` starts it",
               "two-workers": "`two-workers` adds {second_worker}"}


def _env(meta: dict, name: str) -> str:
    """The app settings a configuration of class30.CONFIG_ENV ran with, as `VAR=value` (empty for the others); for
    a configuration kept from an earlier run, that run's (`from`)."""
    kept = ((meta.get("_kept") or {}).get(name) or {}).get("config_env")
    env = kept if kept is not None else (meta.get("config_env") or {}).get(name, {})
    return " ".join(f"`{k}={v}`" for k, v in env.items())


def _name(meta: dict, name: str) -> str:
    return f"embedded, {_env(meta, name)}" if _env(meta, name) else NAMES.get(name, name)


def _s(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _row(name: str, label: str, what: str, s: dict, goals: dict = GOALS) -> str:
    f = s.get(what) or {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    text, goal = goals[what]
    failed = s.get("errors") or 0  # sessions that stopped (a step not shown in time): their waits are not in n
    verdict = "" if goal is None or f["p95_s"] is None or name != "embedded" else (
        f"**not met**: {failed} sessions stopped" if failed else "met" if f["p95_s"] <= goal else "**not met**")
    return (f"| {label} | {text} | {f['n']} | {_s(f['p50_s'])} | {_s(f['p95_s'])} | "
            f"{_s(f['max_s'])} | {'–' if goal is None else f'<= {goal:g} s'} | {verdict} |")


def section(res: dict) -> list[str]:
    """The class's page runs and new points per configuration, with exactness and the shared point's job count."""
    c = res["class30"]
    m = {**c["meta"], "_kept": {n: s["from"] for n, s in c["summary"].items() if s.get("from")}}
    L = ["## A class on one server (`class30_page_run_p95_s`, `class30_new_point_p95_s`, "
         "`class30_server_page_run_p95_s`, `class30_server_new_point_p95_s`)", "",
         f"`{m['command']}` ({m['date']}, {m['machine']}, {m['wall_s'] / 60:.1f} min): {m['sessions']} students in "
         f"one headless Chromium (a browser context each, on the server's cores"
         + (f", at CPU priority nice {m['browser_nice']}" if m.get("browser_nice") else "")
         + (f", all of them in one CPU cgroup of weight {m['browser_shares']} (cgroup v1 cpu.shares; a process "
            "at nice 0 weighs 1,024, a job worker at nice 10 weighs 110): they run on what the server and its "
            "workers leave"
            if m.get("browser_shares") else "")
         + ("; so that the server and its workers come first, as with a real class's own machines"
            if m.get("browser_nice") or m.get("browser_shares") else "") +
         ") against `python -m tp_core serve` "
         f"with the warm start, model {m['settings']['TP_APP_MODEL']}, cold caches. Each walks the guided tour "
         f"(five steps, reading each about {m['read_s']:g} s), opens Prune on {m['task']}, then the class moves the "
         f"FFN slider within {m['spread_s']:g} s of each other: once to the same new point ({m['shared_pct']}%), "
         f"then {m['own_rounds']} time(s) to a point of each student's own. Configurations: " + "; ".join(
             f"`{n}`, the same with {_env(m, n)}" if _env(m, n) else CONFIG_TEXT[n].format(**m)
             for n in c["summary"] if _env(m, n) or n in CONFIG_TEXT) +
         ". Goals apply to the embedded cluster; p95 as the 8-session figure takes it."
         + (" Rows \"on the server's clock\" come from the server's own log (`TP_APP_RUN_LOG`, tp_app/runlog.py): "
            "they leave out the time the test browsers, on the same cores, take to send a request and to draw the "
            "answer, which a class's own machines would take instead. Streamlit's fragments poll from the browser, "
            "so the drawing part of a new point still waits for a browser to ask."
            if any(s.get("server") for s in c["summary"].values()) else ""), "",
         "| configuration | what | n | median s | p95 s | max s | goal | |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, s in c["summary"].items():
        L += [_row(name, _name(m, name), what, s) for what in GOALS]
        server = s.get("server") or {}
        L += [_row(name, _name(m, name), what, server, SERVER_GOALS) for what in SERVER_GOALS if server.get(what)]
    L.append("")
    for name, s in c["summary"].items():
        L.append(f"- {_name(m, name)}: results exact in {s['exact']} points checked against tp_core's "
                 f"direct metric (all examples); the shared point's jobs ran at most "
                 f"{s['shared_max_computations']} time(s); {s['errors']} errors"
                 + (f"; {s['page_runs_still_busy']} page runs still busy at 60 s (counted at the time waited)"
                    if s.get("page_runs_still_busy") else "") + "; warm start "
                 f"{_s(s['warm_start_s'])} s before the class; the class took {s['wall_s']} s"
                 + (f" (from an earlier run: `{s['from']['command']}`, {s['from']['date']})." if s.get("from")
                    else "."))
        cpu = s.get("cpu")
        if cpu:
            parts = ", ".join(f"{g} {v:.0f} s ({cpu['share_of_machine'][g]:.0%})" for g, v in cpu["seconds"].items())
            L.append(f"  Where the machine's CPU went during the class ({cpu['cores']} cores x {cpu['wall_s']:.0f} s): "
                     f"{parts}. A real class brings its own machines: only the app server and the job workers "
                     "would share this server's cores.")
    L += _calm(c["summary"])
    L += _without_cgroup(res.get("class30_browsers_without_cgroup"))
    L += _before_release(res.get("class30_before_release"), c["summary"].get("embedded"))
    L += _rig(res.get("class30_rig"))
    prev = res.get("class30_browsers_at_server_priority")
    if prev:
        e = prev["summary"]["embedded"]
        cpu = e.get("cpu") or {"seconds": {}}
        L += ["", f"The same class with the browsers at the server's CPU priority (`{prev['meta']['command']}`, "
              f"{prev['meta']['date']}, before `--browser-nice` existed: nice 0): page runs p95 "
              f"{_s(e['page_run']['p95_s'])} s (n {e['page_run']['n']}), new points p95 "
              f"{_s(e['new_point']['p95_s'])} s (n {e['new_point']['n']}), {e['errors']} sessions stopped at a "
              "180 s wait; CPU seconds: " +
              ", ".join(f"{g} {v:.0f}" for g, v in cpu["seconds"].items()) + ". The browsers took three times "
              "the CPU of the server and its workers together, and the workers (niced below the app) waited."]
    return L + [""]


def _calm(summary: dict) -> list[str]:
    """Fewer whole-page redraws against the default, from the same run: what changed and whether it helped."""
    e, k = summary.get("embedded"), summary.get("calm")
    if not e or not k or k.get("from") or e.get("from"):
        return []
    rows = [(w, q, e[w][q], k[w][q]) for w in ("page_run", "new_point") for q in ("p50_s", "p95_s")]
    text = ", ".join(f"{w.replace('_', ' ')} {q[:3]} {_s(a)} s -> {_s(b)} s" for w, q, a, b in rows)
    helped = all(k[w]["p95_s"] is not None and e[w]["p95_s"] is not None and k[w]["p95_s"] < e[w]["p95_s"]
                 for w in ("page_run", "new_point"))
    return ["", f"**Fewer redraws** (`calm` against `embedded`, same run): {text}; the class took "
            f"{k['wall_s']} s instead of {e['wall_s']} s; browsers {k['cpu']['share_of_machine']['browsers']:.0%} of "
            f"the machine instead of {e['cpu']['share_of_machine']['browsers']:.0%}. "
            + ("It helped: both p95s dropped." if helped else
               "Not a remedy: the p95s did not both drop (one run each), so the default stays at 4 redraws/s.")]


def _before_release(prev: dict | None, now: dict | None) -> list[str]:
    """The same class before a moved slider released the points it no longer draws (the run the table had then),
    against the table's run: one run each, so only a change in every figure would say the release helped."""
    if not prev or not now or now.get("from"):
        return []
    e = prev["summary"]["embedded"]
    pairs = [("page runs p95", e["page_run"], now["page_run"]), ("new points p95", e["new_point"], now["new_point"]),
             ("server: new points p95", e["server"]["new_point"], now["server"]["new_point"]),
             ("of which the engine p95", e["server"]["new_point_engine"], now["server"]["new_point_engine"]),
             ("the drawing p95", e["server"]["new_point_drawn_after"], now["server"]["new_point_drawn_after"])]
    text = ", ".join(f"{w} {_s(a['p95_s'])} s -> {_s(b['p95_s'])} s" for w, a, b in pairs)
    cpu = (e["cpu"]["seconds"]["job workers"], now["cpu"]["seconds"]["job workers"])
    lower = all(b["p95_s"] < a["p95_s"] for _, a, b in pairs)
    return ["", f"**Before and after a moved slider lets go of its old points** ({prev['change']}; before: "
            f"`{prev['meta']['command']}`, {prev['meta']['date']}; after: the table's run): {text}; job workers' CPU "
            f"{cpu[0]:.0f} s -> {cpu[1]:.0f} s. " + (
                "Every figure lower (one run each)." if lower else
                "No clear effect (one run each; the figures moved both ways; how many jobs the class released "
                "was not counted). It stays: it keeps the queue clear when a user runs through several values "
                "faster than their points are computed (tests/test_app_jobs.py).")]


def _without_cgroup(prev: dict | None) -> list[str]:
    """The same class with the browsers at nice 19 only (no CPU cgroup): where the engine's time went."""
    if not prev:
        return []
    e = prev["summary"]["embedded"]
    sv, cpu = e.get("server") or {}, e.get("cpu") or {"share_of_machine": {}}
    p95 = lambda d, k: _s((d.get(k) or {}).get("p95_s"))  # noqa: E731
    share = ", ".join(f"{g} {v:.0%}" for g, v in cpu["share_of_machine"].items())
    return ["", f"The same class with the browsers at nice 19 only, no CPU cgroup (`{prev['meta']['command']}`, "
            f"{prev['meta']['date']}): in the browsers page runs p95 {p95(e, 'page_run')} s, new points p95 "
            f"{p95(e, 'new_point')} s; on the server's clock page runs p95 {p95(sv, 'page_run')} s, new points p95 "
            f"{p95(sv, 'new_point')} s, of which the engine p95 {p95(sv, 'new_point_engine')} s and the drawing "
            f"p95 {p95(sv, 'new_point_drawn_after')} s; {e['errors']} errors; share of the machine: {share}. "
            "Each of the 30 renderer processes at nice 19 still weighs 15 against the job worker's 110 at nice 10, "
            "and the students' own points waited in the worker's queue. With the browsers in a cgroup (the table "
            "above, when its run says so) the server answers its page runs and its points sooner, but the browsers "
            "get only what is left and take minutes to send a request and draw the answer (and send a slider's key "
            "presses one by one, so the server draws more values): neither arrangement of one 2-core machine "
            "stands in for 30 students on their own machines."]


def _rig(rig: dict | None) -> list[str]:
    """What the test browsers themselves cost (benchmarks/class30_rig.py) and the least p95s that leaves."""
    if not rig:
        return []
    b = rig["bounds"]
    kinds = ", ".join(f"{r['kind']} {r['cpu_s']:.2f}" for r in rig["runs"])
    met = lambda v, goal: "within" if v <= goal else "above"  # noqa: E731
    return ["", f"**What the test browsers cost** (`{rig['command']}`, {rig['date']}, {rig['cores']} cores, model "
            f"{rig['model']}): one student walking alone with the server's caches warm, so that no job runs. Opening "
            f"the app took {rig['opening_cpu_s']:.1f} CPU s; its page runs (CPU s from the action to the run's end, "
            f"all Chromium processes and the app server's process, not its job workers): {kinds}; median "
            f"{rig['page_run_cpu_s_median']:.2f}. When {rig['sessions']} browsers on these {rig['cores']} cores move "
            f"the slider within {rig['spread_s']:g} s ({rig['moves']} such moments per student, the cheapest slider "
            f"run measured, {rig['slider_cpu_s_min']:.2f} CPU s each), the work alone keeps the (i+1)-th run from "
            f"ending sooner than (i+1) x {rig['slider_cpu_s_min']:.2f} / {rig['cores']} - {rig['spread_s']:g} s "
            "after its press, with no job waiting and nothing else on the machine. With every other page run "
            "counted as 0 s, the "
            f"class's browser-clock page-run p95 cannot be below **{b['page_run_p95_s']:.2f} s** "
            f"({met(b['page_run_p95_s'], 2)} the goal of 2 s) and its new-point p95 not below "
            f"**{b['new_point_p95_s']:.2f} s** ({met(b['new_point_p95_s'], 15)} the goal of 15 s) on this machine: "
            + ("the page-run goal on the browsers' clock needs the students' own machines (or more cores for the "
               "test browsers), whatever the app does; the server's own clock above is the figure the app controls."
               if b["page_run_p95_s"] > 2 else "the browsers alone do not rule the goals out here.")]
