"""Export formats beyond the TaskPrune folder: ONNX (fp32 and int8), a plain Hugging Face folder, a pruned
vocabulary, and a model card with measured numbers.

One call, `export_formats(model, task, scores, prune_cfg, out_dir, formats, ...)`, prunes the model for `task`
(structure, then optionally vocabulary), writes every requested format, checks each against the masked torch
model on in-vocabulary examples, measures each one's metric on `eval_data`, and writes `README.md` (a Hugging Face
model card). Layout of `out_dir`:

    README.md             model card (Hugging Face YAML metadata)
    export_report.json    the ExportReport below
    mask.json             per-task mask for the unchanged base model (`evaluate --mask`)
    taskprune/            TaskPrune folder (`tp_core.load_model`)            -- format "taskprune"
    onnx/model.onnx       + onnx/tokenizer.json, onnx/taskprune_onnx.json   -- format "onnx"
    onnx/model.int8.onnx  dynamic int8 quantization of model.onnx           -- format "onnx-int8"
    hf/                   config.json, model.safetensors, tokenizer files   -- format "hf"

With `formats == ["taskprune"]` the folder itself is the TaskPrune model (the layout of `export.export_pruned`) and
the mask file sits beside it. The folder is built under a temp name and renamed into place (never half written).

The ONNX model runs with onnxruntime + tokenizers + numpy alone (see `onnx_snippet`); the hf/ folder loads with
`transformers.AutoModel.from_pretrained` (no custom code). transformers' BERT config holds one FFN width and one
head count for all layers and derives the head size from hidden size / head count, so hf/ pads every layer to the
widest layer's FFN and to the original head count with zero units (outputs unchanged); the report gives what that
padding costs in parameters. Use `allocation="per-layer"` and head sparsity 0 for an hf/ folder without padding.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import TPError

FORMATS = ("taskprune", "onnx", "onnx-int8", "hf")
Progress = Callable[[float, str], None]
ONNX_OPSET = 17


# ----- arguments ---------------------------------------------------------------------------------------------------
def parse_formats(value: str | Sequence[str]) -> list[str]:
    """`"onnx,hf"` or a list -> validated, de-duplicated list in the order given."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        f = str(raw).strip().lower()
        if not f:
            continue
        if f not in FORMATS:
            raise TPError(f"Unknown export format {str(raw).strip()!r}: choose from {', '.join(FORMATS)} "
                          "(comma-separated, e.g. --format onnx,hf).")
        if f not in out:
            out.append(f)
    if not out:
        raise TPError(f"No export format given: choose from {', '.join(FORMATS)}.")
    return out


# ----- parameters --------------------------------------------------------------------------------------------------
def params_by_part(model, task: str | None = None) -> dict[str, int]:
    """`pruning.param_breakdown`, with only `task`'s head counted (what serving one task needs)."""
    from .pruning import param_breakdown

    bd = dict(param_breakdown(model))
    if task is not None and model.kind == "multitask":
        bd["heads"] = sum(p.numel() for p in model.heads[model.resolve_task(task)].parameters())
        bd["total"] = sum(bd[k] for k in ("embeddings", "attention", "ffn", "other", "heads"))
    return bd


def folder_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----- ONNX --------------------------------------------------------------------------------------------------------
class _TaskLogits(nn.Module):
    """forward(input_ids, attention_mask[, token_type_ids]) -> logits of one task (what ONNX exports)."""

    def __init__(self, model, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids, attention_mask, token_type_ids, task=self.task)


def input_names(model) -> list[str]:
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in getattr(model.tokenizer, "model_input_names", ()) and model.config.model_type != "distilbert":
        names.append("token_type_ids")
    return names


def max_input_length(model) -> int:
    n = int(getattr(model.tokenizer, "model_max_length", 512) or 512)
    n = min(n, 512) if n > 100_000 else n
    pos = getattr(model.config, "max_position_embeddings", n)
    if model.config.model_type in ("roberta", "xlm-roberta"):
        pos -= (model.config.pad_token_id or 1) + 1
    return int(min(n, pos))


def standalone_tokenizer_json(model, max_length: int | None = None) -> str:
    """The model's fast tokenizer as tokenizer.json, with truncation and batch padding set for direct use."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tok.enable_truncation(max_length=max_length or max_input_length(model))
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    tok.enable_padding(pad_id=pad_id, pad_token=model.tokenizer.pad_token or "[PAD]")
    return tok.to_str(pretty=True)


FUSED_ATTENTION = "onnxruntime MultiHeadAttention (com.microsoft)"  # taskprune_onnx.json "attention" of a fused graph


class _OrtMultiHeadAttention(torch.autograd.Function):
    """Self-attention from projected q, k, v [batch, seq, heads x head_dim] and an additive mask [batch, 1, seq, seq]:
    in the ONNX graph one onnxruntime `MultiHeadAttention` node (com.microsoft domain, in every onnxruntime build),
    in torch (while tracing) the same arithmetic as the model's eager attention."""

    @staticmethod
    def forward(ctx, q, k, v, bias, num_heads: int, scale: float):  # noqa: ARG004 - autograd.Function signature
        b, s, _ = q.shape

        def split(x):
            return x.view(b, s, num_heads, -1).transpose(1, 2)

        w = split(q) @ split(k).transpose(-1, -2) * scale + bias
        return (torch.softmax(w, dim=-1) @ split(v)).transpose(1, 2).reshape(b, s, -1)

    @staticmethod
    def symbolic(g, q, k, v, bias, num_heads, scale):
        def absent():  # an omitted optional input ('' in the ONNX node)
            n = g.op("prim::Constant")
            n.setType(torch._C.OptionalType.ofTensor())
            return n

        # inputs: query, key, value, bias (of q/k/v: folded into the projections), key_padding_mask, attention_bias
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, absent(), absent(), bias, num_heads_i=num_heads,
                   scale_f=scale)
        out.setType(v.type())  # [batch, seq, heads x head_dim], like the value projection (typed for the exporter)
        return out


class _FusedAttention:
    """While exporting: every self-attention block (of an adapter with `onnx_fused_attention`) computes
    `_OrtMultiHeadAttention` from its own q/k/v projections, with the model's eager (additive) mask. Each layer keeps
    its own head count. Restores the forwards and the attention implementation on exit."""

    def __init__(self, small):
        self.small, self.saved, self.impl = small, [], None

    def __enter__(self) -> bool:
        if not self.small.adapter.onnx_fused_attention:
            return False
        try:
            self._patch()
        except Exception:
            self.__exit__()  # a half-patched model is never left behind
            raise
        return True

    def _patch(self) -> None:
        small = self.small
        self.impl = small.encoder.config._attn_implementation
        small.encoder.set_attn_implementation("eager")  # the mask as an additive float tensor, made once
        for i in range(small.num_layers):
            parts = small.layer_parts(i)
            if parts.num_heads == 0:
                continue
            scale = float(getattr(parts.attention, "scaling", parts.head_dim ** -0.5))

            def forward(hidden_states, attention_mask=None, *args, _p=parts, _scale=scale, **kwargs):
                if attention_mask is None:
                    raise TPError("fused attention export needs a padded example (an attention mask)")
                return _OrtMultiHeadAttention.apply(_p.query(hidden_states), _p.key(hidden_states),
                                                    _p.value(hidden_states), attention_mask, _p.num_heads,
                                                    _scale), None

            self.saved.append((parts.attention, parts.attention.__dict__.get("forward")))
            parts.attention.forward = forward

    def __exit__(self, *exc) -> None:
        for module, own in self.saved:
            if own is None:
                del module.forward
            else:
                module.forward = own
        if self.impl is not None:
            self.small.encoder.set_attn_implementation(self.impl)
        self.saved, self.impl = [], None


