"""What an export reports: the `ExportReport` of `export_formats` (one `FormatReport` per format written), parameter
counts by part, sizes on disk and metrics with bootstrap intervals."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np


@dataclass
class FormatReport:
    format: str
    path: str
    bytes_on_disk: int
    params: int
    params_by_part: dict | None = None
    metric: float | None = None
    metric_interval: tuple[float, float] | None = None
    check_max_abs_diff: float | None = None  # vs the masked torch model, on in-vocabulary check examples
    check_examples: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportReport:
    out_dir: str
    task: str
    base_model: str
    method: str
    attribution: dict
    ffn_sparsity: float
    head_sparsity: float
    allocation: str
    actual_ffn_sparsity: float
    actual_head_sparsity: float
    vocab_mode: str
    metric_name: str
    eval_examples: int
    metric_dense: float | None
    metric_dense_interval: tuple[float, float] | None
    metric_pruned: float | None  # torch, pruned structure (+ vocabulary)
    metric_pruned_interval: tuple[float, float] | None
    params_dense: dict
    params_pruned: dict
    bytes_dense: int  # the dense encoder + task head as float32 safetensors (what a plain checkpoint would take)
    formats: list[FormatReport]
    vocab: dict | None = None
    latency: dict | None = None
    mask_file: str | None = None
    command: str = ""
    seconds: float = 0.0
    created: str = ""
    pending: list[str] = field(default_factory=list)  # checks still to run on the written files (`check_formats`)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> ExportReport:
        """The report `to_dict` gave (read back from an export's export_report.json)."""
        out = ExportReport(**{k: v for k, v in d.items() if k != "formats"}, formats=[])
        out.formats = [FormatReport(**f) for f in d["formats"]]
        for f in out.formats:
            f.metric_interval = tuple(f.metric_interval) if f.metric_interval else None
        for name in ("metric_dense_interval", "metric_pruned_interval"):
            value = getattr(out, name)
            setattr(out, name, tuple(value) if value else None)
        return out

    def format(self, name: str) -> FormatReport | None:
        return next((f for f in self.formats if f.format == name), None)


def jsonable(x):
    """`json.dumps(..., default=jsonable)`: numpy scalars as Python numbers, tuples as lists."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(type(x))


def metric_text(v) -> str:
    """A metric as the card and the CLI print it: four decimals, or "not measured"."""
    return "not measured" if v is None else f"{v:.4f}"


def params_by_part(model, task: str | None = None) -> dict[str, int]:
    """`pruning.param_breakdown`, with only `task`'s head counted (what serving one task needs)."""
    from ..pruning import param_breakdown

    bd = dict(param_breakdown(model))
    if task is not None and model.kind == "multitask":
        bd["heads"] = sum(p.numel() for p in model.heads[model.resolve_task(task)].parameters())
        bd["total"] = sum(bd[k] for k in ("embeddings", "attention", "ffn", "other", "heads"))
    return bd


def folder_bytes(path: Path) -> int:
    """Bytes of a file, or of every file below a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def metric_with_interval(metric: str, problem: str, logits: np.ndarray, labels: Sequence, n_boot: int = 1000,
                         seed: int = 0) -> tuple[float, tuple[float, float]]:
    """The metric and a 95% percentile-bootstrap interval over examples (seeded)."""
    from ..evaluation import batch_metric, compute_metric, predictions

    preds = predictions(logits, problem)
    y = np.asarray(labels)
    value = compute_metric(metric, preds, y)
    rng = np.random.default_rng(seed)
    n = len(y)
    if n < 2:
        return value, (value, value)
    draws = np.stack([rng.integers(0, n, n) for _ in range(n_boot)])  # same draws as one resample at a time
    if metric in ("accuracy", "f1", "matthews"):
        boots = batch_metric(metric, preds[draws], y[draws])
    else:
        boots = [compute_metric(metric, preds[idx], y[idx]) for idx in draws]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return value, (float(lo), float(hi))


def planned_counts(model, task: str, scores, prune_cfg, embedding_params_saved: int = 0) -> dict:
    """Parameter counts of the export `export_formats` would write for these settings, without building it: dense,
    kept (full vocabulary: the Prune page's count, word embeddings included), kept with a task vocabulary that
    removes `embedding_params_saved` (see `vocab.embedding_params_saved`), and the hf/ padding."""
    from ..masks import build_masks
    from ..pruning import count_params, kept_params
    from .hf import hf_padding_params

    masks = build_masks(scores, prune_cfg, model.unit_shape())
    dense = count_params(model, task)
    kept = kept_params(model, masks, task)
    return {"dense": dense, "kept": kept, "kept_task_vocab": kept - int(embedding_params_saved),
            "hf": hf_padding_params(model, masks)}
