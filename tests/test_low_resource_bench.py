"""benchmarks/bench_low_resource.py's analysis: ig minus grad x act is a win or a loss only when the paired interval
excludes zero, cells missing a criterion's predictions are left out, and the verdict follows the low-resource cells."""
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_low_resource import analyse, cell_key  # noqa: E402


def test_verdicts_need_the_interval_to_exclude_zero_and_missing_cells_are_left_out():
    n = 200
    y = (np.arange(n) % 2).tolist()
    right, wrong = y, [1 - v for v in y]
    half = [v if i < n // 2 else 1 - v for i, v in enumerate(y)]
    args = SimpleNamespace(ns="8,16,64", predicted_ns="", points="0.7:0")
    preds = {"sst2|dense": [right],
             cell_key("sst2", 8, "gold", "ig", 0.7, 0): [right],  # ig clearly ahead: a win
             cell_key("sst2", 8, "gold", "grad_x_act", 0.7, 0): [half],
             cell_key("sst2", 16, "gold", "ig", 0.7, 0): [half],  # the same predictions: a tie
             cell_key("sst2", 16, "gold", "grad_x_act", 0.7, 0): [half],
             cell_key("sst2", 64, "gold", "ig", 0.7, 0): [wrong]}  # grad x act missing: no cell
    doc = {"labels": {"sst2": y}, "metric": {"sst2": "accuracy"}, "preds": preds,
           "times": {"scores": {"ig|8": [2.0, 4.0]}, "recovery": [1.0, 3.0]}}
    res = analyse(args, doc)
    assert [(c["n"], c["ig_minus_gxa"]["verdict"]) for c in res["cells"]] == [(8, "win"), (16, "tie")]
    assert res["counts"] == {"win": 1, "loss": 0, "tie": 1}
    assert res["cells"][0]["ig"]["keep"] == 1.0 and res["cells"][0]["grad_x_act"]["keep"] == 0.5
    assert "ig earns its cost" in res["verdict"] and res["scores_seconds_median"] == {"ig|8": 3.0}
    preds[cell_key("sst2", 8, "gold", "ig", 0.7, 0)] = [wrong]  # now a loss at N=8
    res = analyse(args, doc)
    assert res["counts"] == {"win": 0, "loss": 1, "tie": 1} and "does better in more" in res["verdict"]
