"""Budget targets: instead of sparsities, a FLOPs budget (a fraction of the dense model's FLOPs) or a measured
latency budget (milliseconds per batch on this machine, for a sequence length and batch size); the planner finds the
FFN / head sparsity split that meets it and keeps the most metric (measured) or score mass.

FLOPs are the blocks' matrix multiplications per example of `seq_len` tokens (multiply-add = 2 FLOPs), counted by
the model family's `layer_flops` (adapters.py): an encoder block costs 8·T·H·d + 4·T²·d per kept head and 4·T·H per
kept FFN neuron; a Llama-layout decoder block counts its q/k/v/o projections and attention per kept key/value group
and 6·T·H per kept MLP neuron (three projections). Embeddings, norms, softmax and the task head (a decoder's label
words' rows) are left out (small). A budget's `seq_len` is SEQ_LEN tokens for an encoder and, for a causal LM, the
mean length of the task's rendered prompts, demonstrations included (`budget_seq_len`): the demonstrations are most
of a decoder's tokens. With uniform layer sizes the FLOPs depend only on how many heads and neurons are kept, so for
every number of kept heads the planner keeps as many FFN neurons as the budget allows and builds the masks (the
usual allocation).

Choosing among those candidates:
- by measured metric (`metric_chooser`, what the app, `budget` and `export` do by default): each candidate's masks
  are evaluated on a seeded validation sample (with the recovery, when one is asked for) and the best wins;
- by score mass (no data needed): each kind counts as its share of that kind's total score ("share"). The raw sum of
  FFN and head scores ("raw") is not comparable across the two kinds: FFN and head scores live on different scales,
  so "raw" tends to spend the budget on one kind (docs/RESULTS.md section 10 compares the rules).

A latency budget is met by measurement, not by a model of the hardware: latency is timed for the dense model and for
two planned models (the physically pruned model, `prune_physically`, median of `repeats` forward passes), a line
latency = a + b·FLOPs is fitted, the FLOPs budget the line gives is planned, and the plan is timed; while it is over
the budget the FLOPs budget is scaled down by target/measured (at most `max_tries` times).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable, Sequence

import numpy as np

from . import decoder
from .attribution import UnitScores
from .data import TaskData, get_task, load_split
from .errors import TPError
from .masks import PruneConfig, UnitMasks, build_masks

Progress = Callable[[float, str], None]
# the head sparsities a measured choice tries by default (one candidate each): the Prune page's head slider
HEAD_GRID = tuple(round(0.1 * i, 1) for i in range(10))
LATENCY_TRIES = 4  # plan_latency: plans timed at most, each scaled down from the last one's measurement
SEQ_LEN = 128  # an encoder's tokens per example for a budget, unless told
PROMPT_SAMPLE = 200  # seeded examples whose rendered prompts give a causal LM's budget length


def model_flops(model, masks: UnitMasks | None = None, seq_len: int = SEQ_LEN) -> float:
    """Matrix-multiply FLOPs of the model's blocks for one example of `seq_len` tokens, with `masks` (None: dense),
    by its family's formula (`adapters.FamilyAdapter.layer_flops`)."""
    shape = model.unit_shape()
    total = 0.0
    for l in range(len(shape.ffn)):
        heads = shape.heads[l] if masks is None else int(masks.heads[l].sum())
        ffn = shape.ffn[l] if masks is None else int(masks.ffn[l].sum())
        total += model.adapter.layer_flops(model.layer_parts(l), heads, ffn, float(seq_len))
    return total


def flops_fraction(model, masks: UnitMasks, seq_len: int = SEQ_LEN) -> float:
    return model_flops(model, masks, seq_len) / model_flops(model, None, seq_len)


