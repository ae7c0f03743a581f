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
    dense = B.model_flops(model, None, T)
    per_layer = s.heads[0] * (8 * T * H * d + 4 * T * T * d) + s.ffn[0] * 4 * T * H
    assert dense == pytest.approx(len(s.ffn) * per_layer)
    masks = UnitMasks.dense(s)
    masks.ffn[0][:10] = False
    masks.heads[1][0] = False
    assert dense - B.model_flops(model, masks, T) == pytest.approx(10 * 4 * T * H + 8 * T * H * d + 4 * T * T * d)


def _kept(sc, m, objective):
    """Score mass kept by masks `m`: raw (one sum over both kinds) or share (the mean of each kind's kept share)."""
    f = sum(s[k].sum() for s, k in zip(sc.ffn, m.ffn)), sum(s.sum() for s in sc.ffn)
    h = sum(s[k].sum() for s, k in zip(sc.heads, m.heads)), sum(s.sum() for s in sc.heads)
    return (f[0] + h[0]) / (f[1] + h[1]) if objective == "raw" else (f[0] / f[1] + h[0] / h[1]) / 2


@pytest.mark.parametrize("objective", ["raw", "share"])
@pytest.mark.parametrize("budget", [0.3, 0.5, 0.8])
def test_flops_plan_meets_the_budget_and_keeps_the_most_score_mass(model, budget, objective):
    sc = _scores(model)
    plan = B.plan_flops(model, sc, budget, seq_len=32, objective=objective)
    assert plan.objective == objective and plan.selection == {"by": "score mass"}
    assert plan.flops_fraction <= budget + 1e-9 and plan.flops_fraction > budget - 0.1
    masks = build_masks(sc, plan.prune_config(), model.unit_shape())
    assert B.flops_fraction(model, masks, 32) == pytest.approx(plan.flops_fraction)
    assert _kept(sc, masks, objective) == pytest.approx(plan.score_kept, abs=1e-6)
    # no other split meeting the budget keeps more score mass: check a grid of head sparsities
    shape = model.unit_shape()
    for hs in np.linspace(0, 0.75, 4):
        for fs in np.linspace(0, 0.95, 40):
            m = build_masks(sc, B.PruneConfig(fs, hs), shape)
            if B.flops_fraction(model, m, 32) <= budget:
                assert _kept(sc, m, objective) <= plan.score_kept + 1e-6
                break


def test_split_follows_where_the_score_mass_is(model):
    # tiny model at 32 tokens: heads are 2/3 of the FLOPs, so 0.75 x dense is reachable by either kind alone
    cheap_heads = B.plan_flops(model, _scores(model, head_scale=1e-6), 0.75, seq_len=32, objective="raw")
    costly_heads = B.plan_flops(model, _scores(model, head_scale=1e6), 0.75, seq_len=32, objective="raw")
    assert cheap_heads.ffn_sparsity == 0.0 and cheap_heads.head_sparsity >= 0.375
    assert costly_heads.head_sparsity == 0.0 and costly_heads.ffn_sparsity > 0.5
    ffn_only = B.plan_flops(model, _scores(model), 0.8, seq_len=32, prune_heads=False)
    assert ffn_only.head_sparsity == 0.0 and ffn_only.flops_fraction <= 0.8
    assert B.plan_flops(model, _scores(model, method="magnitude"), 0.5).objective == "share"
    assert B.plan_flops(model, _scores(model, method="ig"), 0.5).objective == "share"  # the default for every method
    assert B.plan_flops(model, _scores(model), 1.0).ffn_sparsity == 0.0


@pytest.mark.parametrize("budget", [0.4, 0.6, 0.85])
def test_flops_plan_on_the_app_sliders_grid(model, budget):
    """The Prune page's sliders: heads in steps of 0.1 up to 0.9, FFN in steps of 0.01 up to 0.95. The plan lies on
    that grid, still meets the budget, and no grid point meeting it keeps more score mass."""
    sc, shape = _scores(model), model.unit_shape()
    grid = [round(0.1 * i, 1) for i in range(10)]
    plan = B.plan_flops(model, sc, budget, seq_len=32, head_grid=grid, ffn_step=0.01, ffn_max=0.95)
    assert plan.head_sparsity in grid and plan.ffn_sparsity <= 0.95
    assert abs(plan.ffn_sparsity * 100 - round(plan.ffn_sparsity * 100)) < 1e-6
    assert plan.flops_fraction <= budget + 1e-9
    for hs in grid:
        for fs in np.round(np.arange(0, 0.951, 0.01), 2):
            m = build_masks(sc, B.PruneConfig(float(fs), hs), shape)
            if B.flops_fraction(model, m, 32) <= budget:
                assert _kept(sc, m, "share") <= plan.score_kept + 1e-6
                break
    # a budget only reachable beyond the FFN slider's end, with heads kept: no plan
    with pytest.raises(TPError, match="No FFN/head split"):
        B.plan_flops(model, sc, 0.4, seq_len=32, prune_heads=False, ffn_step=0.01, ffn_max=0.3)


