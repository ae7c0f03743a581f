"""The chance reference of a task: the metric of always answering the train split's most frequent label, on the
same examples as the model, and the model's margin over it with a paired bootstrap interval.

A task whose margin interval does not exclude zero teaches nothing when pruned: its curves are noise around
chance. The dense point job computes this beside the dense metric (`work.point`), so it is cached with it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from collections.abc import Sequence

import numpy as np

from .data import TaskSpec, load_split
from .errors import TPError
from .evaluation import batch_metric, compute_metric, metric_interval


@dataclass(frozen=True)
class MajorityMargin:
    """The dense metric with its interval, the majority baseline on the same examples and the margin between them.
    `always_positive` is the F1 of always answering class 1 (F1 tasks only: there the usual chance reference)."""

    metric_name: str
    dense: float
    dense_lo: float
    dense_hi: float
    majority: float
    majority_label: str
    majority_from: str  # "train split" or "evaluated examples" (a task without a train split)
    always_positive: float | None
    margin: float
    lo: float
    hi: float
    n: int
    near_majority: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> MajorityMargin:
        return MajorityMargin(**d)

    def note(self, task: str) -> str:
        """One sentence for a user: why a near-majority task's pruning curves say little."""
        return (f"{task}: the dense {self.metric_name} {self.dense:.3f} is not clearly above always answering "
                f"“{self.majority_label}” ({self.majority:.3f}; margin {self.margin:+.3f}, 95% interval "
                f"{self.lo:+.3f} to {self.hi:+.3f}), so its pruning curves are mostly noise around chance.")


def most_frequent(labels: Sequence) -> int:
    """The most frequent label (the smallest one on a tie, so the choice does not depend on example order)."""
    counts = Counter(int(x) for x in labels)
    top = max(counts.values())
    return min(k for k, v in counts.items() if v == top)


def majority_class(spec: TaskSpec, eval_labels: Sequence) -> tuple[int, str]:
    """The label a majority-class predictor answers: the train split's most frequent one when the task has a
    train split (what a model could learn without reading the text), else the evaluated examples' own."""
    if "train" in getattr(spec, "splits", ()):
        try:
            train = load_split(spec, "train")
            if len(train):
                return most_frequent(train.labels), "train split"
        except TPError:
            pass
    return most_frequent(eval_labels), "evaluated examples"


def majority_margin(metric: str, preds: Sequence, labels: Sequence, major: int, label_names: Sequence[str] = (),
                    majority_from: str = "train split", confidence: float = 0.95, n_resamples: int = 1000,
                    seed: int = 0) -> MajorityMargin:
    """Dense metric of `preds` against always answering `major`, on the same examples, with bootstrap intervals.

    The margin's interval resamples examples once for both predictors (paired: they face the same examples), so
    the examples' own difficulty cancels out. A regression task's constant predictor scores 0 (Pearson), so its
    margin is the dense metric itself."""
    from scipy.stats import bootstrap

    p, y = np.asarray(preds), np.asarray(labels)
    dense = compute_metric(metric, p, y)
    d_lo, d_hi = metric_interval(metric, p, y, confidence, n_resamples, seed)
    const = np.full_like(y, major) if metric != "pearson" else None
    majority = compute_metric(metric, const, y) if const is not None else 0.0
    positive = compute_metric("f1", np.ones_like(y), y) if metric == "f1" else None
    margin = dense - majority
    if metric == "pearson" or len(p) < 2:
        lo, hi = (d_lo, d_hi) if metric == "pearson" else (margin, margin)
    else:
        def diff(a, b, axis=-1):  # noqa: ARG001  (scipy passes axis; the resamples are on the last one)
            return batch_metric(metric, a, b) - batch_metric(metric, np.full_like(b, major), b)

        res = bootstrap((p, y), diff, paired=True, vectorized=True, confidence_level=confidence,
                        n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed),
                        axis=-1)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(lo) and np.isfinite(hi)):  # every resample alike: the point itself
            lo, hi = margin, margin
    name = label_names[major] if 0 <= major < len(label_names) else str(major)
    return MajorityMargin(metric, float(dense), float(d_lo), float(d_hi), float(majority), name, majority_from,
                          None if positive is None else float(positive), float(margin), float(lo), float(hi),
                          int(len(p)), bool(lo <= 0.0 or margin <= 0.0))


def task_margin(spec: TaskSpec, preds: Sequence, labels: Sequence) -> MajorityMargin | None:
    """`majority_margin` for a task's dense predictions (majority from its train split); None for regression,
    which has no majority class (its chance reference is a constant prediction, Pearson 0)."""
    if spec.problem == "regression" or len(labels) == 0:
        return None
    major, source = majority_class(spec, labels)
    return majority_margin(spec.metric, preds, labels, major, spec.label_names, source)
