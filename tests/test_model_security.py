"""Bad and hostile model folders: every one is refused with a one-line TPError (CLI: `error: ...`, exit 2), or loaded
safely; no pickle payload or custom model code ever runs unless the user opts in to custom code."""
import io
import json
import os
import pickle
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_config, tiny_multitask

from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import predict_logits
from tp_core.model import load_model

ROOT = Path(__file__).resolve().parent.parent


# ----- folders -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """A tiny TaskPrune folder and a tiny plain HF classifier folder (BERT), built once and copied per test."""
    base = tmp_path_factory.mktemp("originals")
    tiny_multitask("bert").save(base / "tp")
    hf = tiny_multitask("bert", kind="hf_classifier")
    hf.encoder.save_pretrained(base / "hf")
    hf.tokenizer.save_pretrained(base / "hf")
    return base


@pytest.fixture
def tp(originals, tmp_path):
    return Path(shutil.copytree(originals / "tp", tmp_path / "tp"))


@pytest.fixture
def hf(originals, tmp_path):
    return Path(shutil.copytree(originals / "hf", tmp_path / "hf"))


class _Payload:
    """Unpickling this runs a shell command (what a hostile pytorch_model.bin does)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.sentinel))}",)


def hostile_pickle(file: Path, sentinel: Path) -> Path:
    """A torch.save checkpoint whose unpickling would create `sentinel`; checks once that the payload is live."""
    torch.save({"x": _Payload(sentinel), "bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}, str(file))
    with zipfile.ZipFile(file) as z:  # a plain (unrestricted) unpickler on the same bytes does run the command
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))

    class Plain(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

    try:
        Plain(io.BytesIO(data)).load()
    except AttributeError:
        pass  # the tensor needs torch's storage loader; the payload, stored first, has run by then
    assert sentinel.exists(), ("the hostile pickle's payload did not run under plain pickle: "
                               "the test would prove nothing")
    sentinel.unlink()
    return file


def set_json(file: Path, **changes) -> None:
    doc = json.loads(file.read_text())
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    file.write_text(json.dumps(doc))


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def other_size_weights(folder: Path, name: str, kind: str) -> None:
    """Overwrite `name` with weights of the same family saved from a model with hidden size 64 (config says 32)."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoModelForSequenceClassification

    cfg = tiny_config("bert", 30522)
    cfg.hidden_size = 64
    if kind == "hf":
        cfg.num_labels = 2
        state = AutoModelForSequenceClassification.from_config(cfg).state_dict()
    else:
        state = AutoModel.from_config(cfg, add_pooling_layer=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name), metadata={"format": "pt"})


def half_the_tensors(file: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(file))
    keep = dict(sorted(state.items())[: len(state) // 2])
    save_file(keep, str(file), metadata={"format": "pt"})


def _drop_tensors(file: Path, prefix: str) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v for k, v in load_file(str(file)).items() if not k.startswith(prefix)}, str(file),
              metadata={"format": "pt"})


def remote_code_folder(hf: Path, sentinel: Path, model_type: str = "taskprune-custom") -> Path:
    """An HF folder whose config asks transformers to import custom code that creates `sentinel` on import."""
    code = f"import pathlib\npathlib.Path({str(sentinel)!r}).touch()\n"
    (hf / "configuration_x.py").write_text(code + "from transformers import PretrainedConfig\n"
                                           "class XConfig(PretrainedConfig):\n    model_type = 'taskprune-custom'\n")
    (hf / "custom_modeling.py").write_text(code + "from transformers import PreTrainedModel\n"
                                           "class XModel(PreTrainedModel):\n    pass\n")
    set_json(hf / "config.json", model_type=model_type,
             auto_map={"AutoConfig": "configuration_x.XConfig",
                       "AutoModelForSequenceClassification": "custom_modeling.XModel"})
    runpy.run_path(str(hf / "configuration_x.py"))  # the payload is live: importing it does create the sentinel
    assert sentinel.exists()
    sentinel.unlink()
    return hf


# ----- every bad folder is one clear TPError ----------------------------------------------------------------------
def _no_config(f):
    (f / "config.json").unlink()


def _write(name, text):
    return lambda f: (f / name).write_text(text)


def _manifest(**changes):
    return lambda f: set_json(f / "taskprune.json", **changes)


def _encoder_pickle_only(f):
    (f / "encoder.safetensors").unlink()
    hostile_pickle(f / "encoder.bin", f.parent / "SENTINEL")


