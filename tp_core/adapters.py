"""Where each model family keeps its FFN and attention: the only architecture-specific module.

A unit is always "one input feature of a Linear layer":
* FFN neuron i of layer l = input feature i of the FFN output projection (`ffn_out`);
* head h of layer l = input features [h*d, (h+1)*d) of the attention output projection (`attn_out`).
So one forward-pre-hook on those two Linears masks, gates or records every unit, and physical pruning slices
`ffn_in` rows + `ffn_out` columns, and `q/k/v` rows + `attn_out` columns.
Adding a family = one `FamilyAdapter` entry below.

Decoder LLMs (Llama layout: Llama, Qwen2, Mistral, SmolLM): an MLP neuron j is input feature j of `down_proj`
(slicing removes row j of `gate_proj` and `up_proj`, column j of `down_proj`). Under grouped-query attention a head
unit is one *key/value group*: kv head g with the n_rep = num_attention_heads / num_key_value_heads query heads that
share it (transformers' `repeat_kv` gives query head i the kv head i // n_rep, so a group's query heads are contiguous).
Unit g is `o_proj` input features [g*n_rep*d, (g+1)*n_rep*d) (`head_dim` = n_rep*d, the unit's width), `q_proj` rows
of the same range, and `k_proj`/`v_proj` rows [g*d, (g+1)*d) (`kv_dim` = d). Removing whole groups keeps every
layer's n_rep, so the attention module needs no attribute change: its forward infers the head counts from the
projections' shapes (`view(..., -1, head_dim)`) and only reads `num_key_value_groups` (unchanged) and `head_dim`.
Per-layer widths are stored in the TaskPrune manifest's pruning plan (`slicing.reshape_to_plan`), as for encoders:
a plain Llama config has one width for all layers. With num_key_value_heads == num_attention_heads a group is one head.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Callable

import torch
from torch import nn

from .errors import TPError


@dataclass(frozen=True)
class LayerParts:
    """The Linear layers of one transformer block that hold its units."""

    ffn_in: nn.Linear
    ffn_out: nn.Linear
    ffn_act: nn.Module | None  # module whose output is the FFN activation (Captum's layer); None: `ffn_out`'s input
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    attention: nn.Module  # module holding the head-count attributes
    num_heads: int
    head_dim: int  # width of one head unit in `attn_out`'s input (and `query`'s output)
    kv_dim: int = 0  # rows of one head unit in `key` / `value` (0: head_dim; a GQA group: one kv head's dim)
    ffn_entry: nn.Module | None = None  # module whose input is `ffn_tail`'s FFN input (the residual); None: ffn_in
    ffn_up: nn.Linear | None = None  # a 2nd input projection, sliced like `ffn_in` (Llama: up_proj; ffn_in: gate_proj)

    @property
    def ffn_inputs(self) -> tuple[nn.Linear, ...]:
        """The projections whose output rows are FFN neurons: `ffn_in` (and `ffn_up`)."""
        return (self.ffn_in,) if self.ffn_up is None else (self.ffn_in, self.ffn_up)

    @property
    def kv_width(self) -> int:
        return self.kv_dim or self.head_dim

    @property
    def ffn_residual(self) -> nn.Module:
        """The module whose first input is what `ffn_tail` takes as the FFN input (BERT: `ffn_in`, whose input is
        also the residual; Llama: the post-attention RMSNorm, whose input is the residual stream)."""
        return self.ffn_entry if self.ffn_entry is not None else self.ffn_in


def _encoder_flops(p: LayerParts, heads: int, neurons: int, T: float) -> float:
    """An encoder block (multiply-add = 2 FLOPs): per kept head of width d, the Q, K, V and output projections
    (8·T·H·d) and the attention scores and weighted values over all T² pairs (4·T²·d); per kept FFN neuron its
    input and output weights (4·T·H)."""
    H, d = p.ffn_out.out_features, p.head_dim
    return heads * (8 * T * H * d + 4 * T * T * d) + neurons * 4 * T * H


@dataclass(frozen=True)
class FamilyAdapter:
    """How to find a family's blocks and parts, and how its sequence classifier turns hidden states into logits."""

    family: str
    layers: Callable[[nn.Module], nn.ModuleList]
    parts: Callable[[nn.Module], LayerParts]
    classifier_logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    head_attrs: tuple[str, ...]  # attention attributes that store the head count
    # Resume a block's forward from inside it (the IG fast path skips recomputing what it has cached):
    ffn_tail: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (block, FFN activation, FFN input)
    attn_tail: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (block, head context, block input)
    # ONNX export may write each self-attention as one onnxruntime MultiHeadAttention node: the attention module's
    # forward(hidden_states, attention_mask, ...) -> (output, weights) with `parts.query/key/value` projections
    onnx_fused_attention: bool = False
    embeddings: Callable[[nn.Module], nn.Module] = lambda base: base.embeddings  # the token embedding module(s)
    # What the base model applies after its last block (a decoder's final RMSNorm); identity for encoders:
    final_norm: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lambda base, h: h
    causal_lm: bool = False  # a decoder scored through its language-model head (decoder.py), not a classifier
    # Matrix-multiply FLOPs of one block for one example of T tokens: (parts, head units kept, FFN neurons kept, T)
    layer_flops: Callable[[LayerParts, int, int, float], float] = _encoder_flops


