"""Kwon et al. 2022's pipeline (tp_core/kwon.py) on tiny random models: the Fisher equals a per-example autograd
reference (and finite differences), the mask search meets its FLOPs budget as budget.py counts it and equals a
brute-force search over every mask of a model small enough to enumerate, rearrangement keeps the per-layer counts,
never raises its objective and equals their gradient-vector greedy, and mask tuning with nothing removed is the
identity."""
import itertools
import json

import numpy as np
import pytest
import torch
from tiny import TASKS, tiny_multitask, tokenizer
from torch import nn

from tp_core.budget import model_flops
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import predict_logits
from tp_core.gates import GateState, gated
from tp_core.kwon import (
    FisherInfo,
    KwonConfig,
    fisher_info,
    kwon_pipeline,
    mask_scores,
    pruned_loss,
    rearrange_mask,
    search_mask,
    tuning_config,
    unit_costs,
)
from tp_core.masks import UnitMasks, build_masks
from tp_core.model import ClassificationHead, MultiTaskModel
from tp_core.recovery import recover

_MODELS: dict = {}


def _bert():
    if "bert" not in _MODELS:
        _MODELS["bert"] = tiny_multitask("bert")
    return _MODELS["bert"]


def _enumerable():
    """2 layers x (2 heads, 3 FFN neurons): 2^10 masks in all."""
    if "small" not in _MODELS:
        from transformers import AutoModel, BertConfig

        torch.manual_seed(1)
        tok = tokenizer()
        enc = AutoModel.from_config(BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=3, max_position_embeddings=64))
        heads = nn.ModuleDict({t.name: ClassificationHead(8, t.num_labels) for t in TASKS})
        _MODELS["small"] = MultiTaskModel(enc, tok, {t.name: t for t in TASKS}, heads, source="tiny-enum").eval()
    return _MODELS["small"]


@pytest.fixture(scope="module")
def texts():
    return load_split("sst2", "train", limit=12, seed=5)


def _all_masks(shape):
    sizes = list(shape.ffn) + list(shape.heads)
    L = len(shape.ffn)
    for bits in itertools.product([False, True], repeat=sum(sizes)):
        parts = np.split(np.array(bits), np.cumsum(sizes)[:-1])
        yield UnitMasks(parts[:L], parts[L:])


def _value(fisher: FisherInfo, m: UnitMasks) -> float:
    return sum(float(d[k].sum()) for d, k in zip(fisher.ffn_diag() + fisher.head_diag(), m.ffn + m.heads))


def _random_fisher(shape, rng) -> FisherInfo:
    return FisherInfo([np.diag(rng.random(f)) for f in shape.ffn], [np.diag(rng.random(h)) for h in shape.heads], 1)


@pytest.mark.parametrize("keep_one", [True, False])
def test_search_meets_the_budget_and_equals_brute_force(keep_one, texts):
    model = _enumerable()
    shape, T = model.unit_shape(), 8
    costs = unit_costs(model, T)
    candidates = [(m, model_flops(model, m, T)) for m in _all_masks(shape)]
    if keep_one:
        candidates = [(m, f) for m, f in candidates if all(k.any() for k in m.ffn + m.heads)]
    else:  # their search keeps at least one head in all
        candidates = [(m, f) for m, f in candidates if sum(int(k.sum()) for k in m.heads) >= 1]
    rng = np.random.default_rng(0)
    fishers = [fisher_info(model, "sst2", texts)] + [_random_fisher(shape, rng) for _ in range(3)]
    for fisher, budget in itertools.product(fishers, (0.1, 0.25, 0.4, 0.5, 0.55, 0.6, 0.7, 0.78, 0.85, 0.93, 1.0)):
        feasible = [(m, _value(fisher, m)) for m, f in candidates if f <= budget * costs.dense * (1 + 1e-9)]
        if not feasible:
            with pytest.raises(TPError, match="below the smallest model"):
                search_mask(fisher, budget, costs, keep_one_per_layer=keep_one)
            continue
        masks, info = search_mask(fisher, budget, costs, keep_one_per_layer=keep_one)
        flops = model_flops(model, masks, T)
        assert flops <= budget * costs.dense * (1 + 1e-9)
        assert info["flops_fraction"] == pytest.approx(flops / costs.dense, rel=1e-12)
        best_mask, best = max(feasible, key=lambda mv: mv[1])
        assert _value(fisher, masks) == pytest.approx(best, rel=1e-12) == info["objective"]
        for got, want in zip(masks.ffn + masks.heads, best_mask.ffn + best_mask.heads):
            np.testing.assert_array_equal(got, want)  # distinct values: the optimum is unique
        if keep_one:
            assert all(k.any() for k in masks.ffn + masks.heads)


