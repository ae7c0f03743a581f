"""Stage 2 of the pipeline: task data.

A task is a folder `<data_dir>/<task>/` with `task.json` and JSONL splits (`text`, optional `text_pair`, `label`).
Users can also bring a CSV/JSONL file with a column mapping, or (online) a Hugging Face hub dataset.
Everything ends up as a `TaskData`: plain lists, so batching and metrics need no `datasets` objects.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .errors import TPError
from .paths import data_dir

METRICS = ("accuracy", "f1", "matthews", "pearson")


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

    def subset(self, idx: Sequence[int]) -> "TaskData":
        return replace(
            self,
            texts=[self.texts[i] for i in idx],
            pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            rows=[self.rows[i] for i in idx],
        )

    def sample(self, n: int | None, seed: int = 0) -> "TaskData":
        """A seeded random subset of n examples (kept in file order); all of them when n is None or >= len."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise TPError(f"The number of examples must be positive, got {n}.")
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return self.subset(idx)

    def domain(self, name: str) -> "TaskData":
        """Rows of one named domain (task.json `domains`), e.g. yelp / amazon / imdb."""
        if name not in self.spec.domains:
            raise TPError(f"Task {self.spec.name!r} has no domain {name!r}; known: {sorted(self.spec.domains) or 'none'}.")
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
    path = root / name
    if not name or "/" in name or name.startswith(".") or not (path / "task.json").is_file():
        known = ", ".join(t.name for t in list_tasks(root))
        raise TPError(f"Unknown task {name!r} in {root}. Known tasks: {known}.")
    return _spec_from_json(path)


def _validate_labels(spec: TaskSpec, labels: list[Any], where: str) -> list[Any]:
    """Labels must be class ids (or class names) of the task; regression labels must be numbers."""
    if spec.problem == "regression":
        try:
            return [float(x) for x in labels]
        except (TypeError, ValueError):
            raise TPError(f"{where}: regression labels must be numbers.") from None
    names = list(spec.label_names)
    out = []
    for i, lab in enumerate(labels):
        if isinstance(lab, str) and lab in names:
            out.append(names.index(lab))
            continue
        try:
            as_int = int(lab)
            ok = float(lab) == as_int and 0 <= as_int < len(names)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TPError(
                f"{where}, row {i}: label {lab!r} is not one of the task's labels "
                f"{names} (or their ids 0..{len(names) - 1})."
            )
        out.append(as_int)
    return out


def _from_dataset(ds, spec: TaskSpec, split: str, text_col: str, pair_col: str | None, label_col: str, where: str) -> TaskData:
    cols = set(ds.column_names)
    for col in [text_col, label_col] + ([pair_col] if pair_col else []):
        if col not in cols:
            raise TPError(f"{where}: no column {col!r}; the file has columns {sorted(cols)}.")
    texts = [str(t) for t in ds[text_col]]
    pairs = [str(t) for t in ds[pair_col]] if pair_col else None
    labels = _validate_labels(spec, list(ds[label_col]), where)
    if not texts:
        raise TPError(f"{where}: no examples.")
    return TaskData(spec=spec, split=split, texts=texts, pairs=pairs, labels=labels, rows=list(range(len(texts))))


def load_split(task: str | TaskSpec, split: str = "validation", limit: int | None = None, seed: int = 0) -> TaskData:
    """Load one split of a bundle task through `datasets`; `limit` takes a seeded subset."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if split not in spec.splits:
        raise TPError(f"Task {spec.name!r} has no {split!r} split; it has: {', '.join(spec.splits)}.")
    import datasets

    datasets.disable_progress_bars()
    path = spec.path / f"{split}.jsonl"
    try:
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many types for unreadable files
        raise TPError(f"Cannot read {path}: {exc}") from None
    pair_col = "text_pair" if "text_pair" in ds.column_names else None
    data = _from_dataset(ds, spec, split, "text", pair_col, "label", str(path))
    return data.sample(limit, seed)


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
    """A user's own CSV/TSV/JSONL file as a task. Label names default to the sorted distinct labels."""
    path = Path(path)
    if not path.is_file():
        raise TPError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    builder = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json"}.get(suffix)
    if builder is None:
        raise TPError(f"Unsupported data file type {suffix!r} for {path}: use .csv, .tsv, .json or .jsonl.")
    if metric not in METRICS:
        raise TPError(f"Unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    import datasets

    datasets.disable_progress_bars()
    kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as exc:
        raise TPError(f"Cannot read {path} as {suffix[1:].upper()}: {str(exc).splitlines()[0][:300]}") from None
    if label_col not in ds.column_names:
        raise TPError(f"{path}: no column {label_col!r}; the file has columns {sorted(ds.column_names)}.")
    if label_names is None and problem == "classification":
        raw = ds[label_col]
        if all(isinstance(x, (int, float)) and float(x) == int(x) for x in raw if x is not None):
            label_names = [str(i) for i in range(int(max(raw)) + 1)]
        else:
            label_names = sorted({str(x) for x in raw})
    spec = TaskSpec(
        name=name or path.stem,
        description=f"User data from {path.name}",
        kind="pair" if pair_col else "single",
        problem=problem,
        label_names=tuple(label_names or ()),
        metric=metric,
        splits=("validation",),
        path=path.parent,
    )
    return _from_dataset(ds, spec, "validation", text_col, pair_col, label_col, str(path))


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
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise TPError(f"Cannot load hub dataset {name!r} ({split}): {str(exc).splitlines()[0][:300]}") from None
    feature = ds.features.get(label_col)
    names = tuple(getattr(feature, "names", None) or sorted({str(x) for x in ds[label_col]}))
    spec = TaskSpec(name=name.replace("/", "_"), kind="pair" if pair_col else "single", label_names=names,
                    metric=metric, splits=(split,))
    return _from_dataset(ds, spec, split, text_col, pair_col, label_col, f"hub dataset {name}")