def budget_seq_len(model, task: str, data: TaskData | None = None, max_length: int = 128) -> int:
    """Tokens per example at which a budget counts FLOPs: SEQ_LEN for an encoder; for a causal LM the mean token
    count of `task`'s rendered prompts (template and demonstrations included, texts clipped to `max_length` as the
    evaluation clips them), rounded, over `data` (default: PROMPT_SAMPLE seeded examples of the task's scoring
    split). The attention's T² at the mean length is a little below the mean of T² over prompts of mixed lengths."""
    if not model.adapter.causal_lm:
        return SEQ_LEN
    if data is None:
        spec = get_task(task)
        data = load_split(spec, spec.scoring_split, limit=PROMPT_SAMPLE, seed=0)
    if len(data) == 0:
        raise TPError(f"No examples of {task} to measure its prompt length on.")
    enc = decoder.encode(model, task, data.texts, data.pairs, max_length)
    return max(1, int(round(float(np.mean([len(ids) for ids in enc["input_ids"]])))))


@dataclass
class BudgetPlan:
    """The chosen split: `ffn_sparsity` / `head_sparsity` (use them with the same allocation), its FLOPs fraction,
    the score mass kept, and how the budget was met."""

    ffn_sparsity: float
    head_sparsity: float
    allocation: str
    flops_fraction: float
    budget: float  # the FLOPs fraction asked for (for a latency budget: the one finally planned)
    score_kept: float  # kept share of the score mass (by the objective below)
    objective: str  # raw | share
    seq_len: int
    candidates: int
    latency: dict = field(default_factory=dict)  # latency budgets: target, measured, fit, tries
    selection: dict = field(default_factory=dict)  # how the split was chosen among the candidates (see `choose`)

    def to_dict(self) -> dict:
        return asdict(self)

    def prune_config(self) -> PruneConfig:
        return PruneConfig(self.ffn_sparsity, self.head_sparsity, self.allocation)

    def choice(self, method: str) -> str:
        """How the split was chosen among the candidates, in words (`method`: the scores' criterion)."""
        sel = self.selection
        if sel.get("by") == "metric":
            best = max(r["metric"] for r in sel["candidates"])
            return (f"the best {sel['metric_name']} ({best:.4f}) on {sel['n']} validation examples among "
                    f"{self.candidates} splits" + (f", each with {sel['recovery']} recovery" if sel.get("recovery")
                                                   else ""))
        return f"the most {method} score mass ({self.score_kept:.1%}, {self.objective}) among {self.candidates} splits"


@dataclass
class Candidate:
    """One split meeting the budget: for a number of heads kept, as many FFN neurons as the budget allows."""

    config: PruneConfig
    masks: UnitMasks
    score_kept: float
    flops_fraction: float


# choose(candidates) -> (index of the chosen one, what to record about the choice)
Chooser = Callable[[list[Candidate]], tuple[int, dict]]


def _mass(scores: list[np.ndarray] | None) -> list[np.ndarray] | None:
    return None if scores is None else [np.abs(np.nan_to_num(np.asarray(s, dtype=np.float64))) for s in scores]


def check_budget(flops: float | None = None, latency_ms: float | None = None, seq_len: int | None = SEQ_LEN,
                 batch_size: int = 1) -> None:
    """The checks a budget's numbers pass before any work (attribution can take minutes): TPError when not."""
    if flops is not None and latency_ms is not None:
        raise TPError("Give one budget: a FLOPs budget or a latency budget, not both.")
    if flops is not None and (not (0.0 < flops <= 1.0) or flops != flops):
        raise TPError(f"A FLOPs budget is a fraction of the dense model's FLOPs in (0, 1], got {flops}.")
    if latency_ms is not None and not latency_ms > 0:
        raise TPError(f"A latency budget must be a positive number of milliseconds, got {latency_ms}.")
    if seq_len is not None and seq_len < 1:  # None: the model's default (`budget_seq_len`), once it is loaded
        raise TPError(f"The sequence length must be positive, got {seq_len}.")
    if batch_size < 1:
        raise TPError(f"The batch size must be positive, got {batch_size}.")