def export_onnx(small, task: str, folder: Path, fused_attention: bool = True) -> Path:
    """Write `folder/model.onnx` (+ tokenizer.json, taskprune_onnx.json) for `task`; dynamic batch and sequence.
    `fused_attention`: each layer's attention as one onnxruntime MultiHeadAttention node (fewer, larger operators:
    faster at small batches; needs onnxruntime, not just any ONNX runtime); falls back to plain ONNX operators for
    families without it or when that export fails. taskprune_onnx.json says which graph was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = input_names(small)
    texts = ["a short one", "a somewhat longer example sentence with padding after the short one"]
    enc = small.tokenizer(texts, padding=True, return_tensors="pt")  # padded, so the mask path is traced
    device = small.device
    args = tuple(enc[n].to(device) for n in names)
    wrapper = _TaskLogits(small, task).eval()
    path = folder / "model.onnx"
    import warnings

    def run(custom: dict) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript tracer warnings about Python control flow in transformers
            torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                              opset_version=ONNX_OPSET, do_constant_folding=True, custom_opsets=custom)

    fused, why_plain = False, None
    if fused_attention:
        try:
            with _FusedAttention(small) as fused:
                if fused:
                    run({"com.microsoft": 1})
                else:
                    why_plain = f"no fused attention for the {small.adapter.family} family"
        except Exception as e:  # noqa: BLE001 - any tracing/export failure: the plain graph below still serves
            fused, why_plain = False, f"fused attention export failed: {type(e).__name__}: {str(e)[:200]}"
    if not fused:
        run({})
    attention = FUSED_ATTENTION if fused else "plain ONNX operators"
    (folder / "tokenizer.json").write_text(standalone_tokenizer_json(small), encoding="utf-8")
    info = small.task_info(task)
    meta = {"task": task, "labels": list(info.label_names), "problem": info.problem, "inputs": names,
            "output": "logits", "max_length": max_input_length(small), "opset": ONNX_OPSET, "attention": attention,
            **({"attention_note": why_plain} if why_plain else {})}
    (folder / "taskprune_onnx.json").write_text(json.dumps(meta, indent=1))
    return path


# onnxruntime options for the int8 file: its SkipLayerNormalization fusion (residual add + LayerNorm in one node)
# slows the dynamically quantized graph down. Measured on the demo's sst2 export (FFN 85% + heads 70%, fused
# attention; Intel Xeon with AVX-512 VNNI, 2 threads; /tmp experiment, two rounds): batch 1 x 64 tokens 1.76-1.84 ->
# 1.45-1.52 ms, batch 32 29-30 -> 20-22 ms without it; the fp32 file is unchanged by it (1.9-2.1 ms either way).
INT8_SESSION = {"disabled_optimizers": ["SkipLayerNormFusion"]}


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization (weights int8 per output channel, activations quantized at run time) with
    onnxruntime. Per-channel scales follow fp32 more closely than one scale per matrix (on a demo-quick export:
    97% vs 94% of sst2 validation predictions equal to fp32's) at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a generic "consider pre-processing" warning on the root logger
    try:
        # DefaultTensorType: shape inference cannot type the outputs of onnxruntime's own (com.microsoft) nodes
        import onnx

        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    side = Path(dst).parent / "taskprune_onnx.json"  # how to open it: read by ort_session and the card's snippet
    if side.is_file():
        meta = json.loads(side.read_text())
        meta.setdefault("sessions", {})[Path(dst).name] = INT8_SESSION
        side.write_text(json.dumps(meta, indent=1))
    return Path(dst)


def session_settings(path: Path) -> dict:
    """The InferenceSession keyword arguments an export recommends for `path` (taskprune_onnx.json's "sessions")."""
    side = Path(path).parent / "taskprune_onnx.json"
    try:
        return dict(json.loads(side.read_text()).get("sessions", {}).get(Path(path).name, {}))
    except (OSError, ValueError):
        return {}


def ort_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"],
                                **session_settings(path))


def onnx_logits(session, tokenizer_json: Path, texts: Sequence[str], pairs: Sequence[str] | None = None,
                batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """Logits from an ONNX session, tokenized by `tokenizers` from the exported tokenizer.json (the deployment path;
    sorted by length like `MultiTaskModel.batches`, returned in input order)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.enable_truncation(max_length=max_length)
    wanted = {i.name for i in session.get_inputs()}
    lengths = [len(e.ids) for e in tok.encode_batch(list(texts) if pairs is None else list(zip(texts, pairs)))]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out: list[np.ndarray | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = [texts[i] for i in idx] if pairs is None else [(texts[i], pairs[i]) for i in idx]
        encs = tok.encode_batch(batch)
        feed = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
        logits = session.run(["logits"], {k: v for k, v in feed.items() if k in wanted})[0]
        for row, i in enumerate(idx):
            out[i] = logits[row]
    return np.stack(out) if out else np.zeros((0, 1))


# ----- plain Hugging Face folder -----------------------------------------------------------------------------------
def _pad_linear(layer: nn.Linear, out_features: int | None = None, in_features: int | None = None) -> nn.Linear:
    """A copy of `layer` padded with zero rows (outputs) or zero columns (inputs): padded units add exactly 0."""
    o, i = layer.out_features, layer.in_features
    o2, i2 = out_features or o, in_features or i
    new = nn.Linear(i2, o2, bias=layer.bias is not None).to(layer.weight.device, layer.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:o, :i].copy_(layer.weight)
        if layer.bias is not None:
            new.bias.zero_()
            new.bias[:o].copy_(layer.bias)
    return new


def _ffn_config_attr(model) -> str:
    return "hidden_dim" if model.config.model_type == "distilbert" else "intermediate_size"


def padded_for_hf(small, original_heads: Sequence[int]) -> tuple[nn.Module, dict]:
    """A copy of `small.encoder` whose layers all have the widest kept FFN and the original head count (zero-padded),
    so transformers' one-width config describes it. Returns (module, padding info)."""
    from .slicing import _parent_of, _set_child

    enc = copy.deepcopy(small.encoder)
    holder = copy.copy(small)  # adapter lookups on the copy
    object.__setattr__(holder, "_modules", dict(small._modules, encoder=enc))
    shape = small.unit_shape()
    f_max = max(shape.ffn)
    added = 0
    for l in range(small.num_layers):
        p = holder.layer_parts(l)
        k = p.ffn_out.in_features
        if k < f_max:
            _set_child(_parent_of(enc, p.ffn_in), p.ffn_in, _pad_linear(p.ffn_in, out_features=f_max))
            _set_child(_parent_of(enc, p.ffn_out), p.ffn_out, _pad_linear(p.ffn_out, in_features=f_max))
            added += (f_max - k) * (p.ffn_in.in_features + (1 if p.ffn_in.bias is not None else 0)
                                    + p.ffn_out.out_features)
        h, h0, d = p.num_heads, int(original_heads[l]), p.head_dim
        if h < h0:
            for lin in (p.query, p.key, p.value):
                _set_child(_parent_of(enc, lin), lin, _pad_linear(lin, out_features=h0 * d))
                added += (h0 - h) * d * (lin.in_features + (1 if lin.bias is not None else 0))
            _set_child(_parent_of(enc, p.attn_out), p.attn_out, _pad_linear(p.attn_out, in_features=h0 * d))
            added += (h0 - h) * d * p.attn_out.out_features
            for attr in small.adapter.head_attrs:
                setattr(p.attention, attr, h0)
            if hasattr(p.attention, "all_head_size"):
                p.attention.all_head_size = h0 * d
    for module in enc.modules():  # the gate hooks belong to the TaskPrune model, not to a plain HF one
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "_taskprune_gate", False):
                del module._forward_pre_hooks[key]
    setattr(enc.config, _ffn_config_attr(small), f_max)
    uniform = len(set(shape.ffn)) == 1 and all(h == h0 for h, h0 in zip(shape.heads, original_heads))
    return enc, {"ffn_width": f_max, "heads": list(original_heads), "padding_params": added, "uniform": uniform}