BAD_FOLDERS = [
    # (id, base folder, how to break it, what the message must say)
    ("tp-no-config", "tp", _no_config, r"has no config\.json: the encoder config is missing"),
    ("hf-config-not-json", "hf", _write("config.json", "{model_type: bert"), r"config\.json is not valid JSON"),
    ("tp-config-not-json", "tp", _write("config.json", "\x00\x01garbage"), r"config\.json is not valid JSON"),
    ("hf-config-a-list", "hf", _write("config.json", "[1, 2]"), r"holds a JSON list, not an object"),
    ("hf-unsupported-family", "hf", lambda f: set_json(f / "config.json", model_type="gpt2"),
     r"Unsupported model family 'gpt2'"),
    ("tp-unsupported-family", "tp", lambda f: set_json(f / "config.json", model_type="t5"),
     r"Unsupported model family 't5'"),
    ("hf-huge-config", "hf", lambda f: set_json(f / "config.json", vocab_size=10**12),
     r"about 32,000,\d+ M parameters, above this installation's limit of 1,000 M"),
    ("tp-negative-size", "tp", lambda f: set_json(f / "config.json", hidden_size=-4), r"invalid hidden_size -4"),
    ("hf-no-model-type", "hf", lambda f: set_json(f / "config.json", model_type=None), r"has no model_type"),
    ("tp-no-model-type", "tp", lambda f: set_json(f / "config.json", model_type=None), r"has no model_type"),
    ("hf-model-type-not-a-name", "hf", lambda f: set_json(f / "config.json", model_type=["bert"]),
     r"invalid model_type \['bert'\]"),
    ("tp-truncated-encoder", "tp", lambda f: truncate(f / "encoder.safetensors"),
     r"encoder\.safetensors in .* is truncated or corrupt"),
    ("tp-truncated-heads", "tp", lambda f: truncate(f / "heads.safetensors"),
     r"heads\.safetensors in .* is truncated or corrupt"),
    ("hf-truncated-weights", "hf", lambda f: truncate(f / "model.safetensors"),
     r"model\.safetensors in .* is truncated or corrupt"),
    ("hf-weights-are-not-safetensors", "hf", _write("model.safetensors", "hello"),
     r"model\.safetensors in .* is truncated or corrupt"),
    ("tp-encoder-other-size", "tp", lambda f: other_size_weights(f, "encoder.safetensors", "tp"),
     r"encoder\.safetensors in .* does not match taskprune\.json / config\.json: .* has shape \[\d+, 64\] but "
     r"config\.json implies \[\d+, 32\]"),
    ("hf-weights-other-size", "hf", lambda f: other_size_weights(f, "model.safetensors", "hf"),
     r"do not match config\.json: .* has shape \[.*64.*\] but config\.json implies \[.*32.*\]"),
    ("hf-weights-incomplete", "hf", lambda f: half_the_tensors(f / "model.safetensors"),
     r"lack \d+ tensors the config needs .*not a complete sequence classifier"),
    ("hf-base-encoder-without-head", "hf", lambda f: _drop_tensors(f / "model.safetensors", "classifier."),
     r"has no trained classification head \(classifier\.bias, classifier\.weight missing\): it looks like a base "
     r"encoder"),
    ("tp-encoder-incomplete", "tp", lambda f: half_the_tensors(f / "encoder.safetensors"),
     r"encoder\.safetensors in .* does not match .*and \d+ more missing"),
    ("tp-no-heads", "tp", lambda f: (f / "heads.safetensors").unlink(),
     r"has no heads\.safetensors, but taskprune\.json lists the tasks sst2, ag_news"),
    ("tp-heads-other-tasks", "tp", _manifest(tasks={"sst2": {"label_names": ["a", "b", "c"], "problem":
                                                             "classification", "metric": "accuracy"}}),
     r"heads\.safetensors in .* does not match .*has shape \[2, 32\] "
     r"but taskprune\.json \(tasks and labels\) implies \[3, 32\]"),
    ("tp-manifest-not-json", "tp", _write("taskprune.json", '{"format": "taskprune-model", '),
     r"taskprune\.json is not valid JSON .*: the TaskPrune manifest is corrupt"),
    ("tp-manifest-binary", "tp", lambda f: (f / "taskprune.json").write_bytes(b"\xff\xfe\x00garbage"),
     r"taskprune\.json is not a text file"),
    ("tp-manifest-no-tasks", "tp", _manifest(tasks=None), r"taskprune\.json is invalid: it lists no tasks"),
    ("tp-manifest-bad-kind", "tp", _manifest(kind="exe"), r"taskprune\.json is invalid: kind is 'exe'"),
    ("tp-manifest-bad-labels", "tp", _manifest(tasks={"sst2": {"label_names": "pos"}}),
     r"task 'sst2' has no list of label_names"),
    ("tp-manifest-bad-plan", "tp", _manifest(pruning={"ffn_keep": 3}), r"pruning plan has no ffn_keep"),
    ("tp-encoder-only-as-pickle", "tp", _encoder_pickle_only,
     r"has no encoder\.safetensors \(encoder\.bin is a pickle and never read\)"),
    ("hf-no-weights", "hf", lambda f: (f / "model.safetensors").unlink(), r"has config\.json but no weights"),
]