def unit_flops(model, shape, seq_len: int) -> tuple[float, float, float]:
    """FLOPs of the dense model, of one kept FFN neuron and of one kept head, per example of `seq_len` tokens (every
    layer has the same sizes, as plan_flops checks: a unit of layer 0 costs what one of any layer costs)."""
    dense = model_flops(model, None, seq_len)
    per_ffn = model_flops(model, UnitMasks([np.ones(shape.ffn[0], bool)] + [np.zeros(f, bool) for f in shape.ffn[1:]],
                                             [np.zeros(h, bool) for h in shape.heads]), seq_len) / shape.ffn[0]
    per_head = model_flops(model, UnitMasks([np.zeros(f, bool) for f in shape.ffn],
                                              [np.ones(shape.heads[0], bool)] +
                                              [np.zeros(h, bool) for h in shape.heads[1:]]), seq_len) / shape.heads[0]
    return dense, per_ffn, per_head


def plan_flops(model, scores: UnitScores, budget: float, seq_len: int = 128, allocation: str = "global",
               prune_heads: bool = True, objective: str = "auto",
               head_grid: Sequence[float] | None = None, ffn_step: float | None = None,
               ffn_max: float = 0.999999, choose: Chooser | None = None) -> BudgetPlan:
    """The FFN/head split with at most `budget` x dense FLOPs (0 < budget <= 1) keeping the most score mass (by
    `objective`), or the one `choose` picks.
    `prune_heads=False` (or scores without head scores) prunes FFN neurons only. `head_grid`: only these head
    sparsities are candidates (the app's head slider moves in steps of 0.1), instead of every number of heads;
    `ffn_step`: the FFN sparsity is a multiple of it (the smallest that fits the budget); `ffn_max`:
    no candidate prunes more FFN neurons than that (the app's FFN slider ends at 0.95). `choose`: picks among the
    candidates (one per number of heads kept) instead of the score mass, e.g. `metric_chooser` (measured metric)."""
    check_budget(flops=budget, seq_len=seq_len)
    if scores.ffn is None:
        raise TPError("Budget targets need FFN-neuron scores (attribute with units ffn or both).")
    shape = model.unit_shape()
    if len(set(shape.ffn)) != 1 or len(set(shape.heads)) != 1:
        raise TPError("Budget targets need a model with the same number of heads and FFN neurons in every layer "
                      "(not an already pruned one).")
    if objective == "auto":
        objective = "share"  # "raw" is not comparable across FFN and head scores (module docstring)
    if objective not in ("raw", "share"):
        raise TPError(f"objective must be auto, raw or share, got {objective!r}.")
    L = len(shape.ffn)
    n_ffn, n_heads = sum(shape.ffn), sum(shape.heads)
    dense, per_ffn, per_head = unit_flops(model, shape, seq_len)
    if L * per_ffn + L * per_head > budget * dense:
        raise TPError(f"A FLOPs budget of {budget:.1%} is below the smallest model TaskPrune builds (one head and one "
                      f"FFN neuron per layer: {(L * per_ffn + L * per_head) / dense:.2%} of dense).")
    fm, hm = _mass(scores.ffn), _mass(scores.heads if prune_heads else None)
    tot_f = sum(float(s.sum()) for s in fm) or 1.0
    tot_h = (sum(float(s.sum()) for s in hm) or 1.0) if hm is not None else 1.0
    if hm is None:
        head_options = [(n_heads, 0.0)]
    elif head_grid is not None:  # (heads kept, head sparsity) of each allowed sparsity, as the allocation rounds it
        head_options = [(int(sum(m.sum() for m in build_masks(scores, PruneConfig(0.0, h, allocation), shape).heads)),
                         float(h)) for h in sorted(set(head_grid)) if 0.0 <= h < 1.0]
    else:
        head_options = [(k_h, 1.0 - k_h / n_heads) for k_h in range(n_heads, L - 1, -1)]
    cands: list[Candidate] = []
    for k_h, hs in head_options:
        k_f = int(np.floor((budget * dense - k_h * per_head) / per_ffn + 1e-9))
        if k_f < L:
            continue  # each layer keeps one neuron: fewer heads leave more room for neurons
        k_f = min(k_f, n_ffn)
        fs = 1.0 - k_f / n_ffn
        if ffn_step:  # from the step below: the allocation rounds drop counts, so it may already fit
            fs = round(float(np.floor(fs / ffn_step + 1e-9) * ffn_step), 6)
        for _ in range(6):  # allocation rounds the drop counts: step down until the masks fit the budget
            if fs > ffn_max + 1e-9:
                break
            cfg = PruneConfig(min(max(fs, 0.0), 0.999999), min(max(hs, 0.0), 0.999999), allocation)
            masks = build_masks(scores, cfg, shape)
            if model_flops(model, masks, seq_len) <= budget * dense * (1 + 1e-9):
                break
            fs = round(fs + (ffn_step or L / n_ffn), 9)
        else:
            continue
        if fs > ffn_max + 1e-9:
            continue
        kept_f = sum(float(s[m].sum()) for s, m in zip(fm, masks.ffn))
        kept_h = sum(float(s[m].sum()) for s, m in zip(hm, masks.heads)) if hm is not None else tot_h
        if objective == "raw":
            removed = (tot_f - kept_f) + (tot_h - kept_h if hm is not None else 0.0)
            kept = 1.0 - removed / (tot_f + (tot_h if hm is not None else 0.0))
        else:
            kept = (kept_f / tot_f + (kept_h / tot_h if hm is not None else 1.0)) / (2 if hm is not None else 1)
        cands.append(Candidate(cfg, masks, kept, flops_fraction(model, masks, seq_len)))
    if not cands:
        raise TPError(f"No FFN/head split meets a FLOPs budget of {budget:.1%}.")
    if choose is None:
        masses = [c.score_kept for c in cands]
        i, selection = masses.index(max(masses)), {"by": "score mass"}
    else:
        i, selection = choose(cands)
    c = cands[i]
    return BudgetPlan(round(c.config.ffn_sparsity, 6), round(c.config.head_sparsity, 6), allocation,
                      round(c.flops_fraction, 6), budget, round(c.score_kept, 6), objective, seq_len, len(cands),
                      selection=selection)


