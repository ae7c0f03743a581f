"""Kwon et al. 2022 as a pipeline of ours: Fisher-information mask search under a FLOPs constraint, mask
rearrangement and mask tuning (W. Kwon, S. Kim, M. W. Mahoney, J. Hassoun, K. Keutzer, A. Gholami, "A Fast
Post-Training Pruning Framework for Transformers", NeurIPS 2022; code: WoosukKwon/retraining-free-pruning).

Steps (each maps to one file of their code):

1. `fisher_info` (prune/fisher.py): mask variables m (one per head, one per FFN neuron) at 1; for each example n
   the gradient g_n = dL_n/dm of its cross-entropy loss (gold or predicted labels); the Fisher information
   I = sum_n g_n g_n' (their Eq. 5 without the 1/N, as their `compute_fisher_info`). The diagonal I_ii scores unit
   i; the per-layer blocks (block-diagonal approximation, Sec. 4.2) drive the rearrangement. The mask variables are
   our per-thread gates (gates.py), one row per example, so one backward pass gives every example's gradient.
2. `search_mask` (prune/search.py `search_mac`): maximise sum_{kept} I_ii subject to FLOPs(mask) <= budget x dense
   (Sec. 4.1): for every number of kept heads, the heads with the largest I_ii and as many of the best FFN neurons as
   the remaining FLOPs allow; the best total wins. FLOPs are budget.py's (the same per-head and per-neuron costs
   their efficiency/mac.py counts: 8Thd + 4T^2 d per head, 4Th per neuron, in FLOPs = 2 x MACs).
3. `rearrange_mask` (prune/rearrange.py): per layer and kind, with the count kept, the pruned set P minimising
   the Fisher's quadratic estimate of the loss increase 1_P' I_l 1_P = sum_n (sum_{i in P} g_n,i)^2 (Sec. 4.2,
   interactions within a layer included), by their greedy swap.
4. Mask tuning (prune/rescale.py): the kept units' mask values by layer-wise least squares against the dense
   model (Sec. 4.3): recovery.py's `scale` level, which is their formulation: per projection, bottom-up, attention
   then FFN, min_s ||sum_u s_u W_u x_u + b - T||^2 on real tokens, x the pruned model's own (tuned) inputs, T what
   the dense model feeds the LayerNorm minus the pruned model's residual. Where it differs: the solver (ours
   (G + lam I) s = r + lam 1 with lam = 1e-2 x mean diag G and more damping while a scale leaves [0, 10]; theirs
   LSMR with damp = 1 on the normal equations, `solver="lsmr"` = recovery_fit.ProjectionFit.solve_lsmr); a failed
   solve (theirs: stop tuning every later layer; ours: 0/1 gates for that projection only); their attention system
   carries one free intercept (discarded), their layer-0 heads are never tuned and their last FFN fits the [CLS]
   token only for classification (our heads mean-pool every token, so every real token counts).
5. `kwon_pipeline` ties them together, with each stage's seconds.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .attribution import UnitScores
from .budget import SEQ_LEN, budget_seq_len, model_flops, unit_flops
from .data import TaskData
from .errors import TPError
from .gates import GateState, gated
from .masks import PruneConfig, UnitMasks
from .model import MAX_PADDING
from .recovery import DEFAULT_SAMPLES, Recovery, RecoveryConfig, calibration_data, recover

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class KwonConfig:
    """Settings of `kwon_pipeline`. `samples` train texts (seeded) give both the Fisher and the mask tuning, as
    their `sample_dataloader` does (their default 2,048; ours recovery's 1,024, so the dense teacher is shared)."""

    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    labels: str = "gold"  # gold | predicted (unsupervised: the model's own predictions as labels)
    # FLOPs are counted at this length (theirs: the task's mean length); None: budget.budget_seq_len, as budget
    # plans count them (an encoder's SEQ_LEN, a causal LM's mean prompt length on the calibration data)
    seq_len: int | None = None
    keep_one_per_layer: bool = True  # our invariant (masks.py); theirs may empty a layer
    rearrange: bool = True
    tuning: str = "scale"  # recovery level after the search: scale (their mask tuning), lstsq, bias or none
    # scale's solver: "ridge" is recovery's (damped toward 1, relative damping, per-projection fallback); "lsmr"
    # theirs (utils/linalg.py: LSMR with damp=1 on the normal equations, scales outside [-10, 10] rejected)
    solver: str = "ridge"
    batch_size: int = 16
    max_length: int = 128

    def validate(self) -> KwonConfig:
        if self.labels not in ("gold", "predicted"):
            raise TPError(f"labels must be gold or predicted, got {self.labels!r}.")
        if self.samples < 1 or (self.seq_len is not None and self.seq_len < 1) or self.batch_size < 1:
            raise TPError("samples, seq_len and batch_size must be positive.")
        if self.tuning not in ("none", "bias", "scale", "lstsq"):
            raise TPError(f"tuning must be none, bias, scale or lstsq, got {self.tuning!r}.")
        if self.solver not in ("ridge", "lsmr"):
            raise TPError(f"solver must be ridge or lsmr, got {self.solver!r}.")
        return self


@dataclass
class FisherInfo:
    """Empirical Fisher of the mask variables: per layer the full block (`ffn[l]`: F x F, `heads[l]`: H x H, float64)
    of sum_n g_n g_n' over `n_examples` examples; the diagonals are the units' importances."""

    ffn: list[np.ndarray]
    heads: list[np.ndarray]
    n_examples: int
    seconds: float = 0.0

    def ffn_diag(self) -> list[np.ndarray]:
        return [np.diag(f).copy() for f in self.ffn]

    def head_diag(self) -> list[np.ndarray]:
        return [np.diag(h).copy() for h in self.heads]


@dataclass(frozen=True)
class UnitCosts:
    """FLOPs per example (budget.py's model): the dense encoder's, one kept FFN neuron's, one kept head's."""

    dense: float
    per_ffn: float
    per_head: float
    seq_len: int

    def flops(self, n_ffn: int, n_heads: int) -> float:
        return n_ffn * self.per_ffn + n_heads * self.per_head


def unit_costs(model, seq_len: int = SEQ_LEN) -> UnitCosts:
    """The per-unit FLOPs of `model` at `seq_len` tokens (layers of equal sizes, as budget.plan_flops needs)."""
    shape = model.unit_shape()
    if len(set(shape.ffn)) != 1 or len(set(shape.heads)) != 1:
        raise TPError("Kwon's search needs the same number of heads and FFN neurons in every layer.")
    dense, per_ffn, per_head = unit_flops(model, shape, seq_len)
    return UnitCosts(dense, per_ffn, per_head, seq_len)


# ----- 1. Fisher information ---------------------------------------------------------------------------------------
def _example_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_n per example: cross-entropy of label y_n (their `outputs.loss`, per example); regression: squared error."""
    if logits.shape[-1] == 1:
        return 0.5 * (logits[:, 0] - y.to(logits.dtype)) ** 2
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


def _batch_grads(model, task: str, batch: dict, y: torch.Tensor) -> tuple[list, list]:
    """Per-example gradients dL_n/dm at m = 1 for every layer: FFN (B, F) and heads (B, H), through per-example gate
    rows (gate[n] multiplies only example n, so d(sum_n L_n)/dgate[n] = dL_n/dm)."""
    b = y.shape[0]
    shape = model.unit_shape()
    dev = model.device
    ffn = {l: torch.ones(b, 1, f, device=dev, requires_grad=True) for l, f in enumerate(shape.ffn)}
    heads = {l: torch.ones(b, 1, h, 1, device=dev, requires_grad=True) for l, h in enumerate(shape.heads)}
    with torch.enable_grad(), gated(GateState(ffn=ffn, heads=heads)):
        loss = _example_losses(model(**batch, task=task), y).sum()
    L = len(shape.ffn)
    grads = torch.autograd.grad(loss, [ffn[l] for l in range(L)] + [heads[l] for l in range(L)])
    return [g[:, 0, :].double() for g in grads[:L]], [g[:, 0, :, 0].double() for g in grads[L:]]


def _labels(model, task: str, data: TaskData, idx: list[int], batch: dict, labels: str) -> torch.Tensor:
    is_reg = model.task_info(task).num_labels == 1
    if labels == "predicted":
        with torch.no_grad(), gated(GateState()):
            out = model(**batch, task=task)
        return out[:, 0] if is_reg else out.argmax(-1)
    dtype = torch.float32 if is_reg else torch.long
    return torch.tensor([float(data.labels[i]) if is_reg else int(data.labels[i]) for i in idx], dtype=dtype,
                        device=model.device)


def fisher_info(model, task: str, data: TaskData, labels: str = "gold", batch_size: int = 16,
                max_length: int = 128, progress: Progress | None = None) -> FisherInfo:
    """The empirical Fisher information of the head and FFN-neuron mask variables on `data` (Kwon et al. Eq. 5,
    their prune/fisher.py): I_l = sum_n g_n,l g_n,l' per layer l and kind, g_n = dL_n/dm at m = 1, L_n the
    cross-entropy of example n with its gold label (`labels="gold"`) or the model's prediction ("predicted",
    unsupervised). Their code takes gradients of 32-example mini-batch means; this is the paper's per-example form."""
    if labels not in ("gold", "predicted"):
        raise TPError(f"labels must be gold or predicted, got {labels!r}.")
    model.resolve_task(task)
    progress = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    shape = model.unit_shape()
    F = [torch.zeros(f, f, dtype=torch.float64) for f in shape.ffn]
    H = [torch.zeros(h, h, dtype=torch.float64) for h in shape.heads]
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)  # only the gates need gradients
    try:
        batches = list(model.batches(data.texts, data.pairs, batch_size, max_length, max_padding=MAX_PADDING,
                                     task=task))
        for k, (idx, batch) in enumerate(batches):
            y = _labels(model, task, data, idx, batch, labels)
            gf, gh = _batch_grads(model, task, batch, y)
            for l in range(len(F)):
                F[l] += (gf[l].T @ gf[l]).cpu()
                H[l] += (gh[l].T @ gh[l]).cpu()
            progress((k + 1) / len(batches), f"Fisher information: batch {k + 1} of {len(batches)}")
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    return FisherInfo([f.numpy() for f in F], [h.numpy() for h in H], len(data), time.perf_counter() - t0)