@pytest.mark.parametrize("base, breaker, needle", [c[1:] for c in BAD_FOLDERS], ids=[c[0] for c in BAD_FOLDERS])
def test_bad_model_folder_is_one_clear_error(base, breaker, needle, tp, hf, tmp_path):
    folder = tp if base == "tp" else hf
    breaker(folder)
    with pytest.raises(TPError) as err:
        load_model(folder)
    msg = str(err.value)
    assert re.search(needle, msg), msg
    assert "\n" not in msg and len(msg) < 400 and "Traceback" not in msg, msg
    assert not (tmp_path / "SENTINEL").exists()


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(TPError, match=r"Model folder .*nope does not exist\."):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TPError, match="is not a model folder: it has neither taskprune.json nor config.json"):
        load_model(tmp_path / "empty")


# ----- pickle checkpoints ---------------------------------------------------------------------------------------
def test_hostile_pickle_is_refused_and_never_executed(hf, tmp_path):
    sentinel = tmp_path / "PWNED"
    (hf / "model.safetensors").unlink()
    hostile_pickle(hf / "pytorch_model.bin", sentinel)
    with pytest.raises(TPError) as err:
        load_model(hf)
    msg = str(err.value)
    assert not sentinel.exists()
    assert "pickle checkpoint pytorch_model.bin" in msg and "refused and not executed" in msg, msg
    assert "posix.system" in msg and "Convert it to safetensors" in msg and "\n" not in msg, msg
    assert "weights_only=False" not in msg  # never suggest the unsafe way out


def test_benign_pickle_state_dict_loads_with_same_logits(hf, originals):
    model = tiny_multitask("bert", kind="hf_classifier")
    (hf / "model.safetensors").unlink()
    torch.save(model.encoder.state_dict(), str(hf / "pytorch_model.bin"))
    from_pickle = load_model(hf)
    from_safetensors = load_model(originals / "hf")
    data = load_split("sst2", "validation", limit=8)
    np.testing.assert_allclose(predict_logits(from_pickle, "sst2", data),
                               predict_logits(from_safetensors, "sst2", data), atol=1e-6)


def test_safetensors_preferred_over_a_pickle_beside_it(hf, originals, tmp_path):
    sentinel = tmp_path / "PWNED"
    hostile_pickle(hf / "pytorch_model.bin", sentinel)
    model = load_model(hf)
    assert not sentinel.exists()
    data = load_split("sst2", "validation", limit=8)
    np.testing.assert_allclose(predict_logits(model, "sst2", data),
                               predict_logits(load_model(originals / "hf"), "sst2", data), atol=1e-6)


def test_transformers_is_asked_for_weights_only_and_no_remote_code(hf, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    seen = {}
    real = AutoModelForSequenceClassification.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", spy)
    load_model(hf)
    assert seen["weights_only"] is True and seen["trust_remote_code"] is False


def test_no_unsafe_torch_load_anywhere_in_the_repo():
    offenders = []
    for file in ROOT.rglob("*.py"):
        if any(part.startswith(".") or part in ("node_modules", "build") for part in file.relative_to(ROOT).parts):
            continue
        text = file.read_text(errors="replace")
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start(): text.find(")", m.start()) + 1]
            if "weights_only=True" not in call:
                offenders.append(f"{file.relative_to(ROOT)}: {call[:80]}")
    assert not offenders, offenders


# ----- custom code (trust_remote_code) ------------------------------------------------------------------------
def test_custom_code_needs_explicit_opt_in(hf, tmp_path):
    sentinel = tmp_path / "IMPORTED"
    remote_code_folder(hf, sentinel)
    with pytest.raises(TPError) as err:
        load_model(hf)
    msg = str(err.value)
    assert "needs custom Python code (configuration_x.XConfig, custom_modeling.XModel)" in msg, msg
    assert "--trust-remote-code" in msg and "Allow custom model code (trust_remote_code)" in msg, msg
    assert not sentinel.exists()
    # opted in: still refused, before any of its code runs, because TaskPrune has no adapter for the family
    with pytest.raises(TPError, match="Unsupported model family 'taskprune-custom'"):
        load_model(hf, trust_remote_code=True)
    assert not sentinel.exists()