def _decoder_flops(p: LayerParts, groups: int, neurons: int, T: float) -> float:
    """A Llama-layout block: per kept key/value group (n_rep query heads of dim d: width q = n_rep·d; one kv head:
    width d) q_proj 2·T·H·q, k_proj and v_proj 2·2·T·H·d, o_proj 2·T·q·H, and the attention scores and weighted
    values 2·2·T²·q. The attention counts all T² pairs, not the T(T+1)/2 the causal mask keeps: that is what SDPA
    computes on CPU (and what torch's FlopCounterMode counts). Per kept MLP neuron gate_proj, up_proj and
    down_proj: 6·T·H. Leaves out the norms, rotary embeddings and softmax (elementwise), and the output embedding:
    a task reads its label words' rows at one position (2·H FLOPs per label word, negligible)."""
    H, q, d = p.ffn_out.out_features, p.head_dim, p.kv_width
    return groups * (2 * T * H * q + 4 * T * H * d + 2 * T * q * H + 4 * T * T * q) + neurons * 6 * T * H


def _bert_parts(layer: nn.Module) -> LayerParts:
    sa = layer.attention.self
    d = sa.attention_head_size
    return LayerParts(
        ffn_in=layer.intermediate.dense,
        ffn_out=layer.output.dense,
        ffn_act=layer.intermediate,
        query=sa.query,
        key=sa.key,
        value=sa.value,
        attn_out=layer.attention.output.dense,
        attention=sa,
        num_heads=sa.query.out_features // d,
        head_dim=d,
    )


def _bert_ffn_tail(layer: nn.Module, act: torch.Tensor, ffn_input: torch.Tensor) -> torch.Tensor:
    return layer.output(act, ffn_input)


