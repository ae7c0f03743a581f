"""Budget targets: which rule picks the best FFN/head split within a FLOPs budget (tp_core/budget.py).

For each task, FLOPs budget and scoring seed, the planner's candidates are the splits on the app's slider steps (head
sparsity 0, 0.1, ..., 0.9; for each, the fewest FFN neurons removed, in steps of 0.01, that fit the budget). Every
candidate's masks are evaluated on the whole validation split (capped at --cap), and the rules are compared on the
same per-example predictions:

* raw: the most raw score mass (FFN and head scores summed together; the default for ig before 2026-12-06);
* share: the most score mass, each kind counted as its share of its own total (the default now without data);
* measured: the best metric on a selection set. Two-fold cross-fitting, so no example both chooses and reports: the
  validation examples are split in two seeded halves, the split chosen on one half is reported on the other, and
  the two halves are put together (every example reported once, by a choice that never saw it);
* ffn_only: no head removed (the split a user gets from the FFN slider alone; none where the budget is below what
  the FFN slider's 95% reaches);
* oracle: the best candidate on all reported examples (in-sample: an upper bound, not a rule).

Kept-vs-dense per rule is averaged over the scoring seeds; differences between rules carry a paired 95% bootstrap
interval over the validation examples (scipy.stats.bootstrap), and count as a win or loss only when it excludes 0.

    .venv/bin/python benchmarks/bench_budget.py                      # demo model, 5 tasks, 3 budgets, 3 seeds
    .venv/bin/python benchmarks/bench_budget.py --merge docs/results.json
    .venv/bin/python benchmarks/bench_budget.py --merge-from benchmarks/out/bench_budget.json --merge docs/results.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from tp_core import load_model  # noqa: E402
from tp_core.attribution import attribute  # noqa: E402
from tp_core.budget import HEAD_GRID, plan_flops  # noqa: E402
from tp_core.data import load_split  # noqa: E402
from tp_core.evaluation import masked_logits, predictions  # noqa: E402
from tp_core.policy import APP_ATTRIBUTION  # noqa: E402
from common import machine, merge_results, run_tasks  # noqa: E402

RULES = ("raw", "share", "measured", "ffn_only", "oracle")
COMPARE = (("measured", "share"), ("measured", "raw"), ("share", "raw"), ("measured", "ffn_only"))
B_RESAMPLES = 2000


def candidates(model, scores, budget: float, seq_len: int) -> list:
    """Every candidate split of the planner on the sliders' steps (plan_flops with a chooser that keeps them)."""
    seen: list = []

    def keep_all(cands):
        seen.extend(cands)
        return 0, {}

    plan_flops(model, scores, budget, seq_len, head_grid=HEAD_GRID, ffn_step=0.01, ffn_max=0.95, choose=keep_all)
    return seen


def pick(model, scores, budget: float, seq_len: int, objective: str) -> tuple[float, float]:
    p = plan_flops(model, scores, budget, seq_len, head_grid=HEAD_GRID, ffn_step=0.01, ffn_max=0.95,
                   objective=objective)
    return round(p.ffn_sparsity, 6), round(p.head_sparsity, 6)


def paired(a: np.ndarray, b: np.ndarray, dense: float) -> dict:
    """Mean of a - b (per-example correctness, seed-averaged) in points of kept-vs-dense, with a paired 95%
    percentile bootstrap over the examples."""
    from scipy.stats import bootstrap

    d = 100.0 * (a - b) / dense
    res = bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=B_RESAMPLES, method="percentile",
                    random_state=np.random.default_rng(7), vectorized=True, axis=-1)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"points": round(float(d.mean()), 3), "ci95": [round(lo, 3), round(hi, 3)],
            "verdict": "win" if lo > 0 else ("loss" if hi < 0 else "tie")}


