"""Looking at single units and at how tasks share units: the logic behind the app's heatmaps and neuron inspector.

* `UnitRef`              one FFN neuron (`kind="ffn"`) or attention head (`kind="head"`) of one layer.
* `unit_score_table`     that unit's score, rank and percentile for every task that has scores.
* `top_activating`       validation examples where the unit is most active, with its activation on every token
                         (FFN: the intermediate activation value; head: the L2 norm of the head's output vector).
* `unit_ablation`        the metric change when that unit alone is removed (masked evaluation).
* `overlap_matrix`       kept units shared between tasks at a sparsity (counts and Jaccard index).
* `ig_path`              one FFN neuron's integrated-gradients integrand along alpha on one example, and the score
                         each quadrature rule and step count makes of it (the guided tour's first step).
* `ffn_matrix`, `kept_share_per_layer` – matrices for the heatmaps.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch

from .attribution import AttributionConfig, UnitScores, _aggregate_tokens, _alphas, _LayerInputs, _target
from .data import TaskData
from .errors import TPError
from .evaluation import evaluate, evaluate_masked
from .gates import GateState, gated
from .masks import UnitMasks, overlap
from .model import MultiTaskModel, UnitShape


@dataclass(frozen=True)
class UnitRef:
    kind: str  # "ffn" | "head"
    layer: int
    index: int

    def label(self) -> str:
        return f"{'FFN neuron' if self.kind == 'ffn' else 'head'} {self.index} of layer {self.layer}"

    def check(self, shape: UnitShape) -> UnitRef:
        if self.kind not in ("ffn", "head"):
            raise TPError(f"Unit kind must be 'ffn' or 'head', got {self.kind!r}.")
        if not 0 <= self.layer < shape.num_layers:
            raise TPError(f"Layer {self.layer} does not exist; the model has layers 0..{shape.num_layers - 1}.")
        n = (shape.ffn if self.kind == "ffn" else shape.heads)[self.layer]
        if not 0 <= self.index < n:
            raise TPError(f"Layer {self.layer} has {n} {'FFN neurons' if self.kind == 'ffn' else 'heads'}; "
                          f"index {self.index} is out of range.")
        return self


@dataclass
class TokenActivations:
    """One example with the unit's activation on each of its real tokens."""

    row: int
    text: str
    pair: str | None
    label: object
    tokens: list[str]
    values: list[float]

    @property
    def peak(self) -> float:
        return max(self.values) if self.values else 0.0


def _unit_scores(scores: UnitScores, unit: UnitRef) -> np.ndarray | None:
    part = scores.ffn if unit.kind == "ffn" else scores.heads
    return None if part is None else np.asarray(part[unit.layer], dtype=np.float64)


def unit_score_table(scores_by_task: dict[str, UnitScores], unit: UnitRef) -> list[dict]:
    """Per task: the unit's score, its rank among all units of its kind (1 = most important) and percentile."""
    rows = []
    for task, scores in scores_by_task.items():
        layer_scores = _unit_scores(scores, unit)
        if layer_scores is None or unit.index >= len(layer_scores):
            continue
        part = scores.ffn if unit.kind == "ffn" else scores.heads
        flat = np.concatenate([np.asarray(a, dtype=np.float64) for a in part])
        value = float(layer_scores[unit.index])
        rank = int((flat > value).sum()) + 1
        rows.append({"task": task, "method": scores.method, "score": value, "rank": rank, "of": int(flat.size),
                     "percentile": 100.0 * float((flat <= value).mean())})
    return rows


@torch.no_grad()
def top_activating(model: MultiTaskModel, task: str, data: TaskData, unit: UnitRef, k: int = 5,
                   batch_size: int = 32, max_length: int = 128) -> list[TokenActivations]:
    """The `k` examples of `data` with the highest peak activation of `unit`, with per-token activations."""
    unit.check(model.unit_shape())
    model.resolve_task(task)
    collected: list[TokenActivations] = []
    holder: dict[str, torch.Tensor] = {}

    def ffn_fn(layer, x):
        if layer == unit.layer:
            holder["a"] = x[..., unit.index].detach().float()
        return x

    def heads_fn(layer, xh):
        if layer == unit.layer:
            holder["a"] = xh[:, :, unit.index, :].detach().float().norm(dim=-1)
        return xh

    state = GateState(ffn_fn=ffn_fn) if unit.kind == "ffn" else GateState(heads_fn=heads_fn)
    with gated(state):
        for idx, batch in model.batches(data.texts, data.pairs, batch_size, max_length, task=task):
            holder.clear()
            model(**batch, task=task)
            acts = holder["a"].cpu().numpy()
            mask = batch["attention_mask"].cpu().numpy()
            ids = batch["input_ids"].cpu().numpy()
            for row, i in enumerate(idx):
                n = int(mask[row].sum())
                tokens = model.tokenizer.convert_ids_to_tokens(ids[row, :n].tolist())
                collected.append(TokenActivations(
                    row=data.rows[i], text=data.texts[i], pair=None if data.pairs is None else data.pairs[i],
                    label=data.labels[i], tokens=list(tokens), values=[float(v) for v in acts[row, :n]]))
    collected.sort(key=lambda t: -t.peak)
    return collected[:k]


