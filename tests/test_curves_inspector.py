"""tp_core.curves (the smallest-model search) and tp_core.inspector on tiny random models (no UI)."""
import numpy as np
import pytest
import torch

from tiny import tiny_multitask
from tp_core import curves
from tp_core.attribution import AttributionConfig, UnitScores, attribute
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import SweepRecord, evaluate, evaluate_masked
from tp_core.inspector import (UnitRef, ffn_matrix, head_matrix, ig_path, kept_share_per_layer, overlap_matrix,
                               shade, single_unit_mask, top_activating, unit_ablation, unit_score_table)
from tp_core.masks import PruneConfig, UnitMasks, build_masks
from tp_core.pruning import count_params, kept_params


@pytest.fixture(scope="module")
def model():
    return tiny_multitask("bert")


@pytest.fixture(scope="module")
def data():
    return load_split("sst2", "validation", limit=24)


def _evaluator(model, scores, data):
    """`find_smallest`'s evaluate: a direct masked evaluation (the search job passes `work.point`'s cached one)."""
    def evaluate_at(cfg):
        masks = build_masks(scores, cfg, model.unit_shape())
        res = evaluate_masked(model, "sst2", data, masks)
        return SweepRecord(scores.method, cfg.ffn_sparsity, cfg.head_sparsity, kept_params(model, masks, "sst2"),
                           count_params(model, "sst2"), res.metric_name, res.metric)

    return evaluate_at


def _rec(method, f, kept, metric):
    return SweepRecord(method, f, 0.0, kept, 100, "accuracy", metric)


def test_smallest_within_picks_fewest_params_that_keep_the_target():
    recs = [_rec("ig", 0.0, 100, 0.9), _rec("ig", 0.5, 60, 0.89), _rec("ig", 0.7, 40, 0.85), _rec("ig", 0.9, 20, 0.5)]
    assert curves.smallest_within(recs, 0.9, 0.98).ffn_sparsity == 0.5
    assert curves.smallest_within(recs, 0.9, 0.9).ffn_sparsity == 0.7
    assert curves.smallest_within(recs, 0.9, 1.2) is None


def test_find_smallest_refines_with_real_evaluations(model, data):
    scores = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    dense = evaluate(model, "sst2", data).metric
    asked = []
    evaluate_at = _evaluator(model, scores, data)
    best = curves.find_smallest(lambda cfg: asked.append(cfg.ffn_sparsity) or evaluate_at(cfg), dense, 0.5,
                                grid=(0.0, 0.5, 0.9), refine_steps=2)
    assert best is not None and curves.keeps(best, dense, 0.5)
    assert asked[:3] == [0.0, 0.5, 0.9] and best.ffn_sparsity in asked
    masks = build_masks(scores, PruneConfig(best.ffn_sparsity), model.unit_shape())
    assert best.metric == pytest.approx(evaluate_masked(model, "sst2", data, masks).metric)
    with pytest.raises(TPError):
        curves.find_smallest(evaluate_at, dense, 0.0)


def test_the_smallest_model_search_evaluates_curve_points_through_their_cache(tiny):
    from tp_core import work

    model, ref = tiny
    scores = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    data = work.DataRef("sst2", "validation", 24)
    best = work.search(lambda f, m: None, ref, "sst2", scores, data, 0.5, (0.0, 0.5, 0.9), 0.0, "global")
    messages = []
    again = work.search(lambda f, m: messages.append(m), ref, "sst2", scores, data, 0.5, (0.0, 0.5, 0.9), 0.0,
                        "global")
    assert again == best and best is not None
    assert messages and not any("evaluating" in m for m in messages), messages  # every point read from points/
    point = work.point(lambda f, m: None, ref, "sst2", scores, PruneConfig(best.ffn_sparsity), data)
    assert point.record == best  # the very record a curve shows at that sparsity


