"""One set of measured defaults everywhere (tp_core/defaults.py): the command line's options, the Python API's
configs and the app's new-session choices agree; `sweep` evaluates the dense model once per task and, by default,
a seeded subset of a large validation split."""
from __future__ import annotations

import argparse

import pytest

from tp_core import defaults
from tp_core.attribution import AttributionConfig
from tp_core.recovery import RecoveryConfig


def _parsed(*argv: str) -> argparse.Namespace:
    from tp_core.cli import build_parser

    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", ["attribute", "sweep", "export", "budget"])
def test_the_cli_the_api_and_the_app_share_one_set_of_defaults(command):
    from tp_app.state import DEFAULTS
    from tp_core.policy import APP_ATTRIBUTION

    extra = ["--out", "x"] if command == "export" else []
    args = _parsed(command, "--model", "demo", "--task", "sst2", *extra)
    api, app = AttributionConfig(), APP_ATTRIBUTION
    cli = (args.samples, args.steps, args.quadrature)
    assert cli == (api.samples, api.steps, api.riemann) == (app.samples, app.steps, app.riemann)
    assert cli == (defaults.SCORING_SAMPLES, defaults.IG_STEPS, defaults.IG_QUADRATURE) == (64, 2, "gausslegendre")
    assert (DEFAULTS["attr_samples"], DEFAULTS["attr_steps"]) == (api.samples, api.steps)
    assert DEFAULTS["recover_level"] == RecoveryConfig().level == "lstsq"
    if command in ("sweep", "export"):  # the commands that recover by default fit the same level on as many texts
        assert args.recover == RecoveryConfig().level
        assert (args.recover_samples or RecoveryConfig().samples) == RecoveryConfig().samples == 1024


def test_a_quadrature_outside_captums_names_is_refused():
    from tp_core.errors import TPError

    with pytest.raises(TPError, match="--quadrature"):
        AttributionConfig(riemann="simpson").validate()
    assert AttributionConfig(riemann="riemann_middle", steps=50).validate().riemann == "riemann_middle"


def test_sweep_takes_a_seeded_subset_of_a_large_split_by_default():
    from tp_core.cli import _eval_data, _job_data, _sweep_examples_note

    args = _parsed("sweep", "--model", "demo", "--task", "ag_news")
    assert args.limit == defaults.SWEEP_LIMIT == 1000
    data = _eval_data(args, "ag_news")
    assert len(data) == 1000 and data.texts == _eval_data(args, "ag_news").texts  # seeded: the same examples again
    assert _job_data(args, data).limit == 1000
    assert "seeded subset of 1,000 of the 7,600" in _sweep_examples_note(args, len(data))
    # a split smaller than the limit is evaluated whole, under the whole split's cache identity
    small = _parsed("sweep", "--model", "demo", "--task", "sst2")
    sst2 = _eval_data(small, "sst2")
    assert len(sst2) == 872 and _job_data(small, sst2).limit is None
    assert _sweep_examples_note(small, len(sst2)) == "on all 872 validation examples of sst2"
    every = _parsed("sweep", "--model", "demo", "--task", "ag_news", "--limit", "all")
    assert every.limit is None and len(_eval_data(every, "ag_news")) == 7600


def test_sweep_evaluates_the_dense_model_once_per_task(tiny, engine, monkeypatch):
    from tp_core import work
    from tp_core.data import load_split
    from tp_core.sweeps import run_sweep

    model, ref = tiny
    dense_calls = []
    real = work.masked_logits

    def counting(m, task, data, masks, *a, **kw):
        if masks is None:
            dense_calls.append(task)
        return real(m, task, data, masks, *a, **kw)

    monkeypatch.setattr(work, "masked_logits", counting)
    data = load_split("sst2", "validation", limit=24, seed=3)
    recs = run_sweep(engine, model, ref, "sst2", ["magnitude", "random", "ig"], [0.0, 0.5],
                     attribution=AttributionConfig(samples=4), data=data, n=len(data))
    assert [r.method for r in recs] == ["dense", "magnitude", "magnitude", "random", "random", "ig", "ig"]
    assert dense_calls == ["sst2"]  # three methods' 0% points share the one dense evaluation
    assert {r.metric for r in recs if r.ffn_sparsity == 0} == {recs[0].metric}


def test_a_causal_lm_recovers_on_fewer_calibration_texts_by_default_in_the_cli_and_the_app(monkeypatch):
    """A causal LM's prompts are several times longer than an encoder's inputs: the CLI and the app fit its recovery
    on defaults.LLM_RECOVERY_SAMPLES texts unless asked otherwise; an encoder keeps RecoveryConfig's default."""
    from tp_app import state
    from tp_core.cli import _recovery_cfg

    llm = _recovery_cfg(_parsed("export", "--model", "smollm2", "--task", "sst2", "--out", "x"))
    encoder = _recovery_cfg(_parsed("export", "--model", "demo", "--task", "sst2", "--out", "x"))
    asked = _recovery_cfg(_parsed("export", "--model", "smollm2", "--task", "sst2", "--out", "x",
                                  "--recover-samples", "512"))
    assert (llm.samples, encoder.samples, asked.samples) == (defaults.LLM_RECOVERY_SAMPLES, 1024, 512)
    monkeypatch.delenv("TP_APP_RECOVER_SAMPLES", raising=False)
    monkeypatch.setattr(state.st, "session_state", {"model_spec": "smollm2"})
    assert state.recovery_config("lstsq").samples == defaults.LLM_RECOVERY_SAMPLES
    monkeypatch.setattr(state.st, "session_state", {"model_spec": "demo"})
    assert state.recovery_config("lstsq").samples == 1024
