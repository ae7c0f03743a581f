"""Iterative pruning (tp_core/iterative.py, TextPruner's n_iters) on a tiny random model: one step is one-shot
pruning, n steps reach the target with nested masks, re-score the surviving units on the pruned (and recovered)
model, and `sweep --n-iters` reports it."""
import json

import numpy as np
import pytest

from tiny import tiny_multitask
from tp_core.attribution import AttributionConfig, attribute, magnitude_scores
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.iterative import iterative_masks
from tp_core.masks import PruneConfig, build_masks


@pytest.fixture(scope="module")
def model():
    return tiny_multitask("bert")


def _removed(masks):
    return [~m for m in masks.ffn + masks.heads]


def test_one_iteration_is_one_shot_pruning(model):
    cfg = AttributionConfig(method="grad_x_act", samples=8)
    pcfg = PruneConfig(0.5, 0.25)
    it = iterative_masks(model, "sst2", cfg, pcfg, 1)
    one = build_masks(attribute(model, "sst2", cfg), pcfg, model.unit_shape())
    assert all((a == b).all() for a, b in zip(it.masks.ffn + it.masks.heads, one.ffn + one.heads))
    assert it.recovery is None and len(it.steps) == 1


def test_n_iterations_reach_the_target_rescoring_the_pruned_model(model):
    seen = []

    def scorer(m, task):  # magnitude scores of whatever model it is given; records that model's unit counts
        seen.append((m.unit_shape().ffn, m.unit_shape().heads))
        ffn, heads = magnitude_scores(m)
        from tp_core.attribution import UnitScores

        return UnitScores(m.source, task, "magnitude", {}, ffn, heads)

    pcfg = PruneConfig(0.6, 0.5)
    it = iterative_masks(model, "sst2", AttributionConfig(method="magnitude"), pcfg, 3, scorer=scorer)
    shape = model.unit_shape()
    assert seen[0] == (shape.ffn, shape.heads)
    assert sum(seen[1][0]) < sum(shape.ffn) and sum(seen[2][0]) < sum(seen[1][0])  # scored on smaller models
    assert sum(seen[2][1]) < sum(shape.heads)
    assert [s["iteration"] for s in it.steps] == [1, 2, 3]
    ffn_steps = [s["ffn_sparsity"] for s in it.steps]
    assert ffn_steps == sorted(ffn_steps) and ffn_steps[0] == pytest.approx(0.2, abs=0.02)
    assert it.masks.ffn_sparsity() == pytest.approx(0.6, abs=0.02)
    assert it.masks.head_sparsity() == pytest.approx(0.5, abs=0.1)
    one = build_masks(attribute(model, "sst2", AttributionConfig(method="magnitude")), pcfg, shape)
    assert abs(one.ffn_sparsity() - it.masks.ffn_sparsity()) < 0.02
    # magnitude of the sliced model equals magnitude of the same units in the full model: without recovery the
    # iterative masks are the one-shot ones (a check that scores are mapped back to the right units)
    assert all((a == b).all() for a, b in zip(it.masks.ffn, one.ffn))


def test_iterative_masks_are_nested_and_recovery_feeds_the_next_scores(model):
    calib = load_split("sst2", "train", limit=16, seed=0)
    pruned_models = []

    def scorer(m, task):
        pruned_models.append(m.pruning)
        return attribute(m, task, AttributionConfig(method="grad_x_act", samples=8), use_cache=False)

    it = iterative_masks(model, "sst2", AttributionConfig(method="grad_x_act"), PruneConfig(0.7, 0.0), 2,
                         recovery="lstsq", calib=calib, scorer=scorer)
    assert pruned_models[0] is None and pruned_models[1]["recovery"]["level"] == "lstsq"
    assert it.recovery is not None and it.recovery.level == "lstsq"
    it.recovery.check(it.masks)  # fitted for the final masks
    assert it.steps[1]["recovery_seconds"] is not None
    # nested: every unit removed at step 1 is still removed at the end
    first = build_masks(attribute(model, "sst2", AttributionConfig(method="grad_x_act", samples=8), use_cache=False),
                        PruneConfig(0.35, 0.0), model.unit_shape())
    for a, b in zip(_removed(first), _removed(it.masks)):
        assert not (a & ~b).any()
    with pytest.raises(TPError, match="positive integer"):
        iterative_masks(model, "sst2", AttributionConfig(method="magnitude"), PruneConfig(0.5), 0)


def test_cli_sweep_n_iters(tmp_path, model, capsys):
    from tp_core.cli import main

    folder = tmp_path / "tiny"
    model.save(folder)
    common = ["--model", str(folder), "--task", "sst2", "--limit", "16", "--quiet"]
    out = tmp_path / "s.json"
    assert main(["sweep", *common, "--methods", "magnitude", "--ffn-sparsity", "0,0.6", "--n-iters", "3",
                 "--recover", "none", "--json", str(out)]) == 0  # (recovery's twins: tests/test_cli.py)
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["dense", "magnitude/iter3", "magnitude/iter3"]
    assert np.isclose(rows[-1]["ffn_sparsity"], 0.6)
    capsys.readouterr()
    assert main(["sweep", *common, "--methods", "magnitude", "--n-iters", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "positive integer" in err[0]
