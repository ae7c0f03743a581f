"""Training-free recovery (tp_core/recovery.py) on tiny random models: identity when nothing is removed, exact bias
compensation for constant activations, the least-squares solutions equal torch.linalg.lstsq on the same systems,
exports with recovery folded in equal the masked + recovered model, mask files carry recovery, and a recovery in one
thread never leaks into another thread's evaluation."""
import json
import threading

import numpy as np
import pytest
import torch

from tiny import tiny_multitask
from tp_core.attribution import AttributionConfig, attribute
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import evaluate_masked, predict_logits
from tp_core.masks import PruneConfig, UnitMasks, build_masks, load_mask_file, save_mask_file
from tp_core.pruning import prune_physically
from tp_core.recovery import LEVELS, Recovery, RecoveryConfig, calibration_data, load_plan, recover

SOLVED = ("bias", "scale", "lstsq")
_MODELS: dict = {}


def shared(family="bert"):
    """One tiny model per family for the tests that do not change weights (building one takes seconds)."""
    if family not in _MODELS:
        _MODELS[family] = tiny_multitask(family)
    return _MODELS[family]


@pytest.fixture(scope="module")
def calib():
    return load_split("sst2", "train", limit=24, seed=3)


@pytest.fixture(scope="module")
def val():
    return load_split("sst2", "validation", limit=24)


def _masks(model, ffn=0.6, heads=0.5, method="magnitude"):
    scores = attribute(model, "sst2", AttributionConfig(method=method), use_cache=False)
    return build_masks(scores, PruneConfig(ffn, heads), model.unit_shape())


