"""Per-example predictions of a setting, kept on disk so that a point evaluated again (on a bigger subset, after a
preemption) evaluates only the examples it has not seen (`work.point`)."""
from __future__ import annotations

import hashlib
import json

from .data import TaskData
from .paths import atomic_write_text, cache_dir, touch


def example_keys(data: TaskData) -> list[str]:
    """A content key per example (its text and pair): the same example has the same key in every subset."""
    pairs = data.pairs if data.pairs is not None else [None] * len(data)
    return [hashlib.sha1(json.dumps([t, p]).encode()).hexdigest()[:20] for t, p in zip(data.texts, pairs)]


RECOVERY_KEY = "_recovery"  # a PredictionStore entry that is not an example: the setting's Recovery.summary()


class PredictionStore:
    """Per-example predictions of one setting (model, head, scores, prune config, recovery), whatever data they
    were evaluated on. The progressive curves evaluate a point on a seeded subset of 100 examples first and then on
    500 whose seeded draw usually starts with the same 100 (`random.sample` draws in order; its algorithm depends on
    the sizes, so for some split sizes, e.g. mr's 2,133, the draws differ), so the second pass evaluates only the
    new examples. Examples are matched by content, so a draw that is not nested is only evaluated in full. One file
    per setting in the cache (the caller enforces the cache cap); writes are atomic, and two jobs writing at once can
    only lose entries, never corrupt them. A job stopped mid-way (preempted by an urgent one, cancelled) keeps the
    predictions of its finished batches here, so its next attempt evaluates only the rest. A reused prediction
    came from another batch composition: its logits may differ from a fresh run's by float rounding (~1e-6)."""

    def __init__(self, parts: list):
        self.path = cache_dir("preds") / f"{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]}.json"

    def load(self) -> dict:
        try:
            doc = json.loads(self.path.read_text())
            touch(self.path)
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def add(self, preds: dict) -> None:
        if not preds:
            return
        merged = self.load()  # read again: another job may have added entries meanwhile
        merged.update(preds)
        atomic_write_text(self.path, json.dumps(merged))