def hf_padding_params(model, masks, original_heads: Sequence[int] | None = None) -> dict:
    """What the hf/ format's padding (see `padded_for_hf`) will cost for `masks` on `model`, computed without
    building anything: {"padding_params", "ffn_width", "uniform"}. Zero for a per-layer-uniform plan that keeps
    every head."""
    heads0 = list(original_heads or (model.pruning or {}).get("original_heads") or model.unit_shape().heads)
    kept_ffn = [int(m.sum()) for m in masks.ffn]
    f_max = max(kept_ffn) if kept_ffn else 0
    added = 0
    for l in range(model.num_layers):
        p = model.layer_parts(l)
        per_neuron = p.ffn_in.in_features + (1 if p.ffn_in.bias is not None else 0) + p.ffn_out.out_features
        added += (f_max - kept_ffn[l]) * per_neuron
        d = p.head_dim
        per_head = sum(d * lin.in_features + (d if lin.bias is not None else 0) for lin in (p.query, p.key, p.value))
        per_head += d * p.attn_out.out_features
        added += (int(heads0[l]) - int(masks.heads[l].sum())) * per_head
    return {"padding_params": int(added), "ffn_width": f_max, "uniform": added == 0}


def planned_counts(model, task: str, scores, prune_cfg, embedding_params_saved: int = 0) -> dict:
    """Parameter counts of the export `export_formats` would write for these settings, without building it: dense,
    kept (full vocabulary: the Prune page's count, word embeddings included), kept with a task vocabulary that
    removes `embedding_params_saved` (see `vocab.embedding_params_saved`), and the hf/ padding."""
    from .masks import build_masks
    from .pruning import count_params, kept_params

    masks = build_masks(scores, prune_cfg, model.unit_shape())
    dense = count_params(model, task)
    kept = kept_params(model, masks, task)
    return {"dense": dense, "kept": kept, "kept_task_vocab": kept - int(embedding_params_saved),
            "hf": hf_padding_params(model, masks)}


HEAD_FILE = "task_head.safetensors"