def test_metric_chooser_picks_the_best_measured_split(model, monkeypatch):
    """--choose metric / the app: every candidate is evaluated and the best metric wins, whatever its score mass."""
    import tp_core.evaluation as E
    from tp_core.data import load_split

    data = load_split("sst2", "validation", limit=20)
    seen = []

    class Res:
        def __init__(self, metric):
            self.metric = metric

    def fake_eval(m, task, d, masks, recovery=None, **kw):  # the metric peaks at 30% heads removed
        hs = 1 - sum(int(x.sum()) for x in masks.heads) / sum(x.size for x in masks.heads)
        seen.append(round(hs, 2))
        return Res(1.0 - abs(hs - 0.3))

    monkeypatch.setattr(E, "evaluate_masked", fake_eval)
    sc = _scores(model)
    grid = (0.0, 0.25, 0.5, 0.75)  # the tiny model has 4 heads per layer
    plan = B.plan_flops(model, sc, 0.6, seq_len=32, head_grid=grid, choose=B.metric_chooser(model, "sst2", data))
    sel = plan.selection
    assert sel["by"] == "metric" and sel["n"] == 20 and len(sel["candidates"]) == plan.candidates == len(seen)
    best = max(sel["candidates"], key=lambda r: r["metric"])
    assert (plan.ffn_sparsity, plan.head_sparsity) == (best["ffn_sparsity"], best["head_sparsity"]) == \
        (plan.ffn_sparsity, 0.25)
    assert plan.flops_fraction <= 0.6 + 1e-9


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
    sel = plan["selection"]  # --choose metric (the default): every split on the head grid, evaluated
    assert sel["by"] == "metric" and sel["n"] == 500 and len(sel["candidates"]) == plan["candidates"] <= 10
    best = max(sel["candidates"], key=lambda r: r["metric"])
    assert (plan["ffn_sparsity"], plan["head_sparsity"]) == (best["ffn_sparsity"], best["head_sparsity"])
    assert main(["budget", *common, "--flops-budget", "0.5", "--seq-len", "32", "--choose", "mass"]) == 0
    assert "score mass" in capsys.readouterr().out
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


# ----- a Llama-layout decoder: FLOPs per key/value group and MLP neuron, at the task's prompt length -------------
def _counted_flops(model, T: int) -> int:
    """torch's FlopCounterMode over one forward of the decoder's blocks (no LM head) on one example of T tokens,
    with eager attention: the counter has no formula for the CPU SDPA kernel, eager attention's two matmuls compute
    the same T x T scores and weighted values."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    lm = model.encoder
    was = lm.config._attn_implementation
    ids = torch.randint(3, lm.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    lm.set_attn_implementation("eager")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            lm.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        lm.set_attn_implementation(was)
    return counter.get_total_flops()


def test_decoder_flops_equal_torch_flop_counter_dense_and_sliced():
    """The Llama formula (q/k/v/o projections and all T² attention pairs per kv group, 3 projections per neuron)
    equals what FlopCounterMode counts in the dense decoder and in a physically sliced one."""
    from tiny import tiny_llama
    from tp_core.pruning import prune_physically

    model = tiny_llama()
    s, p = model.unit_shape(), model.layer_parts(0)
    T, H, q, d = 11, s.hidden, p.head_dim, p.kv_width
    per_layer = s.heads[0] * (2 * T * H * q + 4 * T * H * d + 2 * T * q * H + 4 * T * T * q) + s.ffn[0] * 6 * T * H
    assert B.model_flops(model, None, T) == pytest.approx(len(s.ffn) * per_layer)
    assert B.model_flops(model, None, T) == _counted_flops(model, T)
    masks = build_masks(_scores(model), B.PruneConfig(0.6, 0.5, "per-layer"), s)
    small = prune_physically(model, masks, "sst2")
    assert small.unit_shape().heads == (1, 1)
    assert B.model_flops(model, masks, T) == _counted_flops(small, T) < _counted_flops(model, T)
    assert B.model_flops(small, None, T) == B.model_flops(model, masks, T)


def test_a_decoder_budget_counts_at_the_mean_prompt_length():
    """A causal LM's budget length is the mean token count of its rendered prompts (demonstrations included);
    an encoder's stays SEQ_LEN."""
    from tiny import tiny_llama
    from tp_core.data import load_split

    llama = tiny_llama()
    data = load_split("sst2", "train", limit=20, seed=3)
    prompt = llama.prompts["sst2"]
    lengths = [len(llama.tokenizer(prompt.render(t))["input_ids"]) for t in data.texts]
    assert B.budget_seq_len(llama, "sst2", data) == round(np.mean(lengths))
    assert B.budget_seq_len(llama, "sst2", data) > len(llama.tokenizer(prompt.render(""))["input_ids"])
    assert B.budget_seq_len(llama, "sst2") > 0  # the task's own seeded examples
    assert B.budget_seq_len(tiny_multitask("bert"), "sst2", data) == B.SEQ_LEN


@pytest.mark.parametrize("budget", [0.35, 0.6])
def test_a_flops_budget_on_a_tiny_llama_gives_masks_within_it(budget):
    from tiny import tiny_llama
    from tp_core.pruning import prune_physically

    model = tiny_llama()
    T = B.budget_seq_len(model, "sst2")
    sc = _scores(model, seed=1)
    plan = B.plan_flops(model, sc, budget, seq_len=T)
    masks = build_masks(sc, plan.prune_config(), model.unit_shape())
    assert plan.seq_len == T and plan.flops_fraction <= budget + 1e-9
    assert B.model_flops(model, masks, T) <= budget * B.model_flops(model, None, T) * (1 + 1e-9)
    counted, dense = _counted_flops(prune_physically(model, masks, "sst2"), T), _counted_flops(model, T)
    assert counted <= budget * dense and counted == pytest.approx(plan.flops_fraction * dense, rel=1e-5)
