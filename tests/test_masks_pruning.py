"""Masks and pruning: allocation, no leaks (also across threads), masked == physically pruned, exact param counts."""
import threading

import numpy as np
import pytest

from tiny import FAMILIES, tiny_multitask
from tp_core.attribution import AttributionConfig, UnitScores, attribute
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import evaluate_masked, masked_logits, predict_logits, removed_share
from tp_core.masks import PruneConfig, UnitMasks, build_masks, load_mask_file, overlap, save_mask_file
from tp_core.pruning import count_params, kept_params, param_breakdown, prune_physically


def _scores(ffn, heads):
    return UnitScores("m", "t", "x", {}, [np.asarray(x, float) for x in ffn], [np.asarray(x, float) for x in heads])


def test_global_allocation_drops_lowest_across_layers_and_keeps_one_per_layer():
    s = _scores([[1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4]], [[1, 2], [3, 4]])
    shape = type("S", (), {"ffn": (4, 4), "heads": (2, 2)})
    m = build_masks(s, PruneConfig(0.5, 0.5, "global"), shape)
    assert m.ffn[1].tolist() == [False, False, False, True]  # layer 1 is lowest but keeps its best unit
    assert m.ffn[0].tolist() == [False, True, True, True]
    assert m.heads[0].tolist() == [False, True] and m.heads[1].tolist() == [False, True]
    per = build_masks(s, PruneConfig(0.5, 0.0, "per-layer"), shape)
    assert [int(x.sum()) for x in per.ffn] == [2, 2] and per.ffn[0].tolist() == [False, False, True, True]
    assert m.ffn_sparsity() == pytest.approx(0.5)  # the target is met exactly


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_outside_range_is_rejected(bad):
    with pytest.raises(TPError, match="must be in"):
        PruneConfig(bad).validate()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["multitask", "hf_classifier"])
def test_masked_logits_equal_physically_pruned_and_params_are_exact(family, kind):
    model = tiny_multitask(family, kind=kind)
    data = load_split("sst2", "validation", limit=20)
    scores = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    for cfg in (PruneConfig(0.5, 0.5), PruneConfig(0.7, 0.25, "per-layer"), PruneConfig(0.9, 0.75)):
        masks = build_masks(scores, cfg, model.unit_shape())
        small = prune_physically(model, masks, "sst2")
        masked = predict_logits(model, "sst2", data, masks.gates())
        np.testing.assert_allclose(predict_logits(small, "sst2", data), masked, atol=1e-4)
        assert count_params(small, "sst2") == kept_params(model, masks, "sst2") < count_params(model, "sst2")
        assert sum(p.numel() for p in small.encoder.parameters()) + sum(
            p.numel() for p in small.heads.parameters()) == kept_params(model, masks, "sst2")
        assert small.unit_shape().ffn == tuple(int(m.sum()) for m in masks.ffn)


def test_masked_logits_slices_when_it_pays_and_matches_the_gates_either_way():
    """masked_logits (what every curve point runs) slices a copy at >= 5% removed compute: same logits as the
    gates, the shared model untouched; below the threshold it gates (also the same)."""
    model = tiny_multitask("bert")
    data = load_split("sst2", "validation", limit=24)
    dense = predict_logits(model, "sst2", data)
    scores = attribute(model, "sst2", AttributionConfig(method="random"))
    for cfg in (PruneConfig(0.05), PruneConfig(0.1), PruneConfig(0.6), PruneConfig(0.9, 0.5, "per-layer")):
        masks = build_masks(scores, cfg, model.unit_shape())
        assert (removed_share(masks) >= 0.05) == (cfg.ffn_sparsity >= 0.1)
        np.testing.assert_allclose(masked_logits(model, "sst2", data, masks),
                                   predict_logits(model, "sst2", data, masks.gates()), atol=1e-5)
    assert model.unit_shape().ffn == tiny_multitask("bert").unit_shape().ffn  # never sliced in place
    np.testing.assert_array_equal(predict_logits(model, "sst2", data), dense)


def test_masked_call_never_leaks_into_dense_calls():
    model = tiny_multitask("bert")
    data = load_split("sst2", "validation", limit=16)
    dense = predict_logits(model, "sst2", data)
    scores = attribute(model, "sst2", AttributionConfig(method="random"))
    masks = build_masks(scores, PruneConfig(0.8, 0.5), model.unit_shape())
    masked = predict_logits(model, "sst2", data, masks.gates())
    assert not np.allclose(dense, masked)
    np.testing.assert_array_equal(predict_logits(model, "sst2", data), dense)


def test_two_threads_with_different_masks_do_not_interfere():
    model = tiny_multitask("bert")
    data = load_split("sst2", "validation", limit=24)
    scores = attribute(model, "sst2", AttributionConfig(method="random"))
    masks = {s: build_masks(scores, PruneConfig(s, 0.5 if s else 0.0), model.unit_shape()) for s in (0.0, 0.6, 0.9)}
    expected = {s: predict_logits(model, "sst2", data, m.gates()) for s, m in masks.items()}
    results, errors = {}, []

    def worker(s):
        try:
            for _ in range(4):
                out = predict_logits(model, "sst2", data, masks[s].gates())
                np.testing.assert_allclose(out, expected[s], atol=1e-5)
            results[s] = True
        except Exception as exc:  # pragma: no cover - reported below
            errors.append((s, exc))

    threads = [threading.Thread(target=worker, args=(s,)) for s in masks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    np.testing.assert_array_equal(predict_logits(model, "sst2", data), expected[0.0])


def test_mask_file_round_trip_applies_to_unchanged_base(tmp_path):
    model = tiny_multitask("bert")
    scores = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    masks = build_masks(scores, PruneConfig(0.5, 0.25), model.unit_shape())
    path = save_mask_file(tmp_path / "sst2.mask.json", masks, model, "sst2")
    assert path.stat().st_size < 2000
    back, doc = load_mask_file(path, model)
    assert all((a == b).all() for a, b in zip(back.ffn + back.heads, masks.ffn + masks.heads))
    assert doc["task"] == "sst2"
    data = load_split("sst2", "validation", limit=10)
    assert evaluate_masked(model, "sst2", data, back).metric == evaluate_masked(model, "sst2", data, masks).metric
    other = tiny_multitask("distilbert")
    with pytest.raises(TPError, match="is for a model with"):
        from transformers import DistilBertConfig  # noqa: F401
        small = prune_physically(other, build_masks(attribute(other, "sst2", AttributionConfig(method="magnitude")),
                                                    PruneConfig(0.5), other.unit_shape()))
        load_mask_file(path, small)


def test_overlap_counts_shared_kept_units():
    a = UnitMasks([np.array([1, 1, 0, 0], bool)], [np.array([1, 0], bool)])
    b = UnitMasks([np.array([1, 0, 1, 0], bool)], [np.array([1, 0], bool)])
    o = overlap(a, b)
    assert o["ffn"]["shared"] == 1 and o["ffn"]["union"] == 3 and o["heads"]["jaccard"] == 1.0


def test_param_breakdown_adds_up():
    model = tiny_multitask("bert")
    b = param_breakdown(model)
    assert b["total"] == sum(p.numel() for p in model.parameters())
    assert b["ffn"] == 3 * (32 * 48 + 48 + 48 * 32 + 32)
