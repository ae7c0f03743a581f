"""Stage 6 of the pipeline: export a genuinely smaller model for one task, plus a per-task mask file.

The export folder is a normal TaskPrune model folder (reload it with `tp_core.load_model(path)`), with the pruning
plan in `taskprune.json` and a model card `README.md`. It is written to a temp folder and renamed into place, so an
interrupted export leaves no half folder.
"""
from __future__ import annotations

import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .attribution import UnitScores
from .data import TaskData
from .errors import TPError
from .evaluation import evaluate
from .masks import PruneConfig, UnitMasks, build_masks, save_mask_file
from .model import MultiTaskModel, load_model
from .paths import clean_interrupted
from .pruning import count_params, prune_physically

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class ExportResult:
    path: str
    mask_file: str
    task: str
    method: str
    ffn_sparsity: float
    head_sparsity: float
    allocation: str
    metric_name: str
    metric_dense: float | None
    metric_pruned: float | None
    params_before: int
    params_after: int
    bytes_on_disk: int

    def to_dict(self) -> dict:
        return asdict(self)


def safe_export_dir(root: str | Path, name: str) -> Path:
    """`root/name` for a user-typed name, refusing anything that could leave `root` (/, .., hidden names)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise TPError(f"Export name {name!r} is not allowed: use letters, digits, '.', '_' and '-' only "
                      "(no slashes, no leading dot).")
    root = Path(root).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise TPError(f"Export name {name!r} would leave the exports folder {root}.")
    return path


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def model_card(model: MultiTaskModel, task: str, scores: UnitScores, cfg: PruneConfig, masks: UnitMasks,
               metric_name: str, before: float | None, after: float | None, params_before: int, params_after: int,
               command: str, recovery=None) -> str:
    recovery_note = "" if recovery is None or not recovery.corrections else (
        f", then a training-free recovery ({recovery.level}, fitted in {recovery.seconds:.1f}s on "
        f"{recovery.n_examples} unlabeled train texts) was folded into the output projections")
    fmt = lambda v: "not evaluated" if v is None else f"{v:.4f}"  # noqa: E731
    settings = ", ".join(f"{k}={v}" for k, v in scores.settings.items() if k in ("samples", "steps", "labels", "target", "aggregation"))
    return f"""# Task-pruned model: {task}

Made with TaskPrune Studio (training-free, task-specific pruning by neuron attribution; Yang et al., EACL 2023 Findings).

| | |
|---|---|
| base model | {model.base_model} (loaded from `{model.source}`) |
| task | {task} |
| attribution method | {scores.method} ({settings}) |
| allocation | {cfg.allocation} |
| FFN sparsity | {masks.ffn_sparsity():.1%} (target {cfg.ffn_sparsity:.0%}) |
| head sparsity | {masks.head_sparsity():.1%} (target {cfg.head_sparsity:.0%}) |
| {metric_name} before | {fmt(before)} |
| {metric_name} after | {fmt(after)} |
| parameters before | {params_before:,} |
| parameters after | {params_after:,} ({params_after / params_before:.1%}) |

No retraining was done: units were removed by slicing weights{recovery_note}.
Kept FFN neurons per layer: {[int(m.sum()) for m in masks.ffn]}; kept heads per layer: {[int(m.sum()) for m in masks.heads]}.

Reload in Python:

```python
import tp_core
model = tp_core.load_model("<this folder>")
```

Command that made it:

```
{command}
```
"""


def export_pruned(
    model: MultiTaskModel,
    task: str,
    scores: UnitScores,
    cfg: PruneConfig,
    out_dir: str | Path,
    eval_data: TaskData | None = None,
    command: str | None = None,
    overwrite: bool = False,
    recovery=None,
) -> ExportResult:
    """Prune `model` for `task` physically and write the export folder + `<folder>.mask.json` beside it.
    `recovery` (a level name or `recovery.RecoveryConfig`, fitted here; or a `recovery.Recovery` fitted for these
    masks) is folded into the exported weights and stored in the mask file."""
    out_dir = Path(out_dir)
    clean_interrupted(out_dir.parent)  # leftovers of a killed export; puts back a folder whose overwrite was cut short
    if out_dir.exists() and not overwrite:
        raise TPError(f"{out_dir} already exists; choose another name or allow overwriting.")
    masks = build_masks(scores, cfg, model.unit_shape())
    if recovery is not None:
        from .recovery import Recovery, recover

        if not isinstance(recovery, Recovery):
            recovery = recover(model, task, masks, None, recovery)
        recovery.check(masks)
    small = prune_physically(model, masks, task, recovery=recovery)
    before = after = None
    metric_name = model.task_info(task).metric
    if eval_data is not None:
        d = evaluate(model, task, eval_data)
        before, metric_name = d.metric, d.metric_name
        after = evaluate(small, task, eval_data).metric
    p_before, p_after = count_params(model, task), count_params(small, task)
    command = command or "python -m tp_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    small.pruning.update({"task": task, "method": scores.method, "attribution": scores.settings,
                          "allocation": cfg.allocation, "ffn_sparsity": cfg.ffn_sparsity,
                          "head_sparsity": cfg.head_sparsity, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    card = model_card(model, task, scores, cfg, masks, metric_name, before, after, p_before, p_after, command,
                      recovery=recovery)
    small.save(out_dir, extra_files={"README.md": card})
    mask_path = out_dir.parent / f"{out_dir.name}.mask.json"
    save_mask_file(mask_path, masks, model, task, meta={"method": scores.method, "allocation": cfg.allocation},
                   recovery=recovery)
    return ExportResult(str(out_dir), str(mask_path), task, scores.method, cfg.ffn_sparsity, cfg.head_sparsity,
                        cfg.allocation, metric_name, before, after, p_before, p_after, folder_bytes(out_dir))


def load_export(path: str | Path, device: str | None = None) -> MultiTaskModel:
    """Reload an export (or any TaskPrune model folder) in a fresh process."""
    return load_model(path, device)
