"""Checks on untrusted model folders, run before any weights are read or any code could run.

Untrusted folders: every check below runs before any weights are read or any code could run, and every failure is a
one-line TPError naming the file and what is wrong. Weights come from safetensors; a pickle checkpoint
(`pytorch_model.bin`, HF folders only) is read by transformers with `weights_only=True`, which refuses anything
but tensors and plain containers; TaskPrune folders never read pickles at all. Custom model code (`auto_map`) runs
only with `trust_remote_code=True`, and not even then for a family TaskPrune does not support.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .adapters import ADAPTERS, adapter_for
from .errors import TPError

FORMAT = "taskprune-model"
TRUST_HINT = "pass --trust-remote-code (CLI) or tick 'Allow custom model code (trust_remote_code)' on the Model page"
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text[:limit]


def read_json(file: Path, what: str) -> dict:
    """A JSON object from `file`, or a one-line TPError saying what is wrong with it."""
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TPError(f"{file.parent} has no {file.name}: {what} is missing.") from None
    except UnicodeDecodeError:
        raise TPError(f"{file} is not a text file: {what} is corrupt.") from None
    except json.JSONDecodeError as exc:
        raise TPError(f"{file} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                      f"{what} is corrupt.") from None
    except OSError as exc:
        raise TPError(f"Cannot read {file}: {exc.strerror or first_line(exc)}.") from None
    if not isinstance(doc, dict):
        raise TPError(f"{file} holds a JSON {type(doc).__name__}, not an object: {what} is corrupt.")
    return doc


def custom_code(doc: dict) -> list[str]:
    """The custom classes a config's `auto_map` asks transformers to import (empty when none)."""
    auto_map = doc.get("auto_map")
    if not auto_map:
        return []
    values = auto_map.values() if isinstance(auto_map, dict) else auto_map if isinstance(auto_map, list) else [auto_map]
    refs = [v for x in values for v in (x if isinstance(x, (list, tuple)) else [x]) if v]
    return [str(r) for r in refs] or ["auto_map"]


def check_config(config: dict, where: str, trust_remote_code: bool, tokenizer_config: dict | None = None) -> str:
    """Refuse custom code without opt-in, a missing or unsupported model_type; return the family. Runs no code."""
    custom = custom_code(config) + custom_code(tokenizer_config or {})
    if custom and not trust_remote_code:
        shown = ", ".join(sorted(set(custom))[:2]) + (", ..." if len(set(custom)) > 2 else "")
        raise TPError(f"The model in {where} needs custom Python code ({shown}), which TaskPrune does not run by "
                      f"default: only if you trust its author, {TRUST_HINT}.")
    family = config.get("model_type")
    if family is None:
        raise TPError(f"config.json of {where} has no model_type, so the model family is unknown "
                      f"(TaskPrune knows {', '.join(sorted(ADAPTERS))}).")
    if not isinstance(family, str):
        raise TPError(f"config.json of {where} has an invalid model_type {family!r}: expected a family name "
                      f"such as 'bert'.")
    adapter_for(family)
    check_size(config, where)
    return family


def check_size(config: dict, where: str) -> None:
    """Refuse a config whose model would not fit this machine, before anything is allocated (a hostile or broken
    config.json can ask for a trillion parameters)."""
    from .limits import ENV, limits

    def dim(*keys, default=0):
        for k in keys:
            if k in config:
                v = config[k]
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise TPError(f"config.json of {where} has an invalid {k} {v!r}: expected a whole number >= 0.")
                return v
        return default

    hidden = dim("hidden_size", "dim")
    layers = dim("num_hidden_layers", "n_layers")
    ffn = dim("intermediate_size", "hidden_dim", default=4 * hidden)
    rows = dim("vocab_size") + dim("max_position_embeddings") + dim("type_vocab_size")
    estimate = rows * hidden + layers * (4 * hidden * hidden + 2 * hidden * ffn)
    cap = limits().max_model_mparams
    if estimate > cap * 1_000_000:
        raise TPError(f"The model in {where} would have about {estimate / 1e6:,.0f} M parameters, above this "
                      f"installation's limit of {cap:,} M (raise it with {ENV['max_model_mparams']}).")


