"""Interrupted work (issue 6, point 5): a process killed half-way leaves no corrupt cache entry or half export.

Each case kills a real `python -m tp_core` process with SIGKILL at a chosen point (a patched function sends the
signal, so the kill lands exactly there), then checks what is on disk and that the next run recomputes or reuses
cleanly. Damaged cache entries (truncated, or valid JSON that does not fit the model) are recomputed, not trusted.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_support import cli
from tiny import tiny_multitask
from tp_core.attribution import AttributionConfig, UnitScores, attribute, cached_scores_path
from tp_core.data import load_split
from tp_core.evaluation import predict_logits
from tp_core.model import load_model

ROOT = Path(__file__).resolve().parent.parent
ATTR = ["--task", "sst2", "--method", "ig", "--samples", "40", "--steps", "2", "--quiet"]  # 3 batches of 16


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_multitask("bert").save(path)
    return path


def _run_killed(patch: str, argv: list[str], home: Path) -> subprocess.CompletedProcess:
    """Run the CLI with `patch` applied first; the patch SIGKILLs the process at the point under test."""
    code = ("import os, signal\n"
            "def die(*a, **k):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"{patch}\n"
            "from tp_core.cli import main\n"
            f"raise SystemExit(main({argv!r}))\n")
    env = {**os.environ, "TP_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _run(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    """The run after a kill: in this process (cli_support), what a user's next command finds on disk is the same."""
    return cli(*argv, home=home)


KILL_POINTS = {
    # half-way through the computation: during the second batch of integrated gradients
    "during-attribution": ("import tp_core.attribution as A\n_real = A._ig_batch\n_n = [0]\n"
                           "def ig(*a, **k):\n    _n[0] += 1\n    return die() if _n[0] == 2 else _real(*a, **k)\n"
                           "A._ig_batch = ig"),
    # while writing the cache entry: the data is in the temp file, the rename has not happened
    "during-cache-write": "import tp_core.paths as P\nP.os.fsync = die",
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_attribution_leaves_no_entry_and_the_next_run_is_clean(point, tiny_folder, tmp_path):
    home = tmp_path / "home"
    argv = ["attribute", "--model", str(tiny_folder), *ATTR]
    killed = _run_killed(KILL_POINTS[point], argv, home)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    scores = home / "scores"
    visible = [p.name for p in scores.iterdir() if not p.name.startswith(".")] if scores.exists() else []
    assert visible == []  # no entry, so nothing half-written can ever be read as scores
    again = _run(argv, home)
    assert again.returncode == 0, again.stderr
    entries = list(scores.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".json", [p.name for p in entries]  # temp leftovers removed
    model = load_model(tiny_folder)
    UnitScores.load(entries[0]).check_shape(model.unit_shape())
    reused = _run(argv, home)
    assert reused.returncode == 0 and [p.name for p in scores.iterdir()] == [entries[0].name]


def test_damaged_cache_entries_are_recomputed_not_trusted():
    model = tiny_multitask("bert")
    cfg = AttributionConfig(method="ig", samples=4, steps=2)
    good = attribute(model, "sst2", cfg)
    path = cached_scores_path(model, "sst2", cfg)
    text = path.read_text()
    for damage in (text[: len(text) // 2], "", "\x00\x01garbage", json.dumps({"model": 1})):
        path.write_text(damage)
        again = attribute(model, "sst2", cfg)
        np.testing.assert_allclose(np.concatenate(again.ffn), np.concatenate(good.ffn))
        assert json.loads(path.read_text())["task"] == "sst2"  # replaced by a good entry
    wrong = json.loads(text)
    wrong["ffn"] = [v[:-1] for v in wrong["ffn"]]  # valid JSON, but one unit short per layer (another model)
    path.write_text(json.dumps(wrong))
    again = attribute(model, "sst2", cfg)
    assert [len(a) for a in again.ffn] == list(model.unit_shape().ffn)


def test_damaged_or_foreign_point_entries_are_recomputed(tiny):
    from tp_core.masks import PruneConfig
    from tp_core.paths import cache_dir
    from tp_core.work import point

    model, ref = tiny
    scores = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    data = load_split("sst2", "validation", limit=16)
    good = point(lambda f, m: None, ref, "sst2", scores, PruneConfig(0.5), data)
    [path] = list(cache_dir("points").glob("*.json"))
    doc = json.loads(path.read_text())
    for damage in (path.read_text()[:40], json.dumps({**doc, "record": {"method": "magnitude"}})):
        path.write_text(damage)
        again = point(lambda f, m: None, ref, "sst2", scores, PruneConfig(0.5), data)
        assert again.record == good.record
        assert json.loads(path.read_text())["record"] == doc["record"]  # replaced by a good entry


def test_killed_export_leaves_no_half_folder_and_the_next_export_works(tiny_folder, tmp_path):
    home, out = tmp_path / "home", tmp_path / "exports" / "small"
    argv = ["export", "--model", str(tiny_folder), "--task", "sst2", "--method", "magnitude", "--ffn-sparsity",
            "0.5", "--limit", "8", "--out", str(out), "--quiet"]
    killed = _run_killed("import tp_core.model as M\nM._swap_in = die", argv, home)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = [p.name for p in out.parent.iterdir()]
    assert "small" not in left and all(n.startswith(".") for n in left), left  # only a hidden temp folder
    again = _run(argv, home)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["small", "small.mask.json"]  # temp removed
    assert load_model(out).pruning["ffn_sparsity"] == 0.5


def test_export_killed_while_replacing_keeps_the_previous_export(tiny_folder, tmp_path):
    home, out = tmp_path / "home", tmp_path / "exports" / "small"
    base = ["export", "--model", str(tiny_folder), "--task", "sst2", "--method", "magnitude", "--limit", "8",
            "--out", str(out), "--quiet"]
    assert _run(base + ["--ffn-sparsity", "0.25"], home).returncode == 0
    data = load_split("sst2", "validation", limit=8)
    before = predict_logits(load_model(out), "sst2", data)
    # killed between moving the old folder aside and moving the new one in
    patch = ("import tp_core.model as M\n_real = os.replace\n"
             "def rep(src, dst):\n    return die() if '.tmp-' in str(src) else _real(src, dst)\n"
             "M.os.replace = rep")
    killed = _run_killed(patch, base + ["--ffn-sparsity", "0.5", "--overwrite"], home)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()  # the moment of the kill: the previous export sits in a hidden .old folder
    again = _run(base + ["--ffn-sparsity", "0.5"], home)  # no --overwrite: must find the previous export restored
    assert again.returncode == 2 and "already exists" in again.stderr
    restored = load_model(out)
    assert restored.pruning["ffn_sparsity"] == 0.25
    np.testing.assert_allclose(predict_logits(restored, "sst2", data), before, atol=1e-6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["small", "small.mask.json"]