def test_search_on_a_bert_meets_the_budget_exactly(texts):
    model = _bert()
    fisher = fisher_info(model, "sst2", texts)
    costs = unit_costs(model, 128)
    for budget in (0.25, 0.4, 0.5, 0.6, 0.9):
        masks, info = search_mask(fisher, budget, costs)
        flops = model_flops(model, masks, 128)
        assert flops <= budget * costs.dense * (1 + 1e-9)
        assert info["ffn_kept"] == sum(int(m.sum()) for m in masks.ffn)
        n_ffn = sum(len(m) for m in masks.ffn)
        assert info["ffn_kept"] == n_ffn or flops + costs.per_ffn > budget * costs.dense  # no neuron more fits
        assert all(m.any() for m in masks.ffn + masks.heads)


def _example_grads(model, task, text, label):
    """Reference: one example alone, gates of shape (units,) per layer, autograd."""
    shape = model.unit_shape()
    ffn = {l: torch.ones(f, requires_grad=True) for l, f in enumerate(shape.ffn)}
    heads = {l: torch.ones(h, 1, requires_grad=True) for l, h in enumerate(shape.heads)}
    batch = next(iter(model.batches([text], None, 1, 128)))[1]
    with gated(GateState(ffn=ffn, heads=heads)):
        loss = nn.functional.cross_entropy(model(**batch, task=task), torch.tensor([label]))
    L = len(shape.ffn)
    g = torch.autograd.grad(loss, [ffn[l] for l in range(L)] + [heads[l] for l in range(L)])
    return [x.double().flatten() for x in g[:L]], [x.double().flatten() for x in g[L:]]


def _loss_at(model, task, text, label, layer, unit, value):
    g = torch.ones(model.unit_shape().ffn[layer])
    g[unit] = value
    batch = next(iter(model.batches([text], None, 1, 128)))[1]
    with torch.no_grad(), gated(GateState(ffn={layer: g})):
        return float(nn.functional.cross_entropy(model(**batch, task=task), torch.tensor([label])))


@pytest.mark.parametrize("labels", ["gold", "predicted"])
def test_fisher_equals_a_per_example_autograd_reference(labels, texts):
    model = _bert()
    fisher = fisher_info(model, "ag_news", texts, labels=labels, batch_size=5)  # padded batches of mixed lengths
    L = model.num_layers
    ref_f = [0.0] * L
    ref_h = [0.0] * L
    for text, gold in zip(texts.texts, texts.labels):
        label = int(gold) % 4
        if labels == "predicted":
            with torch.no_grad():
                label = int(model(**next(iter(model.batches([text], None, 1, 128)))[1], task="ag_news").argmax())
        gf, gh = _example_grads(model, "ag_news", text, label)
        ref_f = [r + torch.outer(g, g) for r, g in zip(ref_f, gf)]
        ref_h = [r + torch.outer(g, g) for r, g in zip(ref_h, gh)]
    assert fisher.n_examples == len(texts)
    for got, want in zip(fisher.ffn + fisher.heads, ref_f + ref_h):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6 * float(want.abs().max()))  # float32 sums
    if labels == "gold":  # the autograd gradient itself against central differences
        text, label = texts.texts[0], int(texts.labels[0]) % 4
        gf, _ = _example_grads(model, "ag_news", text, label)
        for layer, unit in ((0, 3), (2, 17)):
            eps = 1e-2
            fd = (_loss_at(model, "ag_news", text, label, layer, unit, 1 + eps)
                  - _loss_at(model, "ag_news", text, label, layer, unit, 1 - eps)) / (2 * eps)
            assert fd == pytest.approx(float(gf[layer][unit]), rel=2e-2, abs=1e-4)


