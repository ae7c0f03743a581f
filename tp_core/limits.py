"""Resource caps, so one user (or one bad file) cannot exhaust a small shared machine.

The defaults fit a 2-core, 24 GB machine serving a few sessions. Each cap can be raised with an environment variable
(for a bigger box), and every cap is shown to the user: `python -m tp_core limits` and the app's home page.
The upload cap is also Streamlit's `server.maxUploadSize` in `.streamlit/config.toml` (a test keeps the two equal).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .errors import TPError


@dataclass(frozen=True)
class Limits:
    """Caps on user-controlled sizes. Field metadata: (environment variable, what it limits)."""

    max_file_mb: int = 50  # size of an uploaded / pointed-to data file
    max_rows: int = 100_000  # examples in one data file
    max_text_chars: int = 10_000  # characters in one text field (models read <= 512 tokens anyway)
    max_labels: int = 1_000  # distinct labels inferred from a data file
    max_eval_examples: int = 20_000  # examples in one evaluation
    max_samples: int = 2_048  # attribution (scoring) examples
    max_steps: int = 200  # integrated-gradients steps
    max_length: int = 512  # tokens per input
    max_cache_mb: int = 1_024  # on-disk caches under TP_HOME (scores, curves); oldest entries are evicted
    max_model_mparams: int = 1_000  # parameters of a model to load, in millions (checked from config.json first)

    @staticmethod
    def from_env() -> Limits:
        values = {}
        for f in fields(Limits):
            env = ENV[f.name]
            raw = os.environ.get(env)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = int(raw)
            except ValueError:
                raise TPError(f"{env} must be a whole number, got {raw!r}.") from None
            if value < 1:
                raise TPError(f"{env} must be at least 1, got {value}.")
            values[f.name] = value
        return Limits(**values)

    def describe(self) -> list[tuple[str, str, str]]:
        """(what, value, environment variable) rows for the CLI and the app."""
        return [(WHAT[f.name], f"{getattr(self, f.name):,}{UNIT.get(f.name, '')}", ENV[f.name]) for f in fields(self)]

    def check(self, name: str, value: int | None, what: str | None = None) -> None:
        """Raise a clear TPError when `value` exceeds the cap `name`."""
        cap = getattr(self, name)
        if value is not None and value > cap:
            raise TPError(f"{what or WHAT[name]} is {value:,}, above this installation's limit of {cap:,}"
                          f"{UNIT.get(name, '')} (raise it with {ENV[name]}).")


ENV = {
    "max_file_mb": "TP_MAX_FILE_MB",
    "max_rows": "TP_MAX_ROWS",
    "max_text_chars": "TP_MAX_TEXT_CHARS",
    "max_labels": "TP_MAX_LABELS",
    "max_eval_examples": "TP_MAX_EVAL_EXAMPLES",
    "max_samples": "TP_MAX_SAMPLES",
    "max_steps": "TP_MAX_STEPS",
    "max_length": "TP_MAX_LENGTH",
    "max_cache_mb": "TP_MAX_CACHE_MB",
    "max_model_mparams": "TP_MAX_MODEL_MPARAMS",
}
WHAT = {
    "max_file_mb": "Data file size",
    "max_rows": "Rows in a data file",
    "max_text_chars": "Characters in one text",
    "max_labels": "Distinct labels in a data file",
    "max_eval_examples": "Examples in one evaluation",
    "max_samples": "Attribution examples (N)",
    "max_steps": "Integrated-gradients steps",
    "max_length": "Tokens per input",
    "max_cache_mb": "On-disk cache (scores, curves)",
    "max_model_mparams": "Model size (million parameters)",
}
UNIT = {"max_file_mb": " MB", "max_cache_mb": " MB", "max_model_mparams": " M"}


def limits() -> Limits:
    """The caps in force now (read from the environment on each call, so tests and servers can set them)."""
    return Limits.from_env()
