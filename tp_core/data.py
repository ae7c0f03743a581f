"""Stage 2 of the pipeline: task data.

A task is a folder `<data_dir>/<task>/` with `task.json` and JSONL splits (`text`, optional `text_pair`, `label`).
Users can also bring a CSV/JSONL file with a column mapping, or (online) a Hugging Face hub dataset.
Everything ends up as a `TaskData`: plain lists, so batching and metrics need no `datasets` objects.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from .errors import TPError
from .limits import ENV, limits
from .paths import data_dir

METRICS = ("accuracy", "f1", "matthews", "pearson")
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a folder of the data bundle, never a path


@dataclass(frozen=True)
class TaskSpec:
    """What `task.json` says about a task."""

    name: str
    description: str = ""
    kind: str = "single"  # single | pair
    problem: str = "classification"  # classification | regression
    label_names: tuple[str, ...] = ()
    metric: str = "accuracy"
    splits: tuple[str, ...] = ()
    domains: dict[str, tuple[int, int]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == "regression" else len(self.label_names)

    @property
    def trainable(self) -> bool:
        """Has a train split; tasks without one are evaluation-only."""
        return "train" in self.splits

    @property
    def scoring_split(self) -> str:
        """Split used to score units: train when there is one, so validation stays unseen."""
        return "train" if "train" in self.splits else "validation"


@dataclass
class TaskData:
    """Examples of one split of one task, in file order (`rows` are the original row numbers)."""

    spec: TaskSpec
    split: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]
    rows: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> TaskData:
        return replace(
            self,
            texts=[self.texts[i] for i in idx],
            pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            rows=[self.rows[i] for i in idx],
        )

    def sample(self, n: int | None, seed: int = 0) -> TaskData:
        """A seeded random subset of n examples (kept in file order); all of them when n is None or >= len."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise TPError(f"The number of examples must be positive, got {n}.")
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return self.subset(idx)

    def domain(self, name: str) -> TaskData:
        """Rows of one named domain (task.json `domains`), e.g. yelp / amazon / imdb."""
        if name not in self.spec.domains:
            raise TPError(f"Task {self.spec.name!r} has no domain {name!r}; "
                          f"known: {sorted(self.spec.domains) or 'none'}.")
        lo, hi = self.spec.domains[name]
        return self.subset([i for i, r in enumerate(self.rows) if lo <= r < hi])