def _their_greedy(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """prune/rearrange.py `greedy_rearrange` as they wrote it: grads (examples, units)."""
    num_unpruned = int(mask.sum())
    num_pruned = mask.shape[0] - num_unpruned
    grads = grads.permute(1, 0).contiguous()
    indicies = grads.pow(2).sum(dim=1).sort(descending=False, stable=True)[1].tolist()
    masked = indicies[:num_pruned]
    for index in indicies[num_pruned:]:
        masked.append(index)
        vectors = grads[masked]
        removed = (vectors.sum(dim=0) - vectors).pow(2).sum(dim=1).argmin()
        del masked[removed]
    new = torch.ones_like(mask)
    new[masked] = 0
    return new


def test_rearrangement_keeps_counts_lowers_its_objective_and_equals_theirs(texts):
    model = _bert()
    fisher = fisher_info(model, "sst2", texts)
    masks, _ = search_mask(fisher, 0.45, unit_costs(model, 128))
    new, info = rearrange_mask(masks, fisher)
    for kind in ("ffn", "heads"):
        before, after = getattr(masks, kind), getattr(new, kind)
        assert [int(m.sum()) for m in before] == [int(m.sum()) for m in after]
        blocks = getattr(fisher, kind)
        for b, a, block in zip(before, after, blocks):
            assert pruned_loss(block, a) <= pruned_loss(block, b) * (1 + 1e-12) + 1e-15
        assert info[kind]["loss_after"] <= info[kind]["loss_before"] * (1 + 1e-12)
    rng = np.random.default_rng(3)  # on gradient vectors with strong interactions: the same masks as their greedy
    for n, kept in ((12, 5), (20, 13), (7, 1)):
        G = torch.as_tensor(rng.normal(size=(9, n)) + rng.normal(size=(9, 1)), dtype=torch.float64)
        keep = np.zeros(n, bool)
        keep[rng.choice(n, kept, replace=False)] = True
        fish = FisherInfo([(G.T @ G).numpy()], [np.eye(2)], 9)
        got, _ = rearrange_mask(UnitMasks([keep], [np.ones(2, bool)]), fish)
        want = _their_greedy(torch.as_tensor(keep, dtype=torch.float64), G).numpy().astype(bool)
        np.testing.assert_array_equal(got.ffn[0], want)


@pytest.mark.parametrize("solver", ["ridge", "lsmr"])
def test_mask_tuning_with_nothing_removed_is_the_identity(solver, texts):
    model = _bert()
    val = load_split("sst2", "validation", limit=16)
    dense = predict_logits(model, "sst2", val)
    masks = UnitMasks.dense(model.unit_shape())
    cfg = tuning_config(KwonConfig(solver=solver), len(texts))
    rec = recover(model, "sst2", masks, texts, cfg)
    np.testing.assert_allclose(predict_logits(model, "sst2", val, masks.gates(recovery=rec)), dense, atol=1e-6)
    from dataclasses import replace

    rec = recover(model, "sst2", masks, texts, replace(cfg, fit_all=True))  # every projection solved
    assert len(rec.corrections) == 2 * model.num_layers
    np.testing.assert_allclose(predict_logits(model, "sst2", val, masks.gates(recovery=rec)), dense, atol=1e-5)
    masks, rec, info = kwon_pipeline(model, "sst2", 1.0, texts, KwonConfig(solver=solver))
    assert masks.ffn_sparsity() == masks.head_sparsity() == 0
    np.testing.assert_allclose(predict_logits(model, "sst2", val, masks.gates(recovery=rec)), dense, atol=1e-6)


@pytest.mark.parametrize("solver", ["ridge", "lsmr"])
def test_pipeline_meets_the_budget_and_times_its_stages(solver, texts):
    model = _bert()
    masks, rec, info = kwon_pipeline(model, "sst2", 0.5, texts, KwonConfig(solver=solver, seq_len=64))
    assert model_flops(model, masks, 64) <= 0.5 * model_flops(model, None, 64) * (1 + 1e-9)
    assert info["flops_fraction"] <= 0.5 + 1e-9
    assert set(info["seconds"]) == {"fisher", "search", "rearrange", "tuning", "total"}
    rec.check(masks)
    assert rec.level == "scale" and rec.corrections
    scores, cfg = mask_scores(masks, model.source, "sst2")  # export paths rebuild exactly these masks
    rebuilt = build_masks(scores, cfg, model.unit_shape())
    for got, want in zip(rebuilt.ffn + rebuilt.heads, masks.ffn + masks.heads):
        np.testing.assert_array_equal(got, want)
    val = load_split("sst2", "validation", limit=8)
    assert np.isfinite(predict_logits(model, "sst2", val, masks.gates(recovery=rec))).all()


@pytest.mark.parametrize("pipeline,stages,level", [("kwon", {"fisher", "search", "tuning"}, "scale"),
                                                    ("kprune", {"scores", "search", "tuning"}, "lstsq")])
def test_cli_budget_and_export_with_a_peer_pipeline(tmp_path, monkeypatch, capsys, pipeline, stages, level):
    """`budget` and `export --pipeline kwon|kprune`: the plan meets the FLOPs budget, each stage is timed, the mask
    file carries the pipeline's own tuning."""
    from tp_core.cli import main
    from tp_core.recovery import load_plan

    monkeypatch.setenv("TP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("tp_core.recovery.DEFAULT_SAMPLES", 16)  # budget's calibration texts (a fast test)
    folder = tmp_path / "tiny"
    model = _bert()
    model.save(folder)
    common = ["--model", str(folder), "--task", "sst2", "--pipeline", pipeline, "--flops-budget", "0.5", "--quiet"]
    assert main(["budget", *common, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["flops_fraction"] <= 0.5 + 1e-9 and set(info["seconds"]) >= stages
    out = tmp_path / "exp"
    assert main(["export", *common, "--recover-samples", "16", "--limit", "8", "--out", str(out)]) == 0
    masks, rec, doc = load_plan(tmp_path / "exp.mask.json", model)
    assert doc["method"] == pipeline and rec.level == level
    assert model_flops(model, masks, 128) <= 0.5 * model_flops(model, None, 128) * (1 + 1e-9)
    assert main(["budget", "--model", str(folder), "--task", "sst2", "--pipeline", pipeline, "--latency-budget-ms",
                 "5", "--quiet"]) == 2  # the search needs a FLOPs budget


def test_pipeline_on_a_decoder_counts_flops_at_its_mean_prompt_length():
    """Without a seq_len, Kwon's search counts a causal LM's FLOPs (budget.model_flops, per key/value group and MLP
    neuron) at the mean length of the calibration examples' prompts, and meets the budget there."""
    from tiny import tiny_llama
    from tp_core.budget import budget_seq_len

    model = tiny_llama()
    data = load_split("sst2", "train", limit=12, seed=0)
    masks, rec, info = kwon_pipeline(model, "sst2", 0.5, data, KwonConfig(tuning="none"))
    T = budget_seq_len(model, "sst2", data)
    assert info["config"]["seq_len"] == T > 20  # the demonstrations are in every prompt
    assert model_flops(model, masks, T) <= 0.5 * model_flops(model, None, T) * (1 + 1e-9)
