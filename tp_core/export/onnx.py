"""The ONNX format: `export_onnx` writes `model.onnx` (one task's logits, dynamic batch and sequence), a standalone
`tokenizer.json` and `taskprune_onnx.json` (labels, inputs, which attention graph was written); `onnx_logits` runs
it the way a deployment would (onnxruntime + tokenizers + numpy, no torch).

Where the model family allows it, each layer's attention is exported as one onnxruntime `MultiHeadAttention` node
(`_FusedAttention`): fewer, larger operators, faster at small batches; otherwise plain ONNX operators.

A causal LM's graph is its scoring forward (`_PromptLogits`): inputs input_ids + attention_mask of right-padded
rendered prompts, output the task logits (batch, n_labels) from the label words' next-token logits at the last real
token. Only the k label words' rows of the output embedding are in the graph (a k-row Linear, not the
vocabulary-sized head); its attention is exported from transformers' eager implementation as plain operators.
`prompt.json` and the stdlib `render_prompts` (prompt_file.py) turn texts into those prompts without torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import TPError
from .prompt_file import PROMPT_FILE, SCORING, read_prompt_json, render_prompts, standalone_tokenizer, \
    write_prompt_json

ONNX_OPSET = 17
FUSED_ATTENTION = "onnxruntime MultiHeadAttention (com.microsoft)"  # taskprune_onnx.json "attention" of a fused graph
NOTE = "runs with onnxruntime + tokenizers + numpy (no torch)"
PROMPT_NOTE = ("a causal LM's scoring forward: render the texts with prompt.json (render_prompts in the model card), "
               "then the output is the task logits; only the label words' rows of the output embedding are in the "
               "graph")
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
    """The model's fast tokenizer as tokenizer.json, with truncation and batch padding (right) set for direct use;
    a causal LM's without truncation (cutting a prompt would cut its cue: `render_prompts` clips the texts)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    if model.kind == "causal_lm":
        tok.no_truncation()
    else:
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


class _PromptLogits(nn.Module):
    """forward(input_ids, attention_mask) -> (batch, n_labels) task logits of a causal LM, as
    `decoder.label_logits` computes them: the final hidden state at each right-padded prompt's last real token
    times the k label words' rows of the output embedding (copied into a k-row Linear: the vocabulary-sized head is
    not in the graph), then per label the logsumexp over its words (the logit itself for one word per label)."""

    def __init__(self, small, task: str):
        super().__init__()
        name = small.resolve_task(task)
        rows, labels = small.label_rows[name]
        out = small.encoder.get_output_embeddings()
        bias = getattr(out, "bias", None)
        self.base = small.base
        self.words = nn.Linear(out.weight.shape[1], len(rows), bias=bias is not None).to(out.weight.device)
        with torch.no_grad():
            self.words.weight.copy_(out.weight.index_select(0, rows.to(out.weight.device)))
            if bias is not None:
                self.words.bias.copy_(bias.index_select(0, rows.to(bias.device)))
        n = small.tasks[name].num_labels
        self.groups = None if len(rows) == n else [[i for i, y in enumerate(labels.tolist()) if y == label]
                                                   for label in range(n)]

    def forward(self, input_ids, attention_mask):
        seq = self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        last = (attention_mask.sum(1) - 1).view(-1, 1, 1).expand(-1, 1, seq.shape[-1])
        words = self.words(seq.gather(1, last).squeeze(1))
        if self.groups is None:
            return words
        return torch.stack([words[:, g].logsumexp(-1) for g in self.groups], -1)


class _EagerAttention:
    """While exporting a causal LM: transformers' eager attention (plain matmul + softmax operators, no SDPA
    kernel to trace); restores the model's implementation on exit."""

    def __init__(self, small):
        self.lm, self.impl = small.encoder, small.encoder.config._attn_implementation

    def __enter__(self) -> None:
        self.lm.set_attn_implementation("eager")

    def __exit__(self, *exc) -> None:
        self.lm.set_attn_implementation(self.impl)


def _trace_example(small, task: str, names: list[str]) -> tuple:
    """Two inputs of different lengths, padded, so the mask path is traced (a causal LM's: rendered prompts,
    right-padded as `MultiTaskModel.batches` pads them)."""
    texts = ["a short one", "a somewhat longer example sentence with padding after the short one"]
    if small.kind == "causal_lm":
        _, enc = next(small.batches(texts, task=task, sort=False))
    else:
        enc = small.tokenizer(texts, padding=True, return_tensors="pt")
    return tuple(enc[n].to(small.device) for n in names)


