"""Where things live: the task data bundle and TaskPrune's own cache (TP_HOME)."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


# ----- leftovers of interrupted writes -----------------------------------------------------------------------------
# Writers put their PID in temp names: `.<name>.<pid>.<random>.tmp` (files, atomic_write_bytes) and
# `.<name>.tmp-<pid>` / `.<name>.old-<pid>` (folders, model.save). A process killed mid-write leaves them behind.
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
_TEMP_DIR = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")
STALE_AFTER_S = 24 * 3600  # a temp older than this is stale even if its PID is alive again (PID reuse)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _stale(path: Path, pid: int) -> bool:
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return not _pid_alive(pid) or age > STALE_AFTER_S


def clean_interrupted(folder: str | Path) -> list[str]:
    """Remove what killed writers left in `folder`, and put back a folder whose replacement was cut short.

    An interrupted `model.save` over an existing folder can stop between its two renames; then the previous
    version sits in `.<name>.old-<pid>` and is renamed back, so a user's export is never lost. Returns what it did.
    """
    folder = Path(folder)
    done: list[str] = []
    if not folder.is_dir():
        return done
    for entry in list(folder.iterdir()):
        m_file, m_dir = _TEMP_FILE.match(entry.name), _TEMP_DIR.match(entry.name)
        if m_file and entry.is_file() and _stale(entry, int(m_file["pid"])):
            entry.unlink(missing_ok=True)
            done.append(f"removed {entry.name}")
        elif m_dir and entry.is_dir() and _stale(entry, int(m_dir["pid"])):
            target = folder / m_dir["name"]
            if m_dir["kind"] == "old" and not target.exists():
                os.replace(entry, target)
                done.append(f"restored {target.name}")
            else:
                shutil.rmtree(entry, ignore_errors=True)
                done.append(f"removed {entry.name}")
    return done


# ----- size cap on the caches ----------------------------------------------------------------------------------------
# curves/ held whole curves in an earlier version; nothing reads it now, but what is left there still counts
# towards the cap and, never used again, goes first
CACHE_DIRS = ("scores", "points", "preds", "curves")


_CLEANED: set[Path] = set()


def cache_dir(kind: str) -> Path:
    """`TP_HOME/<kind>` (scores, points or preds), cleaned of leftovers of interrupted writes once per process (a killed
    writer's leftovers are found by the next run; the app looks up cache paths on every rerun, so not each time)."""
    path = tp_home() / kind
    if path not in _CLEANED:
        path.mkdir(parents=True, exist_ok=True)
        clean_interrupted(path)
        _CLEANED.add(path)
    return path


def touch(path: Path) -> None:
    """Mark a cache entry as recently used (eviction removes the least recently used first)."""
    try:
        os.utime(path)
    except OSError:
        pass


def enforce_cache_cap(max_bytes: int | None = None, keep: Path | None = None) -> int:
    """Evict least-recently-used cache entries until the caches fit `max_bytes` (default: the installation's cap).

    `keep` (the entry just written) is never evicted. Returns the number of bytes freed.
    """
    if max_bytes is None:
        from .limits import limits

        max_bytes = limits().max_cache_mb * 1_000_000
    entries = []
    for kind in CACHE_DIRS:
        folder = tp_home() / kind
        if folder.is_dir():
            for f in folder.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    try:
                        st = f.stat()
                    except OSError:
                        continue
                    entries.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in entries)
    freed = 0
    for _, size, f in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if keep is not None and f == Path(keep):
            continue
        f.unlink(missing_ok=True)
        total -= size
        freed += size
    return freed


# The full demo's folder names its training recipe, so that a build of an older recipe is never reused silently:
# the next run builds the current one. tp_core/demo.py's RECIPE_DIGEST pins the recipe this name stands for.
DEMO_FOLDER = "demo-r2"


def demo_path(quick: bool = False) -> Path:
    """Where the demo model (or the quick one) is built and cached."""
    return tp_home() / "models" / ("demo-quick" if quick else DEMO_FOLDER)