def test_custom_code_in_a_known_family_is_refused_too(hf, tp, tmp_path):
    """transformers would silently ignore auto_map for a built-in model_type; TaskPrune says so instead."""
    sentinel = tmp_path / "IMPORTED"
    remote_code_folder(hf, sentinel, model_type="bert")
    with pytest.raises(TPError, match="needs custom Python code"):
        load_model(hf)
    set_json(tp / "config.json", auto_map={"AutoConfig": "configuration_x.XConfig"})
    shutil.copy(hf / "configuration_x.py", tp / "configuration_x.py")
    with pytest.raises(TPError, match="needs custom Python code"):  # no interactive prompt, no hang
        load_model(tp)
    set_json(tp / "config.json", auto_map=None)
    set_json(tp / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_x.XTokenizer", None]})
    with pytest.raises(TPError, match=r"needs custom Python code \(tokenization_x\.XTokenizer\)"):
        load_model(tp)
    assert not sentinel.exists()


# ----- the CLI: one line, exit 2 -----------------------------------------------------------------------------------
CLI_CASES = [
    ("hostile-pickle", "refused and not executed"),
    ("remote-code", "needs custom Python code"),
    ("truncated", "truncated or corrupt"),
    ("bad-manifest", "is not valid JSON"),
    ("no-config", "has no config.json"),
    ("no-model-type", "has no model_type"),
    ("other-size", "does not match"),
    ("no-heads", "has no heads.safetensors"),
]


@pytest.mark.parametrize("case, needle", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_model_is_one_line_and_exit_2(case, needle, tp, hf, tmp_path, capsys):
    from tp_core.cli import main

    sentinel = tmp_path / "SENTINEL"
    folder = hf if case in ("hostile-pickle", "remote-code") else tp
    if case == "hostile-pickle":
        (hf / "model.safetensors").unlink()
        hostile_pickle(hf / "pytorch_model.bin", sentinel)
    elif case == "remote-code":
        remote_code_folder(hf, sentinel)
    elif case == "truncated":
        truncate(tp / "encoder.safetensors")
    elif case == "bad-manifest":
        (tp / "taskprune.json").write_text("{oops")
    elif case == "no-config":
        (tp / "config.json").unlink()
    elif case == "no-model-type":
        set_json(tp / "config.json", model_type=None)
    elif case == "other-size":
        other_size_weights(tp, "encoder.safetensors", "tp")
    elif case == "no-heads":
        (tp / "heads.safetensors").unlink()
    for argv in (["info", "--model", str(folder)],
                 ["evaluate", "--model", str(folder), "--task", "sst2", "--limit", "4"]):
        code = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not sentinel.exists()


def test_cli_trust_remote_code_warns_then_refuses_unsupported_family(hf, tmp_path, capsys):
    from tp_core.cli import main

    sentinel = tmp_path / "IMPORTED"
    remote_code_folder(hf, sentinel)
    code = main(["info", "--model", str(hf), "--trust-remote-code"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith("warning: --trust-remote-code lets the model folder's own Python code run"), lines
    assert lines[1].startswith("error: Unsupported model family 'taskprune-custom'"), lines
    assert not sentinel.exists()


def test_cli_hostile_pickle_in_a_real_process_has_no_traceback(hf, tmp_path):
    sentinel = tmp_path / "PWNED"
    (hf / "model.safetensors").unlink()
    hostile_pickle(hf / "pytorch_model.bin", sentinel)
    env = dict(os.environ, TP_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-m", "tp_core", "info", "--model", str(hf)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: The pickle checkpoint pytorch_model.bin")
    assert not sentinel.exists()


# ----- the app ----------------------------------------------------------------------------------------------------
def test_app_refuses_custom_code_unless_the_box_is_ticked(hf, tmp_path, monkeypatch):
    """Model page, Local folder: no box -> friendly error; box -> warning shown, then refused (unsupported family)."""
    from ui_support import app_test

    monkeypatch.setenv("TP_APP_MODEL", "demo-quick")  # not built in this throwaway TP_HOME: nothing heavy loads
    sentinel = tmp_path / "IMPORTED"
    remote_code_folder(hf, sentinel)
    at = app_test("pages/1_Model.py", timeout=60).run()
    at.radio(key="w_model_source").set_value("Local folder").run()
    box = at.checkbox(key="model_trust_box")
    assert box.label == "Allow custom model code (trust_remote_code)" and box.value is False
    assert not at.warning
    at.text_input(key="model_typed").set_value(str(hf)).run()
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("needs custom Python code" in e and "Allow custom model code" in e for e in errors), errors
    assert at.session_state["model_spec"] == "demo-quick" and not sentinel.exists()

    at.checkbox(key="model_trust_box").check().run()
    assert any("runs with your permissions" in w.value for w in at.warning), [w.value for w in at.warning]
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Unsupported model family 'taskprune-custom'" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["model_spec"] == "demo-quick" and not sentinel.exists()
