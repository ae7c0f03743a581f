"""evaluation.batch_metric (the bootstrap's vectorised metrics) equals scikit-learn on random resamples."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from tp_core.evaluation import batch_metric, metric_interval


@pytest.mark.parametrize("n_classes", [2, 3, 6])
def test_batch_metric_equals_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, (50, 40))
    p = np.where(rng.random((50, 40)) < 0.6, y, rng.integers(0, n_classes, (50, 40)))
    p[0] = 1  # a constant prediction: matthews is 0 there, as in scikit-learn
    p[1], y[1] = 0, 0  # both constant, no positive class: f1 0 (zero_division=0)
    f1 = batch_metric("f1", p, y)
    mcc = batch_metric("matthews", p, y)
    for i in range(len(y)):
        assert f1[i] == pytest.approx(f1_score(y[i] == 1, p[i] == 1, zero_division=0.0), abs=1e-12)
        assert mcc[i] == pytest.approx(matthews_corrcoef(y[i], p[i]), abs=1e-12)
    assert batch_metric("accuracy", p, y) == pytest.approx((p == y).mean(axis=1))


def test_interval_brackets_the_metric():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.8, y, 1 - y)
    for name in ("accuracy", "f1", "matthews"):
        lo, hi = metric_interval(name, p, y)
        point = float(batch_metric(name, p, y))
        assert lo < point < hi
