"""Where things live: the task data bundle and TaskPrune's own cache (TP_HOME)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import TPError

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The task data folder: `TP_DATA_DIR`, else `../shared/data` beside the checkout."""
    env = os.environ.get("TP_DATA_DIR")
    default = REPO_ROOT.parent / "shared" / "data"
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path
        raise TPError(
            f"TP_DATA_DIR points to {path}, which is not a folder. Set TP_DATA_DIR to the task data folder "
            f"(one sub-folder per task with task.json) or unset it to use {default}."
        )
    if default.is_dir():
        return default
    raise TPError(
        f"No task data folder found: TP_DATA_DIR is not set and {default} does not exist. "
        "Set TP_DATA_DIR to a folder holding <task>/task.json and its JSONL splits."
    )


def tp_home() -> Path:
    """TaskPrune's cache root (demo models, attribution scores, curves): `TP_HOME`, else ~/.cache/taskprune."""
    path = Path(os.environ.get("TP_HOME") or Path.home() / ".cache" / "taskprune").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
