"""The app side of issue 6: bad uploads give a friendly message, write nothing and leave the session usable; the
installation's limits are shown."""
import pytest

from test_bad_data import FAULTS
from ui_support import app_test, apply_env, ensure_quick_demo, settle

pytestmark = pytest.mark.ui


@pytest.fixture
def env(monkeypatch, tmp_path):
    ensure_quick_demo()
    apply_env(monkeypatch, tmp_path / "exports")
    return tmp_path


def _files(root):
    return sorted(str(p) for p in root.rglob("*"))


def _use(at, name, content):
    at.file_uploader[0].set_value((name, content, "application/octet-stream"))
    at.run()
    [b for b in at.button if b.label == "Use this data"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_bad_uploads_are_friendly_write_nothing_and_keep_the_session(env):
    from tp_core.paths import tp_home

    at = app_test("pages/1_Model.py").run()
    at.selectbox(key="upload_head").set_value("sst2").run()
    _use(at, "good.csv", b"text,label\nnice film,positive\nawful film,negative\n")
    assert at.session_state["task"] == "upload:good"
    assert any("Limits: files up to 50 MB" in c.value for c in at.caption)
    settle(at)  # the page's background jobs (dense metrics) finish writing their cache entries first
    before = _files(tp_home())
    for key, name, content, kwargs, message in FAULTS:
        # .xlsx never reaches our code: Streamlit's uploader refuses the type itself
        if kwargs or key == "not-a-table-type":
            continue
        _use(at, name, content)
        errors = [e.value for e in at.error]
        wanted = "not one of the task's labels" if key == "huge-label-id" else message
        assert any(wanted in e for e in errors), (key, errors)
        assert at.session_state["task"] == "upload:good", key  # the previous good data is still the current task
    assert _files(tp_home()) == before  # nothing written: no upload copies, no caches
    _use(at, "again.jsonl", b'{"text": "fine", "label": 1}\n{"text": "bad", "label": 0}\n')
    assert at.session_state["task"] == "upload:again" and not at.error


def test_home_page_lists_the_limits(env):
    at = app_test("app.py").run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert "TP_MAX_ROWS" in set(table["environment variable"]) and "Tokens per input" in set(table["limit"])


def test_a_bad_setting_is_one_clear_message_instead_of_a_traceback(env, monkeypatch):
    monkeypatch.setenv("TP_APP_REDRAWS_PER_S", "0")  # every page starts with tp_app.page.page, which checks them
    at = app_test("pages/4_Prune.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "TP_APP_REDRAWS_PER_S='0' is not a valid setting" in at.error[0].value


def test_the_run_log_never_breaks_a_page(tmp_path, monkeypatch):
    """TP_APP_RUN_LOG (tp_app/runlog.py): off, a mark does nothing; a folder it cannot create is said once and
    ignored; a log it cannot write to (a folder in the file's place) loses lines, not page runs."""
    from tp_app import runlog

    runlog.mark("At FFN 51%")  # off: nothing to write, no error
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert runlog.install(blocker / "sub" / "runlog.jsonl") is False
    monkeypatch.setitem(runlog._STATE, "path", str(tmp_path))  # a folder: os.open fails
    runlog._write({"kind": "mark"})
