"""Bad data files (issue 6, point 1): every fault is one clear error, nothing is written, the loader never crashes.

The same faults go through the library (`load_file`), the CLI (`--data`, one line on stderr, exit 2) and the app
(upload on the Model page: a friendly message, the session stays usable). Hypothesis throws random bytes and random
tables at the loader: it returns valid examples or raises TPError, never anything else.
"""
import csv
import io
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiny import tiny_multitask
from tp_core.cli import main
from tp_core.data import load_bytes, load_file
from tp_core.errors import TPError

NAMES = ("negative", "positive")
LONG = "x" * 100_001

# (id, file name, content, load_file keyword arguments, expected message)
FAULTS = [
    ("empty", "e.csv", b"", {}, "is empty"),
    ("blank-lines", "e.jsonl", b"\n  \n\n", {}, "is empty"),
    ("not-utf8", "latin.csv", "text,label\ncaf\u00e9 cr\u00e8me,1\n".encode("latin-1"), {}, "not UTF-8 text"),
    ("binary", "x.csv", bytes(range(256)) * 8, {}, "binary file"),
    ("png-as-jsonl", "x.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", {}, "binary file"),
    ("csv-named-jsonl", "x.jsonl", b"text,label\nnice,1\n", {}, "line 1 is not valid JSON"),
    ("jsonl-not-objects", "x.jsonl", b"[1, 2]\n", {}, "expected a JSON object"),
    ("json-list-of-numbers", "x.json", b"[1, 2, 3]", {}, "expected an object"),
    ("broken-json", "x.json", b'[{"text": "a", "label": 1}', {}, "not valid JSON"),
    ("unterminated-quote", "q.csv", b'text,label\n"never closed,1\n', {}, "not valid CSV"),
    ("ragged-row", "r.csv", b"text,label\nnice,1,extra\n", {}, "3 fields, but the header has 2"),
    ("header-only", "h.csv", b"text,label\n", {}, "header but no examples"),
    ("repeated-header", "h.csv", b"text,text\na,b\n", {}, "repeated column names"),
    ("missing-text-column", "m.csv", b"sentence,label\nnice,1\n", {}, "no column 'text'"),
    ("missing-label-column", "m.tsv", b"text\tlbl\nnice\t1\n", {}, "no column 'label'"),
    ("missing-pair-column", "m.jsonl", b'{"text": "a", "label": 1}\n', {"pair_col": "text_pair"},
     "no column 'text_pair'"),
    ("label-not-in-task", "l.csv", b"text,label\nnice,neutral\n", {"label_names": NAMES},
     "not one of the task's labels"),
    ("label-id-out-of-range", "l.jsonl", b'{"text": "a", "label": 7}\n', {"label_names": NAMES},
     "not one of the task's labels"),
    ("empty-label", "l.csv", b"text,label\nnice,\n", {}, "label in column 'label' is empty"),
    ("huge-label-id", "l.csv", b"text,label\nnice,999999999\n", {}, "more than 1,000 classes"),
    ("regression-nan", "l.jsonl", b'{"text": "a", "label": NaN}\n', {"problem": "regression"}, "not a finite number"),
    ("empty-text", "t.csv", b"text,label\n   ,1\n", {}, "text in column 'text' is empty"),
    ("null-text", "t.jsonl", b'{"text": null, "label": 1}\n', {}, "text in column 'text' is empty"),
    ("text-is-object", "t.jsonl", b'{"text": {"a": 1}, "label": 1}\n', {}, "holds a dict, not text"),
    ("100kB-line", "long.csv", ("text,label\n" + LONG + ",1\n").encode(), {},
     "100,001 characters; the limit is 10,000"),
    ("million-rows", "big.csv", b"text,label\n" + b"a,1\n" * 1_000_000, {}, "more than 100,000 rows"),
    ("not-a-table-type", "x.xlsx", b"PK\x03\x04", {}, "Unsupported data file type"),
]


def _tree(path):
    return sorted(str(p) for p in path.rglob("*"))


