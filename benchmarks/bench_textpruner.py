"""Against TextPruner (PyPI `textpruner`): its first-order Taylor importance (|weight x loss gradient| per FFN
neuron and head, from `TransformerPruner.get_importance_score`) applied with tp_core's own masks and allocations.

TextPruner's end-to-end `prune()` fails on transformers 5 (it calls the removed `prune_heads`), so only its scoring
is used; masks, allocation and evaluation are tp_core's, identical for both criteria. Run through run_all.py.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Bench, keep
from tp_core.attribution import UnitScores


def ensure_textpruner():
    """Import textpruner, installing it with --no-deps into this interpreter's environment if missing."""
    try:
        import textpruner  # noqa: F401
    except ImportError:
        print("installing textpruner (pip install --no-deps textpruner)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "textpruner"], check=True)
    import logging

    import textpruner

    logging.getLogger("textpruner").setLevel(logging.WARNING)
    return textpruner


class _Wrapped(nn.Module):
    """What TextPruner expects: a module with `base_model_prefix` pointing to a BERT-family base model, whose
    forward returns the loss (cross-entropy on the task head)."""

    base_model_prefix = "bert"

    def __init__(self, model, task):
        super().__init__()
        self.mt = model
        self.bert = model.base
        self.task = task
        self.config = model.base.config

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        logits = self.mt(input_ids, attention_mask, token_type_ids, task=self.task)
        return F.cross_entropy(logits, labels)


def taylor_scores(model, task: str, data, max_length: int, method: str, criterion: str) -> UnitScores:
    """TextPruner's first-order Taylor importance of every FFN neuron and head (`get_importance_score`) on `data`
    with gold labels; `method` / `criterion` name the result (bench_recovery.py uses this too)."""
    textpruner = ensure_textpruner()
    from textpruner import GeneralConfig, TransformerPruner

    batches = []
    for idx, batch in model.batches(data.texts, data.pairs, 16, max_length):
        batch = dict(batch)
        batch["labels"] = torch.tensor([int(data.labels[i]) for i in idx])
        batches.append(batch)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    model.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            pruner = TransformerPruner(_Wrapped(model, task),
                                       general_config=GeneralConfig(use_device="cpu", output_dir=tmp))
            head_imp, ffn_imp = pruner.get_importance_score(batches)
            seconds = time.perf_counter() - t0
    finally:
        model.zero_grad(set_to_none=True)
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return UnitScores(model=model.source, task=task, method=method,
                      settings={"samples": len(data),
                                "criterion": f"{criterion} (TextPruner {textpruner.__version__})"},
                      ffn=[r.detach().double().numpy() for r in ffn_imp],
                      heads=[r.detach().double().numpy() for r in head_imp], n_examples=len(data), seconds=seconds)


def textpruner_scores(b: Bench, task: str, n: int) -> UnitScores:
    data = b.scoring_data(task, n)  # the same examples ig scores with
    return taylor_scores(b.model, task, data, b.s.max_length, "textpruner_taylor", "first-order Taylor |w x dL/dw|")


def _keeps(b: Bench, task: str, sc: UnitScores, d: float, sparsities=(0.5, 0.7)) -> dict:
    out = {}
    for alloc in ("global", "per-layer"):
        for f in sparsities:
            out[f"{alloc}_{int(f * 100)}"] = keep(b.masked(task, b.masks(sc, f, 0.0, alloc)), d)
    return out


def run(b: Bench) -> dict:
    textpruner_scores(b, b.s.grid_tasks[0], 2)  # warm-up (first backward allocates every parameter's gradient)
    rows = []
    for task in b.s.grid_tasks:
        d = b.dense(task)
        tp = textpruner_scores(b, task, b.s.samples)
        ig = b.scores(task, "ig")
        for name, sc in (("ig", ig), ("textpruner", tp)):
            rows.append({"task": task, "criterion": name, "seconds": sc.seconds, **_keeps(b, task, sc, d)})
        b.log(f"textpruner {task}: {rows[-2]} / {rows[-1]}")
    diffs = []
    for task in b.s.grid_tasks:
        r = {x["criterion"]: x for x in rows if x["task"] == task}
        best = lambda x: max(x["global_70"], x["per-layer_70"])  # noqa: E731
        diffs.append(best(r["ig"]) - best(r["textpruner"]))
    cells = [(t, k) for t in b.s.grid_tasks for k in ("global_50", "global_70", "per-layer_50", "per-layer_70")]
    wins = sum(1 for t, k in cells if next(x for x in rows if x["task"] == t and x["criterion"] == "ig")[k] >
               next(x for x in rows if x["task"] == t and x["criterion"] == "textpruner")[k])
    # what closes the gap: ig variants on one task (FFN units) against TextPruner at the same examples
    gap = []
    task = b.s.tp_gap_task
    d = b.dense(task)
    n = b.s.samples
    variants = [
        ("ig (grid settings; time of the FFN+heads run)", dict(units="both")),
        (f"ig, {b.s.tp_gap_more * n} examples", dict(samples=b.s.tp_gap_more * n)),
        ("ig, signed aggregation", dict(aggregation="signed")),
        ("ig, logit target", dict(target="logit")),
        (f"ig, {max(2, b.s.steps // 4)} steps", dict(steps=max(2, b.s.steps // 4))),
        ("grad_x_act", dict(method="grad_x_act")),
    ]
    if not b.s.tp_gap_all_variants:
        variants = variants[:3]
    for label, kw in variants:
        method = kw.pop("method", "ig")
        units = kw.pop("units", "ffn")  # the grid's FFN+heads scores hold the same FFN scores (cached)
        sc = b.scores(task, method, units=units, **kw)
        gap.append({"variant": label, "seconds": sc.seconds, **_keeps(b, task, sc, d, (0.7,))})
        b.log(f"textpruner gap {label}: {gap[-1]}")
    for m in (n, b.s.tp_gap_more * n):
        sc = textpruner_scores(b, task, m)
        gap.append({"variant": f"TextPruner Taylor, {m} examples", "seconds": sc.seconds,
                    **_keeps(b, task, sc, d, (0.7,))})
    mean_diff = float(np.mean(diffs))
    verdict = (f"{'ig ahead' if mean_diff > 0 else 'ig not ahead'}: best-allocation keep at 70% FFN, "
               f"ig minus TextPruner = {100 * mean_diff:+.1f} points (mean over {len(diffs)} tasks); "
               f"ig better in {wins} of {len(cells)} cells")
    return {"rows": rows, "ig_minus_textpruner_70": mean_diff, "ig_wins": wins, "cells": len(cells),
            "per_task_diff_70": dict(zip(b.s.grid_tasks, diffs)), "gap_study_task": task, "gap_study": gap,
            "verdict": verdict,
            "note": "TextPruner's prune() fails on transformers 5 (removed prune_heads); its importance scores are "
                    "applied with tp_core's masks/allocations; FFN sparsity only, heads kept."}
