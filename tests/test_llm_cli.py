"""A decoder through the job caches and the CLI: every cache keyed by model and task (scores, curve points,
predictions, job keys) tells prompts apart, and `evaluate` runs the real smollm2 end to end (integration)."""
import json
import time

import pytest
from tiny import tiny_llama

from tp_core.attribution import AttributionConfig, cached_scores_path
from tp_core.data import load_split
from tp_core.decoder import PromptTask, attach_prompt, prompt_key
from tp_core.masks import PruneConfig
from tp_core.work import _point_cache, _task_parts, model_ref, point, point_job, register_model, scores_job

OTHER = PromptTask("text : {text} label :", (("bad",), ("good",)))


def _keys(model, data) -> dict:
    """Every cache / job key of the sst2 task of `model` (the model's current prompt)."""
    ref = model_ref(model, spec="tiny-llama-keys", tasks=["sst2"])
    cfg = AttributionConfig(method="grad_x_act", samples=4)
    scores = scores_job(model, ref, "sst2", cfg, data)
    parts = _task_parts(ref, model, "sst2")
    return {"scores_file": cached_scores_path(model, "sst2", cfg, data).name,
            "point_file": _point_cache(parts, "dense", None, data).name,
            "parts": json.dumps(parts), "scores_job": scores.key,
            "point_job": point_job(model, ref, "sst2", scores, PruneConfig(0.5), data, len(data)).key}


def test_two_prompts_give_two_keys_and_the_same_prompt_the_same_keys():
    data = load_split("sst2", "validation", limit=4)
    model = tiny_llama()
    first = _keys(model, data)
    assert _keys(tiny_llama(), data) == first  # the same weights and prompt: the same keys
    attach_prompt(model, model.task_info("sst2"), OTHER)
    second = _keys(model, data)
    assert all(second[k] != first[k] for k in first), (first, second)
    demos = PromptTask(OTHER.template, OTHER.label_words, demos=(("a good film", None, 1),))
    attach_prompt(model, model.task_info("sst2"), demos)  # only the demonstrations differ
    assert all(v != second[k] for k, v in _keys(model, data).items())


def test_an_edited_prompt_never_reuses_a_curve_point_of_another_prompt():
    data = load_split("sst2", "validation", limit=6)
    model = tiny_llama()
    ref = register_model("tiny-llama-points", model)
    said = []
    report = lambda f, m: said.append(m)  # noqa: E731
    first = point(report, ref, "sst2", None, None, data)
    assert "cached" not in said
    point(report, ref, "sst2", None, None, data)
    assert said[-1] == "cached"  # the same prompt: the cached point
    said.clear()
    attach_prompt(model, model.task_info("sst2"), OTHER)
    second = point(report, ref, "sst2", None, None, data)
    assert "cached" not in said and not any("reused" in m for m in said)  # neither the point nor its predictions
    assert second.n == first.n == 6


def test_recoverys_dense_teacher_is_computed_again_for_another_prompt():
    """The teacher pass (recovery's in-memory cache of the dense activations) is the prompts' pass: not reused."""
    from tp_core.recovery import RecoveryConfig
    from tp_core.recovery_passes import dense_teacher

    data = load_split("sst2", "train", limit=4)
    model, cfg = tiny_llama(), RecoveryConfig(samples=4)
    first = dense_teacher(model, "sst2", data, cfg)
    assert dense_teacher(model, "sst2", data, cfg) is first
    attach_prompt(model, model.task_info("sst2"), OTHER)
    second = dense_teacher(model, "sst2", data, cfg)
    assert second is not first and second.inputs[0][0].shape != first.inputs[0][0].shape  # other prompt lengths


def test_an_encoder_keeps_its_old_cache_keys():
    from tiny import tiny_multitask

    model = tiny_multitask("bert")
    assert prompt_key(model, "sst2") == ""
    ref = model_ref(model)
    assert ref.prompts == "" and _task_parts(ref, model, "sst2") == [model.fingerprint(), "sst2"]


