"""tp_core.settings: the app's defaults, each environment variable of settings.ENV overriding its field, and a clear
error for a bad value."""
from pathlib import Path

import pytest

from tp_core.errors import TPError
from tp_core.settings import APP_GRID, ENV, AppSettings, app_settings


def test_defaults_without_variables():
    s = app_settings({})
    assert s == AppSettings() and s.grid == APP_GRID and s.eval_limit == 500 and s.model == "demo"
    assert s.attr_samples is None and s.attr_steps is None


def test_each_variable_sets_its_field():
    env = {ENV["model"]: "demo-quick", ENV["eval_limit"]: "200", ENV["coarse_examples"]: "50",
           ENV["slider_first_examples"]: "0", ENV["grid"]: "0,0.3,0.6,0.9", ENV["attr_samples"]: "16",
           ENV["attr_steps"]: "4", ENV["exports_dir"]: "/tmp/x"}
    s = app_settings(env)
    assert (s.model, s.eval_limit, s.coarse_examples, s.slider_first_examples) == ("demo-quick", 200, 50, 0)
    assert s.grid == (0.0, 0.3, 0.6, 0.9) and (s.attr_samples, s.attr_steps) == (16, 4)
    assert s.exports_dir == Path("/tmp/x")
    assert app_settings({ENV["eval_limit"]: ""}).eval_limit == 500  # empty = unset


def test_reads_the_environment_at_each_call(monkeypatch):
    monkeypatch.setenv("TP_APP_EVAL_LIMIT", "40")
    assert app_settings().eval_limit == 40


def test_a_bad_value_names_its_variable():
    with pytest.raises(TPError, match="TP_APP_GRID"):
        app_settings({"TP_APP_GRID": "0,half"})


def test_the_redraw_rate_is_a_positive_number():
    assert app_settings({}).redraws_per_s == 4.0
    assert app_settings({"TP_APP_REDRAWS_PER_S": "1.5"}).redraws_per_s == 1.5
    for bad in ("0", "-1", "often"):
        with pytest.raises(TPError, match="TP_APP_REDRAWS_PER_S"):
            app_settings({"TP_APP_REDRAWS_PER_S": bad})
