"""benchmarks/class30.py's pure helpers: the percentiles it reports, the students' own slider points and the
exactness check of what each session showed against tp_core's direct metric."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from class30 import cpu_used, exactness, own_points, p95, server_times, summary  # noqa: E402


def test_p95_and_summary_read_like_the_8_session_figure():
    values = [float(i) for i in range(1, 21)]  # 1..20 s
    assert p95(values) == 20.0 and p95([3.0]) == 3.0 and p95([]) is None
    assert summary([4.0, 1.0, 3.0, 2.0]) == {"n": 4, "p50_s": 2.5, "p95_s": 4.0, "max_s": 4.0}
    assert summary([]) == {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}


def test_own_points_are_unique_and_off_the_grid():
    avoid = {0, 30, 50, 51, 60, 90}
    plan = own_points(30, 2, avoid)
    flat = [p for own in plan for p in own]
    assert len(plan) == 30 and all(len(own) == 2 for own in plan)
    assert len(set(flat)) == 60 and not set(flat) & avoid and all(11 <= p <= 95 for p in flat)
    with pytest.raises(SystemExit, match="free slider points"):
        own_points(40, 3, avoid)


def test_exactness_flags_a_shown_metric_that_differs_or_was_not_computed():
    direct = {("sst2", 51, 200): 0.81249, ("sst2", 12, 200): 0.9}
    points = [{"task": "sst2", "ffn_pct": 51, "n": 200, "shown": "0.8125"},
              {"task": "sst2", "ffn_pct": 12, "n": 200, "shown": "0.8900"},
              {"task": "sst2", "ffn_pct": 13, "n": 200, "shown": "0.9000"}]
    check = exactness(points, direct)
    assert check["checked"] == 3 and check["exact"] == 1
    assert [(m["ffn_pct"], m["direct"]) for m in check["mismatches"]] == [(12, 0.9), (13, None)]


def test_cpu_used_counts_each_group_from_its_first_snapshot():
    """A process present in both snapshots counts its difference, a new one from zero, a gone one not at all."""
    before = {1: ("app server", 10.0), 2: ("browsers", 5.0), 3: ("other", 1.0)}
    after = {1: ("app server", 12.5), 2: ("browsers", 9.0), 4: ("browsers", 3.0), 5: ("job workers", 7.0)}
    out = cpu_used(before, after, wall_s=10.0)
    assert out["seconds"] == {"app server": 2.5, "job workers": 7.0, "browsers": 7.0, "benchmark": 0.0, "other": 0.0}
    cores = out["cores"]
    assert out["share_of_machine"]["browsers"] == round(7.0 / (10.0 * cores), 3)


def test_results_keep_the_configurations_a_run_left_out_with_their_run(tmp_path):
    import json

    from class30 import write_results

    path = tmp_path / "results.json"
    old = {"meta": {"date": "d1", "command": "c1", "config_env": {"two-workers": {"X": "1"}}},
           "summary": {"embedded": {"page_run": {"p95_s": 9.0}},
                       "two-workers": {"page_run": {"p95_s": 8.0}}}}
    path.write_text(json.dumps({"class30": old, "other": 1}))
    new = {"meta": {"date": "d2", "command": "c2"},
           "summary": {"embedded": {"page_run": {"p95_s": 3.0}, "new_point": {"p95_s": 4.0}},
                       "calm": {"page_run": {"p95_s": 2.0}}}}
    write_results(path, new)
    doc = json.loads(path.read_text())
    assert doc["other"] == 1 and (doc["class30_page_run_p95_s"], doc["class30_new_point_p95_s"]) == (3.0, 4.0)
    s = doc["class30"]["summary"]
    assert set(s) == {"embedded", "calm", "two-workers"} and "from" not in s["embedded"]
    assert s["two-workers"]["from"] == {"date": "d1", "command": "c1", "config_env": {"X": "1"}}  # its settings
    write_results(path, {**new, "meta": {"date": "d3", "command": "c3"}})  # kept figures keep their own run
    assert json.loads(path.read_text())["class30"]["summary"]["two-workers"]["from"]["date"] == "d1"


def test_server_times_reads_the_run_log_within_the_class(tmp_path):
    """Page runs: request -> end of the whole run that answered it; new points: the session's latest request before
    the first mark of a label; fragment runs by duration; all of it only within the class's window."""
    log = tmp_path / "runlog.jsonl"
    lines = [
        {"kind": "run", "session": "a", "page": "Prune", "started": 5.0, "ended": 6.0, "requested": [4.0]},  # before
        {"kind": "run", "session": "a", "page": "Prune", "started": 10.5, "ended": 11.0, "requested": [10.0]},
        {"kind": "run", "session": "b", "page": "Prune", "started": 12.0, "ended": 15.0, "requested": [11.0, 12.5]},
        {"kind": "run", "session": "b", "page": "Prune", "started": 16.0, "ended": 16.5, "requested": []},  # st.rerun
        {"kind": "fragment", "session": "a", "started": 13.0, "ended": 13.25},
        {"kind": "mark", "session": "a", "label": "At FFN 51%", "t": 14.0, "submitted": 10.1, "started": 10.2,
         "finished": 13.0},
        {"kind": "mark", "session": "a", "label": "At FFN 51%", "t": 18.0},  # a later poll draws it again
        {"kind": "mark", "session": "b", "label": "At FFN 51%", "t": 20.0, "submitted": 10.1, "started": 10.2,
         "finished": 13.0},  # the job session a asked for, done 0.5 s after b's request
        {"kind": "mark", "session": "b", "label": "At FFN 50%", "t": 12.2},  # the page's start value: not a move
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = server_times(log, 9.0, 30.0, {"At FFN 51%"})
    assert out["page_run"] == {"n": 3, "p50_s": 2.5, "p95_s": 4.0, "max_s": 4.0}  # 1.0, 4.0, 2.5
    assert out["new_point"] == {"n": 2, "p50_s": 5.75, "p95_s": 7.5, "max_s": 7.5}  # a: 14-10, b: 20-12.5
    assert out["new_point_engine"] == {"n": 2, "p50_s": 1.75, "p95_s": 3.0, "max_s": 3.0}  # a: 13-10, b: 13-12.5
    assert out["new_point_drawn_after"] == {"n": 2, "p50_s": 4.0, "p95_s": 7.0, "max_s": 7.0}  # a: 14-13, b: 20-13
    assert out["fragment_run"]["n"] == 1 and out["fragment_run"]["max_s"] == 0.25
    assert out["whole_runs"] == 3
    assert server_times(tmp_path / "missing.jsonl", 0, 1) == {}


def test_rig_bounds_follow_the_work_the_browsers_need():
    from class30_rig import class_bounds, moment_bounds

    # 4 students, 1 CPU second each, 2 cores, together: 2 CPU seconds are done per second at most
    assert moment_bounds(1.0, 4, 2, 0.0) == [0.5, 1.0, 1.5, 2.0]
    # spread out over 10 s, the work never forces a wait
    assert moment_bounds(1.0, 4, 2, 10.0) == [0.0] * 4
    # 30 students, 0.75 s each, within 3 s on 2 cores: the p95 of a moment (the 29th of 30) is 29 x 0.375 - 3
    b = class_bounds(0.75, 30, 2, 3.0, moves=1, other_runs=0)
    assert b["new_point_p95_s"] == b["page_run_p95_s"] == pytest.approx(29 * 0.375 - 3, abs=0.01)
    # the class's other page runs (bounded by 0) pull the pooled page-run p95 down, never the new points'
    more = class_bounds(0.75, 30, 2, 3.0, moves=1, other_runs=5)
    assert more["page_run_p95_s"] < b["page_run_p95_s"] and more["new_point_p95_s"] == b["new_point_p95_s"]