def _bert_attn_tail(layer: nn.Module, context: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
    return layer.feed_forward_chunk(layer.attention.output(context, block_input))


def _bert_logits(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    pooled = model.bert.pooler(seq)
    return model.classifier(model.dropout(pooled))


def _roberta_logits(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    return model.classifier(seq)


def _distil_parts(layer: nn.Module) -> LayerParts:
    att = layer.attention
    d = att.attention_head_size
    return LayerParts(
        ffn_in=layer.ffn.lin1,
        ffn_out=layer.ffn.lin2,
        ffn_act=layer.ffn.activation,
        query=att.q_lin,
        key=att.k_lin,
        value=att.v_lin,
        attn_out=att.out_lin,
        attention=att,
        num_heads=att.q_lin.out_features // d,
        head_dim=d,
    )


def _distil_ffn_tail(layer: nn.Module, act: torch.Tensor, ffn_input: torch.Tensor) -> torch.Tensor:
    return layer.output_layer_norm(layer.ffn.dropout(layer.ffn.lin2(act)) + ffn_input)


def _distil_attn_tail(layer: nn.Module, context: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
    sa = layer.sa_layer_norm(layer.attention.out_lin(context) + block_input)
    return layer.output_layer_norm(layer.ffn(sa) + sa)


def _distil_logits(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    pooled = torch.relu(model.pre_classifier(seq[:, 0]))
    return model.classifier(model.dropout(pooled))


def _llama_parts(layer: nn.Module) -> LayerParts:
    """Llama layout; a head unit is one key/value group (see the module docstring)."""
    att, mlp = layer.self_attn, layer.mlp
    d = att.head_dim  # one kv head's width; a group has num_key_value_groups query heads of that width
    return LayerParts(mlp.gate_proj, mlp.down_proj, None, att.q_proj, att.k_proj, att.v_proj, att.o_proj, att,
                      num_heads=att.k_proj.out_features // d, head_dim=d * att.num_key_value_groups, kv_dim=d,
                      ffn_entry=layer.post_attention_layernorm, ffn_up=mlp.up_proj)


def _llama_ffn_tail(layer: nn.Module, act: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """`residual + down_proj(act)`: the rest of the decoder layer once the MLP activation is known."""
    return residual + layer.mlp.down_proj(act)


def _llama_attn_tail(layer: nn.Module, context: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
    """The decoder layer after the attention context: `h = x + o_proj(ctx)`, then `h + mlp(RMSNorm(h))`."""
    h = block_input + layer.self_attn.o_proj(context)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _llama_logits(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    raise TypeError("a causal LM has no classifier: its task logits come from decoder.label_logits")


_LLAMA = FamilyAdapter(
    family="llama",
    layers=lambda base: base.layers,
    parts=_llama_parts,
    classifier_logits=_llama_logits,
    head_attrs=(),  # whole kv groups go: num_key_value_groups and head_dim stay, the forward reads the rest
    ffn_tail=_llama_ffn_tail,
    attn_tail=_llama_attn_tail,
    embeddings=lambda base: base.embed_tokens,
    final_norm=lambda base, h: base.norm(h),
    causal_lm=True,
    layer_flops=_decoder_flops,
)

_BERT = FamilyAdapter(
    family="bert",
    layers=lambda base: base.encoder.layer,
    parts=_bert_parts,
    classifier_logits=_bert_logits,
    head_attrs=("num_attention_heads",),
    ffn_tail=_bert_ffn_tail,
    attn_tail=_bert_attn_tail,
    onnx_fused_attention=True,
)

ADAPTERS: dict[str, FamilyAdapter] = {
    "bert": _BERT,
    "roberta": replace(_BERT, family="roberta", classifier_logits=_roberta_logits),
    "xlm-roberta": replace(_BERT, family="xlm-roberta", classifier_logits=_roberta_logits),
    "electra": replace(_BERT, family="electra", classifier_logits=_roberta_logits),
    "distilbert": FamilyAdapter(
        family="distilbert",
        layers=lambda base: base.transformer.layer,
        parts=_distil_parts,
        classifier_logits=_distil_logits,
        head_attrs=("n_heads",),
        ffn_tail=_distil_ffn_tail,
        attn_tail=_distil_attn_tail,
    ),
    # Qwen2 (q/k/v biases, sliding window read from the config) and Mistral share Llama's module layout and forward
    "llama": _LLAMA,
    "qwen2": replace(_LLAMA, family="qwen2"),
    "mistral": replace(_LLAMA, family="mistral"),
}


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter for a config's `model_type`, or a clear error naming the supported families."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise TPError(
            f"Unsupported model family {model_type!r}: TaskPrune knows {', '.join(sorted(ADAPTERS))}. "
            "Add a FamilyAdapter in tp_core/adapters.py to support it."
        ) from None