# ----- 2. mask search under a FLOPs constraint ---------------------------------------------------------------------
def _best_sets(scores: list[np.ndarray], keep_one: bool) -> tuple[np.ndarray, np.ndarray]:
    """(value of the best k units for every k = 0..n, the order units enter), with `keep_one`: each layer's best
    unit first (an optimal set with >= 1 unit per layer contains every layer's best: swapping it in never lowers the
    sum), then the rest by value. Ties: lower layer, then lower index first."""
    flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores])
    offsets = np.cumsum([0] + [len(s) for s in scores])[:-1]
    first = np.array([o + int(np.argmax(s)) for o, s in zip(offsets, scores)]) if keep_one else np.array([], int)
    rest = np.setdiff1d(np.arange(len(flat)), first)
    rest = rest[np.argsort(-flat[rest], kind="stable")]
    order = np.concatenate([first[np.argsort(-flat[first], kind="stable")], rest]).astype(int)
    return np.concatenate([[0.0], np.cumsum(flat[order])]), order


def _to_masks(order: np.ndarray, k: int, sizes: list[int]) -> list[np.ndarray]:
    keep = np.zeros(sum(sizes), bool)
    keep[order[:k]] = True
    return np.split(keep, np.cumsum(sizes)[:-1])


def search_mask(fisher: FisherInfo, flops_budget: float, costs: UnitCosts,
                keep_one_per_layer: bool = True) -> tuple[UnitMasks, dict]:
    """Kwon et al.'s mask search (Sec. 4.1, prune/search.py `search_mac`): maximise sum of I_ii over the kept heads
    and neurons subject to k_h c_h + k_f c_f <= flops_budget x dense FLOPs. Every head costs c_h and every neuron c_f,
    so for k_h kept heads the best set is the k_h best heads and the k_f = floor((B - k_h c_h) / c_f) best neurons; the
    search tries every k_h (from 1 as theirs, or from L with `keep_one_per_layer`: >= 1 head and neuron per layer,
    masks.py's invariant) and keeps the best (first on ties: fewest heads). The masks' FLOPs, as
    budget.model_flops counts them, are within the budget. Returns (masks, info)."""
    if not 0.0 < flops_budget <= 1.0 or flops_budget != flops_budget:
        raise TPError(f"A FLOPs budget is a fraction of the dense model's FLOPs in (0, 1], got {flops_budget}.")
    hd, fd = fisher.head_diag(), fisher.ffn_diag()
    L = len(fd)
    lo = L if keep_one_per_layer else 0
    head_val, head_order = _best_sets(hd, keep_one_per_layer)
    ffn_val, ffn_order = _best_sets(fd, keep_one_per_layer)
    n_heads, n_ffn = len(head_val) - 1, len(ffn_val) - 1
    limit = flops_budget * costs.dense
    best = None
    for k_h in range(max(lo, 1), n_heads + 1):
        k_f = min(int(np.floor((limit - k_h * costs.per_head) / costs.per_ffn + 1e-9)), n_ffn)
        if k_f < lo:
            break  # more heads leave fewer neurons
        value = head_val[k_h] + ffn_val[k_f]
        if best is None or value > best[0]:
            best = (value, k_h, k_f)
    if best is None:
        raise TPError(f"A FLOPs budget of {flops_budget:.1%} is below the smallest model the search builds "
                      f"({costs.flops(lo, max(lo, 1)) / costs.dense:.2%} of dense).")
    value, k_h, k_f = best
    masks = UnitMasks(_to_masks(ffn_order, k_f, [len(s) for s in fd]), _to_masks(head_order, k_h, [len(s) for s in hd]))
    info = {"objective": float(value), "heads_kept": k_h, "ffn_kept": k_f, "budget": flops_budget,
            "flops_fraction": costs.flops(k_f, k_h) / costs.dense, "seq_len": costs.seq_len}
    return masks, info