def check_safetensors(file: Path) -> dict[str, tuple[int, ...]]:
    """Open a safetensors file (header and size checks only; no code can run) and return its tensor shapes."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # SafetensorError: truncated, not safetensors at all, bad header
        raise TPError(f"{file.name} in {file.parent} is truncated or corrupt ({first_line(exc, 120)}); "
                      "copy or save the model again.") from None


def shape_mismatch(expected: dict[str, torch.Tensor], found: dict[str, tuple[int, ...]], source: str) -> str | None:
    for name, tensor in expected.items():
        if name in found and tuple(tensor.shape) != tuple(found[name]):
            return f"{name} has shape {list(found[name])} but {source} implies {list(tensor.shape)}"
    return None


def some_names(names: list[str]) -> str:
    return ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")


def check_manifest(manifest: dict, file: Path) -> None:
    """Structure of taskprune.json (what `MultiTaskModel.manifest` writes)."""
    def bad(what: str) -> TPError:
        return TPError(f"{file} is invalid: {what}; the TaskPrune model folder is corrupt.")

    if manifest.get("format") != FORMAT:
        raise bad(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("kind") not in ("multitask", "hf_classifier", "causal_lm"):
        raise bad(f"kind is {manifest.get('kind')!r}, expected 'multitask', 'hf_classifier' or 'causal_lm'")
    tasks = manifest.get("tasks")
    if not isinstance(tasks, dict) or (not tasks and manifest["kind"] != "causal_lm"):  # an LM prompts any task
        raise bad("it lists no tasks")
    prompts = manifest.get("prompts", {})
    if manifest["kind"] == "causal_lm" and not (isinstance(prompts, dict) and set(prompts) == set(tasks)):
        raise bad("its prompts do not match its tasks")
    for name, t in tasks.items():
        if not isinstance(t, dict) or not isinstance(t.get("label_names"), list) \
                or not all(isinstance(x, str) for x in t["label_names"]):
            raise bad(f"task {name!r} has no list of label_names")
        if t.get("problem", "classification") not in ("classification", "regression") \
                or not isinstance(t.get("metric", "accuracy"), str):
            raise bad(f"task {name!r} has an invalid problem or metric")
        if t.get("problem", "classification") == "classification" and not t["label_names"]:
            raise bad(f"task {name!r} has no labels")
    pruning = manifest.get("pruning")
    if pruning is not None and not (isinstance(pruning, dict) and isinstance(pruning.get("ffn_keep"), list)
                                    and isinstance(pruning.get("heads_keep"), list)):
        raise bad("its pruning plan has no ffn_keep / heads_keep lists")


def refused_pickle(exc: BaseException, name: str, where: str) -> TPError:
    """The message for a pickle checkpoint that `torch.load(weights_only=True)` refused to unpickle."""
    import re

    found = re.search(r"GLOBAL (\S+)", str(exc))
    what = f"it asks to call {found.group(1)}" if found else "it holds more than plain tensors"
    return TPError(f"The pickle checkpoint {name} in {where} was refused and not executed ({what}); TaskPrune loads "
                   "pickles only with weights_only=True. Convert it to safetensors (model.safetensors) from a "
                   "trusted environment and load that instead.")


class quiet_transformers:
    """Silence transformers' load reports and weight-loading bars (TaskPrune shows its own progress)."""

    def __enter__(self):
        from transformers.utils import logging

        self._level = logging.get_verbosity()
        self._bars = logging.is_progress_bar_enabled()
        logging.set_verbosity_error()
        logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging

        logging.set_verbosity(self._level)
        if self._bars:
            logging.enable_progress_bar()
