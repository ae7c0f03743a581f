"""Limits (issue 6, point 3) and paths (point 6).

Caps on examples, steps, sequence length, file size and cache size hold in the library and the CLI, are shown to
the user, and the upload cap equals Streamlit's `server.maxUploadSize`. Export names, task names and cache keys
cannot leave their folders, whatever characters they hold.
"""
import json
import os
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiny import tiny_multitask
from tp_core.attribution import AttributionConfig, attribute, cached_scores_path
from tp_core.cli import main
from tp_core.data import get_task, load_bytes, safe_task_name
from tp_core.errors import TPError
from tp_core.export import safe_export_dir
from tp_core.limits import Limits, limits
from tp_core.paths import data_dir, enforce_cache_cap, tp_home

ROOT = Path(__file__).resolve().parent.parent


def test_streamlit_upload_cap_equals_the_file_cap():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == Limits().max_file_mb


def test_defaults_fit_a_small_machine_and_env_can_change_them(monkeypatch):
    cap = limits()
    assert cap.max_samples <= 4096 and cap.max_length <= 512 and cap.max_cache_mb <= 4096 and cap.max_rows <= 1_000_000
    monkeypatch.setenv("TP_MAX_SAMPLES", "16")
    assert limits().max_samples == 16
    with pytest.raises(TPError, match="above this installation's limit of 16.*TP_MAX_SAMPLES"):
        AttributionConfig(samples=17).validate()
    AttributionConfig(samples=16).validate()
    monkeypatch.setenv("TP_MAX_SAMPLES", "lots")
    with pytest.raises(TPError, match="TP_MAX_SAMPLES must be a whole number"):
        limits()


@pytest.mark.parametrize("settings_, needle", [
    (dict(samples=100_000), "--samples"), (dict(steps=10_000), "--steps"), (dict(max_length=100_000), "max_length"),
])
def test_attribution_settings_above_the_caps_are_refused(settings_, needle):
    with pytest.raises(TPError, match=needle):
        AttributionConfig(**settings_).validate()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_multitask("bert").save(path)
    return path


@pytest.mark.parametrize("args, needle", [
    (["evaluate", "--limit", "1000000000"], "--limit is 1,000,000,000, above"),
    (["attribute", "--samples", "1000000"], "--samples (attribution examples) is 1,000,000"),
    (["attribute", "--steps", "5000"], "--steps (integrated-gradients steps) is 5,000"),
])
def test_cli_caps_are_one_line_and_exit_2(args, needle, tiny_folder, capsys):
    rc = main([args[0], "--model", str(tiny_folder), "--task", "sst2", *args[1:], "--quiet"]
              if args[0] == "attribute" else [args[0], "--model", str(tiny_folder), "--task", "sst2", *args[1:]])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_cli_shows_the_limits(capsys):
    assert main(["limits"]) == 0
    out = capsys.readouterr().out
    assert "TP_MAX_FILE_MB" in out and "Attribution examples" in out
    assert main(["limits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_rows"] == limits().max_rows


def test_cache_is_capped_least_recently_used_first(monkeypatch):
    model = tiny_multitask("bert")
    scores_dir = tp_home() / "scores"
    scores_dir.mkdir(parents=True)
    old = []
    for i in range(4):  # four old 300 kB entries (another model's scores, say)
        f = scores_dir / f"old{i}.json"
        f.write_bytes(b"0" * 300_000)
        os.utime(f, (time.time() - 1000 + i, time.time() - 1000 + i))
        old.append(f)
    os.utime(old[0], None)  # the oldest file was just used: it is kept, the next oldest go first
    monkeypatch.setenv("TP_MAX_CACHE_MB", "1")
    cfg = AttributionConfig(method="random")
    attribute(model, "sst2", cfg)
    fresh = cached_scores_path(model, "sst2", cfg)
    left = {p.name for p in scores_dir.iterdir()}
    assert fresh.name in left and "old0.json" in left and "old1.json" not in left
    assert sum(p.stat().st_size for p in scores_dir.iterdir()) <= 1_000_000
    assert enforce_cache_cap(max_bytes=0, keep=fresh) > 0 and [p.name for p in scores_dir.iterdir()] == [fresh.name]


# ----- paths -------------------------------------------------------------------------------------------------------
ODD = ["../evil", "..", "/etc/passwd", "a/b", "a\\b", ".hidden", "", "x" * 200, "name\n", "na\x00me", "~root",
       "CON", "é", " lead", "a b", "$(rm -rf x)", "-rf", "ok\r"]


@pytest.mark.parametrize("name", ODD)
def test_odd_export_names_are_refused_or_stay_inside(name, tmp_path):
    try:
        path = safe_export_dir(tmp_path, name)
    except TPError:
        return
    assert path.parent == tmp_path.resolve() and path.name == name and name in ("CON",)


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=40))
def test_any_export_name_is_refused_or_stays_inside(name):
    root = Path("/tmp/tp-exports-root")
    try:
        path = safe_export_dir(root, name)
    except TPError:
        return
    assert path.parent == root.resolve() and path.name == name and "/" not in name and not name.startswith(".")


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(st.text(max_size=30), st.sampled_from(ODD)))
def test_any_task_name_is_a_bundle_task_or_a_clear_error(name):
    try:
        spec = get_task(name)
    except TPError as exc:
        assert "Unknown task" in str(exc)
        return
    assert spec.path.parent == data_dir() and spec.path.name == name


@pytest.mark.parametrize("filename", ["../../evil.csv", "/etc/x.csv", "..csv", "a b\n.csv", "\u202etxt.csv"])
def test_uploaded_file_names_become_safe_task_names(filename):
    data = load_bytes(b"text,label\na,0\n", filename, label_names=("n", "p"))
    assert data.spec.name == safe_task_name(Path(filename).stem)
    assert all(c.isalnum() or c in "._-" for c in data.spec.name) and not data.spec.name.startswith(".")


def test_cache_paths_are_hashes_inside_tp_home_whatever_the_task_name():
    model = tiny_multitask("bert")
    for task in ("../../escape", "/abs", "sst2\n"):
        with pytest.raises(TPError):
            attribute(model, task, AttributionConfig(method="magnitude"))
    path = cached_scores_path(model, "sst2", AttributionConfig(method="magnitude"))
    assert path.parent == tp_home() / "scores" and len(path.stem) == 24
    assert all(c in "0123456789abcdef" for c in path.stem)
