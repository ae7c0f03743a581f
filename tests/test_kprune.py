"""K-prune (tp_core/kprune.py) on tiny random models: the pipeline meets its FLOPs budget as budget.py counts it,
with nothing to prune it is the identity, the mask search equals a brute-force scan of every threshold, the first
sub-layer's knowledge scores equal a hand computation with plain hooks, and the weight tuning equals a least-squares
solve on the explicitly gathered features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_multitask

from tp_core.budget import model_flops
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import predict_logits
from tp_core.kprune import KPruneConfig, _start, find_mask, knowledge_scores, kprune_pipeline, reconstruct
from tp_core.kwon import UnitCosts, unit_costs

_MODELS: dict = {}


def _bert():
    if "bert" not in _MODELS:
        _MODELS["bert"] = tiny_multitask("bert")
    return _MODELS["bert"]


@pytest.fixture(scope="module")
def texts():
    return load_split("sst2", "train", limit=12, seed=5)


def test_pipeline_meets_the_budget_and_tunes_what_it_pruned(texts):
    model = _bert()
    val = load_split("sst2", "validation", limit=8)
    for budget in (0.35,):
        masks, rec, info = kprune_pipeline(model, "sst2", budget, texts, KPruneConfig(seq_len=64, batch_size=5))
        assert model_flops(model, masks, 64) <= budget * model_flops(model, None, 64) * (1 + 1e-9)
        assert info["flops_fraction"] <= budget + 1e-9
        assert all(m.any() for m in masks.ffn + masks.heads)  # one unit per sub-layer kept
        assert len(info["kept_per_sublayer"]) == 2 * model.num_layers
        rec.check(masks)
        assert rec.level == "lstsq" and rec.corrections
        assert set(info["seconds"]) == {"teacher", "scores", "search", "tuning", "total"}
        assert np.isfinite(predict_logits(model, "sst2", val, masks.gates(recovery=rec))).all()
    with pytest.raises(TPError, match="smallest model"):
        kprune_pipeline(model, "sst2", 0.001, texts, KPruneConfig(seq_len=64))


def test_with_nothing_to_prune_it_is_the_identity(texts):
    model = _bert()
    val = load_split("sst2", "validation", limit=16)
    masks, rec, info = kprune_pipeline(model, "sst2", 1.0, texts, KPruneConfig(batch_size=5))
    assert masks.ffn_sparsity() == masks.head_sparsity() == 0 and not rec.corrections
    np.testing.assert_allclose(predict_logits(model, "sst2", val, masks.gates(recovery=rec)),
                               predict_logits(model, "sst2", val), atol=1e-6)


def _brute_force(target, head, ffn, costs, limit, keep_one):
    """Every threshold in {-inf} + the pooled scores, lowest first, FLOPs counted unit by unit."""
    l, is_ffn = target // 2, target % 2
    pool = [(s, costs.per_head, i) for r in range(l + is_ffn, len(head)) for i, s in enumerate(head[r])]
    pool += [(s, costs.per_ffn, -1) for r in range(l, len(ffn)) for s in ffn[r]]
    best = {r: (int(np.argmax(head[r])), int(np.argmax(ffn[r]))) for r in range(len(head))}
    forced = set()
    if keep_one:
        forced = {("h", r, best[r][0]) for r in range(l + is_ffn, len(head))} | {("f", r, best[r][1])
                                                                                  for r in range(l, len(ffn))}
    units = [("h", r, i, head[r][i]) for r in range(l + is_ffn, len(head)) for i in range(len(head[r]))]
    units += [("f", r, i, ffn[r][i]) for r in range(l, len(ffn)) for i in range(len(ffn[r]))]
    for t in [-np.inf] + sorted(s for s, _, _ in pool):
        flops = sum(costs.per_head if k == "h" else costs.per_ffn for k, r, i, s in units
                    if s > t or (k, r, i) in forced)
        if flops <= limit * (1 + 1e-12) + 1e-9:
            own = ffn[l] if is_ffn else head[l]
            return np.array([s > t or (("f" if is_ffn else "h"), l, i) in forced for i, s in enumerate(own)])
    return None


def test_mask_search_equals_a_brute_force_threshold_scan():
    rng = np.random.default_rng(0)
    costs = UnitCosts(dense=4 * 3.0 + 4 * 5 * 1.0, per_ffn=1.0, per_head=3.0, seq_len=8)
    for _ in range(40):
        head = rng.integers(0, 6, size=(4, 2)).astype(float)  # ties on purpose
        ffn = rng.integers(0, 6, size=(4, 5)).astype(float)
        for target in range(8):
            for limit in rng.uniform(0, costs.dense, size=3):
                for keep_one in (True, False):
                    want = _brute_force(target, head, ffn, costs, limit, keep_one)
                    if want is None:
                        with pytest.raises(TPError):
                            find_mask(target, head, ffn, costs, limit, keep_one)
                        continue
                    np.testing.assert_array_equal(find_mask(target, head, ffn, costs, limit, keep_one), want)


def test_first_scores_and_tuning_equal_a_hand_computation(texts):
    """On the dense model the KL to its own soft labels has zero gradient: only representational knowledge counts,
    sum over real tokens of x^2 x mean_j W_ji^2 / tokens / unit FLOPs; the tuning of sub-layer 0 with a head removed
    equals lstsq on the gathered contexts against the dense projection's output minus its bias."""
    model = _bert()
    cfg = KPruneConfig(batch_size=5, seq_len=64)
    run = _start(model, "sst2", texts, cfg, unit_costs(model, 64))
    head, ffn, fit = knowledge_scores(model, "sst2", run, 0)
    xs = {}
    hooks = [model.layer_parts(k).ffn_out.register_forward_pre_hook(
        lambda mod, a, k=k: xs.setdefault(k, []).append(a[0].detach())) for k in range(model.num_layers)]
    hooks.append(model.layer_parts(0).attn_out.register_forward_pre_hook(
        lambda mod, a: xs.setdefault("ctx", []).append(a[0].detach())))
    tokens, ctx = 0, []
    try:
        for _, batch in model.batches(texts.texts, None, 5, 128, task="sst2"):
            model(**batch, task="sst2")
            m = batch["attention_mask"].bool()
            tokens += int(m.sum())
            for k in range(model.num_layers):
                xs[k][-1] = xs[k][-1][m]
            ctx.append(xs["ctx"][-1][m])
    finally:
        for h in hooks:
            h.remove()
    for k in range(model.num_layers):
        W = model.layer_parts(k).ffn_out.weight.detach().double()
        x = torch.cat(xs[k]).double()
        want = cfg.lam_rep * (x ** 2).sum(0) * (W ** 2).mean(0) / tokens / run["costs"].per_ffn
        np.testing.assert_allclose(ffn[k], want.numpy(), rtol=1e-4, atol=1e-12)
    p = model.layer_parts(0)
    kept = list(range(1, len(run["masks"].heads[0])))  # head 0 removed
    dW, db, info = reconstruct(fit, kept, "theirs")
    X = torch.cat(ctx).double()[:, p.head_dim:]
    T = F.linear(torch.cat(ctx), p.attn_out.weight.detach(), None).double()  # dense output minus its bias
    ref = torch.linalg.lstsq(X, T).solution.T
    W0 = p.attn_out.weight.detach().double()[:, p.head_dim:]
    assert db is None and not info["fallback"]
    np.testing.assert_allclose(dW + W0.numpy(), ref.numpy(), atol=2e-3 * float(ref.abs().max()))
    assert info["err_after"] <= info["err_before"]