def export_hf(small, task: str, folder: Path, original_heads: Sequence[int]) -> dict:
    """Write a plain Hugging Face folder: config.json, model.safetensors, tokenizer files (+ the task head for a
    TaskPrune multi-task model, which transformers has no class for). Returns padding info and parameter counts."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from .model import _quiet_transformers

    enc, info = padded_for_hf(small, original_heads)
    with _quiet_transformers():
        enc.save_pretrained(str(folder))
    small.tokenizer.save_pretrained(str(folder))
    _write_vocab_txt(small.tokenizer, folder)
    n_enc = sum(p.numel() for p in enc.parameters())
    head_params = 0
    if small.kind == "multitask":
        head = small.heads[small.resolve_task(task)]
        state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
        save_file(state, str(folder / HEAD_FILE))
        head_params = sum(v.numel() for v in state.values())
        info_head = small.task_info(task)
        (folder / "task_head.json").write_text(json.dumps({
            "task": task, "labels": list(info_head.label_names), "problem": info_head.problem,
            "pooling": "mean over attention_mask", "layers": "dense -> tanh -> out",
            "file": HEAD_FILE}, indent=1))
    info.update({"params": n_enc + head_params, "encoder_params": n_enc, "head_params": head_params,
                 "pipeline": small.kind == "hf_classifier"})
    return info


def _write_vocab_txt(tokenizer, folder: Path) -> None:
    """transformers 5 writes only tokenizer.json; add the slow `vocab.txt` for WordPiece tokenizers."""
    try:
        doc = json.loads(tokenizer.backend_tokenizer.to_str())
    except Exception:
        return
    if (doc.get("model") or {}).get("type") == "WordPiece":
        vocab = doc["model"]["vocab"]
        (Path(folder) / "vocab.txt").write_text("".join(t + "\n" for t, _ in sorted(vocab.items(),
                                                                                   key=lambda kv: kv[1])),
                                                encoding="utf-8")


@torch.no_grad()
def hf_logits(folder: Path, task: str, texts: Sequence[str], pairs: Sequence[str] | None = None,
              batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """Logits from an exported hf/ folder loaded with plain transformers (plus the task head file if any)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from .model import _quiet_transformers

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    head = load_file(str(folder / HEAD_FILE)) if (folder / HEAD_FILE).is_file() else None
    with _quiet_transformers():
        if head is None:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        else:
            model = AutoModel.from_pretrained(str(folder)).eval()
    out = []
    for start in range(0, len(texts), batch_size):
        b = tok(list(texts[start:start + batch_size]),
                None if pairs is None else list(pairs[start:start + batch_size]),
                padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        if head is None:
            out.append(model(**b).logits.float().numpy())
            continue
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        z = torch.tanh(pooled @ head["dense.weight"].T + head["dense.bias"])
        out.append((z @ head["out.weight"].T + head["out.bias"]).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


# ----- latency -----------------------------------------------------------------------------------------------------
def latency_inputs(vocab_size: int, batch: int, seq_len: int, names: Sequence[str], seed: int = 0) -> dict:
    """Random token ids (content does not change the time) of exactly `seq_len` tokens, no padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch, seq_len), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {k: v for k, v in feed.items() if k in names}


def measure_latency(run: Callable[[], Any], repeats: int = 20, warmup: int = 3, budget_s: float = 30.0) -> dict:
    """Median / p90 / min wall time of `run()` in milliseconds (stops early after `budget_s`), and every run's
    time (`times_ms`, for intervals)."""
    for _ in range(warmup):
        run()
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    arr = np.array(times)
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)), "min_ms": float(arr.min()),
            "repeats": len(times), "times_ms": [round(t, 4) for t in times]}


def torch_runner(model, task: str, feed: dict) -> Callable[[], Any]:
    batch = {k: torch.from_numpy(v).to(model.device) for k, v in feed.items()}

    def run():
        with torch.inference_mode():
            return model(**batch, task=task)

    return run


def onnx_runner(session, feed: dict) -> Callable[[], Any]:
    wanted = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in wanted}
    return lambda: session.run(["logits"], feed)


def _cpu_marks() -> tuple[float, float, float] | None:
    """(wall s, busy CPU seconds of the whole machine, CPU seconds of this process) from /proc/stat; None where
    there is no /proc (not Linux)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def other_cpu_cores(start, end) -> float | None:
    """Average number of cores other processes kept busy between two `_cpu_marks()` (the load average cannot
    tell: it counts this process's own busy threads too)."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def latency_table(dense, task: str, onnx_files: dict[str, Path] | None = None, pruned=None,
                  batch_sizes: Sequence[int] = (1, 32), seq_len: int = 64, repeats: int = 20,
                  threads: int | None = None) -> dict:
    """{runner: {batch: latency dict}} for the dense torch model, the pruned torch model and each ONNX file, on the
    same input shape; torch and onnxruntime use the same number of threads. Load average and the cores other
    processes kept busy meanwhile (`other_cpu_cores`, None where unknown) are recorded beside it."""
    threads = threads or torch.get_num_threads()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    mark = _cpu_marks()
    try:
        out: dict[str, Any] = {"threads": threads, "seq_len": seq_len, "load_avg_before": os.getloadavg()[0]}
        names = ["input_ids", "attention_mask", "token_type_ids"]
        for label, model in (("torch_dense", dense), ("torch_pruned", pruned)):
            if model is None:
                continue
            out[label] = {}
            for b in batch_sizes:
                feed = latency_inputs(model.config.vocab_size, b, seq_len, input_names(model))
                out[label][str(b)] = measure_latency(torch_runner(model, task, feed), repeats)
        for label, path in (onnx_files or {}).items():
            sess = ort_session(path, threads)
            out[label] = {}
            vocab = _onnx_vocab_size(path)
            for b in batch_sizes:
                feed = latency_inputs(vocab, b, seq_len, names)
                out[label][str(b)] = measure_latency(onnx_runner(sess, feed), repeats)
        out["load_avg_after"] = os.getloadavg()[0]
        out["other_cpu_cores"] = other_cpu_cores(mark, _cpu_marks())
        return out
    finally:
        torch.set_num_threads(old)


def _onnx_vocab_size(path: Path) -> int:
    tok_file = Path(path).parent / "tokenizer.json"
    vocab = json.loads(tok_file.read_text(encoding="utf-8"))["model"]["vocab"]
    return len(vocab) if isinstance(vocab, dict) else len(vocab)


# ----- metric intervals --------------------------------------------------------------------------------------------
def metric_with_interval(metric: str, problem: str, logits: np.ndarray, labels: Sequence, n_boot: int = 1000,
                         seed: int = 0) -> tuple[float, tuple[float, float]]:
    """The metric and a 95% percentile-bootstrap interval over examples (seeded)."""
    from .evaluation import compute_metric, predictions

    preds = predictions(logits, problem)
    y = np.asarray(labels)
    value = compute_metric(metric, preds, y)
    rng = np.random.default_rng(seed)
    n = len(y)
    if n < 2:
        return value, (value, value)
    boots = [compute_metric(metric, preds[idx], y[idx]) for idx in (rng.integers(0, n, n) for _ in range(n_boot))]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return value, (float(lo), float(hi))


# ----- report ------------------------------------------------------------------------------------------------------
@dataclass
class FormatReport:
    format: str
    path: str
    bytes_on_disk: int
    params: int
    params_by_part: dict | None = None
    metric: float | None = None
    metric_interval: tuple[float, float] | None = None
    check_max_abs_diff: float | None = None  # vs the masked torch model, on in-vocabulary check examples
    check_examples: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportReport:
    out_dir: str
    task: str
    base_model: str
    method: str
    attribution: dict
    ffn_sparsity: float
    head_sparsity: float
    allocation: str
    actual_ffn_sparsity: float
    actual_head_sparsity: float
    vocab_mode: str
    metric_name: str
    eval_examples: int
    metric_dense: float | None
    metric_dense_interval: tuple[float, float] | None
    metric_pruned: float | None  # torch, pruned structure (+ vocabulary)
    metric_pruned_interval: tuple[float, float] | None
    params_dense: dict
    params_pruned: dict
    bytes_dense: int  # the dense encoder + task head as float32 safetensors (what a plain checkpoint would take)
    formats: list[FormatReport]
    vocab: dict | None = None
    latency: dict | None = None
    mask_file: str | None = None
    command: str = ""
    seconds: float = 0.0
    created: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self, name: str) -> FormatReport | None:
        return next((f for f in self.formats if f.format == name), None)


# ----- the export --------------------------------------------------------------------------------------------------
def related_tasks(task: str) -> list[str]:
    """Other bundle tasks of the same kind (same problem, input kind and label names) with a validation split:
    where a task's vocabulary is tried off-domain (sst2 -> mr, cr, sentiment_sentences)."""
    from .data import get_task, list_tasks

    try:
        spec = get_task(task)
    except TPError:
        return []
    key = lambda s: (s.kind, s.problem, tuple(x.lower() for x in s.label_names))  # noqa: E731
    return [s.name for s in list_tasks() if s.name != spec.name and key(s) == key(spec) and "validation" in s.splits]


def _in_vocab_indices(full_tok, kept: set[int] | None, texts, pairs, n: int) -> list[int]:
    """Up to n example indices whose full-vocabulary tokens are all kept (all of them without vocabulary pruning)."""
    if kept is None:
        return list(range(min(n, len(texts))))
    enc = full_tok(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=128)
    return [i for i, ids in enumerate(enc["input_ids"]) if all(t in kept for t in ids)][:n]


def export_formats(
    model,
    task: str,
    scores,
    prune_cfg,
    out_dir: str | Path,
    formats: str | Sequence[str] = ("taskprune",),
    vocab: str = "full",
    min_count: int = 1,
    extra_texts: Sequence[str] = (),
    eval_data=None,
    offdomain: Sequence[str] | None = None,
    offdomain_limit: int | None = None,
    latency: bool = False,
    latency_batches: Sequence[int] = (1, 32),
    latency_repeats: int = 20,
    overwrite: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
    recovery=None,
) -> ExportReport:
    """Prune `model` for `task` (structure from `scores` + `prune_cfg`; with vocab="task", the vocabulary too) and
    write `formats` under `out_dir`, with the model card and a JSON report. Every metric is measured on `eval_data`
    (skipped when None); `offdomain` tasks (default: `related_tasks(task)` when vocab="task" and `eval_data` is
    given; at most `offdomain_limit` validation examples each) are evaluated with the
    full and the pruned vocabulary; `latency=True` times dense torch, pruned torch and each ONNX file
    (`latency_repeats` runs per runner and batch size).
    `recovery` (a `recovery.Recovery` fitted for these masks, or a level / RecoveryConfig fitted here) is folded
    into the pruned weights, as in `export.export_pruned`."""
    from .data import get_task, load_split
    from .evaluation import predict_logits
    from .masks import build_masks, save_mask_file
    from .model import _swap_in
    from .paths import clean_interrupted
    from .pruning import prune_physically
    from .vocab import (VocabReport, check_min_count, check_vocab_mode, prune_vocab, task_vocab, token_stats)

    t_start = time.time()
    progress = progress or (lambda f, m: None)
    formats = parse_formats(formats)
    check_vocab_mode(vocab)
    min_count = check_min_count(min_count)
    prune_cfg.validate()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_interrupted(out_dir.parent)
    if out_dir.exists() and not overwrite:
        raise TPError(f"{out_dir} already exists; choose another name or allow overwriting.")
    legacy = formats == ["taskprune"]
    command = command or "python -m tp_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    info = model.task_info(task)

    progress(0.02, "pruning the structure")
    masks = build_masks(scores, prune_cfg, model.unit_shape())
    extra = {}
    if recovery is not None:  # training-free recovery (tp_core/recovery.py), folded into the sliced weights
        from .recovery import Recovery, recover

        if not isinstance(recovery, Recovery):
            progress(0.04, "fitting the recovery")
            recovery = recover(model, task, masks, None, recovery)
        recovery.check(masks)
        extra = {"recovery": recovery}
    small = prune_physically(model, masks, task, **extra)
    original_heads = list((model.pruning or {}).get("original_heads") or model.unit_shape().heads)
    small.pruning.update({"task": task, "method": scores.method, "attribution": scores.settings,
                          "allocation": prune_cfg.allocation, "ffn_sparsity": prune_cfg.ffn_sparsity,
                          "head_sparsity": prune_cfg.head_sparsity, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    small_full = small  # pruned structure, full vocabulary

    def logits_of(m, data, gates=None):
        return predict_logits(m, task, data, gates)

    metric_name = eval_data.spec.metric if eval_data is not None else info.metric
    problem = eval_data.spec.problem if eval_data is not None else info.problem
    dense_m = dense_ci = pruned_m = pruned_ci = None
    full_vocab_logits = None
    if eval_data is not None:
        progress(0.08, "evaluating the dense model")
        dense_m, dense_ci = metric_with_interval(metric_name, problem, logits_of(model, eval_data), eval_data.labels)
        progress(0.16, "evaluating the pruned model")
        full_vocab_logits = logits_of(small_full, eval_data)

    vocab_report = None
    kept_set = None
    if vocab == "task":
        progress(0.2, "counting the task's tokens")
        spec = get_task(task)
        source = load_split(spec, spec.scoring_split)
        plan = task_vocab(model.tokenizer, source.texts, source.pairs, min_count, extra_texts)
        small = copy.deepcopy(small_full)
        emb_before = small.encoder.get_input_embeddings().weight.numel()
        prune_vocab(small, plan)
        small.pruning["vocab"]["source"] = f"{spec.name}/{spec.scoring_split}" + (
            f" + {plan.extra_texts} extra texts" if plan.extra_texts else "")
        kept_set = set(plan.kept_ids)
        vocab_report = VocabReport(task=task, kept_tokens=plan.size, original_tokens=plan.original_size,
                                   min_count=min_count, char_fallback_tokens=plan.n_char_fallback,
                                   embedding_params_before=emb_before,
                                   embedding_params_after=small.encoder.get_input_embeddings().weight.numel(),
                                   metric_name=metric_name)
        val = eval_data if eval_data is not None else load_split(spec, "validation", limit=2000) \
            if "validation" in spec.splits else None
        if val is not None:
            vocab_report.validation = token_stats(small.tokenizer, val.texts, val.pairs, model.tokenizer).to_dict()
        if eval_data is not None:
            vocab_report.metric_full_vocab = metric_with_interval(metric_name, problem, full_vocab_logits,
                                                                  eval_data.labels)[0]
        others = (related_tasks(task) if eval_data is not None else []) if offdomain is None else list(offdomain)
        for j, other in enumerate(others):
            progress(0.25 + 0.15 * j / max(len(others), 1), f"off-domain: {other}")
            od = load_split(other, "validation", limit=offdomain_limit)
            st = token_stats(small.tokenizer, od.texts, od.pairs, model.tokenizer)
            row = {"n": len(od), "unk_share": st.unk_share, "examples_changed": st.examples_changed,
                   "metric_name": od.spec.metric}
            from .evaluation import compute_metric, predictions

            for label, m in (("metric_dense", model), ("metric_full_vocab", small_full), ("metric_task_vocab", small)):
                row[label] = compute_metric(od.spec.metric, predictions(logits_of(m, od), od.spec.problem), od.labels)
            vocab_report.offdomain[other] = row

    pruned_logits = None
    if eval_data is not None:
        progress(0.42, "evaluating the exported model")
        pruned_logits = logits_of(small, eval_data) if small is not small_full else full_vocab_logits
        pruned_m, pruned_ci = metric_with_interval(metric_name, problem, pruned_logits, eval_data.labels)
        if vocab_report is not None:
            vocab_report.metric_task_vocab = pruned_m

    # check examples: in-vocabulary texts, compared with the *masked* (unpruned) model
    check_data = eval_data if eval_data is not None else load_split(task, "validation", limit=256)
    check_idx = _in_vocab_indices(model.tokenizer, kept_set, check_data.texts, check_data.pairs, 64)
    check = check_data.subset(check_idx)
    masked_ref = logits_of(model, check, masks.gates(model.device, **extra)) if len(check) else None

    def check_diff(logits):
        return None if masked_ref is None else float(np.abs(np.asarray(logits) - masked_ref).max())

    name = out_dir.name
    tmp = out_dir.parent / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    reports: list[FormatReport] = []
    p_pruned = params_by_part(small, task)
    try:
        tmp.mkdir(parents=True)
        if legacy:
            tp_dir = tmp
        elif "taskprune" in formats:
            tp_dir = tmp / "taskprune"
        else:
            tp_dir = None
        if tp_dir is not None:
            progress(0.5, "writing the TaskPrune folder")
            _save_into(small, tp_dir)
            reports.append(FormatReport("taskprune", str(out_dir if legacy else out_dir / "taskprune"),
                                        folder_bytes(tp_dir), p_pruned["total"], p_pruned, pruned_m, pruned_ci,
                                        check_diff(logits_of(small, check)) if len(check) else None, len(check),
                                        ["reload with tp_core.load_model(path)"]))
        onnx_files: dict[str, Path] = {}
        if "onnx" in formats or "onnx-int8" in formats:
            progress(0.58, "exporting ONNX")
            onnx_dir = tmp / "onnx"
            fp32 = export_onnx(small, task, onnx_dir)
            tok_json = onnx_dir / "tokenizer.json"
            if "onnx" in formats:
                onnx_files["onnx"] = fp32
            if "onnx-int8" in formats:
                progress(0.66, "quantizing to int8")
                quantize_int8(fp32, onnx_dir / "model.int8.onnx")
                onnx_files["onnx-int8"] = onnx_dir / "model.int8.onnx"
            fused = json.loads((onnx_dir / "taskprune_onnx.json").read_text()).get("attention") == FUSED_ATTENTION
            for label, path in onnx_files.items():
                progress(0.7, f"evaluating {label} with onnxruntime")
                sess = ort_session(path)
                m = ci = None
                if eval_data is not None:
                    m, ci = metric_with_interval(metric_name, problem, onnx_logits(
                        sess, tok_json, eval_data.texts, eval_data.pairs), eval_data.labels)
                diff = check_diff(onnx_logits(sess, tok_json, check.texts, check.pairs)) if len(check) else None
                notes = ["runs with onnxruntime + tokenizers + numpy (no torch)"]
                if fused:
                    notes.append("each layer's attention is one onnxruntime MultiHeadAttention node (com.microsoft "
                                 "domain): fewer operators, faster at small batches; other ONNX runtimes need "
                                 "export_onnx(..., fused_attention=False)")
                if label == "onnx-int8":
                    notes.append("dynamic int8 quantization: weights int8 per channel, activations quantized at run time; "
                                 "its logits differ from fp32 by design (see the check difference and the metric)")
                reports.append(FormatReport(label, str(out_dir / "onnx" / path.name),
                                            path.stat().st_size + tok_json.stat().st_size, p_pruned["total"],
                                            p_pruned, m, ci, diff, len(check), notes))
            if "onnx" not in formats:
                fp32.unlink()
        if "hf" in formats:
            progress(0.8, "writing the Hugging Face folder")
            hf_info = export_hf(small, task, tmp / "hf", original_heads)
            m = ci = None
            if eval_data is not None:
                m, ci = metric_with_interval(metric_name, problem,
                                             hf_logits(tmp / "hf", task, eval_data.texts, eval_data.pairs),
                                             eval_data.labels)
            diff = check_diff(hf_logits(tmp / "hf", task, check.texts, check.pairs)) if len(check) else None
            hf_parts = dict(p_pruned)
            hf_parts["padding"] = hf_info["padding_params"]
            hf_parts["total"] = hf_info["params"]
            notes = [("every layer already has the same FFN width and the original head count: no padding"
                      if hf_info["uniform"] else
                      f"transformers' config has one FFN width ({hf_info['ffn_width']}) and one head count for all "
                      f"layers: zero units pad the plan (outputs unchanged), costing {hf_info['padding_params']:,} "
                      f"parameters ({hf_info['padding_params'] / max(p_pruned['total'], 1):.1%} of the pruned model)")]
            notes.append("pipeline('text-classification', model=path) works" if hf_info["pipeline"] else
                         f"AutoModel.from_pretrained(path) gives the encoder; the task head (mean pooling, dense, "
                         f"tanh, out) is in {HEAD_FILE}")
            reports.append(FormatReport("hf", str(out_dir / "hf"), folder_bytes(tmp / "hf"), hf_info["params"],
                                        hf_parts, m, ci, diff, len(check), notes))
        mask_path = (out_dir.parent / f"{name}.mask.json") if legacy else tmp / "mask.json"
        save_mask_file(mask_path, masks, model, task, meta={"method": scores.method,
                                                            "allocation": prune_cfg.allocation}, **extra)
        lat = None
        if latency:
            progress(0.9, "measuring latency")
            lat = latency_table(model, task, onnx_files, small, latency_batches, repeats=latency_repeats)
        report = ExportReport(
            out_dir=str(out_dir), task=task, base_model=model.base_model, method=scores.method,
            attribution=dict(scores.settings), ffn_sparsity=prune_cfg.ffn_sparsity,
            head_sparsity=prune_cfg.head_sparsity, allocation=prune_cfg.allocation,
            actual_ffn_sparsity=masks.ffn_sparsity(), actual_head_sparsity=masks.head_sparsity(), vocab_mode=vocab,
            metric_name=metric_name, eval_examples=len(eval_data) if eval_data is not None else 0,
            metric_dense=dense_m, metric_dense_interval=dense_ci, metric_pruned=pruned_m,
            metric_pruned_interval=pruned_ci, params_dense=params_by_part(model, task), params_pruned=p_pruned,
            bytes_dense=4 * params_by_part(model, task)["total"], formats=reports,
            vocab=vocab_report.to_dict() if vocab_report else None, latency=lat,
            mask_file=str(out_dir.parent / f"{name}.mask.json") if legacy else str(out_dir / "mask.json"),
            command=command, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        report.seconds = round(time.time() - t_start, 1)
        card = model_card(report, small)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if "hf" in formats:
            (tmp / "hf" / "README.md").write_text(card, encoding="utf-8")
        if tp_dir is not None and not legacy:
            (tp_dir / "README.md").write_text(card, encoding="utf-8")
        (tmp / "export_report.json").write_text(json.dumps(report.to_dict(), indent=1, default=_jsonable))
        progress(0.98, "moving the export into place")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(1.0, "done")
    return report


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(type(x))


def _save_into(small, folder: Path) -> None:
    """MultiTaskModel.save into a folder that is itself inside our temp folder (no second swap needed)."""
    small.save(folder)
    _write_vocab_txt(small.tokenizer, folder)


# ----- model card --------------------------------------------------------------------------------------------------
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _fmt(v, pct=False):
    if v is None:
        return "not measured"
    return f"{v:.1%}" if pct else f"{v:.4f}"


def _ci(ci):
    return "" if not ci else f" (95% CI {ci[0]:.4f}–{ci[1]:.4f})"


def onnx_snippet(folder: str = "onnx", model_file: str = "model.onnx", other: str | None = None) -> str:
    """Copy-paste ONNX Runtime code for the card; `other`: a second file of the export the user may pick instead."""
    pick = f'  # or "{other}"' if other else ""
    return f'''import json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer

tok = Tokenizer.from_file("{folder}/tokenizer.json")          # truncation and padding are preset
meta = json.load(open("{folder}/taskprune_onnx.json"))
model_file = "{model_file}"{pick}
sess = ort.InferenceSession(f"{folder}/{{model_file}}", providers=["CPUExecutionProvider"],
                            **meta.get("sessions", {{}}).get(model_file, {{}}))  # the export's session settings
encs = tok.encode_batch(["a gripping, beautifully made film", "dull and far too long"])
feed = {{"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}}
feed = {{i.name: feed[i.name] for i in sess.get_inputs()}}
logits = sess.run(["logits"], feed)[0]
print([meta["labels"][i] for i in logits.argmax(-1)])'''


def hf_snippet(pipeline_ok: bool, folder: str = "hf") -> str:
    if pipeline_ok:
        return f'''from transformers import pipeline

clf = pipeline("text-classification", model="{folder}")
print(clf("a gripping, beautifully made film"))'''
    return f'''import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{folder}")
enc = AutoModel.from_pretrained("{folder}", add_pooling_layer=False).eval()   # the pruned encoder
head = load_file("{folder}/{HEAD_FILE}")                                     # the task head
batch = tok(["a gripping, beautifully made film"], padding=True, return_tensors="pt")
with torch.no_grad():
    h = enc(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)                            # mean pooling
    z = torch.tanh(pooled @ head["dense.weight"].T + head["dense.bias"])
    logits = z @ head["out.weight"].T + head["out.bias"]'''


def _recovery_text(small) -> str:
    rec = (small.pruning or {}).get("recovery")
    if not rec:
        return "none"
    if isinstance(rec, dict):
        return ", ".join(f"{k}={v}" for k, v in rec.items() if not isinstance(v, (list, dict)))
    return str(rec)


def model_card(report: ExportReport, small) -> str:
    """A Hugging Face model card (YAML metadata + markdown) with every measured number of the export."""
    r = report
    base = r.base_model.split(" ")[0] if r.base_model else ""
    tags = ["taskprune", "pruning", "text-classification"] + [f for f in ("onnx",) if r.format("onnx") or
                                                                r.format("onnx-int8")]
    meta = ["---", "library_name: " + ("transformers" if r.format("hf") else "onnx" if "onnx" in tags else "taskprune")]
    if HUB_ID.match(base):
        meta.append(f"base_model: {base}")
    meta.append("pipeline_tag: text-classification")
    meta.append("tags:\n" + "\n".join(f"- {t}" for t in tags))
    if r.metric_pruned is not None:
        meta.append("model-index:\n"
                    f"- name: {Path(r.out_dir).name}\n"
                    "  results:\n"
                    "  - task:\n      type: text-classification\n"
                    f"    dataset:\n      name: {r.task}\n      type: {r.task}\n      split: validation\n"
                    f"    metrics:\n    - type: {r.metric_name}\n      value: {r.metric_pruned:.4f}\n"
                    f"      name: {r.metric_name} (pruned, {r.eval_examples} examples)")
    meta.append("---")
    settings = ", ".join(f"{k}={v}" for k, v in r.attribution.items()
                         if k in ("samples", "steps", "labels", "target", "aggregation"))
    parts = ("embeddings", "attention", "ffn", "other", "heads", "total")
    rows = "\n".join(f"| {p} | {r.params_dense.get(p, 0):,} | {r.params_pruned.get(p, 0):,} | "
                     f"{r.params_pruned.get(p, 0) / r.params_dense[p]:.1%} |" if r.params_dense.get(p) else
                     f"| {p} | {r.params_dense.get(p, 0):,} | {r.params_pruned.get(p, 0):,} | – |" for p in parts)
    fmt_rows = "\n".join(
        f"| {f.format} | `{Path(f.path).relative_to(r.out_dir) if f.path != r.out_dir else '.'}` | "
        f"{f.params:,} | {f.bytes_on_disk / 1e6:.1f} MB | {_fmt(f.metric)}{_ci(f.metric_interval)} | "
        f"{'–' if f.check_max_abs_diff is None else f'{f.check_max_abs_diff:.1e} ({f.check_examples} ex.)'} |"
        for f in r.formats)
    notes = "\n".join(f"- **{f.format}**: {n}" for f in r.formats for n in f.notes)
    vocab_txt = "Vocabulary: full (not pruned)."
    if r.vocab:
        v = r.vocab
        val = v.get("validation") or {}
        od = "\n".join(f"| {t} | {x['n']} | {x['unk_share']:.2%} | {x['metric_dense']:.4f} | {x['metric_full_vocab']:.4f} "
                       f"| {x['metric_task_vocab']:.4f} |" for t, x in v["offdomain"].items())
        vocab_txt = (f"Vocabulary pruned to the task's tokens: **{v['kept_tokens']:,} of {v['original_tokens']:,}** "
                     f"tokens kept (seen ≥ {v['min_count']} times in the task's train texts, every special token, "
                     f"and {v['char_fallback_tokens']} single-character pieces so unseen words split instead of "
                     f"becoming [UNK]); word embeddings {v['embedding_params_before']:,} → "
                     f"{v['embedding_params_after']:,} parameters. Text made only of kept tokens gets exactly the "
                     f"same logits. On the validation texts, {val.get('unk_share', 0):.2%} of tokens became [UNK] "
                     f"and {val.get('examples_changed', 0)} of {val.get('examples', 0)} examples split into "
                     f"different pieces; {r.metric_name} with the full vocabulary {_fmt(v['metric_full_vocab'])}, "
                     f"with the task vocabulary {_fmt(v['metric_task_vocab'])}.")
        if od:
            vocab_txt += ("\n\nOff-domain (other tasks of the same kind, validation splits):\n\n"
                          "| task | examples | [UNK] share | dense | pruned, full vocab | pruned, task vocab |\n"
                          "|---|---:|---:|---:|---:|---:|\n" + od)
    lat_txt = "Latency: not measured (pass `--latency` / `latency=True`)."
    if r.latency:
        lat = r.latency
        cols = [k for k in lat if isinstance(lat[k], dict)]
        batches = list(next(iter(lat[c] for c in cols)).keys()) if cols else []
        lat_txt = (f"Latency, median ms per batch of {lat['seq_len']}-token inputs on this machine, "
                   f"{lat['threads']} threads (load average {lat['load_avg_before']:.2f} before, "
                   f"{lat['load_avg_after']:.2f} after; ratios measured under load are not speed-ups to quote):\n\n"
                   "| runner | " + " | ".join(f"batch {b}" for b in batches) + " |\n|---|" + "---:|" * len(batches)
                   + "\n" + "\n".join(f"| {c} | " + " | ".join(f"{lat[c][b]['median_ms']:.1f}" for b in batches)
                                      + " |" for c in cols))
    snippets = ["Reload the TaskPrune folder:\n\n```python\nimport tp_core\nmodel = tp_core.load_model(\""
                + ("." if r.format("taskprune") and r.format("taskprune").path == r.out_dir else "taskprune")
                + "\")\n```"] if r.format("taskprune") else []
    if r.format("onnx") or r.format("onnx-int8"):
        f = "model.onnx" if r.format("onnx") else "model.int8.onnx"
        other = "model.int8.onnx" if r.format("onnx") and r.format("onnx-int8") else None
        snippets.append("ONNX Runtime (no torch, no transformers):\n\n```python\n" + onnx_snippet("onnx", f, other)
                        + "\n```")
    if r.format("hf"):
        snippets.append("Hugging Face transformers:\n\n```python\n" + hf_snippet(small.kind == "hf_classifier") + "\n```")
    kept_ffn = [int(len(x)) for x in small.pruning.get("ffn_keep", [])]
    kept_heads = [int(len(x)) for x in small.pruning.get("heads_keep", [])]
    return "\n".join(meta) + f"""

# Task-pruned model: {r.task}

Made with TaskPrune Studio: training-free, task-specific pruning by neuron attribution (Yang et al., EACL 2023
Findings). Units were removed by slicing weights; nothing was retrained. Recovery: {_recovery_text(small)}.

| | |
|---|---|
| base model | {r.base_model} |
| task | {r.task} ({small.task_info(r.task).problem}, labels {', '.join(small.task_info(r.task).label_names)}) |
| attribution | {r.method} ({settings}) |
| allocation | {r.allocation} |
| FFN sparsity | {r.actual_ffn_sparsity:.1%} (target {r.ffn_sparsity:.0%}); kept per layer {kept_ffn} |
| head sparsity | {r.actual_head_sparsity:.1%} (target {r.head_sparsity:.0%}); kept per layer {kept_heads} |
| vocabulary | {r.vocab_mode}{'' if not r.vocab else f" ({r.vocab['kept_tokens']:,} tokens, min count {r.vocab['min_count']})"} |
| {r.metric_name}, dense | {_fmt(r.metric_dense)}{_ci(r.metric_dense_interval)} |
| {r.metric_name}, pruned | {_fmt(r.metric_pruned)}{_ci(r.metric_pruned_interval)} |
| evaluation examples | {r.eval_examples} (validation; intervals: 95% bootstrap) |

## Parameters by part (encoder + this task's head)

| part | dense | pruned | kept |
|---|---:|---:|---:|
{rows}

Dense as float32: {r.bytes_dense / 1e6:.1f} MB.

## Formats

| format | path | parameters | size on disk | {r.metric_name} | max abs. logit difference vs masked model |
|---|---|---:|---:|---:|---:|
{fmt_rows}

{notes}

## Vocabulary

{vocab_txt}

## Latency

{lat_txt}

## Use

""" + "\n\n".join(snippets) + f"""

Command that made it:

```
{r.command}
```
"""


# ----- tables for the app ------------------------------------------------------------------------------------------
FORMAT_LABELS = {"taskprune": "TaskPrune folder", "onnx": "ONNX (fp32)", "onnx-int8": "ONNX int8",
                 "hf": "Hugging Face folder"}
FORMAT_HELP = {"taskprune": "reloads with tp_core.load_model(path); the smallest torch model",
               "onnx": "onnx/model.onnx + tokenizer.json: runs with onnxruntime, tokenizers and numpy alone",
               "onnx-int8": "onnx/model.int8.onnx: dynamic int8 quantization, its metric measured",
               "hf": "hf/: config.json, model.safetensors and tokenizer files for plain transformers "
                     "(AutoModel.from_pretrained, no custom code)"}
PARTS = (("embeddings", "embeddings (word, position, type)"), ("attention", "encoder: attention heads"),
         ("ffn", "encoder: FFN"), ("other", "encoder: layer norms, pooler"), ("heads", "task head"),
         ("total", "total"))


def _pct(a, b) -> str:
    return f"{a / b:.1%}" if b else "–"


def _metric_cell(value, ci) -> str:
    if value is None:
        return "not measured"
    return f"{value:.4f}" + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]")


def summary_tables(report: dict) -> dict:
    """An export report (`ExportReport.to_dict()`) as rows ready to show: parameters by part, one row per format
    (size on disk, parameters, metric, check against the masked model), latency before/after, the vocabulary
    figures and off-domain metrics, and the hf/ padding note. Values are formatted strings; a page only draws them."""
    r = report
    dense, pruned = r["params_dense"], r["params_pruned"]
    metric = r["metric_name"]
    out: dict = {}
    out["params"] = [{"part": label, "dense": f"{dense.get(k, 0):,}", "pruned": f"{pruned.get(k, 0):,}",
                      "kept": _pct(pruned.get(k, 0), dense.get(k, 0))} for k, label in PARTS]
    rows = [{"model": "dense (torch, float32)", "path": "", "parameters": f"{dense['total']:,}",
             "size on disk": f"{r['bytes_dense'] / 1e6:.1f} MB",
             metric: _metric_cell(r["metric_dense"], r["metric_dense_interval"]), "vs dense": "",
             "max |logit diff| vs masked": ""}]
    for f in r["formats"]:
        rel = Path(f["path"]).relative_to(r["out_dir"]) if f["path"] != r["out_dir"] else Path(".")
        delta = "" if f["metric"] is None or r["metric_dense"] is None else f"{f['metric'] - r['metric_dense']:+.4f}"
        rows.append({"model": FORMAT_LABELS.get(f["format"], f["format"]), "path": str(rel),
                     "parameters": f"{f['params']:,}" + (f" (+{f['params_by_part']['padding']:,} padding)"
                                                         if (f.get("params_by_part") or {}).get("padding") else ""),
                     "size on disk": f"{f['bytes_on_disk'] / 1e6:.1f} MB",
                     metric: _metric_cell(f["metric"], f["metric_interval"]), "vs dense": delta,
                     "max |logit diff| vs masked": "–" if f["check_max_abs_diff"] is None else
                     f"{f['check_max_abs_diff']:.1e} ({f['check_examples']} ex.)"})
    out["formats"] = rows
    out["metric"] = {"name": metric, "dense": r["metric_dense"], "pruned": r["metric_pruned"],
                     "dense_interval": r["metric_dense_interval"], "pruned_interval": r["metric_pruned_interval"],
                     "examples": r["eval_examples"]}
    out["params_ratio"] = pruned["total"] / dense["total"] if dense.get("total") else None
    hf = next((f for f in r["formats"] if f["format"] == "hf"), None)
    out["hf_padding"] = None
    if hf is not None:
        pad = (hf.get("params_by_part") or {}).get("padding", 0)
        out["hf_padding"] = {"params": pad, "share": pad / max(pruned["total"], 1), "notes": list(hf["notes"])}
    out["latency"], out["latency_note"] = [], None
    lat = r.get("latency")
    if lat:
        runners = [("torch_dense", "dense (torch), before"), ("torch_pruned", "pruned (torch: TaskPrune folder)"),
                   ("onnx", "pruned ONNX (fp32)"), ("onnx-int8", "pruned ONNX int8")]
        batches = list(lat["torch_dense"]) if "torch_dense" in lat else []
        for key, label in runners:
            if key not in lat:
                continue
            row = {"runner": label}
            for b in batches:
                ms = lat[key][b]["median_ms"]
                row[f"batch {b}: ms"] = f"{ms:.1f}"
                row[f"batch {b}: speed-up"] = "1.0x" if key == "torch_dense" else \
                    f"{lat['torch_dense'][b]['median_ms'] / ms:.1f}x"
            out["latency"].append(row)
        busy = max(lat["load_avg_before"], lat["load_avg_after"]) > lat["threads"]
        reps = max(x["repeats"] for k in lat if isinstance(lat[k], dict) for x in lat[k].values())
        out["latency_note"] = (f"Median of up to {reps} runs of {lat['seq_len']}-token inputs, {lat['threads']} "
                               f"thread(s), on the server that runs the jobs; load average {lat['load_avg_before']:.2f}"
                               f" before, {lat['load_avg_after']:.2f} after." +
                               (" The machine was busy while timing: other work slows torch more than onnxruntime, "
                                "so these ratios overstate the speed-up." if busy else ""))
    v = r.get("vocab")
    out["vocab"], out["offdomain"] = [], []
    if v:
        val = v.get("validation") or {}
        out["vocab"] = [
            {"": "tokens kept", "value": f"{v['kept_tokens']:,} of {v['original_tokens']:,} "
                                         f"({v['kept_tokens'] / v['original_tokens']:.1%})"},
            {"": "rule", "value": f"seen >= {v['min_count']} times in the task's train texts, every special token, "
                                  f"{v['char_fallback_tokens']} single-character pieces"},
            {"": "word-embedding parameters", "value": f"{v['embedding_params_before']:,} -> "
                                                       f"{v['embedding_params_after']:,}"},
            {"": "validation tokens that became [UNK]", "value": f"{val.get('unk_share', 0):.3%}"},
            {"": "validation examples split differently",
             "value": f"{val.get('examples_changed', 0)} of {val.get('examples', 0)}"},
            {"": f"{metric}, pruned, full vocabulary", "value": _metric_cell(v.get("metric_full_vocab"), None)},
            {"": f"{metric}, pruned, task vocabulary", "value": _metric_cell(v.get("metric_task_vocab"), None)},
        ]
        for t, x in v.get("offdomain", {}).items():
            out["offdomain"].append({
                "task": t, "examples": x["n"], "[UNK] share": f"{x['unk_share']:.2%}",
                f"{x.get('metric_name', metric)}, dense": f"{x['metric_dense']:.4f}",
                "pruned, full vocabulary": f"{x['metric_full_vocab']:.4f}",
                "pruned, task vocabulary": f"{x['metric_task_vocab']:.4f}",
                "task / full vocabulary": _pct(x["metric_task_vocab"], x["metric_full_vocab"])})
    return out


# ----- command line ------------------------------------------------------------------------------------------------
def run_export_command(args, model, scores, cfg, formats: list[str], eval_data, progress_bar) -> ExportReport:
    """`python -m tp_core export --format ... --vocab ...`: run `export_formats` and print a summary (or JSON)."""
    extra_texts: list[str] = []
    if getattr(args, "vocab_texts", None):
        from .limits import limits

        path = Path(args.vocab_texts)
        try:
            size = path.stat().st_size
            if size > limits().max_file_mb * 1_000_000:
                raise TPError(f"{path} is {size / 1e6:.0f} MB, above the {limits().max_file_mb} MB file limit.")
            extra_texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise TPError(f"Cannot read --vocab-texts {path}: {exc.strerror or exc}.") from None
        except UnicodeDecodeError:
            raise TPError(f"--vocab-texts {path} is not UTF-8 text.") from None
    recovery = None
    if getattr(args, "recover", None) not in (None, "none"):
        from .recovery import as_config

        recovery = as_config(args.recover, getattr(args, "recover_samples", None))
    with progress_bar(f"export {','.join(formats)}", not args.quiet) as cb:
        rep = export_formats(model, args.task, scores, cfg, Path(args.out), formats, vocab=args.vocab,
                             min_count=args.vocab_min_count, extra_texts=extra_texts, eval_data=eval_data,
                             offdomain=None, offdomain_limit=args.limit, latency=args.latency,
                             overwrite=args.overwrite, progress=cb, recovery=recovery)
    if args.json:
        print(json.dumps(rep.to_dict(), default=_jsonable))
        return rep
    d, p = rep.params_dense["total"], rep.params_pruned["total"]
    print(f"exported {rep.out_dir} ({p:,} of {d:,} parameters, {p / d:.1%}); {rep.metric_name} "
          f"{_fmt(rep.metric_dense)} dense -> {_fmt(rep.metric_pruned)} pruned")
    for f in rep.formats:
        diff = "" if f.check_max_abs_diff is None else f", max |logit diff| {f.check_max_abs_diff:.1e} vs masked"
        print(f"  {f.format:10s} {f.path}  {f.params:,} params, {f.bytes_on_disk / 1e6:.1f} MB, "
              f"{rep.metric_name} {_fmt(f.metric)}{diff}")
    if rep.vocab:
        v = rep.vocab
        print(f"  vocabulary {v['kept_tokens']:,} of {v['original_tokens']:,} tokens; validation [UNK] share "
              f"{v['validation'].get('unk_share', 0):.2%}; " + "; ".join(
                  f"{t}: {x['metric_full_vocab']:.4f} -> {x['metric_task_vocab']:.4f}" for t, x in v["offdomain"].items()))
    print(f"  model card {Path(rep.out_dir) / 'README.md'}")
    return rep


def zip_export(folder: str | Path, dest: str | Path | None = None, extra: Sequence[str | Path] = ()) -> Path:
    """One zip of an export folder (written atomically; default `<folder>.zip` beside it), for a download button.
    `extra` files (e.g. the mask file a TaskPrune-only export keeps beside its folder) go in at the zip's top level."""
    import zipfile

    folder = Path(folder)
    dest = Path(dest) if dest is not None else folder.parent / f"{folder.name}.zip"
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.zip.tmp"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    z.write(f, Path(folder.name) / f.relative_to(folder))
            for f in map(Path, extra):
                if f.is_file():
                    z.write(f, f.name)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