def _spec_from_json(path: Path) -> TaskSpec:
    try:
        meta = json.loads((path / "task.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TPError(f"Cannot read {path / 'task.json'}: {exc}") from None
    splits = tuple(s for s in ("train", "validation", "test") if (path / f"{s}.jsonl").is_file())
    domains = {k: tuple(v["rows"]) for k, v in (meta.get("domains") or {}).items()}
    return TaskSpec(
        name=meta.get("name", path.name),
        description=meta.get("description", ""),
        kind=meta.get("kind", "single"),
        problem=meta.get("problem", "classification"),
        label_names=tuple(meta.get("label_names") or ()),
        metric=meta.get("metric", "accuracy"),
        splits=splits,
        domains=domains,
        path=path,
    )


def list_tasks(root: Path | None = None) -> list[TaskSpec]:
    """All tasks of the data bundle, sorted by name."""
    root = Path(root) if root else data_dir()
    return [_spec_from_json(p) for p in sorted(root.iterdir()) if (p / "task.json").is_file()]


def get_task(name: str, root: Path | None = None) -> TaskSpec:
    root = Path(root) if root else data_dir()
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name) or not (root / name / "task.json").is_file():
        known = ", ".join(t.name for t in list_tasks(root))
        raise TPError(f"Unknown task {str(name)[:80]!r} in {root}. Known tasks: {known}.")
    return _spec_from_json(root / name)


def _validate_labels(spec: TaskSpec, labels: list[Any], where: str) -> list[Any]:
    """Labels must be class ids (or class names) of the task; regression labels must be numbers."""
    if spec.problem == "regression":
        out = []
        for i, lab in enumerate(labels):
            try:
                value = float(lab)
            except (TypeError, ValueError):
                value = math.nan
            if isinstance(lab, bool) or not math.isfinite(value):
                raise TPError(f"{where}, row {i + 1}: regression label {lab!r} is not a finite number.")
            out.append(value)
        return out
    names = list(spec.label_names)
    out = []
    for i, lab in enumerate(labels):
        if isinstance(lab, str) and lab in names:
            out.append(names.index(lab))
            continue
        try:
            as_int = int(lab)
            ok = not isinstance(lab, bool) and float(lab) == as_int and 0 <= as_int < len(names)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            shown = repr(lab) if len(repr(lab)) <= 60 else repr(lab)[:57] + "..."
            raise TPError(
                f"{where}, row {i + 1}: label {shown} is not one of the task's labels "
                f"{names[:20]} (or their ids 0..{len(names) - 1})."
            )
        out.append(as_int)
    return out


def _from_dataset(ds, spec: TaskSpec, split: str, text_col: str, pair_col: str | None, label_col: str,
                  where: str) -> TaskData:
    cols = set(ds.column_names)
    for col in [text_col, label_col] + ([pair_col] if pair_col else []):
        if col not in cols:
            raise TPError(f"{where}: no column {col!r}; the file has columns {sorted(cols)}.")
    # whole columns through Arrow: iterating `ds[col]` formats row by row, which dominated page runs that only
    # needed the splits' cache keys
    table = ds.with_format("arrow")[:]

    def column(name):
        return table.column(name).to_pylist()

    texts = [t if isinstance(t, str) else str(t) for t in column(text_col)]
    pairs = [t if isinstance(t, str) else str(t) for t in column(pair_col)] if pair_col else None
    labels = _validate_labels(spec, column(label_col), where)
    if not texts:
        raise TPError(f"{where}: no examples.")
    return TaskData(spec=spec, split=split, texts=texts, pairs=pairs, labels=labels, rows=list(range(len(texts))))


def load_split(task: str | TaskSpec, split: str = "validation", limit: int | None = None, seed: int = 0) -> TaskData:
    """Load one split of a bundle task through `datasets`; `limit` takes a seeded subset."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if split not in spec.splits:
        raise TPError(f"Task {spec.name!r} has no {split!r} split; it has: {', '.join(spec.splits)}.")
    path = spec.path / f"{split}.jsonl"
    try:
        st = path.stat()
        ident = (str(path.resolve()), st.st_mtime_ns, st.st_size, repr(spec))
    except OSError:
        ident = None  # unreadable: load_dataset below says why
    with _SPLITS_LOCK:
        data = _SPLITS.get(ident) if ident is not None else None
        if data is not None:
            _SPLITS.move_to_end(ident)
    if data is None:
        import datasets

        datasets.disable_progress_bars()
        try:
            with _LOAD_LOCK:
                ds = datasets.load_dataset("json", data_files=str(path), split="train")
        except Exception as exc:  # datasets raises many types for unreadable files
            raise TPError(f"Cannot read {path}: {exc}") from None
        pair_col = "text_pair" if "text_pair" in ds.column_names else None
        data = _from_dataset(ds, spec, split, "text", pair_col, "label", str(path))
        if ident is not None:
            with _SPLITS_LOCK:
                _SPLITS[ident] = data
                while len(_SPLITS) > _SPLITS_MAX:
                    _SPLITS.popitem(last=False)
    return data.sample(limit, seed)


# whole splits already read in this process, by file identity (path, mtime, size) and task spec: a page run, a
# worker's next job and a benchmark's next cell do not parse the same JSONL again (an edited file is read afresh)
_SPLITS: OrderedDict[tuple, TaskData] = OrderedDict()
_SPLITS_LOCK = threading.Lock()
_SPLITS_MAX = 24
# one `datasets.load_dataset` at a time per process: two at once in a worker's two threads raced in tqdm (the class
# drops its shared lock when its last bar closes, even a disabled one) and failed an attribution job with "type
# object 'tqdm' has no attribute '_lock'" (a walk of bench_interactive, the Model page's dense job beside it)
_LOAD_LOCK = threading.Lock()


def load_file(
    path: str | Path,
    text_col: str = "text",
    label_col: str = "label",
    pair_col: str | None = None,
    label_names: Sequence[str] | None = None,
    metric: str = "accuracy",
    name: str | None = None,
    problem: str = "classification",
) -> TaskData:
    """A user's own CSV/TSV/JSONL file as a task. Label names default to the distinct labels (ids 0..K-1 if numeric).

    The file is checked (size first, before reading it) and parsed in memory: nothing is written anywhere.
    """
    path = Path(path)
    if not path.is_file():
        raise TPError(f"Data file {path} does not exist." if not path.exists() else f"{path} is not a file.")
    cap = limits()
    size = path.stat().st_size
    if size > cap.max_file_mb * 1_000_000:
        raise TPError(f"{path} is {size / 1e6:.1f} MB; data files are limited to {cap.max_file_mb} MB "
                      f"(raise it with {ENV['max_file_mb']}).")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TPError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    return load_bytes(raw, path.name, text_col, label_col, pair_col, label_names, metric, name, problem,
                      where=str(path))


def load_bytes(
    raw: bytes,
    filename: str,
    text_col: str = "text",
    label_col: str = "label",
    pair_col: str | None = None,
    label_names: Sequence[str] | None = None,
    metric: str = "accuracy",
    name: str | None = None,
    problem: str = "classification",
    where: str | None = None,
) -> TaskData:
    """Parse an uploaded file's bytes (CSV, TSV, JSONL, or a JSON list of objects) into a `TaskData`.

    Every problem is a `TPError` naming the file and, where it applies, the row: empty, binary, not UTF-8, malformed,
    missing columns, empty or over-long texts, unknown labels, too many rows.
    """
    where = where or filename
    suffix = Path(filename).suffix.lower()
    fmt = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}.get(suffix)
    if fmt is None:
        raise TPError(f"Unsupported data file type {suffix or '(no extension)'!r} for {where}: "
                      "use .csv, .tsv, .json or .jsonl.")
    if metric not in METRICS:
        raise TPError(f"Unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    if problem not in ("classification", "regression"):
        raise TPError(f"Unknown problem type {problem!r}; use classification or regression.")
    text_col, label_col = (text_col or "").strip(), (label_col or "").strip()
    pair_col = (pair_col or "").strip() or None
    if not text_col or not label_col:
        raise TPError("Name the text column and the label column.")
    cap = limits()
    if len(raw) > cap.max_file_mb * 1_000_000:
        raise TPError(f"{where} is {len(raw) / 1e6:.1f} MB; data files are limited to {cap.max_file_mb} MB "
                      f"(raise it with {ENV['max_file_mb']}).")
    rows = _parse_rows(raw, fmt, where, cap)
    wanted = [text_col, label_col] + ([pair_col] if pair_col else [])
    texts, pairs, labels = [], [] if pair_col else None, []
    for i, row in enumerate(rows, start=1):
        for col in wanted:
            if col not in row:
                have = sorted(str(k) for k in row)[:20]
                raise TPError(f"{where}, row {i}: no column {col!r}; the row has columns {have}.")
        texts.append(_text(row[text_col], text_col, i, where, cap))
        if pair_col:
            pairs.append(_text(row[pair_col], pair_col, i, where, cap))
        label = row[label_col]
        if label is None or (isinstance(label, str) and not label.strip()):
            raise TPError(f"{where}, row {i}: the label in column {label_col!r} is empty.")
        if isinstance(label, (dict, list, bool)):
            raise TPError(f"{where}, row {i}: label {repr(label)[:60]} is not a class name, class id or number.")
        labels.append(label.strip() if isinstance(label, str) else label)
    if label_names is None and problem == "classification":
        label_names = _infer_label_names(labels, where, cap)
    spec = TaskSpec(
        name=safe_task_name(name or Path(filename).stem),
        description=f"User data from {Path(filename).name}",
        kind="pair" if pair_col else "single",
        problem=problem,
        label_names=tuple(label_names or ()),
        metric=metric,
        splits=("validation",),
        path=None,
    )
    labels = _validate_labels(spec, labels, where)
    return TaskData(spec=spec, split="validation", texts=texts, pairs=pairs, labels=labels,
                    rows=list(range(len(texts))))


def safe_task_name(name: str) -> str:
    """A task name from a file name, reduced to letters, digits, '.', '_' and '-' (it keys caches and exports)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:60]
    return cleaned or "data"