# ----- 3. rearrangement --------------------------------------------------------------------------------------------
def pruned_loss(fisher_block: np.ndarray, keep: np.ndarray) -> float:
    """The Fisher's estimate of one layer's loss increase when the units outside `keep` are removed:
    1_P' I 1_P = sum_n (sum_{i in P} g_n,i)^2 over the pruned set P (what rearrangement minimises)."""
    p = ~np.asarray(keep, bool)
    return float(fisher_block[np.ix_(p, p)].sum())


def _greedy_rearrange(I: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Their `greedy_rearrange` on the Fisher block I instead of the gradient vectors: start with the n_pruned units
    of smallest I_ii pruned; visit the others by increasing I_ii, add each to P, then drop from P the unit r whose
    removal leaves the smallest ||sum_{P - r} g||^2 = v(P) - 2 sum_{j in P} I_rj + I_rr (first on ties). v(P) never
    grows: dropping the unit just added gives back the previous P."""
    n = len(keep)
    n_pruned = n - int(keep.sum())
    if n_pruned == 0 or n_pruned == n:
        return keep.copy()
    order = np.argsort(np.diag(I), kind="stable").tolist()
    P = order[:n_pruned]
    rows = I[:, P].sum(1)  # rows[r] = sum_{j in P} I_rj
    for idx in order[n_pruned:]:
        P.append(idx)
        rows += I[:, idx]
        Pa = np.asarray(P)
        total = rows[Pa].sum()
        drop = int(np.argmin(total - 2 * rows[Pa] + I[Pa, Pa]))
        rows -= I[:, P[drop]]
        del P[drop]
    out = np.ones(n, bool)
    out[P] = False
    return out


def rearrange_mask(masks: UnitMasks, fisher: FisherInfo) -> tuple[UnitMasks, dict]:
    """Kwon et al.'s mask rearrangement (Sec. 4.2, prune/rearrange.py) of every layer's heads and FFN neurons: the
    same number kept per layer, the kept set chosen by `_greedy_rearrange` on that layer's Fisher block. Returns
    (masks, info) with the objective `pruned_loss` summed over layers before and after, and units swapped."""
    out, info = {}, {}
    for kind, ms, blocks in (("ffn", masks.ffn, fisher.ffn), ("heads", masks.heads, fisher.heads)):
        new = [_greedy_rearrange(I, np.asarray(m, bool)) for m, I in zip(ms, blocks)]
        out[kind] = new
        info[kind] = {"loss_before": sum(pruned_loss(I, m) for m, I in zip(ms, blocks)),
                      "loss_after": sum(pruned_loss(I, m) for m, I in zip(new, blocks)),
                      "swapped": int(sum((m & ~np.asarray(o, bool)).sum() for m, o in zip(new, ms)))}
    return UnitMasks(out["ffn"], out["heads"]), info


def mask_scores(masks: UnitMasks, model_name: str, task: str, settings: dict | None = None,
                method: str = "kwon") -> tuple[UnitScores, PruneConfig]:
    """(scores, config) that `masks.build_masks` turns back into exactly `masks` (global allocation): 1 for a kept
    unit, 0 for a removed one, at the removed fraction of each kind; so an export path that builds masks from scores
    (export.export_pruned, export_formats) exports Kwon's masks (K-prune's with `method="kprune"`). Needs >= 1 kept
    unit per layer (the protected one)."""
    if not all(m.any() for m in masks.ffn + masks.heads):
        raise TPError("These masks leave a layer empty; search with keep_one_per_layer to export them.")
    scores = UnitScores(model_name, task, method, dict(settings or {}), [m.astype(np.float64) for m in masks.ffn],
                        [m.astype(np.float64) for m in masks.heads])
    return scores, PruneConfig(masks.ffn_sparsity(), masks.head_sparsity(), "global")


# ----- 4 + 5. mask tuning and the pipeline -------------------------------------------------------------------------
def tuning_config(cfg: KwonConfig, samples: int) -> RecoveryConfig:
    """The recovery that plays their mask tuning: per-unit scales fitted layer by layer, bottom-up, attention then
    FFN, against the dense model on real tokens (recovery.py `scale`). No task-head re-fit: theirs has none."""
    return RecoveryConfig(level=cfg.tuning, samples=samples, seed=cfg.seed, head=False, scale_solver=cfg.solver,
                          max_length=cfg.max_length)


def kwon_pipeline(model, task: str, flops_budget: float, data: TaskData | None = None,
                  config: KwonConfig = KwonConfig(), progress: Progress | None = None
                  ) -> tuple[UnitMasks, Recovery, dict]:
    """Kwon et al.'s post-training pruning of `model` for `task` at `flops_budget` x the dense encoder's FLOPs:
    Fisher (`fisher_info`) -> search (`search_mask`) -> rearrangement (`rearrange_mask`) -> mask tuning (`recover`).
    `data` (default: `config.samples` seeded train texts with their labels) serves the Fisher and the tuning.
    Returns (masks, recovery, info); info["seconds"] has each stage's time."""
    cfg = config.validate()
    progress = progress or (lambda f, m: None)
    if data is None:
        data = calibration_data(task, cfg.samples, cfg.seed)
    if cfg.seq_len is None:
        cfg = replace(cfg, seq_len=budget_seq_len(model, task, data, cfg.max_length))
    costs = unit_costs(model, cfg.seq_len)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    fisher = fisher_info(model, task, data, cfg.labels, cfg.batch_size, cfg.max_length,
                         lambda f, m: progress(0.5 * f, m))
    seconds["fisher"] = time.perf_counter() - t
    t = time.perf_counter()
    masks, search = search_mask(fisher, flops_budget, costs, cfg.keep_one_per_layer)
    seconds["search"] = time.perf_counter() - t
    rearranged = {}
    if cfg.rearrange:
        t = time.perf_counter()
        masks, rearranged = rearrange_mask(masks, fisher)
        seconds["rearrange"] = time.perf_counter() - t
    t = time.perf_counter()
    rec = recover(model, task, masks, data, tuning_config(cfg, len(data)), lambda f, m: progress(0.5 + 0.5 * f, m))
    seconds["tuning"] = time.perf_counter() - t
    seconds["total"] = sum(seconds.values())
    info = {"config": asdict(cfg), "search": search, "rearrange": rearranged, "tuning": rec.summary(),
            "flops_fraction": model_flops(model, masks, cfg.seq_len) / costs.dense,
            "ffn_sparsity": masks.ffn_sparsity(), "head_sparsity": masks.head_sparsity(),
            "n_examples": len(data), "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    progress(1.0, "Kwon et al. pipeline done")
    return masks, rec, info