def metric_chooser(model, task: str, data, recovery=None, calib=None, progress: Progress | None = None) -> Chooser:
    """Choose the candidate with the best measured metric on `data` (ties: the first, i.e. the fewest heads
    removed); with `recovery` (a level or RecoveryConfig) each candidate is recovered first, fitted on `calib`."""
    from .evaluation import evaluate_masked
    from .recovery import active_config, recover

    rcfg = active_config(recovery)
    progress = progress or (lambda f, m: None)

    def choose(cands: list[Candidate]) -> tuple[int, dict]:
        rows = []
        for i, c in enumerate(cands):
            what = f"split {i + 1}/{len(cands)} (FFN {c.config.ffn_sparsity:.0%}, heads {c.config.head_sparsity:.0%})"
            progress(i / len(cands), f"evaluating {what}")
            fit = None if rcfg is None else recover(model, task, c.masks, calib, rcfg)
            metric = evaluate_masked(model, task, data, c.masks, recovery=fit).metric
            rows.append({"ffn_sparsity": round(c.config.ffn_sparsity, 6),
                         "head_sparsity": round(c.config.head_sparsity, 6), "score_kept": round(c.score_kept, 6),
                         "metric": round(float(metric), 6)})
        progress(1.0, "chosen")
        metrics = [r["metric"] for r in rows]
        return metrics.index(max(metrics)), {"by": "metric", "n": len(data), "metric_name": data.spec.metric,
                                             "recovery": None if rcfg is None else rcfg.level, "candidates": rows}

    return choose