@pytest.mark.parametrize("level", SOLVED)
def test_nothing_removed_is_the_identity(level, val):
    model = shared("bert")
    calib = load_split("sst2", "train", limit=96, seed=3)  # enough texts for the head re-fit (2 x 33 unknowns)
    dense = predict_logits(model, "sst2", val)
    masks = UnitMasks.dense(model.unit_shape())
    assert recover(model, "sst2", masks, calib, level).corrections == []  # nothing to fit by default
    rec = recover(model, "sst2", masks, calib, RecoveryConfig(level=level, fit_all=True))  # fit every projection
    if level != "bias":  # every projection, and for lstsq the task head's first projection too
        assert len(rec.corrections) == 2 * model.num_layers + (level == "lstsq")
    for c in rec.corrections:
        if c.scale is not None:
            np.testing.assert_allclose(c.scale, 1.0, atol=1e-4)
        if c.weight is not None:
            assert np.abs(c.weight).max() < 1e-4 and np.abs(c.bias).max() < 1e-4
    np.testing.assert_allclose(predict_logits(model, "sst2", val, masks.gates(recovery=rec)), dense, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_bias_compensation_is_exact_when_removed_activations_are_constant(family, calib, val):
    model = tiny_multitask(family)
    shape = model.unit_shape()
    ffn_keep = [np.ones(n, bool) for n in shape.ffn]
    head_keep = [np.ones(n, bool) for n in shape.heads]
    with torch.no_grad():
        for l in range(model.num_layers):
            p = model.layer_parts(l)
            gone = np.arange(l, shape.ffn[l], 3)  # a third of the neurons: zero input weights -> a = act(b1), constant
            p.ffn_in.weight[torch.as_tensor(gone)] = 0.0
            p.ffn_in.bias[torch.as_tensor(gone)] = torch.linspace(-1.0, 2.0, len(gone))  # (init biases are 0)
            ffn_keep[l][gone] = False
            h = (l + 1) % shape.heads[l]  # one head: zero value weights -> its context is b_v for every token
            p.value.weight[h * p.head_dim:(h + 1) * p.head_dim] = 0.0
            p.value.bias[h * p.head_dim:(h + 1) * p.head_dim] = torch.linspace(-1.5, 1.5, p.head_dim)
            head_keep[l][h] = False
    model._fingerprint = None
    masks = UnitMasks(ffn_keep, head_keep)
    dense = predict_logits(model, "sst2", val)
    plain = predict_logits(model, "sst2", val, masks.gates())
    assert np.abs(plain - dense).max() > 1e-2  # removing them does change the model
    rec = recover(model, "sst2", masks, calib, "bias")
    assert {(c.kind, c.layer) for c in rec.corrections} == {(k, l) for k in ("ffn", "heads") for l in range(3)}
    np.testing.assert_allclose(predict_logits(model, "sst2", val, masks.gates(recovery=rec)), dense, atol=2e-5)


def _systems(model, masks, rec, calib):
    """Per projection, the design matrix A1 = [x_kept | 1] and target B = dense (output + residual) - pruned residual,
    collected independently of recovery.py: the dense model, and the recovered masked model (whose inputs to a
    projection are what the bottom-up fit saw)."""
    L = model.num_layers
    got = {}

    def grab(store, key, kind):
        def hook(module, args, *rest):
            if kind == "in":
                store.setdefault(key, []).append(args[0].detach())
            else:  # forward hook: (module, args, output)
                store.setdefault(key, []).append(rest[0].detach())
        return hook

    def collect(gates):
        store, handles = {}, []
        layers = model.adapter.layers(model.base)
        for l in range(L):
            p = model.layer_parts(l)
            handles += [layers[l].register_forward_pre_hook(grab(store, ("block", l), "in")),
                        p.attn_out.register_forward_pre_hook(grab(store, ("ctx", l), "in"), prepend=True),  # ungated
                        p.attn_out.register_forward_hook(grab(store, ("attn_y", l), "out")),
                        p.ffn_in.register_forward_pre_hook(grab(store, ("h", l), "in")),
                        p.ffn_out.register_forward_pre_hook(grab(store, ("a", l), "in"), prepend=True),
                        p.ffn_out.register_forward_hook(grab(store, ("ffn_y", l), "out"))]
        masks_tok = []
        try:
            for _, batch in model.batches(calib.texts, calib.pairs, 32, 128):
                model(**batch, task="sst2")
                masks_tok.append(batch["attention_mask"].bool())
        finally:
            for h in handles:
                h.remove()
        return {k: torch.cat([t[m] for t, m in zip(v, masks_tok)]) for k, v in store.items()}

    from tp_core.gates import GateState, gated

    with torch.no_grad(), gated(GateState()):
        dense = collect(None)
    with torch.no_grad(), gated(masks.gates(recovery=rec)):
        student = collect(None)
    for c in rec.corrections:
        if c.kind == "head":
            continue  # the task head's re-fit: _head_system
        l, p = c.layer, model.layer_parts(c.layer)
        if c.kind == "heads":
            d = p.head_dim
            cols = [k * d + j for k in c.kept for j in range(d)]
            x = student[("ctx", l)][:, cols]
            B = dense[("attn_y", l)] + dense[("block", l)] - student[("block", l)]
            lin = p.attn_out
        else:
            cols = c.kept
            x = student[("a", l)][:, cols]
            B = dense[("ffn_y", l)] + dense[("h", l)] - student[("h", l)]
            lin = p.ffn_out
        got[(c.kind, l)] = (x.double(), B.double(), lin.weight[:, cols].detach().double(), lin.bias.detach().double(),
                            len(c.kept), len(cols) // len(c.kept))
    return got


def _head_system(model, masks, rec, calib):
    """The head re-fit's system: the pooled sequence of the pruned + recovered model (without the head's own
    correction) against the head projection's output on the dense model's pooled sequence."""
    from tp_core.gates import GateState, gated

    proj = model.head_projection("sst2")
    got = []
    handle = proj.register_forward_hook(lambda m, a, o: got.append((a[0].detach(), o.detach())))
    layers_only = Recovery(rec.level, rec.task, rec.config, [c for c in rec.corrections if c.kind != "head"])
    try:
        with torch.no_grad():
            for state in (GateState(), masks.gates(recovery=layers_only)):
                with gated(state):
                    for _, batch in model.batches(calib.texts, calib.pairs, 32, 128):
                        model(**batch, task="sst2")
    finally:
        handle.remove()
    half = len(got) // 2
    B = torch.cat([o for _, o in got[:half]]).double()
    x = torch.cat([a for a, _ in got[half:]]).double()
    return x, B, proj.weight.detach().double(), proj.bias.detach().double(), proj.in_features, 1


def test_lstsq_solution_matches_torch_linalg_lstsq():
    model = shared("bert")
    calib = load_split("sst2", "train", limit=96, seed=3)  # enough texts for the head re-fit (2 x 33 unknowns)
    masks = _masks(model, 0.6, 0.5)
    rec = recover(model, "sst2", masks, calib, RecoveryConfig(level="lstsq", ridge=1e-2))
    assert len(rec.corrections) == 2 * model.num_layers + 1 and rec.corrections[-1].kind == "head"
    systems = _systems(model, masks, rec, calib)
    systems[("head", -1)] = _head_system(model, masks, rec, calib)
    for c in rec.corrections:
        x, B, Wk, b, _, _ = systems[(c.kind, c.layer)]
        A1 = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
        X0 = torch.cat([Wk.T, b.view(1, -1)], 0)
        lam = c.info["lambda"]
        assert lam == pytest.approx(1e-2 * float((A1.T @ A1).diagonal().mean()), rel=1e-4)
        n = A1.shape[1]
        ref = torch.linalg.lstsq(torch.cat([A1, lam ** 0.5 * torch.eye(n, dtype=torch.float64)]),
                                 torch.cat([B, lam ** 0.5 * X0])).solution
        ours = torch.cat([(Wk + torch.as_tensor(c.weight, dtype=torch.float64)).T,
                          (b + torch.as_tensor(c.bias, dtype=torch.float64)).view(1, -1)], 0)
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-3, atol=2e-4)
        assert c.info["err_after"] < c.info["err_before"]
    few = recover(model, "sst2", masks, load_split("sst2", "train", limit=24, seed=3), "lstsq")
    assert [c.kind for c in few.corrections if c.kind == "head"] == []  # 24 texts: underdetermined, not fitted


def test_scale_solution_matches_torch_linalg_lstsq_on_the_per_unit_system(calib):
    model = shared("bert")
    masks = _masks(model, 0.6, 0.5)
    rec = recover(model, "sst2", masks, calib, RecoveryConfig(level="scale", damping=1e-2))
    systems = _systems(model, masks, rec, calib)
    for c in rec.corrections:
        x, B, Wk, b, units, d = systems[(c.kind, c.layer)]
        # column u of the design: unit u's contribution W_u x_u, over all tokens and output dims
        cols = [(x[:, u * d:(u + 1) * d] @ Wk[:, u * d:(u + 1) * d].T).reshape(-1) for u in range(units)]
        A = torch.stack(cols, 1)
        T = (B - b).reshape(-1, 1)
        lam = c.info["lambda"]
        ref = torch.linalg.lstsq(torch.cat([A, lam ** 0.5 * torch.eye(units, dtype=torch.float64)]),
                                 torch.cat([T, lam ** 0.5 * torch.ones(units, 1, dtype=torch.float64)])).solution
        np.testing.assert_allclose(c.scale, ref.view(-1).numpy(), rtol=1e-3, atol=1e-4)


def test_scale_guard_falls_back_when_scales_leave_the_range(calib):
    model = shared("bert")
    masks = _masks(model, 0.6, 0.5)
    rec = recover(model, "sst2", masks, calib, RecoveryConfig(level="scale", damping=0.0,
                                                              scale_bounds=(0.99999, 1.00001)))
    assert rec.corrections and all(c.info["fallback"] for c in rec.corrections)
    assert all(np.all(c.scale == 1.0) for c in rec.corrections)
    assert set(rec.summary()["fallbacks"]) == {f"{c.kind}{c.layer}" for c in rec.corrections}
    # within reach of more damping: the guard damps harder instead of falling back, and the scales stay in range
    rec = recover(model, "sst2", masks, calib, RecoveryConfig(level="scale", damping=1e-3, scale_bounds=(0.8, 1.25)))
    assert not any(c.info["fallback"] for c in rec.corrections)
    assert all(0.8 <= c.scale.min() and c.scale.max() <= 1.25 for c in rec.corrections)
    assert max(c.info["damping_mult"] for c in rec.corrections) > 1


@pytest.mark.parametrize("family, level", [("bert", "bias"), ("bert", "scale"), ("bert", "lstsq"),
                                           ("roberta", "lstsq"), ("distilbert", "scale"), ("distilbert", "lstsq")])
def test_export_with_recovery_matches_masked_and_recovered_logits(family, level, calib, val):
    model = shared(family)
    masks = _masks(model, 0.7, 0.5)
    rec = recover(model, "sst2", masks, calib, level)
    masked = predict_logits(model, "sst2", val, masks.gates(recovery=rec))
    plain = predict_logits(model, "sst2", val, masks.gates())
    assert np.abs(masked - plain).max() > 1e-4  # the recovery does something
    small = prune_physically(model, masks, "sst2", recovery=rec)
    np.testing.assert_allclose(predict_logits(small, "sst2", val), masked, atol=1e-4)
    assert small.pruning["recovery"]["level"] == level
    np.testing.assert_array_equal(predict_logits(model, "sst2", val, masks.gates()), plain)  # weights untouched
    # the evaluation's throw-away copy shares what slicing and recovery never write, and still leaves the model be
    light = prune_physically(model, masks, "sst2", recovery=rec, share_unchanged=True)
    np.testing.assert_allclose(predict_logits(light, "sst2", val), masked, atol=1e-4)
    emb = model.base.embeddings.word_embeddings.weight
    assert light.base.embeddings.word_embeddings.weight is emb and light.tokenizer is model.tokenizer
    assert all(a is not b for a, b in zip(light.heads["sst2"].parameters(), model.heads["sst2"].parameters()))
    np.testing.assert_array_equal(predict_logits(model, "sst2", val, masks.gates()), plain)


def test_mask_file_carries_the_recovery(tmp_path, calib, val):
    model = shared("bert")
    masks = _masks(model)
    rec = recover(model, "sst2", masks, calib, "lstsq")
    path = save_mask_file(tmp_path / "m.json", masks, model, "sst2", meta={"method": "magnitude"}, recovery=rec)
    m2, rec2, doc = load_plan(path, model)
    assert doc["version"] == 2 and isinstance(rec2, Recovery) and rec2.level == "lstsq"
    np.testing.assert_array_equal(predict_logits(model, "sst2", val, m2.gates(recovery=rec2)),
                                  predict_logits(model, "sst2", val, masks.gates(recovery=rec)))
    m3, doc3 = load_mask_file(path, model)  # the old reader still reads the masks
    assert all((a == b).all() for a, b in zip(m3.ffn, masks.ffn))
    plain = save_mask_file(tmp_path / "p.json", masks, model, "sst2")
    assert load_plan(plain, model)[1] is None and json.loads(plain.read_text())["version"] == 1
    r = evaluate_masked(model, "sst2", val, masks, recovery=rec2)
    assert 0.0 <= r.metric <= 1.0


def test_recovery_for_other_masks_is_refused(calib):
    model = shared("bert")
    rec = recover(model, "sst2", _masks(model, 0.6, 0.5), calib, "lstsq")
    other = _masks(model, 0.6, 0.5, method="random")
    with pytest.raises(TPError, match="other masks"):
        other.gates(recovery=rec)
    with pytest.raises(TPError, match="other masks"):
        prune_physically(model, other, "sst2", recovery=rec)


def test_levels_and_calibration_are_validated():
    assert LEVELS == ("none", "bias", "scale", "lstsq")
    with pytest.raises(TPError, match="Recovery level"):
        RecoveryConfig(level="full").validate()
    with pytest.raises(TPError, match="no train split"):
        calibration_data("qnli", 8)
    model = shared("bert")
    rec = recover(model, "sst2", UnitMasks.dense(model.unit_shape()), None, "none")
    assert rec.corrections == []


def test_recovery_in_one_thread_does_not_leak_into_another(calib, val):
    model = shared("bert")
    masks = _masks(model, 0.7, 0.5)
    rec = recover(model, "sst2", masks, calib, "lstsq")
    cases = {"dense": None, "plain": masks.gates(), "recovered": masks.gates(recovery=rec)}
    expected = {k: predict_logits(model, "sst2", val, g) for k, g in cases.items()}
    assert np.abs(expected["recovered"] - expected["plain"]).max() > 1e-4
    errors, refit = [], {}

    def worker(kind):
        try:
            for _ in range(4):
                g = None if kind == "dense" else (masks.gates() if kind == "plain" else masks.gates(recovery=rec))
                np.testing.assert_allclose(predict_logits(model, "sst2", val, g, batch_size=8), expected[kind],
                                           atol=1e-5)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    def refitter():  # fitting a recovery (temporary capture hooks on the shared model) while others evaluate
        try:
            refit["rec"] = recover(model, "sst2", masks, calib, "lstsq")
        except Exception as exc:  # pragma: no cover
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in cases for _ in range(2)]
    threads.append(threading.Thread(target=refitter))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for a, b in zip(refit["rec"].corrections, rec.corrections):
        np.testing.assert_allclose(a.weight, b.weight, atol=1e-5)


