"""The ONNX format: `export_onnx` writes `model.onnx` (one task's logits, dynamic batch and sequence), a standalone
`tokenizer.json` and `taskprune_onnx.json` (labels, inputs, which attention graph was written); `onnx_logits` runs
it the way a deployment would (onnxruntime + tokenizers + numpy, no torch).

Where the model family allows it, each layer's attention is exported as one onnxruntime `MultiHeadAttention` node
(`_FusedAttention`): fewer, larger operators, faster at small batches; otherwise plain ONNX operators.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import TPError

ONNX_OPSET = 17
FUSED_ATTENTION = "onnxruntime MultiHeadAttention (com.microsoft)"  # taskprune_onnx.json "attention" of a fused graph
NOTE = "runs with onnxruntime + tokenizers + numpy (no torch)"
FUSED_NOTE = ("each layer's attention is one onnxruntime MultiHeadAttention node (com.microsoft domain): fewer "
              "operators, faster at small batches; other ONNX runtimes need export_onnx(..., fused_attention=False)")


class _TaskLogits(nn.Module):
    """forward(input_ids, attention_mask[, token_type_ids]) -> logits of one task (what ONNX exports)."""

    def __init__(self, model, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids, attention_mask, token_type_ids, task=self.task)


def input_names(model) -> list[str]:
    """The model's inputs, in the graph's order (token_type_ids only where the tokenizer makes them and the family
    reads them)."""
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in getattr(model.tokenizer, "model_input_names", ()) and \
            model.config.model_type != "distilbert":
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


def is_fused(folder: Path) -> bool:
    """Whether the graph `export_onnx` wrote into `folder` has fused attention (its taskprune_onnx.json says)."""
    return json.loads((Path(folder) / "taskprune_onnx.json").read_text()).get("attention") == FUSED_ATTENTION


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
