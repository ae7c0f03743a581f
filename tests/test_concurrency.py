"""Thread safety of the engine: the app serves each browser session in its own thread on one shared model.

Attribution must give the same scores while another thread evaluates the same model (an earlier version's capture
hooks - its own for the ig fast path, Captum's for grad_x_act - were model-wide and recorded the other thread's
forward passes: shape errors or silently wrong scores), and a masked evaluation must never leak into another
thread's dense one. grad_x_act (now computed through the per-thread gates) still equals Captum's
LayerGradientXActivation.
"""
import threading

import numpy as np
import pytest
import torch

from tiny import FAMILIES, tiny_multitask
from tp_core.attribution import AttributionConfig, _aggregate_tokens, attribute
from tp_core.data import load_split
from tp_core.evaluation import evaluate, predict_logits
from tp_core.masks import PruneConfig, build_masks


@pytest.mark.parametrize("family", FAMILIES)
def test_grad_x_act_equals_captum_layer_gradient_x_activation(family):
    from captum.attr import LayerGradientXActivation

    model = tiny_multitask(family)
    data = load_split("ag_news", "train", limit=10, seed=1)
    cfg = AttributionConfig(method="grad_x_act", samples=10, units="ffn", aggregation="signed", batch_size=10)
    ours = attribute(model, "ag_news", cfg, data=data, use_cache=False)
    L = model.num_layers
    total = [0.0] * L
    for idx, batch in model.batches(data.texts, data.pairs, 10, 128):
        y = torch.tensor([int(data.labels[i]) for i in idx])

        def fwd(input_ids, attention_mask, token_type_ids=None):
            return torch.softmax(model(input_ids, attention_mask, token_type_ids, task="ag_news"), -1)

        attrs = LayerGradientXActivation(fwd, [model.layer_parts(i).ffn_act for i in range(L)]).attribute(
            batch["input_ids"], target=y,
            additional_forward_args=(batch["attention_mask"], batch.get("token_type_ids")))
        for i, a in enumerate(attrs):
            total[i] = total[i] + _aggregate_tokens(a.detach(), batch["attention_mask"], "signed").sum(0).double()
    for i in range(L):
        np.testing.assert_allclose(ours.ffn[i], (total[i] / len(data)).numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["ig", "grad_x_act", "activation"])
def test_attribution_is_unchanged_while_another_thread_evaluates(method):
    model = tiny_multitask("bert")
    cfg = AttributionConfig(method=method, samples=24, steps=3, batch_size=4)
    alone = attribute(model, "sst2", cfg, use_cache=False)
    val = load_split("ag_news", "validation", limit=64)
    masks = build_masks(attribute(model, "ag_news", AttributionConfig(method="random"), use_cache=False),
                        PruneConfig(0.5, 0.5), model.unit_shape())
    stop = threading.Event()
    errors = []

    def other_session():  # dense and masked evaluations of another task, in a loop
        try:
            while not stop.is_set():
                evaluate(model, "ag_news", val, batch_size=8)
                evaluate(model, "ag_news", val, masks.gates(model.device), batch_size=8)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=other_session) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        results = [attribute(model, "sst2", cfg, use_cache=False) for _ in range(3)]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    for r in results:
        for a, b in zip(r.ffn + r.heads, alone.ffn + alone.heads):
            np.testing.assert_array_equal(a, b)


def test_masked_evaluations_in_threads_never_leak_into_dense_ones():
    model = tiny_multitask("bert")
    val = load_split("sst2", "validation", limit=48)
    dense = predict_logits(model, "sst2", val)
    scores = attribute(model, "sst2", AttributionConfig(method="magnitude"), use_cache=False)
    configs = [PruneConfig(f, h) for f, h in ((0.3, 0.0), (0.6, 0.25), (0.9, 0.5), (0.0, 0.75))]
    masked_alone = [predict_logits(model, "sst2", val, build_masks(scores, c, model.unit_shape()).gates(model.device))
                    for c in configs]
    out: dict = {}
    errors = []

    def run(i):
        try:
            gates = build_masks(scores, configs[i % 4], model.unit_shape()).gates(model.device) if i % 5 else None
            for _ in range(3):
                out.setdefault(i, []).append(predict_logits(model, "sst2", val, gates, batch_size=8))
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, runs in out.items():
        want = dense if i % 5 == 0 else masked_alone[i % 4]
        for got in runs:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(predict_logits(model, "sst2", val), dense)  # the model is left unmasked
