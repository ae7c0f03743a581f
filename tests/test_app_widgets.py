"""tp_app.state.persisted: a widget's session value is also its own default (so a browser that misses the session
state update still shows it), and a multiselect drops values that are no longer among its options."""
from streamlit.testing.v1 import AppTest


def _app():
    import streamlit as st

    from tp_app.state import persisted

    ss = st.session_state
    ss.setdefault("picked", ["a", "b"])
    ss.setdefault("level", 0.4)
    ss.setdefault("mode", "y")
    persisted(st.multiselect, "Pick", "picked", options=ss.get("opts", ["a", "b", "c"]))
    persisted(st.slider, "Level", "level", min_value=0.0, max_value=1.0, step=0.1)
    persisted(st.radio, "Mode", "mode", options=["x", "y"])


def test_the_session_value_is_the_widgets_own_default_and_stale_options_are_dropped():
    at = AppTest.from_function(_app).run()
    assert not at.exception
    assert at.multiselect[0].value == ["a", "b"] and list(at.multiselect[0].proto.default) == [0, 1]
    assert at.slider[0].value == 0.4 and list(at.slider[0].proto.default) == [0.4]
    assert at.radio[0].value == "y" and at.radio[0].proto.default == 1
    at.slider[0].set_value(0.7).run()
    assert at.session_state["level"] == 0.7 and list(at.slider[0].proto.default) == [0.7]
    at.session_state["opts"] = ["b", "c"]  # "a" is no option any more
    at.run()
    assert not at.exception and at.multiselect[0].value == ["b"] and at.session_state["picked"] == ["b"]
