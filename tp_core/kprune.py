"""K-prune as a pipeline of ours: knowledge-preserving mask search and weight tuning, sub-layer by sub-layer
(S. Park, H. Choi, U. Kang, "Accurate Retraining-free Pruning for Pretrained Encoder-based Language Models",
ICLR 2024; code: snudm-starlab/K-prune, src/prune.py, built on Kwon et al.'s code).

For every sub-layer s = 0 .. 2L-1 (layer s // 2: attention for even s, FFN for odd s), bottom-up:

1. Knowledge measurement (their `compute_scores`) on the model pruned and tuned so far, over the sample texts:
   * predictive knowledge of a unit: 0.5 x the squared gradient, w.r.t. its mask, of the batch-mean
     KL(dense soft labels || pruned model) x T^2 at temperature T, summed over batches, divided by the number of
     examples (regression: the mean squared error to the dense outputs); a head's is the mean over its d_h mask
     entries (their mask is per head *dimension*; our heads' gates take an (H, d_h) gate for this pass);
   * representational knowledge: sum over real tokens of x_i^2 x mean_j W_ji^2 (x the output projection's input,
     W its weight), divided by the number of tokens; a head's is the mean over its d_h columns;
   * score = (lam_rep x rep + lam_pred x pred) / FLOPs of the unit, heads' times mu.
2. Knowledge-preserving mask search (their `find_mask`): over the units of this and every later sub-layer, the
   lowest score threshold whose surviving units (score > threshold) fit the FLOPs left; this sub-layer keeps its
   units above it, and their FLOPs come off what is left.
3. Knowledge-preserving weight tuning (their `knowledge_reconstruction`): the kept columns of this sub-layer's
   output projection by least squares, min_W ||X_kept W' + b - (T_dense - r)||^2 on real tokens, X the pruned
   model's own inputs, T_dense what the dense model feeds the LayerNorm (projection output + residual), r the pruned
   model's residual: recovery.py's per-projection system (recovery_fit.ProjectionFit accumulates it).

Where ours differs from their code:
* FLOPs are budget.py's (the same per-head and per-neuron costs as their utils/capacity.py), at
  budget.budget_seq_len tokens (theirs: the task's mean length);
* the search also considers keeping everything and accepts FLOPs <= the limit (theirs: < the limit, starting from
  the lowest score, so it always drops at least one unit): with nothing to prune, K-prune is the identity;
* `keep_one_per_layer` (default, masks.py's invariant): each sub-layer's best unit is always kept (theirs may
  empty a sub-layer, which then passes its residual to the LayerNorm);
* the solve: `tuning="theirs"` is their undamped least squares on the normal equations with the bias fixed
  (torch.linalg.lstsq, float64 on the CPU, gelsy with the default cut-off instead of rcond=0; a non-finite
  solution leaves the sub-layer untuned, as their RuntimeError branch); `tuning="ridge"` is recovery's lstsq
  level (bias re-fitted too, pulled toward the original weights); "none" skips tuning;
* the sample: `samples` seeded train texts (recovery's default, so the dense teacher is shared) instead of
  100,000 tokens' worth; their script's coefficients (lam_pred 1, lam_rep 2.5e-4, mu 64, T 2).
The tuned weights never change the shared model: they are a `Recovery` (lstsq corrections) beside the masks.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .budget import budget_seq_len, model_flops
from .data import TaskData
from .errors import TPError
from .gates import GateState, gated
from .kwon import UnitCosts, unit_costs
from .masks import UnitMasks
from .recovery import DEFAULT_SAMPLES, Correction, Recovery, RecoveryConfig, calibration_data
from .recovery_fit import ProjectionFit, unit_columns
from .recovery_passes import Capture, dense_teacher

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class KPruneConfig:
    """Settings of `kprune_pipeline` (defaults: their scripts/run.sh coefficients)."""

    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    seq_len: int | None = None  # FLOPs counted at this length; None: budget.budget_seq_len
    keep_one_per_layer: bool = True
    lam_pred: float = 1.0
    lam_rep: float = 2.5e-4
    mu: float = 64.0
    temperature: float = 2.0
    tuning: str = "theirs"  # theirs | ridge | none (see the module docstring)
    ridge: float = 1e-2  # tuning="ridge": recovery's lstsq damping
    batch_size: int = 32  # theirs: 32 for GLUE
    max_length: int = 128

    def validate(self) -> KPruneConfig:
        if self.samples < 1 or self.batch_size < 1 or (self.seq_len is not None and self.seq_len < 1):
            raise TPError("samples, seq_len and batch_size must be positive.")
        if self.tuning not in ("theirs", "ridge", "none"):
            raise TPError(f"tuning must be theirs, ridge or none, got {self.tuning!r}.")
        if not self.temperature > 0 or min(self.lam_pred, self.lam_rep, self.mu) < 0:
            raise TPError("The temperature must be positive and lam_pred, lam_rep, mu >= 0.")
        return self


# ----- 2. knowledge-preserving mask search -------------------------------------------------------------------------
def find_mask(target: int, head_scores: np.ndarray, ffn_scores: np.ndarray, costs: UnitCosts, max_flops: float,
              keep_one: bool = True) -> np.ndarray:
    """Kept units of sub-layer `target` (their `find_mask`): scores of the units of this and every later sub-layer
    (heads of layer target // 2 on for attention, of the next layer on for FFN; neurons of layer target // 2 on)
    pooled; the lowest threshold t in {-inf} + their values such that the FLOPs of the units scoring > t are
    <= `max_flops`; keep this sub-layer's units scoring > t. `keep_one`: every sub-layer's best unit counts as
    always kept. Raises TPError when even those do not fit."""
    l, is_ffn = target // 2, target % 2 == 1
    heads = np.array(head_scores[l + 1:] if is_ffn else head_scores[l:], dtype=np.float64)
    ffn = np.array(ffn_scores[l:], dtype=np.float64)
    if keep_one:
        for rows in (heads, ffn):
            for row in rows:
                row[int(np.argmax(row))] = np.inf
    vals = np.concatenate([heads.ravel(), ffn.ravel()])
    cost = np.concatenate([np.full(heads.size, costs.per_head), np.full(ffn.size, costs.per_ffn)])
    finite = np.isfinite(vals)
    forced = float(cost[~finite].sum())
    uniq, inv = np.unique(vals[finite], return_inverse=True)
    at_or_below = np.cumsum(np.bincount(inv, weights=cost[finite], minlength=len(uniq)))
    above = forced + float(cost[finite].sum()) - np.concatenate([[0.0], at_or_below])  # t = -inf, then each value
    fits = np.flatnonzero(above <= max_flops * (1 + 1e-12) + 1e-9)
    if len(fits) == 0:
        raise TPError("The FLOPs budget is below the smallest model K-prune builds (one unit per sub-layer).")
    t = -np.inf if fits[0] == 0 else uniq[fits[0] - 1]
    own = np.array(ffn_scores[l] if is_ffn else head_scores[l], dtype=np.float64)
    if keep_one:
        own[int(np.argmax(own))] = np.inf
    return own > t


# ----- 1. knowledge measurement ------------------------------------------------------------------------------------
class _RepHooks:
    """Pre-hooks on the output projections of layers >= `start` summing x^2 over real tokens (this thread only)."""

    def __init__(self, model, start: int):
        self.model, self.start, self.owner = model, start, threading.get_ident()
        self.mask: torch.Tensor | None = None
        self.sums: dict = {}
        self.handles = []

    def _hook(self, key):
        def hook(module, args):
            if threading.get_ident() == self.owner and self.mask is not None:
                x = args[0].detach()[self.mask].double()
                self.sums[key] = self.sums.get(key, 0) + (x ** 2).sum(0).cpu()
            return None

        return hook

    def __enter__(self):
        for k in range(self.start, self.model.num_layers):
            p = self.model.layer_parts(k)
            self.handles.append(p.attn_out.register_forward_pre_hook(self._hook(("heads", k))))
            self.handles.append(p.ffn_out.register_forward_pre_hook(self._hook(("ffn", k))))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False


def _gates(model, masks: UnitMasks, start: int) -> tuple[dict, dict]:
    """Gates of layers >= start that need gradients: FFN (F,), heads (H, d_h) (their per-dimension head mask)."""
    d = model.layer_parts(0).head_dim
    dev = model.device
    ffn = {k: torch.tensor(masks.ffn[k], dtype=torch.float32, device=dev).requires_grad_(True)
           for k in range(start, model.num_layers)}
    heads = {k: torch.tensor(masks.heads[k], dtype=torch.float32, device=dev).view(-1, 1).repeat(1, d)
             .requires_grad_(True) for k in range(start, model.num_layers)}
    return ffn, heads


def _kd_loss(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Their loss: batch-mean KL(dense soft labels || softmax(logits / T)) x T^2; regression: MSE to the dense."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits, soft)
    return F.kl_div(F.log_softmax(logits / temperature, -1), soft, reduction="batchmean") * temperature ** 2


def _soft_labels(model, task: str, teacher, temperature: float) -> list[torch.Tensor]:
    """The dense model's soft labels per calibration batch (regression: its outputs)."""
    out = []
    with torch.no_grad(), gated(GateState()):
        for h, m in zip(teacher.final, teacher.tok):
            z = model.head_logits(task, h, m.long())
            out.append(z if z.shape[-1] == 1 else F.softmax(z / temperature, -1))
    return out


def _new_fit(model, target: int) -> ProjectionFit:
    """The normal equations of sub-layer `target`'s output projection over all its units (kept set chosen later)."""
    p = model.layer_parts(target // 2)
    lin, d = (p.ffn_out, 1) if target % 2 else (p.attn_out, p.head_dim)
    return ProjectionFit(lin.weight, lin.bias, list(range(lin.in_features // d)), d, need_ls=True)


def _batch_pass(model, task, run, b: int, ffn: dict, heads: dict, target: int, fit):
    """One batch from block target // 2 up with gradients on the gates: returns the gates' gradients; adds the
    target projection's (input, wanted output) to `fit`."""
    teacher, l = run["teacher"], target // 2
    m, rest = teacher.tok[b], teacher.rest[b]
    layers = model.adapter.layers(model.base)
    st = GateState(ffn=ffn, heads=heads, ffn_out=run["state"].ffn_out, heads_out=run["state"].heads_out)
    h = run["student"][b]
    with torch.enable_grad(), gated(st):
        with Capture(model.layer_parts(l)) as cap:
            out = layers[l](h, *rest[0], **rest[1])
        h = out[0] if isinstance(out, tuple) else out
        for k in range(l + 1, model.num_layers):
            out = layers[k](h, *rest[0], **rest[1])
            h = out[0] if isinstance(out, tuple) else out
        loss = _kd_loss(model.head_logits(task, h, m.long()), run["soft"][b], run["cfg"].temperature)
    keys = sorted(ffn)
    grads = torch.autograd.grad(loss, [ffn[k] for k in keys] + [heads[k] for k in keys], allow_unused=True)
    if fit is not None:
        if target % 2:
            fit.add(cap.got["a"][m], teacher.t_ffn[l][b] - cap.got["h"][m])
        else:
            fit.add(cap.got["ctx"][m], teacher.t_attn[l][b] - run["student"][b][m])
    return keys, grads


def knowledge_scores(model, task: str, run: dict, target: int) -> tuple[np.ndarray, np.ndarray, ProjectionFit | None]:
    """Their `compute_scores` for sub-layer `target` on the current pruned model (`run`): (head scores (L, H),
    FFN scores (L, F), the target projection's normal equations or None without tuning). Rows of layers below
    target // 2 are zero (never used)."""
    cfg, masks, l = run["cfg"], run["masks"], target // 2
    L, H, Fn = model.num_layers, len(masks.heads[0]), len(masks.ffn[0])
    d = model.layer_parts(0).head_dim
    pred_h, pred_f = np.zeros((L, H)), np.zeros((L, Fn))
    fit = _new_fit(model, target) if cfg.tuning != "none" else None
    with _RepHooks(model, l) as rep:
        for b in range(len(run["student"])):
            rep.mask = run["teacher"].tok[b]
            ffn, heads = _gates(model, masks, l)
            keys, grads = _batch_pass(model, task, run, b, ffn, heads, target, fit)
            for i, k in enumerate(keys):
                gf, gh = grads[i], grads[len(keys) + i]
                if gf is not None:
                    pred_f[k] += 0.5 * (gf.detach().double() ** 2).cpu().numpy()
                if gh is not None:
                    pred_h[k] += 0.5 * (gh.detach().double() ** 2).mean(1).cpu().numpy()
        sums = rep.sums
    rep_h, rep_f = np.zeros((L, H)), np.zeros((L, Fn))
    for k in range(l, L):
        p = model.layer_parts(k)
        w_f = (p.ffn_out.weight.detach().double() ** 2).mean(0).cpu()
        w_h = (p.attn_out.weight.detach().double() ** 2).mean(0).cpu()
        rep_f[k] = (sums[("ffn", k)] * w_f).numpy()
        rep_h[k] = (sums[("heads", k)] * w_h).view(H, d).mean(1).numpy()
    n, n_tok = run["n_examples"], run["n_tokens"]
    head = cfg.mu * (cfg.lam_rep * rep_h / n_tok + cfg.lam_pred * pred_h / n) / run["costs"].per_head
    ffn_s = (cfg.lam_rep * rep_f / n_tok + cfg.lam_pred * pred_f / n) / run["costs"].per_ffn
    return head, ffn_s, fit


# ----- 3. knowledge-preserving weight tuning -----------------------------------------------------------------------
def _restrict(fit: ProjectionFit, kept: list[int]) -> ProjectionFit:
    """`fit`'s normal equations restricted to the `kept` units (accumulated once over all units, before the search
    chose them)."""
    sub = ProjectionFit(fit.W, fit.b if fit.has_bias else None, kept, fit.d, need_ls=False)
    idx = torch.as_tensor(unit_columns(kept, fit.d) + ([fit.C.shape[0] - 1] if fit.has_bias else []),
                          dtype=torch.long)
    sub.need_ls, sub.n, sub.bb = True, fit.n, fit.bb
    sub.C, sub.D = fit.C[idx][:, idx], fit.D[idx]
    return sub


def reconstruct(fit: ProjectionFit, kept: list[int], tuning: str = "theirs", ridge: float = 1e-2
                ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(weight change of the kept columns (out, kept columns), bias change or None, info) of their knowledge
    reconstruction: "theirs" solves X_k'X_k W' = X_k'(T - b) (bias fixed, no damping); "ridge" is recovery's
    lstsq (bias too, pulled toward the original weights). A non-finite solution: no change (info["fallback"])."""
    sub = _restrict(fit, kept)
    if tuning == "ridge":
        return sub.solve_lstsq(ridge)
    k = len(sub.kcols)
    X0 = sub.x0()
    rhs = sub.D[:k] - (sub.C[:k, k:k + 1] * sub.b.view(1, -1) if sub.has_bias else 0)
    info = {"err_before": sub.rel_error(X0), "solver": "lstsq"}
    try:
        Wt = torch.linalg.lstsq(sub.C[:k, :k], rhs).solution
    except RuntimeError:
        Wt = None
    if Wt is None or not torch.isfinite(Wt).all():
        info.update(fallback=True, err_after=info["err_before"])
        return np.zeros((fit.W.shape[0], k), np.float32), None, info
    info.update(fallback=False, err_after=sub.rel_error(torch.cat([Wt] + [sub.b.view(1, -1)] * sub.has_bias)))
    return (Wt.T - X0[:k].T).float().numpy(), None, info


# ----- the pipeline ------------------------------------------------------------------------------------------------
def _recovery(task: str, cfg: KPruneConfig, n: int, corrections: list, n_tokens: int = 0, seconds: float = 0.0
              ) -> Recovery:
    level = "none" if cfg.tuning == "none" else "lstsq"
    rcfg = RecoveryConfig(level=level, samples=n, seed=cfg.seed, ridge=cfg.ridge, head=False,
                          batch_size=cfg.batch_size, max_length=cfg.max_length)
    return Recovery(level, task, rcfg, corrections, n, n_tokens, seconds)


def _start(model, task: str, data: TaskData, cfg: KPruneConfig, costs: UnitCosts) -> dict:
    """The run's state: the dense teacher, the dense masks, block 0's inputs, soft labels, the FLOPs left."""
    teacher = dense_teacher(model, task, data, _recovery(task, cfg, len(data), []).config, share_prefix=False)
    masks = UnitMasks.dense(model.unit_shape())
    return {"cfg": cfg, "masks": masks, "teacher": teacher, "student": list(teacher.inputs[0]),
            "soft": _soft_labels(model, task, teacher, cfg.temperature), "state": masks.gates(model.device),
            "costs": costs, "n_examples": len(data), "n_tokens": int(sum(int(m.sum()) for m in teacher.tok)),
            "corrections": [], "pruned": False, "kept": []}


def _step(model, task: str, run: dict, target: int, left: float, seconds: dict) -> float:
    """One sub-layer: measure, search, prune, tune; returns the FLOPs left for the sub-layers above."""
    cfg, masks, l, is_ffn = run["cfg"], run["masks"], target // 2, target % 2 == 1
    t = time.perf_counter()
    head_s, ffn_s, fit = knowledge_scores(model, task, run, target)
    seconds["scores"] += time.perf_counter() - t
    t = time.perf_counter()
    keep = find_mask(target, head_s, ffn_s, run["costs"], left, cfg.keep_one_per_layer)
    seconds["search"] += time.perf_counter() - t
    (masks.ffn if is_ffn else masks.heads)[l] = keep
    run["pruned"] = run["pruned"] or not keep.all()
    run["kept"].append(int(keep.sum()))
    t = time.perf_counter()
    if fit is not None and run["pruned"] and keep.any():
        kept = np.flatnonzero(keep).tolist()
        c = Correction("ffn" if is_ffn else "heads", l, kept)
        c.weight, c.bias, c.info = reconstruct(fit, kept, cfg.tuning, cfg.ridge)
        run["corrections"].append(c)
    run["state"] = _recovery(task, cfg, 0, run["corrections"]).apply(masks.gates(model.device), masks, model.device)
    seconds["tuning"] += time.perf_counter() - t
    return left - int(keep.sum()) * (run["costs"].per_ffn if is_ffn else run["costs"].per_head)


@torch.no_grad()
def _advance(model, run: dict, l: int) -> None:
    """Block l's outputs of the pruned, tuned model: the inputs of block l + 1."""
    block, teacher = model.adapter.layers(model.base)[l], run["teacher"]
    with gated(run["state"]):
        for b, h in enumerate(run["student"]):
            out = block(h, *teacher.rest[b][0], **teacher.rest[b][1])
            run["student"][b] = out[0] if isinstance(out, tuple) else out


def kprune_pipeline(model, task: str, flops_budget: float, data: TaskData | None = None,
                    config: KPruneConfig = KPruneConfig(), progress: Progress | None = None
                    ) -> tuple[UnitMasks, Recovery, dict]:
    """K-prune of `model` for `task` at `flops_budget` x the dense encoder's FLOPs: for each sub-layer bottom-up,
    `knowledge_scores` -> `find_mask` -> `reconstruct`. `data` (default: `config.samples` seeded train texts; labels
    unused) serves every stage. Returns (masks, recovery, info); info["seconds"] has each stage's time."""
    cfg = config.validate()
    if not 0.0 < flops_budget <= 1.0 or flops_budget != flops_budget:
        raise TPError(f"A FLOPs budget is a fraction of the dense model's FLOPs in (0, 1], got {flops_budget}.")
    progress = progress or (lambda f, m: None)
    data = calibration_data(task, cfg.samples, cfg.seed) if data is None else data
    if cfg.seq_len is None:
        cfg = replace(cfg, seq_len=budget_seq_len(model, task, data, cfg.max_length))
    costs = unit_costs(model, cfg.seq_len)
    t0 = time.perf_counter()
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)  # only the gates need gradients
    try:
        run = _start(model, task, data, cfg, costs)
        seconds = {"teacher": time.perf_counter() - t0, "scores": 0.0, "search": 0.0, "tuning": 0.0}
        left, L = flops_budget * costs.dense, model.num_layers
        for target in range(2 * L):
            progress(target / (2 * L), f"K-prune: sub-layer {target + 1} of {2 * L}")
            left = _step(model, task, run, target, left, seconds)
            if target % 2:
                _advance(model, run, target // 2)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    seconds["total"] = time.perf_counter() - t0
    masks = run["masks"]
    rec = _recovery(task, cfg, len(data), run["corrections"], run["n_tokens"], seconds["tuning"])
    info = {"config": asdict(cfg), "kept_per_sublayer": run["kept"], "tuning": rec.summary(),
            "flops_fraction": model_flops(model, masks, cfg.seq_len) / costs.dense,
            "ffn_sparsity": masks.ffn_sparsity(), "head_sparsity": masks.head_sparsity(),
            "n_examples": len(data), "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    progress(1.0, "K-prune done")
    return masks, rec, info
