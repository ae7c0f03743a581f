"""benchmarks/bench_pipelines.py's summary: win rates count a cell only when the paired interval excludes zero, and
the headroom counts the cells where the dense model itself beats the peer (the win rate no pipeline that stays at
or below the dense model's answers can exceed); the report says both."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_budget import paired  # noqa: E402
from bench_pipelines import summarise  # noqa: E402
from report_pipelines import _headroom  # noqa: E402


def _cell(task, budget, dense_ok, best, kwon):
    dense = float(dense_ok.mean())
    return {"task": task, "budget": budget, "keep": {"best": best.mean() / dense, "kwon": kwon.mean() / dense},
            "diff": {"best-kwon": paired(best, kwon, dense)}, "headroom": {"dense-kwon": paired(dense_ok, kwon, dense)}}


def test_win_rate_and_headroom_follow_the_intervals():
    n = 400
    right, half = np.ones(n), (np.arange(n) % 2).astype(np.float64)
    cells = [_cell("sst2", 0.3, right, right, half),  # the peer falls behind: dense and best both win
             _cell("sst2", 0.5, right, right, right),  # the peer keeps every answer: nobody can win
             _cell("sst2", 0.2, right, half, half)]  # dense would win, our best only ties
    s = summarise({"sst2": {"cells": cells, "seconds": {"best": 3.0, "kwon": 1.0}}})
    w = s["best_vs_kwon_win_rate"]
    assert (w["wins"], w["losses"], w["ties"], w["cells"]) == (1, 0, 2, 3)
    assert (w["dense_wins"], w["wins_where_dense_wins"]) == (2, 1) and w["dense_win_rate"] == round(2 / 3, 3)
    assert s["keep_at_flops_50"] == {"sst2": 1.0}
    line = " ".join(_headroom(s))
    assert "the dense model wins 2 of 3 cells" in line and "our best wins 1 of those" in line