def measure_latency(model, masks: UnitMasks | None, task: str, seq_len: int, batch_size: int, repeats: int = 10,
                    recovery=None) -> float:
    """Median milliseconds of one forward pass of `batch_size` examples of `seq_len` tokens through the physically
    pruned model (`masks` None: the dense model), after one warm-up pass."""
    import torch

    from .pruning import prune_physically

    m = model if masks is None else prune_physically(model, masks, task, recovery=recovery)
    m.eval()
    ids = torch.randint(1000, 2000, (batch_size, seq_len), device=m.device)
    att = torch.ones_like(ids)
    times = []
    with torch.no_grad():
        m(ids, att, task=task)
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            m(ids, att, task=task)
            times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def plan_latency(model, scores: UnitScores, task: str, target_ms: float, seq_len: int = 128, batch_size: int = 1,
                 allocation: str = "global", prune_heads: bool = True, repeats: int = 10,
                 max_tries: int = LATENCY_TRIES,
                 progress: Progress | None = None, head_grid: Sequence[float] | None = None,
                 ffn_step: float | None = None, ffn_max: float = 0.999999,
                 choose: Chooser | None = None) -> BudgetPlan:
    """The split meeting a measured latency budget (`target_ms` per batch of `batch_size` x `seq_len` tokens on
    this machine) with the most score mass; see the module docstring. Raises TPError when even the smallest plan
    measured is slower than the target."""
    progress = progress or (lambda f, m: None)
    check_budget(latency_ms=target_ms, seq_len=seq_len, batch_size=batch_size)

    def flops_plan(fraction: float, chooser: Chooser | None = None) -> BudgetPlan:
        return plan_flops(model, scores, fraction, seq_len, allocation, prune_heads, head_grid=head_grid,
                          ffn_step=ffn_step, ffn_max=ffn_max, choose=chooser)

    progress(0.0, "timing the dense model")
    dense_ms = measure_latency(model, None, task, seq_len, batch_size, repeats)
    shape = model.unit_shape()
    points = [(1.0, dense_ms)]
    for i, frac in enumerate((0.5, 0.2)):
        progress(0.1 + 0.2 * i, f"timing a model at {frac:.0%} of the FLOPs")
        p = flops_plan(frac)
        points.append((p.flops_fraction, measure_latency(model, build_masks(scores, p.prune_config(), shape), task,
                                                         seq_len, batch_size, repeats)))
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    b, a = np.polyfit(x, y, 1)  # latency = a + b * flops fraction
    info = {"target_ms": target_ms, "dense_ms": round(dense_ms, 3), "seq_len": seq_len, "batch_size": batch_size,
            "fit_ms": [round(float(a), 3), round(float(b), 3)], "points": [[round(float(u), 4), round(float(v), 3)]
                                                                           for u, v in points]}
    if target_ms >= dense_ms:
        plan = flops_plan(1.0, choose)
        plan.latency = {**info, "measured_ms": round(dense_ms, 3), "tries": 0, "met": True}
        return plan
    budget = float(np.clip((target_ms - a) / b if b > 0 else 0.0, 0.02, 1.0))
    plan = None
    for t in range(max_tries):
        progress(0.5 + 0.5 * t / max_tries, f"planning {budget:.1%} of the FLOPs and timing it")
        try:
            plan = flops_plan(budget, choose)
        except TPError:
            break
        ms = measure_latency(model, build_masks(scores, plan.prune_config(), shape), task, seq_len, batch_size,
                             repeats)
        plan.latency = {**info, "measured_ms": round(ms, 3), "tries": t + 1, "met": ms <= target_ms}
        if ms <= target_ms:
            return plan
        budget *= 0.97 * target_ms / ms
    if plan is None:
        raise TPError(f"No pruned model meets {target_ms} ms at batch {batch_size} x {seq_len} tokens on this "
                      f"machine (the dense model takes {dense_ms:.1f} ms).")
    raise TPError(f"The latency budget {target_ms} ms was not met at batch {batch_size} x {seq_len} tokens: the "
                  f"closest plan (FFN {plan.ffn_sparsity:.0%}, heads {plan.head_sparsity:.0%}) measured "
                  f"{plan.latency['measured_ms']:.1f} ms (dense {dense_ms:.1f} ms; timings on a busy machine vary).")