def test_unit_score_table_ranks(model):
    s = UnitScores("m", "sst2", "ig", {}, [np.array([1.0, 5.0]), np.array([3.0, 2.0])],
                   [np.array([1.0]), np.array([2.0])])
    t = UnitScores("m", "ag_news", "ig", {}, [np.array([9.0, 0.0]), np.array([3.0, 2.0])], None)
    rows = unit_score_table({"sst2": s, "ag_news": t}, UnitRef("ffn", 0, 1))
    assert rows[0] == {"task": "sst2", "method": "ig", "score": 5.0, "rank": 1, "of": 4, "percentile": 100.0}
    assert rows[1]["rank"] == 4 and rows[1]["score"] == 0.0
    assert len(unit_score_table({"sst2": s, "ag_news": t}, UnitRef("head", 1, 0))) == 1  # ag_news has no heads


@pytest.mark.parametrize("kind", ["ffn", "head"])
def test_top_activating_matches_the_unit_activation(model, data, kind):
    unit = UnitRef(kind, 1, 2)
    dense = evaluate(model, "sst2", data).metric
    top = top_activating(model, "sst2", data, unit, k=3)
    assert len(top) == 3 and top[0].peak >= top[1].peak >= top[2].peak
    # recompute the best example's activations directly through a recording gate
    ex = top[0]
    i = data.rows.index(ex.row)
    seen = {}
    from tp_core.gates import GateState, gated
    if kind == "ffn":
        st = GateState(ffn_fn=lambda l, x: (seen.setdefault(l, x[0, :, 2].clone()), x)[1])
    else:
        st = GateState(heads_fn=lambda l, x: (seen.setdefault(l, x[0, :, 2, :].norm(dim=-1).clone()), x)[1])
    _, batch = next(model.batches([data.texts[i]], None if data.pairs is None else [data.pairs[i]]))
    with torch.no_grad(), gated(st):
        model(**batch, task="sst2")
    np.testing.assert_allclose(ex.values, seen[1].numpy(), rtol=1e-4, atol=1e-5)
    assert len(ex.tokens) == len(ex.values) and ex.tokens[0] == "[CLS]"
    assert max(shade(ex.values)) in (0.0, 1.0)
    # the recording hook left the model dense
    assert evaluate(model, "sst2", data).metric == pytest.approx(dense)


def test_ig_path_gives_the_library_score_of_its_neuron_at_every_rule_and_step_count(model, data):
    """The tour's integrated-gradients path: at each rule and step count, its quadrature of the integrand is the
    score `attribute` gives the neuron on that one example (1e-5), and the fine curve's area is what the step
    counts converge to."""
    one = data.subset([3])
    for layer, index, aggregation, labels in ((0, 5, "abs_sum", "gold"), (2, 40, "signed", "predicted")):
        path = ig_path(model, "sst2", one, UnitRef("ffn", layer, index),
                       AttributionConfig(method="ig", samples=1, steps=4, aggregation=aggregation, labels=labels),
                       steps=(1, 3, 4, 32), points=129)
        assert 1 in path.rules["gausslegendre"] and 1 not in path.rules["riemann_middle"]  # as Captum allows
        for rule in ("riemann_middle", "gausslegendre"):
            for steps in (3, 4):
                cfg = AttributionConfig(method="ig", samples=1, steps=steps, units="ffn", riemann=rule,
                                        aggregation=aggregation, labels=labels)
                ours = attribute(model, "sst2", cfg, data=one, use_cache=False).ffn[layer][index]
                assert path.score(rule, steps) == pytest.approx(ours, rel=1e-5, abs=1e-9)
                area = path.area(rule, steps)
                assert path.score(rule, steps) == pytest.approx(abs(area) if aggregation == "abs_sum" else area,
                                                                rel=1e-5)
        fine = np.trapezoid(path.integrand, path.alphas)
        assert path.area("gausslegendre", 32) == pytest.approx(fine, rel=1e-3, abs=1e-7)
        assert abs(path.area("riemann_middle", 32) - fine) < abs(path.area("riemann_middle", 3) - fine) + 1e-9
    with pytest.raises(TPError, match="FFN neurons"):
        ig_path(model, "sst2", one, UnitRef("head", 0, 1), AttributionConfig())
    with pytest.raises(TPError, match="one example"):
        ig_path(model, "sst2", data.subset([0, 1]), UnitRef("ffn", 0, 1), AttributionConfig())