def export_onnx(small, task: str, folder: Path, fused_attention: bool = True) -> Path:
    """Write `folder/model.onnx` (+ tokenizer.json, taskprune_onnx.json; a causal LM's prompt.json) for `task`;
    dynamic batch and sequence. `fused_attention`: each layer's attention as one onnxruntime MultiHeadAttention node
    (fewer, larger operators: faster at small batches; needs onnxruntime, not just any ONNX runtime); falls back to
    plain ONNX operators for families without it or when that export fails. taskprune_onnx.json says which graph
    was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    causal = small.kind == "causal_lm"
    names = input_names(small)
    args = _trace_example(small, task, names)
    wrapper = (_PromptLogits(small, task) if causal else _TaskLogits(small, task)).eval()
    path = folder / "model.onnx"
    import warnings

    def run(custom: dict) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript tracer warnings about Python control flow in transformers
            torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                              opset_version=ONNX_OPSET, do_constant_folding=True, custom_opsets=custom)

    fused, why_plain = False, None
    if fused_attention and not causal:
        try:
            with _FusedAttention(small) as fused:
                if fused:
                    run({"com.microsoft": 1})
                else:
                    why_plain = f"no fused attention for the {small.adapter.family} family"
        except Exception as e:  # noqa: BLE001 - any tracing/export failure: the plain graph below still serves
            fused, why_plain = False, f"fused attention export failed: {type(e).__name__}: {str(e)[:200]}"
    if causal:
        with _EagerAttention(small):
            run({})
    elif not fused:
        run({})
    (folder / "tokenizer.json").write_text(standalone_tokenizer_json(small), encoding="utf-8")
    info = small.task_info(task)
    meta = {"task": task, "labels": list(info.label_names), "problem": info.problem, "inputs": names,
            "output": "logits", "max_length": max_input_length(small), "opset": ONNX_OPSET,
            "attention": FUSED_ATTENTION if fused else "plain ONNX operators",
            **({"attention_note": why_plain} if why_plain else {})}
    if causal:
        write_prompt_json(small, task, folder)
        meta.update({"max_length": None, "prompt": PROMPT_FILE, "label_rows": len(wrapper.words.weight),
                     "scoring": SCORING})
    (folder / "taskprune_onnx.json").write_text(json.dumps(meta, indent=1))
    return path


def graph_params(small, task: str, parts: dict) -> dict:
    """Parameters by part (`report.params_by_part` of `small`: `parts`) of `export_onnx`'s graph: for a causal LM
    without the output embedding (unless tied to the input one) and with the k label words' rows as the task's
    head; `parts` unchanged for any other model."""
    if small.kind != "causal_lm":
        return parts
    out, emb = small.encoder.get_output_embeddings(), small.encoder.get_input_embeddings()
    rows = len(small.label_rows[small.resolve_task(task)][0])
    head = 0 if out.weight is emb.weight else sum(p.numel() for p in out.parameters())
    label_rows = rows * (out.weight.shape[1] + (1 if getattr(out, "bias", None) is not None else 0))
    return dict(parts, other=parts["other"] - head, heads=label_rows, total=parts["total"] - head + label_rows)


def is_fused(folder: Path) -> bool:
    """Whether the graph `export_onnx` wrote into `folder` has fused attention (its taskprune_onnx.json says)."""
    return json.loads((Path(folder) / "taskprune_onnx.json").read_text()).get("attention") == FUSED_ATTENTION


def onnx_logits(session, tokenizer_json: Path, texts: Sequence[str], pairs: Sequence[str] | None = None,
                batch_size: int = 64, max_length: int = 128, prompt: Path | None = None) -> np.ndarray:
    """Logits from an ONNX session, tokenized by `tokenizers` from the exported tokenizer.json (the deployment path;
    sorted by length like `MultiTaskModel.batches`, returned in input order). With `prompt` (a causal LM's
    prompt.json) the texts are first rendered into prompts (`render_prompts`, each text clipped to `max_length`
    tokens), never truncated afterwards."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    if prompt is not None:
        texts = render_prompts(read_prompt_json(prompt), standalone_tokenizer(tokenizer_json), texts, pairs,
                               max_length)
        pairs = None
        tok.no_truncation()
    else:
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
