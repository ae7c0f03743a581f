"""Budget targets (tp_core/budget.py) on a tiny random model: FLOPs counting, the FFN/head split under a FLOPs
budget follows the score mass, a latency budget is met by measurement, and the `budget` CLI command."""
import json

import numpy as np
import pytest

import tp_core.budget as B
from tiny import tiny_multitask
from tp_core.attribution import UnitScores
from tp_core.errors import TPError
from tp_core.masks import UnitMasks, build_masks


@pytest.fixture(scope="module")
def model():
    return tiny_multitask("bert")


def _scores(model, ffn_scale=1.0, head_scale=1.0, method="grad_x_act", seed=0):
    rng = np.random.default_rng(seed)
    s = model.unit_shape()
    return UnitScores("tiny", "sst2", method, {}, [ffn_scale * rng.random(f) for f in s.ffn],
                      [head_scale * rng.random(h) for h in s.heads])


def test_encoder_flops_counts_kept_heads_and_neurons(model):
    s = model.unit_shape()
    T, H, d = 16, s.hidden, s.head_dim
    dense = B.encoder_flops(model, None, T)
    per_layer = s.heads[0] * (8 * T * H * d + 4 * T * T * d) + s.ffn[0] * 4 * T * H
    assert dense == pytest.approx(len(s.ffn) * per_layer)
    masks = UnitMasks.dense(s)
    masks.ffn[0][:10] = False
    masks.heads[1][0] = False
    assert dense - B.encoder_flops(model, masks, T) == pytest.approx(10 * 4 * T * H + 8 * T * H * d + 4 * T * T * d)


@pytest.mark.parametrize("budget", [0.3, 0.5, 0.8])
def test_flops_plan_meets_the_budget_and_keeps_the_most_score_mass(model, budget):
    sc = _scores(model)
    plan = B.plan_flops(model, sc, budget, seq_len=32)
    assert plan.flops_fraction <= budget + 1e-9 and plan.flops_fraction > budget - 0.1
    masks = build_masks(sc, plan.prune_config(), model.unit_shape())
    assert B.flops_fraction(model, masks, 32) == pytest.approx(plan.flops_fraction)
    # no other split meeting the budget keeps more (raw) score mass: check a grid of head sparsities
    shape = model.unit_shape()
    total = sum(s.sum() for s in sc.ffn) + sum(s.sum() for s in sc.heads)
    for hs in np.linspace(0, 0.75, 4):
        for fs in np.linspace(0, 0.95, 40):
            m = build_masks(sc, B.PruneConfig(fs, hs), shape)
            if B.flops_fraction(model, m, 32) <= budget:
                kept = sum(s[k].sum() for s, k in zip(sc.ffn + sc.heads, m.ffn + m.heads)) / total
                assert kept <= plan.score_kept + 1e-6
                break


def test_split_follows_where_the_score_mass_is(model):
    # tiny model at 32 tokens: heads are 2/3 of the FLOPs, so 0.75 x dense is reachable by either kind alone
    cheap_heads = B.plan_flops(model, _scores(model, head_scale=1e-6), 0.75, seq_len=32)
    costly_heads = B.plan_flops(model, _scores(model, head_scale=1e6), 0.75, seq_len=32)
    assert cheap_heads.ffn_sparsity == 0.0 and cheap_heads.head_sparsity >= 0.375
    assert costly_heads.head_sparsity == 0.0 and costly_heads.ffn_sparsity > 0.5
    ffn_only = B.plan_flops(model, _scores(model), 0.8, seq_len=32, prune_heads=False)
    assert ffn_only.head_sparsity == 0.0 and ffn_only.flops_fraction <= 0.8
    assert B.plan_flops(model, _scores(model, method="magnitude"), 0.5).objective == "share"
    assert B.plan_flops(model, _scores(model), 1.0).ffn_sparsity == 0.0


def test_bad_budgets_are_refused(model):
    with pytest.raises(TPError, match="fraction"):
        B.plan_flops(model, _scores(model), 1.5)
    with pytest.raises(TPError, match="smallest model"):
        B.plan_flops(model, _scores(model), 0.01)
    with pytest.raises(TPError, match="FFN-neuron scores"):
        B.plan_flops(model, UnitScores("t", "sst2", "ig", {}, None, _scores(model).heads), 0.5)


def test_latency_plan_is_checked_by_measurement(model, monkeypatch):
    shape = model.unit_shape()

    def fake(m, masks, task, seq_len, batch_size, repeats=10, recovery=None):  # 2 ms + 10 ms x FLOPs fraction
        return 2.0 + 10.0 * (1.0 if masks is None else B.flops_fraction(m, masks, seq_len)) + 0.3

    monkeypatch.setattr(B, "measure_latency", fake)
    sc = _scores(model)
    plan = B.plan_latency(model, sc, "sst2", 7.0, seq_len=32, batch_size=4)
    assert plan.latency["met"] and plan.latency["measured_ms"] <= 7.0
    assert plan.flops_fraction == pytest.approx(0.47, abs=0.05)
    assert B.plan_latency(model, sc, "sst2", 100.0, seq_len=32).ffn_sparsity == 0.0  # dense is fast enough
    with pytest.raises(TPError, match="No pruned model meets|not met"):
        B.plan_latency(model, sc, "sst2", 1.0, seq_len=32)
    real = B.measure_latency(model, build_masks(sc, B.PruneConfig(0.5, 0.25), shape), "sst2", 16, 2, repeats=2)
    assert real > 0


def test_cli_budget(tmp_path, model, capsys):
    from tp_core.cli import main

    folder = tmp_path / "tiny"
    model.save(folder)
    common = ["--model", str(folder), "--task", "sst2", "--quiet", "--method", "grad_x_act", "--samples", "8"]
    assert main(["budget", *common, "--flops-budget", "0.5", "--seq-len", "32", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["flops_fraction"] <= 0.5 and plan["seq_len"] == 32
    for bad, needle in ((["--flops-budget", "1.5"], "fraction"), ([], "Give a budget"),
                        (["--flops-budget", "0.5", "--latency-budget-ms", "3"], "one budget")):
        assert main(["budget", *common, *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    out = tmp_path / "exp"
    assert main(["export", *common, "--flops-budget", "0.6", "--seq-len", "32", "--out", str(out), "--limit", "8",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["ffn_sparsity"] > 0  # the budget chose the sparsities
