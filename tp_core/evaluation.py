"""Stage 5 of the pipeline: evaluation, dense or masked (a sweep over sparsities and methods runs these as jobs:
`tp_core/sweeps.py`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import decoder
from .data import TaskData
from .gates import GateState, gated
from .model import MAX_PADDING, MultiTaskModel, with_token_progress

Progress = Callable[[float, str], None]


@dataclass
class EvalResult:
    task: str
    metric_name: str
    metric: float
    n_examples: int


@dataclass
class SweepRecord:
    """One point of a sweep; `method` is "dense" for the unpruned model. Field names are a public contract."""

    method: str
    ffn_sparsity: float
    head_sparsity: float
    kept_params: int
    total_params: int
    metric_name: str
    metric: float

    def to_dict(self) -> dict:
        return asdict(self)


def compute_metric(name: str, preds: np.ndarray, labels: Sequence) -> float:
    """The task metric named in task.json, from scikit-learn / scipy: accuracy; f1 of class 1 against the rest;
    matthews (Matthews correlation, binary or multi-class); pearson (0 when either side is constant, where the
    correlation is undefined, so a constant predictor scores like chance)."""
    y = np.asarray(labels)
    p = np.asarray(preds)
    if name == "pearson":
        from scipy.stats import pearsonr

        pf, yf = p.astype(float).ravel(), y.astype(float).ravel()
        if pf.std() == 0 or yf.std() == 0:
            return 0.0
        return float(pearsonr(pf, yf).statistic)
    if name not in ("accuracy", "f1", "matthews"):
        raise ValueError(f"unknown metric {name!r}")
    if len(y) == 0:  # scikit-learn refuses empty input: no examples, no correct ones
        return float("nan") if name == "accuracy" else 0.0
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if name == "accuracy":
        return float(accuracy_score(y, p))
    if name == "f1":  # class 1 is the positive class, whatever other labels occur
        return float(f1_score(y == 1, p == 1, zero_division=0.0))
    if len(np.union1d(y, p)) < 2:  # one class only: no correlation to measure (scikit-learn's 0, without its warning)
        return 0.0
    return float(matthews_corrcoef(y, p))


@torch.no_grad()
def predict_logits(
    model: MultiTaskModel,
    task: str,
    data: TaskData,
    gates: GateState | None = None,
    batch_size: int = 64,
    max_length: int = 128,
    progress: Progress | None = None,
    on_batch: Callable[[list[int], np.ndarray], None] | None = None,
) -> np.ndarray:
    """Logits for every example (in data order), under optional unit gates (masks); `progress(fraction, msg)` is
    called after each batch, after `on_batch(example indices, their logits)` (so a job stopped at a progress
    report keeps what it computed)."""
    out: list[np.ndarray | None] = [None] * len(data)
    batches = list(model.batches(data.texts, data.pairs, batch_size, max_length, max_padding=MAX_PADDING,
                                 task=task))
    with gated(gates or GateState()):
        for idx, batch, done, fraction in with_token_progress(batches):
            if model.kind == "causal_lm":  # the prompts' shared demonstrations computed once per batch
                logits = decoder.shared_prefix_logits(model, task, batch["input_ids"], batch["attention_mask"])
            else:
                logits = model(**batch, task=task)
            logits = logits.float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = logits[row]
            if on_batch is not None:
                on_batch(idx, logits)
            if progress is not None:
                progress(fraction, f"{done}/{len(data)} examples")
    return np.stack(out) if out else np.zeros((0, model.task_info(task).num_labels))


def predictions(logits: np.ndarray, problem: str) -> np.ndarray:
    return logits[:, 0] if problem == "regression" else logits.argmax(-1)


def evaluate(
    model: MultiTaskModel,
    task: str,
    data: TaskData,
    gates: GateState | None = None,
    batch_size: int = 64,
    max_length: int = 128,
) -> EvalResult:
    """The task's metric (from task.json) of the model, dense or under `gates`, on `data`."""
    was_training = model.training
    model.eval()
    try:
        logits = predict_logits(model, task, data, gates, batch_size, max_length)
    finally:
        model.train(was_training)
    metric = data.spec.metric
    score = compute_metric(metric, predictions(logits, data.spec.problem), data.labels)
    return EvalResult(task=data.spec.name, metric_name=metric, metric=score, n_examples=len(data))


SLICE_MIN_REMOVED = 0.05  # below this share of removed compute, slicing a copy (~0.2 s) costs more than it saves


def removed_share(masks) -> float:
    """Share of the FFN neurons and heads `masks` remove, weighted by the compute of each kind (an FFN neuron of
    a MiniLM/BERT layer costs about 2/3 of the layer's matmuls between all neurons, the heads 1/3)."""
    ffn = [np.asarray(m) for m in masks.ffn]
    heads = [np.asarray(m) for m in masks.heads]
    f = 1.0 - sum(int(m.sum()) for m in ffn) / max(1, sum(m.size for m in ffn))
    h = 1.0 - sum(int(m.sum()) for m in heads) / max(1, sum(m.size for m in heads))
    return 2.0 / 3.0 * f + 1.0 / 3.0 * h


