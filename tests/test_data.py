"""Data stage: the bundle registry, splits, user files with column mappings, label validation, data folder errors."""
import json

import pytest

from tp_core.data import get_task, list_tasks, load_file, load_split
from tp_core.errors import TPError
from tp_core.paths import data_dir


def test_registry_reads_task_json():
    names = [t.name for t in list_tasks()]
    assert {"sst2", "ag_news", "stsb", "sentiment_sentences"} <= set(names)
    sst2 = get_task("sst2")
    assert sst2.label_names == ("negative", "positive") and sst2.metric == "accuracy" and sst2.trainable
    assert not get_task("qnli").trainable and get_task("qnli").scoring_split == "validation"
    assert get_task("stsb").problem == "regression"


def test_load_split_pairs_limit_and_domains():
    rte = load_split("rte", "validation")
    assert len(rte) == 277 and rte.pairs is not None and set(rte.labels) <= {0, 1}
    sub = load_split("sst2", "validation", limit=50, seed=1)
    assert len(sub) == 50 and sub.rows == sorted(sub.rows)
    assert load_split("sst2", "validation", limit=50, seed=1).rows == sub.rows  # seeded
    ood = load_split("sentiment_sentences", "validation")
    assert [len(ood.domain(d)) for d in ("yelp", "amazon", "imdb")] == [1000, 1000, 1000]


def test_unknown_task_and_split_are_clear_errors():
    with pytest.raises(TPError, match="Unknown task 'nope'.*Known tasks"):
        get_task("nope")
    with pytest.raises(TPError, match="no 'train' split"):
        load_split("qnli", "train")


def test_data_dir_env_and_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("TP_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(TPError, match="TP_DATA_DIR"):
        data_dir()
    task = tmp_path / "mini"
    task.mkdir()
    (task / "task.json").write_text(json.dumps({"name": "mini", "label_names": ["a", "b"], "metric": "accuracy"}))
    (task / "validation.jsonl").write_text('{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n')
    monkeypatch.setenv("TP_DATA_DIR", str(tmp_path))
    assert [t.name for t in list_tasks()] == ["mini"]
    assert load_split("mini").labels == [1, 0]
    # splits are kept in memory by file identity: an edited file is read afresh, an unchanged one is not re-parsed
    again = load_split("mini")
    assert again is load_split("mini")
    (task / "validation.jsonl").write_text('{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n'
                                           '{"text": "z", "label": 1}\n')
    edited = load_split("mini")
    assert edited.texts == ["x", "y", "z"] and edited.labels == [1, 0, 1]


def test_user_csv_with_column_mapping_and_label_names(tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text("review,other,sentiment\ngreat film,a,positive\nawful,b,negative\nfine,c,positive\n")
    data = load_file(f, text_col="review", label_col="sentiment", label_names=["negative", "positive"])
    assert data.texts == ["great film", "awful", "fine"] and data.labels == [1, 0, 1]
    inferred = load_file(f, text_col="review", label_col="sentiment")
    assert inferred.spec.label_names == ("negative", "positive")


def test_user_jsonl_pairs_and_bad_inputs(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"a": "q1", "b": "p1", "y": 0}\n{"a": "q2", "b": "p2", "y": 1}\n')
    data = load_file(f, text_col="a", pair_col="b", label_col="y")
    assert data.pairs == ["p1", "p2"]
    with pytest.raises(TPError, match="no column 'text'"):
        load_file(f, label_col="y")
    with pytest.raises(TPError, match="not one of the task's labels"):
        load_file(f, text_col="a", label_col="y", label_names=["only"])
    bad = tmp_path / "broken.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(TPError, match="line 1 is not valid JSON"):
        load_file(bad)
    with pytest.raises(TPError, match="Unsupported data file type"):
        load_file(tmp_path / "pairs.jsonl".replace("jsonl", "txt")) if False else load_file(_touch(tmp_path / "x.txt"))
    with pytest.raises(TPError, match="does not exist"):
        load_file(tmp_path / "missing.csv")


def _touch(p):
    p.write_text("x")
    return p


def test_splits_are_read_one_at_a_time_in_a_process(monkeypatch):
    # datasets' thread_map (tqdm.contrib.concurrent.ensure_lock) deletes tqdm's class lock when it leaves: two
    # load_dataset calls at once in a worker's two threads failed a job with "type object 'tqdm' has no attribute
    # '_lock'". load_split reads one split at a time.
    import threading
    import time

    import datasets

    from tp_core import data as D

    real, active, peak = datasets.load_dataset, [0], [0]
    guard = threading.Lock()

    def watched(*args, **kwargs):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(datasets, "load_dataset", watched)
    monkeypatch.setattr(D, "_SPLITS", type(D._SPLITS)())  # nothing already read
    errors = []

    def read(task, split):
        try:
            assert len(load_split(task, split)) > 0
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=a) for a in
               (("sst2", "train"), ("sst2", "validation"), ("ag_news", "validation"), ("mr", "validation"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and peak[0] == 1
