"""Where each model family keeps its FFN and attention: the only architecture-specific module.

A unit is always "one input feature of a Linear layer":
* FFN neuron i of layer l = input feature i of the FFN output projection (`ffn_out`);
* head h of layer l = input features [h*d, (h+1)*d) of the attention output projection (`attn_out`).
So one forward-pre-hook on those two Linears masks, gates or records every unit, and physical pruning slices
`ffn_in` rows + `ffn_out` columns, and `q/k/v` rows + `attn_out` columns.
Adding a family = one `FamilyAdapter` entry below.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from .errors import TPError


@dataclass(frozen=True)
class LayerParts:
    """The Linear layers of one transformer block that hold its units."""

    ffn_in: nn.Linear
    ffn_out: nn.Linear
    ffn_act: nn.Module  # module whose output is the FFN activation (Captum's layer)
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    attention: nn.Module  # module holding the head-count attributes
    num_heads: int
    head_dim: int


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