def test_unit_ablation_removes_exactly_one_unit(model, data):
    unit = UnitRef("ffn", 0, 3)
    m = single_unit_mask(model.unit_shape(), unit)
    assert sum(int((~x).sum()) for x in m.ffn) == 1 and all(x.all() for x in m.heads)
    res = unit_ablation(model, "sst2", data, unit)
    assert res["ablated"] == pytest.approx(evaluate_masked(model, "sst2", data, m).metric)
    assert res["delta"] == pytest.approx(res["ablated"] - res["dense"])
    with pytest.raises(TPError, match="out of range"):
        unit_ablation(model, "sst2", data, UnitRef("head", 0, 99))


def test_overlap_matrix_and_heatmap_matrices():
    a = UnitMasks([np.array([1, 1, 0, 0], bool)], [np.array([1, 0], bool)])
    b = UnitMasks([np.array([0, 1, 1, 0], bool)], [np.array([1, 1], bool)])
    o = overlap_matrix({"a": a, "b": b})
    assert o["shared"] == [[2, 1], [1, 2]] and o["kept"] == [2, 2]
    assert o["jaccard"][0][1] == pytest.approx(1 / 3) and o["jaccard"][0][0] == 1.0
    assert overlap_matrix({"a": a, "b": b}, "heads")["shared"][0][1] == 1
    s = UnitScores("m", "t", "ig", {}, [np.array([1.0, 3.0, 2.0]), np.array([5.0, 4.0])], [np.array([1.0, 2.0])])
    vals, ids = ffn_matrix(s)
    assert ids[0].tolist() == [1, 2, 0] and vals[0].tolist() == [3.0, 2.0, 1.0]
    assert ids[1].tolist() == [0, 1, -1] and np.isnan(vals[1, 2])
    assert ffn_matrix(s, "index")[1][0].tolist() == [0, 1, 2]
    assert head_matrix(s).shape == (1, 2)
    assert kept_share_per_layer(a) == {"ffn": [0.5], "heads": [0.5]}


def test_evaluation_batches_end_where_padding_would_pass_its_share():
    from tp_core.model import MIN_SPLIT_ROWS, _split_batches

    lengths = [10] * 8 + [30] * 8 + [31] * 3
    order = list(range(len(lengths)))
    assert _split_batches(lengths, order, 32, None) == [order]  # no bound: one batch padded to 31
    cut = _split_batches(lengths, order, 32, 0.15)
    assert cut == [order[:8], order[8:]]  # the 30s would pad the 10s' batch to 2/3 padding
    assert _split_batches(lengths, order, 4, 0.15) == [order[i:i + 4] for i in range(0, 19, 4)]  # size still caps
    short = [5] * (MIN_SPLIT_ROWS - 1) + [50]
    assert _split_batches(short, list(range(len(short))), 32, 0.15) == [list(range(len(short)))]  # too few to cut
    for batch in cut:
        width = max(lengths[i] for i in batch)
        assert 1 - sum(lengths[i] for i in batch) / (len(batch) * width) <= 0.15


def test_predictions_do_not_depend_on_how_the_examples_are_batched(model, data):
    from tp_core.evaluation import predict_logits

    mixed = load_split("ag_news", "validation", limit=20)  # lengths spread out
    for d, task in ((data, "sst2"), (mixed, "ag_news")):
        split = predict_logits(model, task, d, batch_size=32)  # padding-bounded batches
        whole = [predict_logits(model, task, d.subset([i]), batch_size=1)[0] for i in range(len(d))]
        np.testing.assert_allclose(split, np.stack(whole), atol=1e-5)
        assert len(list(model.batches(d.texts, d.pairs, 32, 128, max_padding=0.15))) >= 1