def single_unit_mask(shape: UnitShape, unit: UnitRef) -> UnitMasks:
    """Dense masks except `unit`, which is removed."""
    unit.check(shape)
    masks = UnitMasks.dense(shape)
    (masks.ffn if unit.kind == "ffn" else masks.heads)[unit.layer][unit.index] = False
    return masks


def unit_ablation(model: MultiTaskModel, task: str, data: TaskData, unit: UnitRef,
                  dense_metric: float | None = None) -> dict:
    """Metric with only `unit` removed, against the dense metric (`dense_metric` may be passed when known)."""
    masks = single_unit_mask(model.unit_shape(), unit)
    if dense_metric is None:
        dense_metric = evaluate(model, task, data).metric
    res = evaluate_masked(model, task, data, masks)
    return {"metric_name": res.metric_name, "dense": float(dense_metric), "ablated": float(res.metric),
            "delta": float(res.metric - dense_metric), "n": res.n_examples}


def overlap_matrix(masks_by_task: dict[str, UnitMasks], units: str = "ffn") -> dict:
    """Kept units shared by every pair of tasks: `shared[i][j]` counts, `jaccard[i][j]` in [0, 1],
    `kept[i]` units kept by task i. `units` is "ffn" or "heads"."""
    if units not in ("ffn", "heads"):
        raise TPError(f"units must be 'ffn' or 'heads', got {units!r}.")
    tasks = list(masks_by_task)
    n = len(tasks)
    shared = np.zeros((n, n), dtype=int)
    jac = np.zeros((n, n))
    for i, a in enumerate(tasks):
        for j, b in enumerate(tasks):
            o = overlap(masks_by_task[a], masks_by_task[b])[units]
            shared[i, j], jac[i, j] = o["shared"], o["jaccard"]
    kept = [int(shared[i, i]) for i in range(n)]
    return {"tasks": tasks, "shared": shared.tolist(), "jaccard": jac.tolist(), "kept": kept, "units": units}


def ffn_matrix(scores: UnitScores, order: str = "sorted") -> tuple[np.ndarray, np.ndarray]:
    """(values, neuron ids), each layers x max-width, NaN / -1 padded where a layer has fewer neurons.
    `order="sorted"`: each layer's neurons from most to least important (readable at a glance);
    `order="index"`: neurons in their original order."""
    if scores.ffn is None:
        raise TPError("These scores have no FFN-neuron scores (they were computed for heads only).")
    if order not in ("sorted", "index"):
        raise TPError(f"order must be 'sorted' or 'index', got {order!r}.")
    width = max(len(s) for s in scores.ffn)
    vals = np.full((len(scores.ffn), width), np.nan)
    ids = np.full((len(scores.ffn), width), -1, dtype=int)
    for l, s in enumerate(scores.ffn):
        s = np.asarray(s, dtype=np.float64)
        o = np.argsort(-s, kind="stable") if order == "sorted" else np.arange(len(s))
        vals[l, : len(s)] = s[o]
        ids[l, : len(s)] = o
    return vals, ids


def head_matrix(scores: UnitScores) -> np.ndarray:
    """layers x heads scores (NaN padded)."""
    if scores.heads is None:
        raise TPError("These scores have no head scores (they were computed for FFN neurons only).")
    width = max(len(s) for s in scores.heads)
    out = np.full((len(scores.heads), width), np.nan)
    for l, s in enumerate(scores.heads):
        out[l, : len(s)] = s
    return out


def kept_share_per_layer(masks: UnitMasks) -> dict[str, list[float]]:
    """Fraction of FFN neurons and of heads kept in each layer."""
    return {"ffn": [float(m.mean()) for m in masks.ffn], "heads": [float(m.mean()) for m in masks.heads]}