def test_a_worker_copy_of_a_decoder_asks_the_prompt_of_the_ref():
    """A worker that loads the model by itself (not the caller's registered object) gets the ref's prompts,
    through a view of its copy: the copy, which other jobs share, keeps its own."""
    from tp_core import refs

    model = tiny_llama()
    attach_prompt(model, model.task_info("sst2"), OTHER)
    ref = refs.ModelRef("tiny-llama-worker", False, model.fingerprint(), refs.prompts_key(model))
    copy = tiny_llama()
    refs._MODELS[(ref.spec, False)] = copy  # as if this worker had loaded it
    try:
        got = refs.get_model(ref)
        assert got.prompts["sst2"] == OTHER and got.encoder is copy.encoder and refs.get_model(ref) is got
        assert copy.prompts["sst2"] != OTHER
    finally:
        refs._MODELS.pop((ref.spec, False), None)


def test_cli_evaluate_attribute_and_sweep_run_a_saved_tiny_llama(tmp_path, capsys):
    """The CLI's commands on a decoder folder (the tiny Llama saved with its prompt): records, scores, exit 0."""
    from tp_core.cli import main

    folder = str(tiny_llama().save(tmp_path / "tiny-llama"))
    assert main(["evaluate", "--model", folder, "--task", "sst2", "--limit", "8", "--json", "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["method"] == "dense" and 0.0 <= rec["metric"] <= 1.0
    out = tmp_path / "scores.json"
    assert main(["attribute", "--model", folder, "--task", "sst2", "--method", "grad_x_act", "--samples", "4",
                 "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["ffn"]) == 2 and len(doc["ffn"][0]) == 64 and len(doc["heads"][0]) == 2  # 2 key/value groups
    rows = tmp_path / "sweep.json"
    assert main(["sweep", "--model", folder, "--task", "sst2", "--methods", "grad_x_act", "--ffn-sparsity", "0,0.5",
                 "--limit", "8", "--samples", "4", "--recover", "none", "--json", str(rows), "--quiet"]) == 0
    recs = json.loads(rows.read_text())
    assert [r["method"] for r in recs][0] == "dense" and recs[-1]["ffn_sparsity"] == 0.5
    assert recs[-1]["kept_params"] < recs[0]["kept_params"]


def test_cli_budget_on_a_decoder_counts_flops_at_its_mean_prompt_length(tmp_path, capsys):
    """`budget --flops-budget` without --seq-len: a decoder's FLOPs are counted at its prompts' mean length."""
    from tp_core.budget import budget_seq_len
    from tp_core.cli import main

    model = tiny_llama()
    folder = str(model.save(tmp_path / "tiny-llama"))
    assert main(["budget", "--model", folder, "--task", "sst2", "--flops-budget", "0.5", "--method", "grad_x_act",
                 "--samples", "4", "--choose", "mass", "--json", "--quiet"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["seq_len"] == budget_seq_len(model, "sst2") > 20 and plan["flops_fraction"] <= 0.5


def test_cli_refuses_a_regression_task_on_a_decoder_in_one_line(tmp_path, capsys):
    from tp_core.cli import main

    folder = str(tiny_llama().save(tmp_path / "tiny-llama"))
    assert main(["evaluate", "--model", folder, "--task", "stsb", "--limit", "4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classification tasks only" in err[0]


@pytest.mark.llm
def test_cli_evaluates_the_real_smollm2_on_a_few_prompts(capsys):
    """`evaluate --limit 8 --json` on the real SmolLM2 (its converted folder) through the CLI's main: one JSON
    record with a metric in [0, 1], loading the converted folder from the test home (no conversion of its own)."""
    from tp_core.cli import main

    t0 = time.time()
    assert main(["evaluate", "--model", "smollm2", "--task", "sst2", "--limit", "8", "--json", "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["method"] == "dense" and rec["metric_name"] == "accuracy" and 0.0 <= rec["metric"] <= 1.0
    assert rec["total_params"] == 134_515_008 and time.time() - t0 < 300
