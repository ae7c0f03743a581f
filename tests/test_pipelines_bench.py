"""benchmarks/bench_pipelines.py's summary: win rates count a cell only when the paired interval excludes zero, and
the headroom counts the cells where the dense model itself beats the peer (the win rate no pipeline that stays at
or below the dense model's answers can exceed); the report says both."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_budget import paired  # noqa: E402
from bench_pipelines import held_out_train, summarise  # noqa: E402
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


def test_held_out_train_examples_neither_trained_the_demo_nor_calibrate():
    """--choose-on train: the examples that choose a split are labelled train examples outside the demo's training
    subset and the calibration texts, the same for the same seed."""
    from tp_core.data import load_split
    from tp_core.demo import DemoConfig
    from tp_core.recovery import calibration_data

    calib = calibration_data("trec", 64, 0)
    held = held_out_train("trec", 200, 0, calib)
    cfg = DemoConfig.for_build(False)
    trained = set(load_split("trec", "train", limit=cfg.max_per_task, seed=cfg.seed).texts)
    assert len(held) == 200 and len(held.labels) == 200
    assert not set(held.texts) & trained and not set(held.texts) & set(calib.texts)
    assert held_out_train("trec", 200, 0, calib).texts == held.texts
    assert held_out_train("trec", 200, 1, calib).texts != held.texts
