"""Attribution stage: every method on every family; the ig fast path equals Captum run directly."""
import numpy as np
import pytest
import torch

from tiny import FAMILIES, assert_ffn_ig_equals_captum, tiny_llama, tiny_multitask
from tp_core.attribution import METHODS, AttributionConfig, UnitScores, _target, attribute
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.gates import GateState, gated


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_scores_every_unit(family, method):
    model = tiny_multitask(family)
    s = attribute(model, "sst2", AttributionConfig(method=method, samples=8, steps=4))
    shape = model.unit_shape()
    assert [len(x) for x in s.ffn] == list(shape.ffn)
    assert [len(x) for x in s.heads] == list(shape.heads)
    assert all(np.isfinite(x).all() for x in s.ffn + s.heads)
    assert any(x.std() > 0 for x in s.ffn)  # scores distinguish units


@pytest.mark.parametrize("family, aggregation",
                         [("bert", "abs_sum"), ("bert", "signed"), ("roberta", "abs_sum"), ("distilbert", "sum_abs")])
def test_ig_fast_path_equals_captum_layer_integrated_gradients(family, aggregation):
    """Per layer, our ig scores equal Captum's LayerIntegratedGradients run directly (zero baseline on the
    activation, same steps and Riemann method), at a tight tolerance."""
    model = tiny_multitask(family)
    cfg = AttributionConfig(method="ig", samples=12, steps=7, units="ffn", aggregation=aggregation, batch_size=5,
                            internal_batch=16)  # small internal batch: exercises chunked IG steps
    assert_ffn_ig_equals_captum(model, "sst2", load_split("sst2", "train", limit=12, seed=3), cfg)


def test_head_ig_equals_captum_integrated_gradients_on_gates():
    """Head scores = Captum IntegratedGradients on per-head gates (baseline 0, input 1) of one layer."""
    from captum.attr import IntegratedGradients

    model = tiny_multitask("bert")
    cfg = AttributionConfig(method="ig", samples=6, steps=5, units="heads", batch_size=6)
    data = load_split("sst2", "train", limit=6, seed=1)
    ours = attribute(model, "sst2", cfg, data=data, use_cache=False)
    (idx, batch), = list(model.batches(data.texts, data.pairs, 6, 128))
    y = torch.tensor([data.labels[i] for i in idx])
    for layer in range(model.num_layers):
        def fwd(g, input_ids, attention_mask, token_type_ids, layer=layer):
            with gated(GateState(heads={layer: g.view(g.shape[0], 1, -1, 1)})):
                return torch.softmax(model(input_ids, attention_mask, token_type_ids, task="sst2"), -1)

        ig = IntegratedGradients(fwd)
        h = model.layer_parts(layer).num_heads
        attr = ig.attribute(torch.ones(6, h), baselines=torch.zeros(6, h), target=y, n_steps=cfg.steps,
                            method=cfg.riemann, additional_forward_args=(batch["input_ids"], batch["attention_mask"],
                                                                         batch["token_type_ids"]))
        np.testing.assert_allclose(ours.heads[layer], attr.abs().mean(0).double().numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("family", (*FAMILIES, "llama"))
def test_grad_x_act_of_both_unit_kinds_in_one_pass_equals_each_kind_alone(family):
    """grad x activation scores FFN neurons and heads from one forward/backward: the same scores as a run per kind."""
    model = tiny_llama() if family == "llama" else tiny_multitask(family)
    data = load_split("sst2", "train", limit=10, seed=2)
    run = lambda units: attribute(model, "sst2", AttributionConfig(method="grad_x_act", samples=10, units=units,  # noqa: E731
                                                                   batch_size=4), data=data, use_cache=False)
    both, ffn, heads = run("both"), run("ffn"), run("heads")
    for a, b in zip(both.ffn, ffn.ffn):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    for a, b in zip(both.heads, heads.heads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


def test_ig_attributions_are_complete():
    """IG completeness: summed signed attributions of a layer = F(x) - F(layer zeroed) (up to the Riemann error)."""
    model = tiny_multitask("bert")
    data = load_split("sst2", "train", limit=1, seed=0)
    cfg = AttributionConfig(method="ig", samples=1, steps=200, units="ffn", aggregation="signed")
    s = attribute(model, "sst2", cfg, data=data, use_cache=False)
    (idx, batch), = list(model.batches(data.texts, data.pairs))
    y = torch.tensor(data.labels)
    with torch.no_grad():
        full = _target(model(**batch, task="sst2"), y, "prob")
        for layer in range(model.num_layers):
            f = model.layer_parts(layer).ffn_out.in_features
            with gated(GateState(ffn={layer: torch.zeros(f)})):
                zero = _target(model(**batch, task="sst2"), y, "prob")
            assert s.ffn[layer].sum() == pytest.approx((full - zero).item(), abs=2e-3)


def test_predicted_labels_change_scores_on_multiclass_but_not_binary_abs():
    """Unsupervised (predicted labels) vs gold. For a binary task with the probability target and |.| aggregation
    the two are identical by construction (dp_0/da = -dp_1/da); on a 4-class task they differ."""
    model = tiny_multitask("bert")
    for task, same in (("sst2", True), ("ag_news", False)):
        data = load_split(task, "train", limit=10, seed=0)
        gold = attribute(model, task, AttributionConfig(samples=10, steps=3, labels="gold", units="ffn"), data=data)
        pcfg = AttributionConfig(samples=10, steps=3, labels="predicted", units="ffn")
        pred = attribute(model, task, pcfg, data=data)
        assert np.allclose(np.concatenate(gold.ffn), np.concatenate(pred.ffn), rtol=1e-4) == same


def test_scores_are_cached_on_disk_and_reused(tmp_path):
    model = tiny_multitask("bert")
    cfg = AttributionConfig(method="ig", samples=8, steps=3)
    first = attribute(model, "sst2", cfg)
    calls = []
    second = attribute(model, "sst2", cfg, progress=lambda f, m: calls.append(m))
    assert calls == ["loaded cached scores"]
    np.testing.assert_array_equal(np.concatenate(first.ffn), np.concatenate(second.ffn))
    other = attribute(model, "sst2", AttributionConfig(method="ig", samples=8, steps=4))
    assert not np.array_equal(np.concatenate(first.ffn), np.concatenate(other.ffn))


def test_scores_round_trip_json(tmp_path):
    model = tiny_multitask("bert")
    s = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    s.save(tmp_path / "s.json")
    back = UnitScores.load(tmp_path / "s.json")
    np.testing.assert_allclose(np.concatenate(back.heads), np.concatenate(s.heads))


def test_random_is_seeded_and_bad_settings_fail_clearly():
    model = tiny_multitask("bert")
    a = attribute(model, "sst2", AttributionConfig(method="random", seed=1), use_cache=False)
    b = attribute(model, "sst2", AttributionConfig(method="random", seed=1), use_cache=False)
    np.testing.assert_array_equal(a.ffn[0], b.ffn[0])
    with pytest.raises(TPError, match="Unknown attribution method"):
        attribute(model, "sst2", AttributionConfig(method="taylor"))
    with pytest.raises(TPError, match="samples"):
        attribute(model, "sst2", AttributionConfig(samples=0))
