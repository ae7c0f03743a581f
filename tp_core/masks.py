"""Stage 4 of the pipeline: from scores and a target sparsity to unit masks (which units stay).

`global` allocation drops the lowest-scoring fraction of units across all layers; `per-layer` drops that fraction
of each layer. Either way every layer keeps at least one FFN neuron and one head, so a pruned block still runs.
FFN neurons and heads are pruned separately, each with its own sparsity.
A mask file (`save_mask_file`) stores one task's masks compactly, for the unchanged base model.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch

from .attribution import UnitScores
from .errors import TPError
from .gates import GateState
from .model import MultiTaskModel, UnitShape
from .paths import atomic_write_text

ALLOCATIONS = ("global", "per-layer")


@dataclass(frozen=True)
class PruneConfig:
    ffn_sparsity: float = 0.0
    head_sparsity: float = 0.0
    allocation: str = "global"

    def validate(self) -> PruneConfig:
        for name, v in (("FFN sparsity", self.ffn_sparsity), ("head sparsity", self.head_sparsity)):
            if not (0.0 <= v < 1.0) or v != v:
                raise TPError(f"{name} must be in [0, 1), got {v}.")
        if self.allocation not in ALLOCATIONS:
            raise TPError(f"Allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}.")
        return self


def units_for(ffn_sparsity: float, head_sparsity: float, units: str | None = None) -> str:
    """The attribution `units` ("ffn", "heads" or "both") whose scores pruning at these sparsities needs (a unit kind
    pruned above 0 needs its scores): `units` itself when it covers them, else "both", since scoring more kinds never
    changes a mask. Without `units`: the narrowest that does ("ffn" when nothing is pruned)."""
    need = {kind for kind, sparsity in (("ffn", ffn_sparsity), ("heads", head_sparsity)) if sparsity > 0}
    if units is None:
        return "both" if len(need) == 2 else (need.pop() if need else "ffn")
    return units if need <= ({"ffn", "heads"} if units == "both" else {units}) else "both"


@dataclass
class UnitMasks:
    """Boolean keep-masks: `ffn[l][i]` True = neuron i of layer l stays; `heads[l][h]` likewise."""

    ffn: list[np.ndarray]
    heads: list[np.ndarray]

    @staticmethod
    def dense(shape: UnitShape) -> UnitMasks:
        return UnitMasks([np.ones(f, bool) for f in shape.ffn], [np.ones(h, bool) for h in shape.heads])

    def kept_ffn(self) -> list[list[int]]:
        return [np.flatnonzero(m).tolist() for m in self.ffn]

    def kept_heads(self) -> list[list[int]]:
        return [np.flatnonzero(m).tolist() for m in self.heads]

    def ffn_sparsity(self) -> float:
        total = sum(len(m) for m in self.ffn)
        return 1.0 - sum(int(m.sum()) for m in self.ffn) / total

    def head_sparsity(self) -> float:
        total = sum(len(m) for m in self.heads)
        return 1.0 - sum(int(m.sum()) for m in self.heads) / total

    def gates(self, device: torch.device | str = "cpu", recovery=None) -> GateState:
        """A GateState that multiplies pruned units by 0 (only layers with pruned units get a gate); with a
        `recovery.Recovery` fitted for these masks, its scales and output corrections are applied too."""
        ffn = {l: torch.tensor(m, dtype=torch.float32, device=device) for l, m in enumerate(self.ffn) if not m.all()}
        heads = {l: torch.tensor(m, dtype=torch.float32, device=device).view(len(m), 1)
                 for l, m in enumerate(self.heads) if not m.all()}
        state = GateState(ffn=ffn, heads=heads)
        return state if recovery is None else recovery.apply(state, self, device)


def _allocate(scores: Sequence[np.ndarray], sparsity: float, allocation: str) -> list[np.ndarray]:
    """Keep-masks dropping `sparsity` of the units (ties broken by index, deterministic); >= 1 unit per layer."""
    sizes = [len(s) for s in scores]
    if sparsity <= 0:
        return [np.ones(n, bool) for n in sizes]
    if allocation == "per-layer":
        masks = []
        for s in scores:
            n_drop = min(int(round(sparsity * len(s))), len(s) - 1)
            order = np.argsort(np.asarray(s, dtype=np.float64), kind="stable")
            m = np.ones(len(s), bool)
            m[order[:n_drop]] = False
            masks.append(m)
        return masks
    total = sum(sizes)
    n_drop = min(int(round(sparsity * total)), total - len(sizes))
    flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores])
    layer_of = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    # protect each layer's best unit so no layer is emptied
    protected = np.zeros(total, bool)
    offset = 0
    for s in scores:
        protected[offset + int(np.argmax(s))] = True
        offset += len(s)
    order = np.argsort(flat, kind="stable")
    order = order[~protected[order]]
    keep = np.ones(total, bool)
    keep[order[:n_drop]] = False
    return [keep[layer_of == i] for i in range(len(sizes))]


def build_masks(scores: UnitScores, cfg: PruneConfig, shape: UnitShape) -> UnitMasks:
    """Masks for `cfg` from `scores` (units without scores must have sparsity 0)."""
    cfg.validate()
    if cfg.ffn_sparsity > 0 and scores.ffn is None:
        raise TPError("These scores have no FFN-neuron scores (units=heads); use FFN sparsity 0 or attribute FFN "
                      "units.")
    if cfg.head_sparsity > 0 and scores.heads is None:
        raise TPError("These scores have no head scores (units=ffn); use head sparsity 0 or attribute heads.")
    for name, sc, sizes in (("FFN", scores.ffn, shape.ffn), ("head", scores.heads, shape.heads)):
        if sc is not None and tuple(len(s) for s in sc) != tuple(sizes):
            raise TPError(f"The {name} scores do not fit this model (scores for {[len(s) for s in sc]} units per "
                          f"layer, model has {list(sizes)}). Were they computed on another model?")
    ffn = _allocate(scores.ffn, cfg.ffn_sparsity, cfg.allocation) if scores.ffn is not None \
        else [np.ones(f, bool) for f in shape.ffn]
    heads = _allocate(scores.heads, cfg.head_sparsity, cfg.allocation) if scores.heads is not None \
        else [np.ones(h, bool) for h in shape.heads]
    return UnitMasks(ffn, heads)


def prune_to_sparsity(scores: UnitScores, model: MultiTaskModel, ffn_sparsity: float, head_sparsity: float = 0.0,
                      allocation: str = "global") -> UnitMasks:
    return build_masks(scores, PruneConfig(ffn_sparsity, head_sparsity, allocation), model.unit_shape())


def overlap(a: UnitMasks, b: UnitMasks) -> dict:
    """How many kept units two masks share (FFN and heads), and the Jaccard index of the kept sets."""
    def stats(x, y):
        both = sum(int((p & q).sum()) for p, q in zip(x, y))
        either = sum(int((p | q).sum()) for p, q in zip(x, y))
        return {"shared": both, "union": either, "jaccard": both / either if either else 1.0}

    return {"ffn": stats(a.ffn, b.ffn), "heads": stats(a.heads, b.heads)}


# ----- mask files --------------------------------------------------------------------------------------------------
def _pack(m: np.ndarray) -> str:
    return base64.b64encode(np.packbits(m.astype(np.uint8)).tobytes()).decode()


def _unpack(s: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(s), dtype=np.uint8))[:n].astype(bool)


def save_mask_file(path: str | Path, masks: UnitMasks, model: MultiTaskModel, task: str, meta: dict | None = None,
                   recovery=None) -> Path:
    """One task's masks as a small JSON (bit-packed), tied to the base model's fingerprint and unit shape.
    With a `recovery.Recovery`, its corrections are stored too (version 2; read them with `recovery.load_plan`)."""
    shape = model.unit_shape()
    doc = {
        "format": "taskprune-mask",
        "version": 1 if recovery is None or not recovery.corrections else 2,
        "base_model": model.source,
        "base_fingerprint": model.fingerprint(),
        "task": task,
        "ffn_sizes": list(shape.ffn),
        "head_sizes": list(shape.heads),
        "ffn_keep": [_pack(m) for m in masks.ffn],
        "heads_keep": [_pack(m) for m in masks.heads],
        "ffn_sparsity": round(masks.ffn_sparsity(), 6),
        "head_sparsity": round(masks.head_sparsity(), 6),
        **(meta or {}),
    }
    if recovery is not None and recovery.corrections:
        recovery.check(masks)
        doc["recovery"] = recovery.to_doc()
    atomic_write_text(Path(path), json.dumps(doc, indent=1))
    return Path(path)


def load_mask_file(path: str | Path, model: MultiTaskModel | None = None) -> tuple[UnitMasks, dict]:
    """Read a mask file; with `model`, check that it fits that model's unit shape."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != "taskprune-mask":
            raise ValueError("not a TaskPrune mask file")
        masks = UnitMasks([_unpack(s, n) for s, n in zip(doc["ffn_keep"], doc["ffn_sizes"])],
                          [_unpack(s, n) for s, n in zip(doc["heads_keep"], doc["head_sizes"])])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TPError(f"Cannot read mask file {path}: {exc}") from None
    if model is not None:
        shape = model.unit_shape()
        if tuple(doc["ffn_sizes"]) != shape.ffn or tuple(doc["head_sizes"]) != shape.heads:
            raise TPError(f"Mask file {path} is for a model with {doc['ffn_sizes']} FFN neurons / {doc['head_sizes']} "
                          f"heads per layer; this model has {list(shape.ffn)} / {list(shape.heads)}.")
    return masks, doc