def _parse_rows(raw: bytes, fmt: str, where: str, cap) -> list[dict]:
    """Rows as dicts (column -> value), after the checks that apply to any text table."""
    if not raw.strip():
        raise TPError(f"{where} is empty.")
    if b"\x00" in raw[:1_000_000]:
        raise TPError(f"{where} looks like a binary file, not {fmt.upper()} text.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TPError(f"{where} is not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at byte {exc.start}); "
                      "save it as UTF-8 and try again.") from None
    if fmt in ("csv", "tsv"):
        return _parse_csv(text, "\t" if fmt == "tsv" else ",", where, cap)
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise TPError(f"{where} is not valid JSON: {getattr(exc, 'msg', 'too deeply nested')} "
                          f"(line {getattr(exc, 'lineno', '?')}).") from None
        if len(doc) > cap.max_rows:
            raise TPError(_too_many_rows(where, cap))
        for i, row in enumerate(doc, start=1):
            if not isinstance(row, dict):
                raise TPError(f"{where}, row {i}: expected an object with named fields, got {type(row).__name__}.")
        if not doc:
            raise TPError(f"{where} has no examples.")
        return doc
    rows = []
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise TPError(f"{where}, line {lineno} is not valid JSON ({getattr(exc, 'msg', 'too deeply nested')}); "
                          "a JSONL file has one JSON object per line.") from None
        if not isinstance(row, dict):
            raise TPError(f"{where}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
        rows.append(row)
        if len(rows) > cap.max_rows:
            raise TPError(_too_many_rows(where, cap))
    if not rows:
        raise TPError(f"{where} has no examples.")
    return rows


def _parse_csv(text: str, delimiter: str, where: str, cap) -> list[dict]:
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))  # our own, clearer cap is checked per text
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"
    rows: list[dict] = []
    header: list[str] | None = None
    try:
        for record in reader:
            if not record or all(not c.strip() for c in record):
                continue
            if header is None:
                header = [c.strip() for c in record]
                if len(set(header)) != len(header):
                    raise TPError(f"{where}: the header row has repeated column names {header[:20]}.")
                continue
            if len(record) != len(header):
                raise TPError(f"{where}, line {reader.line_num}: {len(record)} fields, but the header has "
                              f"{len(header)} ({', '.join(header[:10])}).")
            rows.append(dict(zip(header, record)))
            if len(rows) > cap.max_rows:
                raise TPError(_too_many_rows(where, cap))
    except csv.Error as exc:
        raise TPError(f"{where} is not valid {kind} (line {reader.line_num}: {exc}).") from None
    if not rows:
        raise TPError(f"{where} has a header but no examples." if header else f"{where} has no examples.")
    return rows


