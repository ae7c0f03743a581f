"""Prune page "+ recovery" toggle (Streamlit AppTest on the quick demo): dashed "<method> + recovery" curves beside
the plain ones and the slider point's recovered metric. Then the guided tour, walked step by step on the same
caches: its recovery step is the Prune page's recovered point at 90% (the costly part, shared, not fitted twice)."""
import time

import pytest

from ui_support import APP_ENV, app_test, apply_env, ensure_quick_demo, settle

pytestmark = pytest.mark.ui


@pytest.fixture
def env(monkeypatch, tmp_path):
    ensure_quick_demo()
    apply_env(monkeypatch, tmp_path / "exports")
    monkeypatch.setenv("TP_APP_GRID", "0,0.9")
    return tmp_path


def test_prune_page_recovery_toggle_adds_dashed_curves_and_the_recovered_slider_metric(env):
    at = app_test("pages/4_Prune.py")
    at.session_state["attr_method"] = "ig"  # the tour's method: the test below reuses this recovered point
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
    assert "integrated gradients (ig) + recovery" in spec and '"dash":"dash"' in spec.replace(" ", "")
    metrics = {m.label: m for m in at.metric}
    rec = metrics["accuracy (pruned + lstsq)"]
    plain = metrics["accuracy (pruned)"]
    assert 0.0 <= float(rec.value) <= 1.0 and "vs plain masks" in rec.delta
    assert rec.value != plain.value or rec.delta.startswith("+0.0000")


def _done_result(kind: str, label: str):
    """The result of a finished engine job of `kind` whose label contains `label`."""
    from tp_core.engine import get_engine

    found = [i for i in get_engine().jobs() if i.kind == kind and label in i.label and i.state == "done"]
    assert found, f"no finished {kind} job {label!r}"
    return found[-1].result


def _step(at, n: int) -> float:
    """Settle the tour's step `n` (1-based), check it is shown without errors, and time one more page run (its
    jobs done)."""
    settle(at, timeout=900)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.radio(key="w_tour_step").value == n - 1
    t0 = time.perf_counter()
    at.run()
    return time.perf_counter() - t0


def test_the_tour_walks_its_five_steps_on_the_quick_demo(env):
    """Each step of the tour on the quick demo (sst2, ig with the test's small settings): the neuron's path with the
    library's score, the heatmaps, pruning at 50/70/90% against random, recovery at 90%, the export's counts; next
    and back move between them. Prints each step's page-run time once its jobs are done."""
    from tp_core.inspector import UnitRef
    from tp_core.tour import top_neuron

    at = app_test("app.py")
    at.run()
    at.switch_page("pages/0_Tour.py")
    runs = {}
    runs[1] = _step(at, 1)
    scores = _done_result("scores", "ig scores · sst2")
    best = top_neuron(scores)
    chosen = (at.number_input(key="tour_layer::sst2").value, at.number_input(key="tour_neuron::sst2").value)
    assert chosen == (best.layer, best.index)
    metrics = {m.label: m.value for m in at.metric}
    estimate, library = float(metrics["Estimate with 4 steps"]), float(metrics["The library's ig score (4 steps)"])
    assert library == pytest.approx(abs(estimate), rel=1e-4) and library > 0
    assert any(c.value.startswith(f"{UnitRef('ffn', best.layer, best.index).label()}: rank") for c in at.caption)
    spec = at.get("plotly_chart")[0].proto.spec
    assert "its area is the attribution" in spec and "4 Gauss-Legendre steps" in spec
    at.radio(key="tour_rule").set_value("riemann_middle")
    at.select_slider(key="tour_steps").set_value(2)
    _step(at, 1)
    metrics = {m.label: m.value for m in at.metric}
    assert "Estimate with 2 steps" in metrics and float(metrics["Estimate with 2 steps"]) != estimate
    assert float(metrics["The library's ig score (4 steps)"]) == library  # the app's setting, whatever is drawn
    assert "2 Riemann (midpoints) steps" in at.get("plotly_chart")[0].proto.spec

    at.button(key="tour_next").click()
    runs[2] = _step(at, 2)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert "sst2: layer x FFN neuron (sorted by score)" in specs[0] and "sst2: layer x head" in specs[1]

    at.button(key="tour_next").click()
    runs[3] = _step(at, 3)
    spec = at.get("plotly_chart")[0].proto.spec
    assert "integrated gradients (ig)" in spec and "random (seeded)" in spec and "90% of FFN removed" in spec
    summary = next(m.value for m in at.markdown if m.value.startswith("Dense: "))
    coarse = APP_ENV["TP_APP_COARSE_EXAMPLES"]  # the Prune page's first pass
    assert all(f"at **{s}%**" in summary for s in (50, 70, 90)) and f"({coarse} examples" in summary

    at.button(key="tour_next").click()
    runs[4] = _step(at, 4)
    metrics = {m.label: m for m in at.metric}
    plain, fitted = metrics["Pruned, masks only"], metrics["Pruned + lstsq recovery"]
    assert 0 <= float(plain.value) <= 1 and 0 <= float(fitted.value) <= 1 and "vs masks only" in fitted.delta
    assert "integrated gradients (ig) + lstsq recovery" in at.get("plotly_chart")[0].proto.spec

    at.button(key="tour_next").click()
    runs[5] = _step(at, 5)
    table = at.dataframe[0].value
    assert list(table["FFN removed"]) == ["0% (dense)", "50%", "70%", "90%"]
    params = [int(p.replace(",", "")) for p in table["parameters"]]
    assert params == sorted(params, reverse=True) and not (table["accuracy"] == "step 3 first").any()
    assert any("dense float32 is" in c.value for c in at.caption)
    assert at.button(key="tour_next").disabled

    at.button(key="tour_back").click()
    _step(at, 4)
    print("tour page runs after the jobs (s):", {k: round(v, 3) for k, v in runs.items()})
