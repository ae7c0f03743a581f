"""Integration: the real all-MiniLM-L6-v2 (quick demo build, cached under TP_HOME) on real bundle data, small
settings."""
import numpy as np
import pytest

from tp_core.attribution import AttributionConfig, attribute
from tp_core.data import load_split
from tp_core.demo import build_demo
from tp_core.evaluation import evaluate, evaluate_masked, predict_logits
from tp_core.export import export_pruned
from tp_core.masks import PruneConfig, build_masks
from tp_core.model import load_model
from tp_core.pruning import count_params, prune_physically

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo():
    build_demo(quick=True)
    model = load_model("demo-quick")
    assert model.config.model_type == "bert" and model.unit_shape().ffn == (1536,) * 6
    return model


def test_quick_demo_learned_its_tasks(demo):
    for task, chance in (("sst2", 0.5), ("ag_news", 0.25)):
        res = evaluate(demo, task, load_split(task, "validation", limit=300))
        assert res.metric > chance + 0.2, (task, res.metric)


def test_ig_pipeline_on_minilm(demo, tmp_path):
    data = load_split("sst2", "validation", limit=200)
    scores = attribute(demo, "sst2", AttributionConfig(method="ig", samples=16, steps=4, units="both"))
    assert scores.n_examples == 16 and len(scores.ffn) == 6 and len(scores.heads[0]) == 12
    masks = build_masks(scores, PruneConfig(0.5, 0.25), demo.unit_shape())
    small = prune_physically(demo, masks, "sst2")
    few = data.sample(32)
    np.testing.assert_allclose(predict_logits(small, "sst2", few), predict_logits(demo, "sst2", few, masks.gates()),
                               atol=1e-4)
    assert count_params(small, "sst2") < count_params(demo, "sst2")
    dense = evaluate(demo, "sst2", data).metric
    pruned = evaluate_masked(demo, "sst2", data, build_masks(scores, PruneConfig(0.5), demo.unit_shape())).metric
    assert pruned > 0.5  # still far above chance with half the FFN neurons gone, no retraining
    assert evaluate(demo, "sst2", data).metric == dense  # no leak
    res = export_pruned(demo, "sst2", scores, PruneConfig(0.5, 0.25), tmp_path / "sst2-50", data.sample(64))
    reloaded = load_model(res.path)
    assert evaluate(reloaded, "sst2", data.sample(64)).metric == pytest.approx(res.metric_pruned)


def test_sweep_records_on_minilm(demo, engine):
    from tp_core.sweeps import run_sweep
    from tp_core.work import DataRef, model_ref

    recs = run_sweep(engine, demo, model_ref(demo), "ag_news", ["ig", "random"], [0.0, 0.7],
                     attribution=AttributionConfig(samples=16, steps=4), data=DataRef("ag_news", "validation", 150),
                     n=150)
    assert [r.method for r in recs] == ["dense", "ig", "ig", "random", "random"]
    assert recs[1].metric == pytest.approx(recs[0].metric)  # 0% sparsity = dense
    assert recs[2].kept_params < recs[2].total_params
