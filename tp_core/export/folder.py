"""The TaskPrune folder: a genuinely smaller model for one task, plus a per-task mask file.

The export folder is a normal TaskPrune model folder (reload it with `tp_core.load_model(path)`), with the pruning
plan in `taskprune.json` and a model card `README.md`. It is written to a temp folder and renamed into place, so an
interrupted export leaves no half folder. The steps of `export_pruned` (target check, pruning with the plan's
metadata, mask file) are also the first steps of `export_formats`.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

from ..attribution import UnitScores
from ..data import TaskData
from ..errors import TPError
from ..evaluation import evaluate
from ..masks import PruneConfig, UnitMasks, build_masks, save_mask_file
from ..model import MultiTaskModel, load_model
from ..paths import clean_interrupted
from ..pruning import count_params, prune_physically
from .card import folder_card
from .report import folder_bytes

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


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an existing `out_dir` unless overwriting, after cleaning what killed exports left beside it (which
    puts back a folder whose overwrite was cut short)."""
    clean_interrupted(out_dir.parent)
    if out_dir.exists() and not overwrite:
        raise TPError(f"{out_dir} already exists; choose another name or allow overwriting.")


def default_command() -> str:
    """The command line of this process, as the model card's "command that made it"."""
    return "python -m tp_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def prune_for_task(model: MultiTaskModel, task: str, scores: UnitScores, cfg: PruneConfig, recovery=None,
                   progress: Callable[[float, str], None] | None = None):
    """(masks, pruned model, recovery): the physically pruned copy of `model` for `task`, its `pruning` record
    naming the plan. `recovery` (a level name or `recovery.RecoveryConfig`, fitted here; or a `recovery.Recovery`
    fitted for these masks; None: without) is folded into the sliced weights."""
    masks = build_masks(scores, cfg, model.unit_shape())
    if recovery is not None:
        from ..recovery import Recovery, recover

        if not isinstance(recovery, Recovery):
            if progress is not None:
                progress(0.04, "fitting the recovery")
            recovery = recover(model, task, masks, None, recovery)
        recovery.check(masks)
    small = prune_physically(model, masks, task, recovery=recovery)
    small.pruning.update({"task": task, "method": scores.method, "attribution": scores.settings,
                          "allocation": cfg.allocation, "ffn_sparsity": cfg.ffn_sparsity,
                          "head_sparsity": cfg.head_sparsity, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return masks, small, recovery


def write_mask_file(path: Path, masks: UnitMasks, model: MultiTaskModel, task: str, scores: UnitScores,
                    cfg: PruneConfig, recovery=None) -> Path:
    """The export's mask file: `masks` for the unchanged base model (`evaluate --mask`), with the recovery if any."""
    return save_mask_file(path, masks, model, task, meta={"method": scores.method, "allocation": cfg.allocation},
                          recovery=recovery)


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
    check_out_dir(out_dir, overwrite)
    masks, small, recovery = prune_for_task(model, task, scores, cfg, recovery)
    before = after = None
    metric_name = model.task_info(task).metric
    if eval_data is not None:
        d = evaluate(model, task, eval_data)
        before, metric_name = d.metric, d.metric_name
        after = evaluate(small, task, eval_data).metric
    p_before, p_after = count_params(model, task), count_params(small, task)
    command = command or default_command()
    card = folder_card(model, task, scores, cfg, masks, metric_name, before, after, p_before, p_after, command,
                       recovery=recovery)
    small.save(out_dir, extra_files={"README.md": card})
    mask_path = write_mask_file(out_dir.parent / f"{out_dir.name}.mask.json", masks, model, task, scores, cfg,
                                recovery)
    return ExportResult(str(out_dir), str(mask_path), task, scores.method, cfg.ffn_sparsity, cfg.head_sparsity,
                        cfg.allocation, metric_name, before, after, p_before, p_after, folder_bytes(out_dir))


def load_export(path: str | Path, device: str | None = None) -> MultiTaskModel:
    """Reload an export (or any TaskPrune model folder) in a fresh process."""
    return load_model(path, device)


def zip_export(folder: str | Path, dest: str | Path | None = None, extra: Sequence[str | Path] = (),
               compress: bool = True) -> Path:
    """One zip of an export folder (written atomically; default `<folder>.zip` beside it), for a download button.
    `extra` files (e.g. the mask file a TaskPrune-only export keeps beside its folder) go in at the zip's top level.
    `compress=False` stores the files as they are: several times faster, about a third larger (float weights)."""
    import zipfile

    folder = Path(folder)
    dest = Path(dest) if dest is not None else folder.parent / f"{folder.name}.zip"
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.zip.tmp"
    how = {"compression": zipfile.ZIP_DEFLATED, "compresslevel": 1} if compress else {"compression": zipfile.ZIP_STORED}
    try:
        with zipfile.ZipFile(tmp, "w", **how) as z:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    z.write(f, Path(folder.name) / f.relative_to(folder))
            for f in map(Path, extra):
                if f.is_file():
                    z.write(f, f.name)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
