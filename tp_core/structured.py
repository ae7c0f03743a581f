"""The structured criteria of the LLM pruning field, as attribution methods: Wanda-sp and FLAP's fluctuation metric.

Both score a unit through the input channels of its output projection (`ffn_out`: BERT `output.dense`, Llama
`down_proj`; `attn_out`: BERT `attention.output.dense`, Llama `o_proj`), from the weights and from that projection's
input X over calibration tokens. The calibration tokens are the real tokens (padding excluded) of the task's N
scoring examples, as for every data method; labels are not used. For a decoder they are the rendered prompt's tokens
(template, demonstrations and text). A head unit's channels are its slice of `attn_out`'s input; under grouped-query
attention that is a whole key/value group (adapters.py), so a group's score is the sum over its query heads'
channels, which is FLAP's per-head sum extended to a group.

Reference: An et al., "Fluctuation-based Adaptive Structured Pruning for Large Language Models", AAAI 2024, code
`CASIA-LMC-Lab/FLAP`: `lib/prune.py` (`prune_wanda_sp`, `prune_flap`, the `metrics` table) and `lib/layerwrapper.py`
(`WrappedGPT.add_batch`, `BiasGPT.add_batch`).

* `wanda_sp` (`prune_wanda_sp`): `score_j = mean_i |W_ij| * sqrt(sum_t X_tj^2 / N)`, i.e. `WrappedGPT.scaler_row`
  (the squared input norm averaged over the N calibration samples) under the square root and the mean over output
  rows; a head: the sum of its channels' scores (`W_metric.mean(axis=0).reshape(-1, head_dim).sum(dim=1)`).
  Wanda's `|W_ij| * ||X_j||_2` summed over i, up to a factor common to every unit of the model.
* `flap` (the `WIFV` metric, FLAP's default): `score_j = var_t(X_j) * sum_i W_ij^2`, the unbiased sample variance of
  channel j over the calibration tokens times the squared column norm. FLAP's `BiasGPT` estimates the fluctuation with
  a running update per 2048-token sample, which comes to about the sequence length times this variance (a factor
  common to every channel): we compute the variance exactly, in one pass of float64 sums. For attention FLAP squares
  the channel metric before it aggregates heads (`W_metric = metrics[...](...) ** 2`, then `reshape(-1, 128)` and a
  per-head sum in its uniform structures): a head unit's score is the sum of its channels' squared metrics.

What of FLAP is left to our own stages: its global allocation standardises each layer's scores (per-layer mean and
standard deviation) and ranks heads and neurons together with a parameter weight per unit; here the scores are the raw
per-unit metrics and masks.py allocates them as for any method (global or per-layer, FFN and head sparsities apart).
FLAP's bias compensation (`compress`: `b' = W[:, removed] @ mean(X_removed)`) is recovery.py's `bias` level; it needs
output projections with a bias (BERT), which Llama's `down_proj` / `o_proj` do not have, so there `lstsq` or `scale`.
"""
from __future__ import annotations

import torch

from .gates import GateState, gated

STRUCTURED = ("wanda_sp", "flap")


def channel_sums(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C) projection inputs -> (3, C) float64 [token count, sum x, sum x^2] over the real tokens of `mask`."""
    rows = x.reshape(*x.shape[:2], -1)[mask.bool()].double()
    count = torch.full((rows.shape[1],), float(rows.shape[0]), dtype=torch.float64, device=rows.device)
    return torch.stack([count, rows.sum(0), (rows * rows).sum(0)])


def stats_batch(model, task: str, batch: dict, want_ffn: bool, want_heads: bool):
    """Per layer, the channel sums of the FFN and attention output projections' inputs on one batch, recorded by the
    model's gate hooks in this thread's context (gates.py), as the `activation` method records its activations."""
    L = model.num_layers
    mask = batch["attention_mask"]
    ffn_out, head_out = [None] * L, [None] * L

    def ffn_fn(layer, x):
        ffn_out[layer] = channel_sums(x, mask)
        return x

    def heads_fn(layer, xh):  # (B, T, H, d): the heads' channels in attn_out's input order
        head_out[layer] = channel_sums(xh, mask)
        return xh

    with torch.no_grad(), gated(GateState(ffn_fn=ffn_fn if want_ffn else None,
                                          heads_fn=heads_fn if want_heads else None)):
        model(**batch, task=task)
    return ffn_out, head_out


def channel_metric(method: str, weight: torch.Tensor, sums: torch.Tensor, n_examples: int) -> torch.Tensor:
    """Per input channel j of a projection with `weight` (out, C), from its summed input statistics (3, C)."""
    w = weight.detach().double().cpu()
    count, s1, s2 = sums.double().cpu()
    if method == "wanda_sp":
        return w.abs().mean(0) * torch.sqrt(s2 / max(n_examples, 1))
    if method == "flap":
        variance = (s2 - s1 * s1 / count.clamp(min=1)).clamp(min=0) / (count - 1).clamp(min=1)
        return variance * (w * w).sum(0)
    raise ValueError(method)


def unit_scores(method: str, model, ffn_sums: list | None, head_sums: list | None, n_examples: int):
    """(ffn, heads) per-layer score arrays from the per-layer channel sums over `n_examples` examples (None: those
    units were not scored)."""
    ffn, heads = [], []
    for layer in range(model.num_layers):
        p = model.layer_parts(layer)
        if ffn_sums is not None:
            ffn.append(channel_metric(method, p.ffn_out.weight, ffn_sums[layer], n_examples).numpy())
        if head_sums is not None:
            m = channel_metric(method, p.attn_out.weight, head_sums[layer], n_examples)
            if method == "flap":  # FLAP squares the attention channel metric before the per-head sum
                m = m * m
            heads.append(m.view(p.num_heads, p.head_dim).sum(1).numpy())
    return (ffn if ffn_sums is not None else None), (heads if head_sums is not None else None)
