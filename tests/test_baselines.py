"""The majority-class baseline and the dense model's margin over it (tp_core/baselines.py), on synthetic
predictions and on a tiny random model's dense point (where every task is at chance)."""
import json

import numpy as np
from sklearn.metrics import f1_score

from tp_core import work
from tp_core.baselines import majority_margin, most_frequent, task_margin
from tp_core.data import get_task, load_split


def _labels(n_pos: int, n_neg: int) -> np.ndarray:
    return np.array([1] * n_pos + [0] * n_neg)


def test_a_good_model_clears_the_majority_baseline():
    y = _labels(140, 60)
    preds = y.copy()
    preds[:10] = 0  # 95% accuracy
    m = majority_margin("accuracy", preds, y, major=1, label_names=("neg", "pos"))
    assert m.majority == 0.7 and m.majority_label == "pos"
    assert abs(m.margin - 0.25) < 1e-9 and 0 < m.lo <= m.margin <= m.hi
    assert m.dense_lo <= m.dense <= m.dense_hi and m.n == 200
    assert not m.near_majority


def test_always_answering_the_majority_is_flagged():
    y = _labels(140, 60)
    m = majority_margin("accuracy", np.ones_like(y), y, major=1)
    assert m.margin == 0 and m.lo == 0 and m.hi == 0 and m.near_majority


def test_chance_predictions_are_flagged_and_a_worse_model_has_a_negative_margin():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    m = majority_margin("matthews", rng.integers(0, 2, 300), y, major=most_frequent(y))
    assert m.majority == 0.0 and m.lo <= 0.0 <= m.hi and m.near_majority
    wrong = majority_margin("accuracy", 1 - y, y, major=most_frequent(y))
    assert wrong.margin < 0 and wrong.hi < 0 and wrong.near_majority


def test_f1_reports_the_always_positive_f1():
    y = _labels(120, 80)
    preds = y.copy()
    preds[120:150] = 1  # 30 false positives
    m = majority_margin("f1", preds, y, major=0)
    assert m.always_positive == f1_score(y, np.ones_like(y))
    assert m.majority == 0.0 and m.margin == m.dense  # answering the negative class never finds a positive
    assert majority_margin("accuracy", preds, y, major=1).always_positive is None


def test_most_frequent_breaks_ties_towards_the_smallest_label():
    assert most_frequent([2, 1, 2, 1, 0]) == 1 and most_frequent([3, 3, 0]) == 3


def test_task_majority_comes_from_the_train_split():
    spec = get_task("rte")
    train = load_split(spec, "train")
    val = load_split(spec, "validation", limit=100)
    m = task_margin(spec, np.asarray(val.labels), val.labels)
    assert m.majority_from == "train split"
    assert m.majority_label == spec.label_names[most_frequent(train.labels)]
    assert m.majority == np.mean(np.asarray(val.labels) == most_frequent(train.labels))
    assert m.dense == 1.0 and not m.near_majority


def test_dense_point_carries_its_baseline_and_an_old_cache_entry_gets_it(tiny):
    model, ref = tiny
    data = load_split("sst2", "validation", limit=120)
    res = work.point(lambda f, m: None, ref, "sst2", None, None, data)
    m = res.margin()
    assert m is not None and m.metric_name == "accuracy" and m.n == 120 and m.dense == res.record.metric
    assert m.majority == np.mean(np.asarray(data.labels) == most_frequent(load_split("sst2", "train").labels))
    assert m.near_majority  # a random tiny model is at chance
    # a dense point cached before baselines existed: completed from its stored predictions on the next ask
    path = work._point_cache(work._task_parts(ref, model, "sst2"), "dense", None, data)
    doc = json.loads(path.read_text())
    doc.pop("baseline")
    path.write_text(json.dumps(doc))
    messages = []
    again = work.point(lambda f, msg: messages.append(msg), ref, "sst2", None, None, data)
    assert again.baseline == res.baseline and any("evaluating 0 examples" in msg for msg in messages)


def test_demo_recipe_leaves_out_tasks_with_a_reason_and_names_its_folder():
    from tp_core.demo import LEFT_OUT_REASONS, RECIPE_DIGEST, DemoConfig, demo_tasks, left_out_tasks, recipe_digest
    from tp_core.paths import DEMO_FOLDER, demo_path

    cfg = DemoConfig.for_build(False)
    assert recipe_digest(cfg) == RECIPE_DIGEST, "the demo recipe changed: bump paths.DEMO_FOLDER and RECIPE_DIGEST"
    assert demo_path(False).name == DEMO_FOLDER != "demo" and demo_path(True).name == "demo-quick"
    left = left_out_tasks(cfg)
    assert set(left) == set(LEFT_OUT_REASONS) and all(left[t] == LEFT_OUT_REASONS[t] for t in left)
    assert not set(left) & {t.name for t in demo_tasks(cfg)}
    assert left_out_tasks(DemoConfig.for_build(True))["rte"]  # the quick demo trains two tasks only


def test_demo_goals_need_a_clear_margin_and_the_issue_bars():
    from tp_core.baselines import MajorityMargin
    from tp_core.demo import meets_goal

    def m(dense, majority, lo, positive=None, metric="accuracy"):
        return MajorityMargin(metric, dense, dense - 0.02, dense + 0.02, majority, "x", "train split", positive,
                              dense - majority, lo, dense - majority + 0.05, 300, lo <= 0)

    assert meets_goal("sst2", m(0.86, 0.51, 0.3)) and not meets_goal("sst2", m(0.53, 0.51, -0.02))
    assert not meets_goal("rte", m(0.57, 0.50, 0.01)) and meets_goal("rte", m(0.60, 0.50, 0.03))
    assert not meets_goal("mrpc", m(0.82, 0.80, 0.01, positive=0.80, metric="f1"))
    assert meets_goal("mrpc", m(0.84, 0.80, 0.02, positive=0.80, metric="f1"))


def test_epoch_order_repeats_whole_shuffled_passes():
    import random

    from tp_core.demo import _epoch_order

    order = _epoch_order(10, 2.5, random.Random(0))
    assert len(order) == 25 and sorted(order[:10]) == list(range(10)) == sorted(order[10:20])
    assert len(set(order[20:])) == 5 and _epoch_order(10, 0.5, random.Random(0)) == order[:5]
