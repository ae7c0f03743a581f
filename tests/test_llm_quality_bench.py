"""benchmarks/llm_quality.py's pure parts: our pipeline chosen on the selection set (never on validation), a win or
a loss against Wanda-sp only when the paired interval excludes zero, and unfinished cells reported as missing."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from llm_quality import analyse, cell_key, choose  # noqa: E402


def _doc(n: int = 80) -> dict:
    y = np.arange(n) % 2
    right, wrong = y.tolist(), (1 - y).tolist()
    half = (np.where(np.arange(n) < n // 2, y, 1 - y)).tolist()
    preds = {cell_key("sst2", w, "dense", "none", 0, 0, 0): right for w in ("val", "sel")}

    def put(which, method, f, h, p):
        preds[cell_key("sst2", which, method, "none", f, h, 0)] = p

    for f in (0.3, 0.5, 0.7):  # ig is the better one on the selection set, grad_x_act on validation
        put("sel", "grad_x_act", f, 0, half)
        put("sel", "ig", f, 0, right)
        put("val", "grad_x_act", f, 0, right)
        put("val", "ig", f, 0, half)
        put("val", "flap", f, 0, half)
    put("val", "wanda_sp", 0.5, 0, wrong)  # ig (half right) clearly ahead: a win
    put("val", "wanda_sp", 0.3, 0, half)  # equal: a tie
    put("val", "wanda_sp", 0.7, 0, right)  # clearly behind: a loss
    settings = {"tasks": ["sst2"], "seeds": [0], "levels": ["none"], "threads": 2}
    return {"preds": preds, "timings": {}, "meta": {"settings": settings, "metric": {"sst2": "accuracy"},
                                                     "labels": {"sst2": {"val": y.tolist(), "sel": y.tolist()}}}}


def test_the_pipeline_is_chosen_on_selection_and_ties_go_to_the_first_candidate():
    assert choose({("grad_x_act", "none"): 0.8, ("ig", "none"): 0.8}) == ("grad_x_act", "none")
    assert choose({("grad_x_act", "none"): 0.7, ("ig", "lstsq"): 0.8}) == ("ig", "lstsq")
    res = analyse(_doc())
    keep = res["llm_keep_mlp50"]["sst2"]
    assert (keep["method"], keep["value"]) == ("ig", 0.5)  # not grad_x_act, the better one on validation
    assert keep["ci95"][0] < 0.5 < keep["ci95"][1]


def test_wins_and_losses_need_the_paired_interval_to_exclude_zero_and_missing_cells_are_listed():
    res = analyse(_doc())
    w = res["llm_best_vs_wanda_sp_win_rate"]
    verdicts = {c["mlp_sparsity"]: c["verdict"] for c in w["cells"]}
    assert verdicts == {0.5: "win", 0.3: "tie", 0.7: "loss"}
    assert (w["wins"], w["ties"], w["losses"], w["value"]) == (1, 1, 1, round(1 / 3, 4))
    assert w["vs_flap"]["ties"] == 3 and not w["partial"]  # only the MLP+heads cell is missing
    assert res["llm_quality"]["partial"] == ["sst2 mlp 30% heads 30%"]
    assert "llm_keep_mlp30_heads30" not in res and "llm_scores_seconds" not in res
