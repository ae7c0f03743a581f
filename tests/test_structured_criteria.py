"""Wanda-sp and FLAP's fluctuation metric as attribution methods: equal to the formulas of FLAP's code computed
directly from the output projections' inputs (each example run alone, so no padding), on a tiny random BERT and the
tiny random Llama (grouped-query attention: a head unit is a key/value group); reachable from the CLI and the app."""
import json

import numpy as np
import pytest
import torch

from tiny import tiny_llama, tiny_multitask
from tp_core.attribution import METHODS, AttributionConfig, attribute, cache_key
from tp_core.data import load_split

MODELS = {"bert": lambda: tiny_multitask("bert"), "llama": tiny_llama}


def _inputs_alone(model, data):
    """Per layer, the FFN and attention output projections' inputs over every token of every example, each example
    run alone through a plain forward hook (float64, (tokens, channels))."""
    ffn, attn = {}, {}
    handles = []
    for i in range(model.num_layers):
        p = model.layer_parts(i)
        for lin, where in ((p.ffn_out, ffn), (p.attn_out, attn)):
            handles.append(lin.register_forward_hook(
                lambda mod, inp, out, i=i, where=where: where.setdefault(i, []).append(inp[0][0].double())))
    try:
        with torch.no_grad():
            for text in data.texts:
                (_, batch), = model.batches([text], None, 1, 128, task="sst2")
                assert bool(batch["attention_mask"].all())
                model(**batch, task="sst2")
    finally:
        for h in handles:
            h.remove()
    return ({i: torch.cat(v) for i, v in ffn.items()}, {i: torch.cat(v) for i, v in attn.items()})


def _wanda_sp(w, x, n):  # FLAP lib/prune.py prune_wanda_sp: (|W| * sqrt(scaler_row)).mean(axis=0)
    return (w.abs() * torch.sqrt((x ** 2).sum(0) / n)).mean(0)


def _flap(w, x, n):  # FLAP's WIFV: fluctuation of the input channel x squared column norm
    return x.var(0, unbiased=True) * (w ** 2).sum(0)


def _head_units(model, layer, channel):
    """Scores per head unit from per-channel metrics: per query head, its channels' sum; a unit = a kv group's query
    heads (BERT: a group is one head)."""
    cfg = model.config
    n_q = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", n_q)
    per_query_head = channel.view(n_q, -1).sum(1)
    return per_query_head.view(n_kv, n_q // n_kv).sum(1)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
def test_criterion_equals_the_formula_on_hooked_inputs(family, method):
    model = MODELS[family]()
    data = load_split("sst2", "validation", limit=10, seed=1)
    got = attribute(model, "sst2", AttributionConfig(method=method, samples=10, batch_size=4), data=data,
                    use_cache=False)  # batches of 4 of unequal lengths: padded, and padding must not count
    ffn_x, attn_x = _inputs_alone(model, data)
    formula = {"wanda_sp": _wanda_sp, "flap": _flap}[method]
    for i in range(model.num_layers):
        p = model.layer_parts(i)
        want_ffn = formula(p.ffn_out.weight.detach().double(), ffn_x[i], len(data))
        np.testing.assert_allclose(got.ffn[i], want_ffn.numpy(), rtol=1e-5, atol=1e-12)
        channel = formula(p.attn_out.weight.detach().double(), attn_x[i], len(data))
        if method == "flap":  # FLAP squares the attention channel metric before the per-head sum
            channel = channel ** 2
        np.testing.assert_allclose(got.heads[i], _head_units(model, i, channel).numpy(), rtol=1e-5, atol=1e-12)
    assert got.n_examples == 10 and got.method == method


def test_a_gqa_group_scores_the_sum_of_its_query_heads():
    """The tiny Llama has 4 query heads sharing 2 kv heads: each of the 2 head units covers 2 query heads' channels,
    i.e. 16 of o_proj's 32 input features."""
    model = tiny_llama()
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    data = load_split("sst2", "validation", limit=6)
    got = attribute(model, "sst2", AttributionConfig(method="wanda_sp", samples=6), data=data, use_cache=False)
    _, attn_x = _inputs_alone(model, data)
    w = model.layer_parts(0).attn_out.weight.detach().double()
    per_query_head = _wanda_sp(w, attn_x[0], len(data)).view(4, 8).sum(1)
    assert len(got.heads[0]) == 2
    np.testing.assert_allclose(got.heads[0], [per_query_head[:2].sum(), per_query_head[2:].sum()], rtol=1e-5)


def test_labels_do_not_matter_and_the_cache_key_names_the_method():
    model = tiny_multitask("bert")
    data = load_split("sst2", "validation", limit=6)
    gold = attribute(model, "sst2", AttributionConfig(method="flap", samples=6), data=data, use_cache=False)
    pred = attribute(model, "sst2", AttributionConfig(method="flap", samples=6, labels="predicted"), data=data,
                     use_cache=False)
    for a, b in zip(gold.ffn + gold.heads, pred.ffn + pred.heads):
        np.testing.assert_array_equal(a, b)
    keys = {m: cache_key(model, "sst2", AttributionConfig(method=m, samples=6), data) for m in METHODS}
    assert len(set(keys.values())) == len(METHODS)


def test_only_the_wanted_units_are_scored():
    model = tiny_llama()
    s = attribute(model, "sst2", AttributionConfig(method="flap", samples=4, units="ffn"), use_cache=False)
    assert s.heads is None and [len(x) for x in s.ffn] == [64, 64]


def test_methods_app_labels_and_the_cli_offer_them(tmp_path):
    from tp_app.style import METHOD_COLORS, METHOD_LABELS
    from tp_core.cli import _attr_cfg, build_parser, main

    assert {"wanda_sp", "flap"} <= set(METHODS) <= set(METHOD_LABELS) & set(METHOD_COLORS)
    for method in ("wanda_sp", "flap"):
        args = build_parser().parse_args(["attribute", "--model", "m", "--task", "sst2", "--method", method])
        assert _attr_cfg(args).method == method
    folder = tmp_path / "tiny-llama"
    tiny_llama().save(folder)
    sweep_file = tmp_path / "sweep.json"
    assert main(["sweep", "--model", str(folder), "--task", "sst2", "--methods", "wanda_sp,flap", "--samples", "4",
                 "--ffn-sparsity", "0.5", "--head-sparsity", "0.5", "--limit", "6", "--recover", "none",
                 "--json", str(sweep_file), "--quiet"]) == 0
    rows = json.loads(sweep_file.read_text())
    assert [r["method"] for r in rows] == ["dense", "wanda_sp", "flap"]
    assert all(r["kept_params"] < r["total_params"] for r in rows[1:])
