"""The app's settings: its defaults and every environment variable the app and the warm start read, in one place.

`app_settings()` reads the environment each time it is called (a test's `monkeypatch.setenv` applies at once) and
returns a frozen `AppSettings`. Variables, all optional:

| variable | default | meaning |
|---|---|---|
| `TP_APP_MODEL` | `demo` | the model a new session opens (tests use `demo-quick`) |
| `TP_APP_EVAL_LIMIT` | 500 | validation examples per evaluation: the curves' full pass, a new session's setting |
| `TP_APP_COARSE_EXAMPLES` | 100 | the seeded validation subset of the coarse pass and the slider's second estimate |
| `TP_APP_SLIDER_FIRST_EXAMPLES` | 32 | a moved slider's first estimate, ahead of every other job (0: none) |
| `TP_APP_GRID` | `0,0.3,0.5,0.7,0.8,0.85,0.9` | FFN sparsities of the curves' full pass, comma-separated |
| `TP_APP_ATTR_SAMPLES` | the app's attribution default (64) | a new session's attribution examples N |
| `TP_APP_ATTR_STEPS` | the app's attribution default (2) | a new session's integrated-gradients steps |
| `TP_APP_RECOVER_SAMPLES` | 1024 | texts the app's recovery fits on (Prune, tour, deploy export) |
| `TP_EXPORTS_DIR` | `exports/` in the checkout | the folder the Export page writes into |
| `TP_APP_REDRAWS_PER_S` | 4 | whole-page redraws per second, all sessions together, while jobs land |
| `TP_APP_RUN_LOG` | none | a JSON-lines file of the server's own page-run times (`tp_app/runlog.py`) |

The app's attribution default itself is `policy.APP_ATTRIBUTION`. The job engine's variables (`TP_SCHEDULER`,
`TP_WORKERS`, ...) are read by `engine/client.py`, the folders' (`TP_HOME`, `TP_DATA_DIR`) by `paths.py` and the caps'
(`TP_MAX_*`) by `limits.py`, which every entry point shares, not only the app.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Mapping

from .errors import TPError
from .paths import REPO_ROOT

# The Prune page's default "Compare with" (and the warm start's): the strongest baseline of our benchmark. `random`
# is one click away; the chart's chance line already shows where a useless criterion lands.
DEFAULT_BASELINES: tuple[str, ...] = ("grad_x_act",)
# The task a new session opens first and the warm start computes first (sst2's curves tell the story best).
DEFAULT_TASKS: tuple[str, ...] = ("sst2", "ag_news")
# The curves' full-resolution grid (FFN sparsity; 0 = the dense point): the coarse pass's grid (policy.COARSE_GRID,
# so every open marker gets its filled twin) plus 80 and 85%, where the curves part; the slider evaluates any other.
APP_GRID: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9)


@dataclass(frozen=True)
class AppSettings:
    """The app's settings in force (see the module's table for the variables that set them)."""

    model: str = "demo"
    eval_limit: int = 500
    coarse_examples: int = 100
    slider_first_examples: int = 32
    grid: tuple[float, ...] = APP_GRID
    attr_samples: int | None = None  # None: the app's attribution default
    attr_steps: int | None = None
    recover_samples: int | None = None  # None: recovery.DEFAULT_SAMPLES
    exports_dir: Path = REPO_ROOT / "exports"
    tasks: tuple[str, ...] = DEFAULT_TASKS
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    redraws_per_s: float = 4.0
    run_log: Path | None = None


# AppSettings field -> the environment variable that sets it
ENV = {"model": "TP_APP_MODEL", "eval_limit": "TP_APP_EVAL_LIMIT", "coarse_examples": "TP_APP_COARSE_EXAMPLES",
       "slider_first_examples": "TP_APP_SLIDER_FIRST_EXAMPLES", "grid": "TP_APP_GRID",
       "attr_samples": "TP_APP_ATTR_SAMPLES", "attr_steps": "TP_APP_ATTR_STEPS",
       "recover_samples": "TP_APP_RECOVER_SAMPLES", "exports_dir": "TP_EXPORTS_DIR",
       "redraws_per_s": "TP_APP_REDRAWS_PER_S", "run_log": "TP_APP_RUN_LOG"}


def _grid(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


_PARSE: dict[str, Callable[[str], object]] = {
    "model": str, "eval_limit": int, "coarse_examples": int, "slider_first_examples": int, "grid": _grid,
    "attr_samples": int, "attr_steps": int, "recover_samples": int, "exports_dir": Path,
    "redraws_per_s": _positive, "run_log": Path}


def app_settings(environ: Mapping[str, str] | None = None) -> AppSettings:
    """The settings in force: each variable of ENV that is set (and not empty) replaces its default."""
    env = os.environ if environ is None else environ
    values = {}
    for field, var in ENV.items():
        text = env.get(var)
        if not text:
            continue
        try:
            values[field] = _PARSE[field](text)
        except ValueError:
            raise TPError(f"{var}={text!r} is not a valid setting (see tp_core/settings.py).") from None
    return AppSettings(**values)