@pytest.mark.parametrize("args, needle", [
    (["evaluate", "--recover", "full"], "Recovery level"),
    (["sweep", "--recover", "fast", "--methods", "random"], "Recovery level"),
    (["export", "--recover", "lsq", "--out", "OUT"], "Recovery level"),
    (["evaluate", "--recover", "bias", "--recover-samples", "0", "--mask", "MASK"], "positive integer"),
    (["evaluate", "--recover", "lstsq"], "--mask"),
])
def test_cli_bad_recover_value_is_one_line_and_exit_2(args, needle, tmp_path, capsys):
    from tp_core.cli import main

    model = shared("bert")
    model.save(tmp_path / "tiny")
    mask = save_mask_file(tmp_path / "m.json", UnitMasks.dense(model.unit_shape()), model, "sst2")
    subst = {"OUT": str(tmp_path / "o"), "MASK": str(mask)}
    argv = [args[0], "--model", str(tmp_path / "tiny"), "--task", "sst2", "--limit", "8", "--quiet"] + \
        [subst.get(a, a) for a in args[1:]]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_cli_evaluate_sweep_export_with_recovery(tmp_path, capsys):
    from tp_core.cli import main

    model = shared("bert")
    folder = tmp_path / "tiny"
    model.save(folder)
    common = ["--model", str(folder), "--task", "sst2", "--limit", "16", "--quiet"]
    out = tmp_path / "sweep.json"
    assert main(["sweep", *common, "--methods", "magnitude", "--ffn-sparsity", "0,0.6", "--recover", "lstsq",
                 "--recover-samples", "16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["dense", "magnitude", "magnitude", "magnitude+lstsq"]
    exp = tmp_path / "exp"
    assert main(["export", *common, "--method", "magnitude", "--ffn-sparsity", "0.6", "--head-sparsity", "0.25",
                 "--recover", "scale", "--recover-samples", "16", "--out", str(exp), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mask_file = tmp_path / "exp.mask.json"
    assert json.loads(mask_file.read_text())["recovery"]["level"] == "scale"
    assert main(["evaluate", *common, "--mask", str(mask_file), "--json"]) == 0  # the file's own recovery
    rec = json.loads(capsys.readouterr().out)
    assert rec["method"] == "magnitude+scale" and rec["metric"] == pytest.approx(res["metric_pruned"])
    assert main(["evaluate", *common, "--mask", str(mask_file), "--recover", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "magnitude"