def shade(values: Sequence[float]) -> list[float]:
    """Per-token activations scaled to [0, 1] for shading (positive part, relative to the example's max)."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0, None)
    top = v.max() if v.size else 0.0
    return (v / top).tolist() if top > 0 else [0.0] * len(v)


# ----- one neuron's integrated-gradients path --------------------------------------------------------------------
IG_STEP_CHOICES = (2, 4, 8, 16, 32)  # step counts the tour's slider offers (the session's own is added)
IG_RULES = ("riemann_middle", "gausslegendre")  # the quadrature rules attribution.AttributionConfig.riemann takes


@dataclass
class IGPath:
    """One FFN neuron's integrated gradients on one example. `integrand[j]` is f(alphas[j]): the sum over the
    example's real tokens of a_t * dF/ds_t at s = alpha * a, with the neuron's whole layer scaled by alpha (as the
    scores do), so the area under f from 0 to 1 is the neuron's signed attribution. `rules[rule][steps]` holds that
    rule's nodes, weights and f at the nodes, their weighted sum (`area`, the estimate of the area) and the score
    the library makes of the same gradients (`score`: |area| with the default abs_sum aggregation)."""

    unit: UnitRef
    label: int
    target: str
    aggregation: str
    alphas: list[float]
    integrand: list[float]
    rules: dict[str, dict[int, dict]]

    def area(self, rule: str, steps: int) -> float:
        return self.rules[rule][steps]["area"]

    def score(self, rule: str, steps: int) -> float:
        return self.rules[rule][steps]["score"]


def _neuron_gradients(model: MultiTaskModel, task: str, data: TaskData, unit: UnitRef, cfg: AttributionConfig,
                      alphas: list[float]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(the neuron's activation per real token (T,), dF/ds at each alpha per token (A, T), the target label) on the
    one example of `data`, through the same resumed forward as the ig scores (attribution._LayerInputs)."""
    (idx, batch), = list(model.batches(data.texts, data.pairs, 1, cfg.max_length, task=task))
    inputs = _LayerInputs(model, batch, task)
    if model.task_info(task).num_labels == 1:
        label = 0
    elif cfg.labels == "gold":
        label = int(data.labels[0])
    else:
        label = int(inputs.logits.argmax(-1)[0])
    y = torch.tensor([label], device=model.device)
    real = inputs.mask[0].bool()
    chunk = max(1, cfg.internal_batch)
    grads = []
    for c in range(0, len(alphas), chunk):
        alpha = torch.tensor(alphas[c:c + chunk], device=model.device)
        k = len(alpha)
        with torch.enable_grad():
            logits, leaf = inputs.ffn_scaled(unit.layer, alpha, k, task)
            tgt = _target(logits, y.repeat(k), cfg.target).sum()
        g = torch.autograd.grad(tgt, leaf)[0]
        grads.append(g[:, real, unit.index])
    act = inputs.ffn_act[unit.layer][0, real, unit.index]
    return act, torch.cat(grads), label


def ig_path(model: MultiTaskModel, task: str, data: TaskData, unit: UnitRef, cfg: AttributionConfig,
            steps: tuple[int, ...] = IG_STEP_CHOICES, rules: tuple[str, ...] = IG_RULES,
            points: int = 33) -> IGPath:
    """The integrand of `unit` (an FFN neuron) along alpha on the one example of `data`, on `points` evenly spaced
    alphas from 0 to 1, and for each rule and step count (Riemann rules: two or more) its quadrature: the area
    estimate and the score `attribution.attribute` gives this neuron on this example with that rule and step count
    (same target, labels and aggregation as `cfg`). One pass of the scaled forward over every alpha needed, in
    chunks of `cfg.internal_batch` rows."""
    if unit.kind != "ffn":
        raise TPError("The integrated-gradients path is drawn for FFN neurons.")
    unit.check(model.unit_shape())
    model.resolve_task(task)
    if len(data) != 1:
        raise TPError(f"The path is drawn for one example, got {len(data)}.")
    # (Captum's Riemann rules need two steps or more; a rule it refuses is left out)
    nodes = {(r, m): _alphas(r, m) for r in rules for m in sorted(set(steps)) if m > 1 or r == "gausslegendre"}
    grid = [j / (points - 1) for j in range(points)]
    every = sorted(set(grid) | {a for _, al in nodes.values() for a in al})
    where = {a: i for i, a in enumerate(every)}
    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        act, grads, label = _neuron_gradients(model, task, data, unit, cfg, every)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    f = (grads * act).sum(1)  # the integrand at every alpha
    out: dict[str, dict[int, dict]] = {r: {} for r in rules}
    for (r, m), (sizes, al) in nodes.items():
        rows = [where[a] for a in al]
        w = torch.tensor(sizes, dtype=grads.dtype, device=grads.device)
        grad_sum = (grads[rows] * w.view(-1, 1)).sum(0)  # as attribution._ig_batch sums the weighted gradients
        score = _aggregate_tokens((act * grad_sum).view(1, -1, 1), torch.ones(1, len(act), device=act.device),
                                 cfg.aggregation)
        out[r][m] = {"alphas": list(al), "weights": list(sizes), "values": f[rows].tolist(),
                     "area": float((f[rows] * w).sum()), "score": float(score.double().sum())}
    return IGPath(unit, label, cfg.target, cfg.aggregation, grid, f[[where[a] for a in grid]].tolist(), out)
