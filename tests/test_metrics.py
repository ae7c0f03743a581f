"""evaluation.compute_metric (scikit-learn / scipy) gives the values of the textbook formulas it replaced, on random
binary predictions, and a multi-class Matthews correlation."""
import math

import numpy as np
import pytest

from tp_core.evaluation import compute_metric, metric_interval


def _formulas(name: str, p: np.ndarray, y: np.ndarray) -> float:
    """The hand-written binary formulas compute_metric used before scikit-learn (the reference)."""
    tp = float(((p == 1) & (y == 1)).sum())
    fp = float(((p == 1) & (y != 1)).sum())
    fn = float(((p != 1) & (y == 1)).sum())
    tn = float(((p != 1) & (y != 1)).sum())
    if name == "accuracy":
        return float((p == y).mean())
    if name == "f1":
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    if name == "matthews":  # the positive class does not change MCC; here class 1
        den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return 0.0 if den == 0 else (tp * tn - fp * fn) / den
    pf, yf = p.astype(float), y.astype(float)
    return 0.0 if pf.std() == 0 or yf.std() == 0 else float(np.corrcoef(pf, yf)[0, 1])


@pytest.mark.parametrize("name", ["accuracy", "f1", "matthews"])
def test_binary_metrics_equal_the_old_formulas(name):
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 60))
        y = rng.integers(0, 2, n)
        # mostly noisy copies of the labels, sometimes constant predictions (the degenerate cases)
        p = np.where(rng.random(n) < rng.random(), y, rng.integers(0, 2, n)) if trial % 10 else np.full(n, trial % 20)
        p = np.clip(p, 0, 1)
        assert compute_metric(name, p, y) == pytest.approx(_formulas(name, p, y), abs=1e-12), (trial, p, y)


def test_pearson_equals_the_old_formula_and_is_zero_for_a_constant():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(2, 60))
        y = rng.normal(size=n)
        p = y + rng.normal(scale=rng.random() * 3, size=n)
        assert compute_metric("pearson", p, y) == pytest.approx(_formulas("pearson", p, y), abs=1e-12)
    assert compute_metric("pearson", np.ones(5), np.arange(5)) == 0.0


def test_f1_counts_class_1_against_every_other_label():
    y, p = np.array([0, 1, 2, 1, 2]), np.array([1, 1, 2, 0, 0])
    assert compute_metric("f1", p, y) == pytest.approx(_formulas("f1", p, y))  # tp 1, fp 1, fn 1: 0.5


def test_multiclass_matthews():
    # confusion matrix [[2, 1, 0], [0, 2, 1], [1, 0, 2]] (rows: true class): Gorodkin's R_K by hand
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    p = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0])
    c, s = 6, 9
    t = np.bincount(y, minlength=3)
    q = np.bincount(p, minlength=3)
    expected = (c * s - t @ q) / math.sqrt((s * s - q @ q) * (s * s - t @ t))
    assert compute_metric("matthews", p, y) == pytest.approx(expected)  # 0.5
    assert compute_metric("matthews", y, y) == pytest.approx(1.0)


def test_empty_input_and_unknown_names():
    assert compute_metric("f1", np.array([]), np.array([])) == 0.0
    assert compute_metric("matthews", np.array([]), np.array([])) == 0.0
    with pytest.raises(ValueError):
        compute_metric("bleu", np.array([1]), np.array([1]))


def test_bootstrap_interval_brackets_the_metric():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    lo, hi = metric_interval("matthews", p, y, n_resamples=100)
    assert lo <= compute_metric("matthews", p, y) <= hi