def masked_logits(model: MultiTaskModel, task: str, data: TaskData, masks, recovery=None, batch_size: int = 32,
                  max_length: int = 128, progress: Progress | None = None,
                  on_batch: Callable[[list[int], np.ndarray], None] | None = None) -> np.ndarray:
    """Logits of `model` with `masks` (None: dense; with a `recovery.Recovery` fitted for them) applied; the model
    is not changed.
    When the masks remove at least SLICE_MIN_REMOVED of the compute, the weights are first sliced into a smaller
    copy (`pruning.prune_physically`, the export's own code: the same logits up to float rounding, ~1e-6) and that
    runs - measured 1.5x faster at 50% FFN and 1.8x at 90% on the demo model; below it, gates multiply the removed
    units by 0 on the full model."""
    from .pruning import prune_physically

    was_training = model.training
    model.eval()
    try:
        if masks is None:  # dense
            return predict_logits(model, task, data, None, batch_size, max_length, progress, on_batch)
        if removed_share(masks) >= SLICE_MIN_REMOVED:
            small = prune_physically(model, masks, task, recovery=recovery, share_unchanged=True)
            small.eval()
            return predict_logits(small, task, data, None, batch_size, max_length, progress, on_batch)
        return predict_logits(model, task, data, masks.gates(model.device, recovery=recovery), batch_size,
                              max_length, progress, on_batch)
    finally:
        model.train(was_training)


def evaluate_masked(model: MultiTaskModel, task: str, data: TaskData, masks, batch_size: int = 32,
                    max_length: int = 128, recovery=None) -> EvalResult:
    """Metric with the masked units removed (`masked_logits`: the model itself is not changed); with a
    `recovery.Recovery` fitted for `masks`, its corrections are applied too."""
    logits = masked_logits(model, task, data, masks, recovery, batch_size, max_length)
    metric = data.spec.metric
    score = compute_metric(metric, predictions(logits, data.spec.problem), data.labels)
    return EvalResult(task=data.spec.name, metric_name=metric, metric=score, n_examples=len(data))


def batch_metric(name: str, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The classification metric of every row of `preds`/`labels` (shape (..., n)) at once, from per-class counts.

    For bootstrap resamples: scikit-learn's metrics validate their input on every call, too slow for a thousand
    resamples on every curve point. The formulas are scikit-learn's (f1 of class 1 with
    zero_division=0; matthews_corrcoef's multi-class covariance form, 0 where a side is constant) and a test holds
    them equal to it on random resamples; `compute_metric` stays the reference for a single value."""
    p, y = np.asarray(preds), np.asarray(labels)
    if name == "accuracy":
        return (p == y).mean(axis=-1)
    if name == "f1":
        tp = ((p == 1) & (y == 1)).sum(axis=-1)
        fp_fn = ((p == 1) != (y == 1)).sum(axis=-1)
        return np.where(tp == 0, 0.0, 2 * tp / np.maximum(2 * tp + fp_fn, 1))
    if name == "matthews":
        n = float(p.shape[-1])
        classes = np.union1d(np.unique(p), np.unique(y))
        t_sum = np.stack([(y == c).sum(axis=-1) for c in classes], axis=-1).astype(float)
        p_sum = np.stack([(p == c).sum(axis=-1) for c in classes], axis=-1).astype(float)
        correct = (p == y).sum(axis=-1).astype(float)
        cov_ytyp = correct * n - (t_sum * p_sum).sum(axis=-1)
        cov_ypyp = n * n - (p_sum * p_sum).sum(axis=-1)
        cov_ytyt = n * n - (t_sum * t_sum).sum(axis=-1)
        den = cov_ytyt * cov_ypyp
        return np.where(den == 0, 0.0, cov_ytyp / np.sqrt(np.where(den == 0, 1.0, den)))
    raise ValueError(f"no batch form of metric {name!r}")


def metric_interval(name: str, preds: np.ndarray, labels: Sequence, confidence: float = 0.95,
                    n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap `confidence` interval of the task metric over the examples (scipy.stats.bootstrap, percentile,
    paired (prediction, label) resamples; accuracy resamples the per-example correctness). f1 and matthews are
    computed for all resamples at once (`batch_metric`); pearson resamples one at a time (at most 400)."""
    from scipy.stats import bootstrap

    p, y = np.asarray(preds), np.asarray(labels)
    if len(p) < 2:
        m = compute_metric(name, p, y) if len(p) else float("nan")
        return float(m), float(m)
    rng = np.random.default_rng(seed)
    if name == "accuracy":  # one sample: the per-example correctness
        res = bootstrap(((p == y).astype(float),), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", random_state=rng, vectorized=True, axis=-1)
    elif name in ("f1", "matthews"):
        res = bootstrap((p, y), lambda a, b, axis=-1: batch_metric(name, a, b), paired=True, vectorized=True,
                        confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                        random_state=rng, axis=-1)
    else:
        res = bootstrap((p, y), lambda a, b: compute_metric(name, a, b), paired=True, vectorized=False,
                        confidence_level=confidence, n_resamples=min(n_resamples, 400), method="percentile",
                        random_state=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not np.isfinite(lo) or not np.isfinite(hi):  # degenerate resamples (e.g. one class): the point itself
        m = compute_metric(name, p, y)
        return float(m), float(m)
    return lo, hi


def majority_baseline(data: TaskData) -> tuple[str, float]:
    """The chance reference for a chart: the metric of always predicting the most frequent label (regression:
    the mean label, whose Pearson correlation is 0). Returns (description, value)."""
    labels = np.asarray(data.labels)
    if data.spec.problem == "regression" or len(labels) == 0:
        return "constant prediction", 0.0
    values, counts = np.unique(labels, return_counts=True)
    major = values[int(np.argmax(counts))]
    preds = np.full_like(labels, major)
    name = data.spec.label_names[int(major)] if data.spec.label_names else str(major)
    return f"majority class ({name})", float(compute_metric(data.spec.metric, preds, labels))
