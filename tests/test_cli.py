"""CLI contract: subcommands, machine-readable output shapes, and bad input -> one line on stderr + exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import cli
from tiny import tiny_multitask

ROOT = Path(__file__).resolve().parent.parent
RECORD_KEYS = {"method", "ffn_sparsity", "head_sparsity", "kept_params", "total_params", "metric_name", "metric"}


def run(*args, env_home=None):
    """`python -m tp_core <args>` in a real process (the entry point itself under test)."""
    import os

    env = dict(os.environ)
    if env_home:
        env["TP_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "tp_core", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_multitask("bert").save(path)
    return path


def test_tasks_lists_the_bundle():
    out = cli("tasks", "--json")
    assert out.returncode == 0
    names = {t["name"] for t in json.loads(out.stdout)}
    assert {"sst2", "ag_news", "rte"} <= names


def test_evaluate_attribute_sweep_export_contracts(tiny_folder, tmp_path):
    home = tmp_path / "home"
    out = run("evaluate", "--model", str(tiny_folder), "--task", "sst2", "--limit", "20", "--json", env_home=home)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert set(rec) == RECORD_KEYS and rec["method"] == "dense" and rec["kept_params"] == rec["total_params"]

    scores_file = tmp_path / "s.json"
    out = cli("attribute", "--model", str(tiny_folder), "--task", "sst2", "--method", "ig", "--samples", "4",
              "--steps", "2", "--out", str(scores_file), "--quiet", home=home)
    assert out.returncode == 0, out.stderr
    doc = json.loads(scores_file.read_text())
    assert set(doc) == {"model", "task", "method", "settings", "ffn", "heads"}
    assert len(doc["ffn"]) == 3 and len(doc["ffn"][0]) == 48 and len(doc["heads"][0]) == 4

    sweep_file = tmp_path / "sweep.json"
    out = cli("sweep", "--model", str(tiny_folder), "--task", "sst2", "--methods", "ig,random", "--samples", "4",
              "--steps", "2", "--ffn-sparsity", "0,0.5", "--head-sparsity", "0,0.25", "--limit", "20",
              "--json", str(sweep_file), "--quiet", home=home)
    assert out.returncode == 0, out.stderr
    rows = json.loads(sweep_file.read_text())
    assert all(set(r) == RECORD_KEYS for r in rows)
    # recovery (lstsq, the benchmark's best level) is on by default: a "+lstsq" twin beside each pruned point
    assert rows[0]["method"] == "dense" and len(rows) == 1 + 2 * 4 + 2 * 3
    assert {r["method"] for r in rows} == {"dense", "ig", "random", "ig+lstsq", "random+lstsq"}
    assert any(r["kept_params"] < r["total_params"] for r in rows)
    out = cli("sweep", "--model", str(tiny_folder), "--task", "sst2", "--methods", "random", "--ffn-sparsity", "0.5",
              "--limit", "20", "--recover", "none", "--json", str(sweep_file), "--quiet", home=home)
    assert out.returncode == 0, out.stderr
    assert [r["method"] for r in json.loads(sweep_file.read_text())] == ["dense", "random"]

    exp = tmp_path / "exp"
    out = cli("export", "--model", str(tiny_folder), "--task", "sst2", "--method", "magnitude", "--ffn-sparsity",
              "0.5", "--head-sparsity", "0.25", "--limit", "20", "--out", str(exp), "--quiet", home=home)
    assert out.returncode == 0, out.stderr
    assert (exp / "README.md").is_file() and (tmp_path / "exp.mask.json").is_file()
    assert json.loads((tmp_path / "exp.mask.json").read_text())["recovery"]["level"] == "lstsq"  # the default
    out = cli("info", "--model", str(exp), "--json", home=home)
    info = json.loads(out.stdout)
    assert info["pruned"] and sum(info["ffn_per_layer"]) == 72
    out = cli("evaluate", "--model", str(tiny_folder), "--task", "sst2", "--limit", "20", "--mask",
              str(tmp_path / "exp.mask.json"), "--json", home=home)
    assert json.loads(out.stdout)["ffn_sparsity"] == 0.5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["evaluate", "--model", "TINY", "--task", "nope"], "Unknown task"),
        (["evaluate", "--model", "/no/such/folder", "--task", "sst2"], "does not exist"),
        (["sweep", "--model", "TINY", "--task", "sst2", "--ffn-sparsity", "0.5,1.2"], "[0, 1)"),
        (["export", "--model", "TINY", "--task", "sst2", "--ffn-sparsity", "-0.1", "--out", "OUT"], "[0, 1)"),
        (["attribute", "--model", "TINY", "--task", "sst2", "--method", "taylor"], "Unknown attribution method"),
        (["info", "--model", "GPT"], "Unsupported model family"),
        (["info", "--model", "BADFILE"], "is a file"),
        (["evaluate", "--model", "TINY", "--task", "sst2", "--mask", "BADFILE"], "Cannot read mask file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, tiny_folder, tmp_path, capsys):
    """In-process (fast): main() returns 2 with one line on stderr and lets no exception escape."""
    from tp_core.cli import main

    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    subst = {"TINY": str(tiny_folder), "GPT": str(gpt), "BADFILE": str(bad), "OUT": str(tmp_path / "o")}
    code = main([subst.get(a, a) for a in args] + (["--quiet"] if args[0] in ("attribute", "sweep", "export") else []))
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_missing_data_folder_is_clear_in_a_real_process(tmp_path):
    import os

    env = dict(os.environ, TP_DATA_DIR=str(tmp_path / "nowhere"))
    out = subprocess.run([sys.executable, "-m", "tp_core", "tasks"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 2 and "TP_DATA_DIR" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["budget", "--flops-budget", "-1"], "(0, 1]"),
        (["budget", "--latency-budget-ms", "0"], "positive number of milliseconds"),
        (["budget", "--latency-budget-ms", "5", "--batch-size", "0"], "batch size must be positive"),
        (["budget", "--flops-budget", "0.5", "--seq-len", "0"], "sequence length must be positive"),
        (["budget", "--flops-budget", "0.5", "--latency-budget-ms", "5"], "not both"),
        (["export", "--flops-budget", "1.5", "--out", "OUT"], "(0, 1]"),
        (["budget", "--flops-budget", "0.5", "--select-n", "0"], "--select-n must be at least 1"),
    ],
)
def test_a_bad_budget_fails_before_any_attribution(args, needle, tiny_folder, tmp_path, capsys, monkeypatch):
    """Attribution can take minutes on a real model: a budget that cannot be planned says so first."""
    import tp_core.attribution
    from tp_core.cli import main

    def no_attribution(*a, **k):
        raise AssertionError("attribution ran before the budget was checked")

    monkeypatch.setattr(tp_core.attribution, "attribute", no_attribution)
    args = [str(tmp_path / "o") if a == "OUT" else a for a in args]
    code = main([args[0], "--model", str(tiny_folder), "--task", "sst2", *args[1:], "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