@pytest.mark.parametrize("fault", FAULTS, ids=[f[0] for f in FAULTS])
def test_bad_file_is_one_clear_error_and_nothing_is_written(fault, tmp_path, monkeypatch):
    _, name, content, kwargs, message = fault
    home = tmp_path / "tp_home"
    monkeypatch.setenv("TP_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    f = tmp_path / name
    f.write_bytes(content)
    before = _tree(tmp_path)
    with pytest.raises(TPError, match=message) as err:
        load_file(f, **kwargs)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert _tree(tmp_path) == before  # no cache, no temp file, no converted copy


def test_file_over_the_size_cap_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("TP_MAX_FILE_MB", "1")
    f = tmp_path / "big.jsonl"
    f.write_bytes(b'{"text": "a", "label": 1}\n' * 60_000)  # 1.6 MB
    with pytest.raises(TPError, match="limited to 1 MB.*TP_MAX_FILE_MB"):
        load_file(f)
    with pytest.raises(TPError, match="limited to 1 MB"):
        load_bytes(f.read_bytes(), "big.jsonl")


def test_good_files_in_every_format_give_the_same_examples(tmp_path):
    rows = [("a fine film", "positive"), ("d\u00e9j\u00e0 vu, \"quoted\"", "negative"), ("line\nbreak", "positive")]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["text", "label"])
    w.writerows(rows)
    files = {
        "d.csv": buf.getvalue().encode("utf-8-sig"),  # with a BOM, as Excel writes it
        "d.tsv": ("text\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in rows[:2])).encode(),
        "d.jsonl": "\n".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in rows).encode(),
        "d.json": json.dumps([{"text": t, "label": y} for t, y in rows]).encode(),
    }
    for name, content in files.items():
        data = load_bytes(content, name, label_names=NAMES)
        n = 2 if name.endswith(".tsv") else 3
        assert data.texts == [t for t, _ in rows[:n]] and data.labels == [1, 0, 1][:n], name


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_multitask("bert").save(path)
    return path


# The CLI labels --data like the model's head (negative/positive), so an unknown id is named as such.
CLI_MESSAGE = {"huge-label-id": "not one of the task's labels"}


@pytest.mark.parametrize("fault", [f for f in FAULTS if f[3] == {}], ids=[f[0] for f in FAULTS if f[3] == {}])
def test_cli_bad_data_is_one_line_and_exit_2(fault, tiny_folder, tmp_path, capsys):
    key, name, content, _, message = fault
    message = CLI_MESSAGE.get(key, message)
    f = tmp_path / name
    f.write_bytes(content)
    rc = main(["evaluate", "--model", str(tiny_folder), "--task", "sst2", "--data", str(f)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_cli_evaluates_a_good_data_file(tiny_folder, tmp_path, capsys):
    f = tmp_path / "mine.csv"
    f.write_text("sentence,y\nnice,positive\nawful,negative\nfine,positive\n")
    rc = main(["evaluate", "--model", str(tiny_folder), "--task", "sst2", "--data", str(f), "--text-col", "sentence",
               "--label-col", "y", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["metric_name"] == "accuracy" and rec["metric"] in (0.0, 1 / 3, 2 / 3, 1.0)


# ----- property-based: the loader never crashes --------------------------------------------------------------------
EXTS = st.sampled_from([".csv", ".tsv", ".jsonl", ".json"])


def _check_valid(data):
    assert len(data.texts) == len(data.labels) == len(data.rows) > 0
    assert all(isinstance(t, str) and t.strip() for t in data.texts)
    if data.spec.problem == "classification":
        assert all(isinstance(y, int) and 0 <= y < len(data.spec.label_names) for y in data.labels)
    else:
        assert all(math.isfinite(y) for y in data.labels)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=3000), ext=EXTS)
def test_random_bytes_give_examples_or_a_clear_error(raw, ext):
    try:
        data = load_bytes(raw, "random" + ext)
    except TPError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _check_valid(data)


CELL = st.one_of(st.none(), st.booleans(), st.integers(-5, 2_000), st.floats(allow_nan=True), st.text(max_size=30),
                 st.lists(st.integers(), max_size=2))
ROW = st.dictionaries(st.sampled_from(["text", "label", "text_pair", "other"]), CELL, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, max_size=25), ext=EXTS, named=st.booleans(), problem=st.sampled_from(["classification",
                                                                                                 "regression"]))
def test_random_tables_give_examples_or_a_clear_error(rows, ext, named, problem):
    if ext in (".csv", ".tsv"):
        cols = sorted({k for r in rows for k in r}) or ["text"]
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t" if ext == ".tsv" else ",")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        raw = buf.getvalue().encode()
    elif ext == ".jsonl":
        raw = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    else:
        raw = json.dumps(rows).encode()
    label_names = NAMES if named and problem == "classification" else None
    try:
        data = load_bytes(raw, "table" + ext, label_names=label_names, problem=problem)
    except TPError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _check_valid(data)
    if ext in (".csv", ".tsv"):  # a CSV line whose cells are all empty is a blank line and is skipped
        rows = [r for r in rows if any(str(v).strip() for v in r.values() if v is not None)]
    assert len(data) == len(rows)