def _too_many_rows(where: str, cap) -> str:
    return (f"{where} has more than {cap.max_rows:,} rows, the limit for one data file "
            f"(raise it with {ENV['max_rows']}, or use a sample of the file).")


def _text(value: Any, col: str, i: int, where: str, cap) -> str:
    if isinstance(value, (dict, list)):
        raise TPError(f"{where}, row {i}: column {col!r} holds a {type(value).__name__}, not text.")
    text = "" if value is None else str(value)
    if not text.strip():
        raise TPError(f"{where}, row {i}: the text in column {col!r} is empty.")
    if len(text) > cap.max_text_chars:
        raise TPError(f"{where}, row {i}: the text in column {col!r} has {len(text):,} characters; the limit is "
                      f"{cap.max_text_chars:,} (models read at most 512 tokens; "
                      f"raise it with {ENV['max_text_chars']}).")
    return text


def _infer_label_names(labels: list[Any], where: str, cap) -> list[str]:
    """Ids 0..K-1 when every label is a non-negative whole number (as number or digits), else the sorted names."""
    ids = []
    for lab in labels:
        s = str(lab).strip()
        if isinstance(lab, float) and lab.is_integer() and lab >= 0:
            ids.append(int(lab))
        elif s.isdigit() and s.isascii():
            ids.append(int(s))
        else:
            ids = None
            break
    if ids is not None:
        if max(ids) >= cap.max_labels:
            raise TPError(f"{where}: label id {max(ids):,} implies more than {cap.max_labels:,} classes; "
                          "check the label column.")
        return [str(i) for i in range(max(ids) + 1)]
    names = sorted({str(x).strip() for x in labels})
    if len(names) > cap.max_labels:
        raise TPError(f"{where}: {len(names):,} distinct labels (limit {cap.max_labels:,}); is the label column "
                      "really a text column?")
    return names


def load_hub(
    name: str,
    split: str = "validation",
    config: str | None = None,
    text_col: str = "sentence",
    label_col: str = "label",
    pair_col: str | None = None,
    metric: str = "accuracy",
) -> TaskData:
    """A Hugging Face hub dataset by name (needs internet; not used offline or in tests)."""
    import datasets

    try:
        with _LOAD_LOCK:
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise TPError(f"Cannot load hub dataset {name!r} ({split}): {str(exc).splitlines()[0][:300]}") from None
    feature = ds.features.get(label_col)
    names = tuple(getattr(feature, "names", None) or sorted({str(x) for x in ds[label_col]}))
    spec = TaskSpec(name=name.replace("/", "_"), kind="pair" if pair_col else "single", label_names=names,
                    metric=metric, splits=(split,))
    return _from_dataset(ds, spec, split, text_col, pair_col, label_col, f"hub dataset {name}")
