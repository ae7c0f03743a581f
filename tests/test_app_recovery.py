"""Prune page "+ recovery" toggle (Streamlit AppTest on the quick demo): dashed "<method> + recovery" curves beside
the plain ones and the slider point's recovered metric."""
import pytest

from ui_support import app_test, apply_env, ensure_quick_demo, settle

pytestmark = pytest.mark.ui


@pytest.fixture
def env(monkeypatch, tmp_path):
    ensure_quick_demo()
    apply_env(monkeypatch, tmp_path / "exports")
    monkeypatch.setenv("TP_APP_GRID", "0,0.9")
    return tmp_path


def test_prune_page_recovery_toggle_adds_dashed_curves_and_the_recovered_slider_metric(env):
    at = app_test("pages/4_Prune.py")
    at.session_state["attr_method"] = "grad_x_act"
    at.session_state["baselines"] = []
    at.session_state["ffn_sparsity"] = 0.9
    settle(at, timeout=900)
    assert not at.exception, [e.value for e in at.exception]
    assert "+ recovery" not in at.get("plotly_chart")[0].proto.spec  # off by default
    at.toggle(key="w_recover_on").set_value(True)
    settle(at, timeout=900)
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="w_recover_level").value == "lstsq"
    spec = at.get("plotly_chart")[0].proto.spec
    assert "gradient x activation + recovery" in spec and '"dash":"dash"' in spec.replace(" ", "")
    metrics = {m.label: m for m in at.metric}
    rec = metrics["accuracy (pruned + lstsq)"]
    plain = metrics["accuracy (pruned)"]
    assert 0.0 <= float(rec.value) <= 1.0 and "vs plain masks" in rec.delta
    assert rec.value != plain.value or rec.delta.startswith("+0.0000")