def run_task(model, task: str, args, log) -> dict:
    val = load_split(task, "validation", limit=args.cap, seed=0)
    if val.spec.metric != "accuracy":
        raise SystemExit(f"{task}: this benchmark compares per-example correctness (accuracy tasks only), "
                         f"its metric is {val.spec.metric}")
    y = np.asarray(val.labels)
    n = len(y)
    t = time.perf_counter()
    dense_ok = predictions(masked_logits(model, task, val, None, max_length=args.max_length), "classification") == y
    dense_s = time.perf_counter() - t
    dense = float(dense_ok.mean())
    perm = np.random.default_rng(0).permutation(n)
    halves = (perm[: n // 2], perm[n // 2:])
    per_rule: dict = {(b, r): [] for b in args.budgets for r in RULES}
    picks: dict = {b: [] for b in args.budgets}
    eval_s, eval_n = 0.0, 0
    for seed in args.seeds:
        cfg = replace(APP_ATTRIBUTION, units="both", seed=seed)
        scores = attribute(model, task, cfg)
        for budget in args.budgets:
            cands = candidates(model, scores, budget, args.seq_len)
            ok = []
            for c in cands:
                t = time.perf_counter()
                logits = masked_logits(model, task, val, c.masks, max_length=args.max_length)
                eval_s, eval_n = eval_s + time.perf_counter() - t, eval_n + n
                ok.append(predictions(logits, "classification") == y)
            ok = np.array(ok, dtype=np.float64)  # candidates x examples
            key = [(round(c.config.ffn_sparsity, 6), round(c.config.head_sparsity, 6)) for c in cands]
            chosen = {"raw": key.index(pick(model, scores, budget, args.seq_len, "raw")),
                      "share": key.index(pick(model, scores, budget, args.seq_len, "share")),
                      "oracle": int(ok.mean(1).argmax())}
            ffn_only = [i for i, k in enumerate(key) if k[1] == 0.0]  # none when the budget needs heads removed
            if ffn_only:
                chosen["ffn_only"] = ffn_only[0]
            for r, i in chosen.items():
                per_rule[(budget, r)].append(ok[i])
            measured = np.empty(n)
            fold_choice = []
            for sel, rep in (halves, halves[::-1]):
                i = int(ok[:, sel].mean(1).argmax())  # ties: the first (fewest heads removed)
                measured[rep] = ok[i, rep]
                fold_choice.append(key[i])
            per_rule[(budget, "measured")].append(measured)
            picks[budget].append({"seed": seed, **{r: key[i] for r, i in chosen.items()}, "measured": fold_choice,
                                  "candidates": [{"ffn_sparsity": k[0], "head_sparsity": k[1],
                                                  "flops_fraction": round(c.flops_fraction, 6),
                                                  "keep": round(float(o.mean()) / dense, 6)}
                                                 for k, c, o in zip(key, cands, ok)]})
            log(f"{task} seed {seed} budget {budget:.0%}: " + ", ".join(
                f"{r} {np.mean(per_rule[(budget, r)][-1]) / dense:.3f}" for r in RULES if r in chosen or
                r == "measured"))
    cells = []
    for budget in args.budgets:
        # seed-averaged correctness per example (a rule with no split at this budget: absent)
        mean = {r: np.mean(per_rule[(budget, r)], axis=0) for r in RULES if per_rule[(budget, r)]}
        cells.append({"task": task, "budget": budget,
                      "keep": {r: round(float(mean[r].mean()) / dense, 6) if r in mean else None for r in RULES},
                      "diff": {f"{a}-{b}": paired(mean[a], mean[b], dense) for a, b in COMPARE
                               if a in mean and b in mean},
                      "picks": picks[budget]})
    return {"n_validation": n, "whole_split": n < args.cap, "dense": round(dense, 6),
        "dense_eval_seconds": round(dense_s, 3), "eval_seconds_per_example": round(eval_s / max(eval_n, 1), 6),
        "cells": cells}


def summarise(tasks: dict) -> dict:
    cells = [c for t in tasks.values() for c in t["cells"]]
    out = {"cells": len(cells)}
    for a, b in COMPARE:
        k = f"{a}-{b}"
        here = [c["diff"][k] for c in cells if k in c["diff"]]
        v = [d["verdict"] for d in here]
        out[k] = {"mean_points": round(float(np.mean([d["points"] for d in here])), 3), "cells": len(here),
                  "wins": v.count("win"), "losses": v.count("loss"), "ties": v.count("tie")}
    # over the cells where every rule has a split (FFN only cannot reach the smallest budgets)
    full = [c for c in cells if all(c["keep"][r] is not None for r in RULES)]
    out["mean_keep"] = {r: round(float(np.mean([c["keep"][r] for c in full])), 6) for r in RULES}
    out["mean_keep_cells"] = len(full)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--tasks", default="ag_news,mr,sst2,trec,cr")
    ap.add_argument("--budgets", default="0.3,0.45,0.6", help="FLOPs budgets (fractions of dense)")
    ap.add_argument("--seeds", default="0,1,2", help="scoring sample seeds (the app's ig settings)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per example for the FLOPs count")
    ap.add_argument("--cap", type=int, default=2000, help="validation examples per task (seeded subset if larger)")
    ap.add_argument("--max-length", type=int, default=128, help="tokenizer truncation for evaluation")
    ap.add_argument("--merge", default=None, metavar="RESULTS_JSON")
    ap.add_argument("--merge-from", default=None, metavar="RUN_JSON",
                    help="merge a finished run's output (benchmarks/out/bench_budget.json) into --merge, and stop")
    args = ap.parse_args(argv)
    if args.merge_from:
        if not args.merge:
            ap.error("--merge-from needs --merge RESULTS_JSON")
        merge_results(Path(args.merge), {"budget_benchmark": json.loads(Path(args.merge_from).read_text())})
        return 0
    args.budgets = [float(x) for x in args.budgets.split(",") if x]
    args.seeds = [int(x) for x in args.seeds.split(",") if x]
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    model = load_model(args.model)
    meta = {"model": args.model, "settings": {k: v for k, v in vars(args).items() if k != "merge"},
            "machine": machine(), "loadavg_start": list(os.getloadavg()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "benchmarks/bench_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "attribution": {k: v for k, v in vars(replace(APP_ATTRIBUTION, units="both")).items()}}
    res = run_tasks(args.tasks, lambda task: run_task(model, task, args, log), summarise, meta,
                    HERE / "out" / "bench_budget.json", t0)
    if args.merge:
        merge_results(Path(args.merge), {"budget_benchmark": res})
    print(f"wrote {HERE / 'out' / 'bench_budget.json'} ({res['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
