"""Pipelines, not criteria: our best pipeline against Kwon et al.'s, K-prune and other criteria with our lstsq, at
FLOPs budgets of the dense model (issue 29, part 2).

Rows (each builds a pruned model at the budget, at --seq-len tokens, from seeded train texts):

* best: the app's ig scores (policy.APP_ATTRIBUTION, the seed's sample), the budget planner's candidate splits (head
  sparsity on --head-grid, the fewest FFN neurons that fit), each with lstsq recovery, the split chosen by measured
  metric cross-fitted as bench_budget.py's measured rule (chosen on one seeded half of the validation examples,
  reported on the other; with --choose-on train: once on held-out labelled train examples, reported on all of
  them); with --fisher-candidate one more candidate: the masks of Kwon's Fisher search and
  rearrangement at the budget, with our lstsq instead of their tuning (the search is theirs, the recovery and the
  choice ours: `chosen` marks the halves that picked it; an experiment, not what the app does);
* kwon: tp_core/kwon.py (Fisher search, rearrangement, mask tuning);
* kprune: tp_core/kprune.py (knowledge-preserving search and weight tuning per sub-layer);
* textpruner_lstsq, gxa_lstsq: TextPruner's first-order Taylor criterion (bench_textpruner.taylor_scores; the row is
  left out when the `textpruner` package is not installed) and grad x act, with the same split choice and lstsq.

Every cell (task, budget, seed, pipeline) is cached under benchmarks/out/pipelines/ (per-example correctness and
seconds), so a stopped run resumes. Per cell, correctness is averaged over the seeds and differences carry a paired
95% bootstrap interval over the validation examples (bench_budget.paired): a win or a loss only when it excludes 0.

    .venv/bin/python benchmarks/bench_pipelines.py --merge docs/results.json        # the full run
    .venv/bin/python benchmarks/bench_pipelines.py --tasks sst2,trec --budgets 0.5,0.3 --seeds 0 --cap 500 \\
        --label reduced --merge docs/results.json                                       # a reduced run
    .venv/bin/python benchmarks/bench_pipelines.py --pipelines best,kwon --recover-samples 1024 ... \
        --merge docs/results.json --merge-as pipeline_benchmark_1024   # two rows: their headline keys only
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
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_budget import paired  # noqa: E402
from common import machine, merge_results, run_tasks  # noqa: E402
from tp_core import load_model  # noqa: E402
from tp_core.attribution import attribute  # noqa: E402
from tp_core.budget import Candidate, plan_flops  # noqa: E402
from tp_core.data import load_split  # noqa: E402
from tp_core.evaluation import masked_logits, predictions  # noqa: E402
from tp_core.masks import PruneConfig  # noqa: E402
from tp_core.policy import APP_ATTRIBUTION  # noqa: E402
from tp_core.recovery import RecoveryConfig, calibration_data, recover  # noqa: E402

PIPELINES = ("best", "kwon", "kprune", "textpruner_lstsq", "gxa_lstsq")
COMPARE = ("kwon", "kprune", "textpruner_lstsq", "gxa_lstsq")


def _has_textpruner() -> bool:
    try:
        import textpruner  # noqa: F401
    except ImportError:
        return False
    return True


def _scores(model, task: str, pipeline: str, seed: int, args):
    """Unit scores of a criterion row on the seed's scoring sample."""
    if pipeline == "textpruner_lstsq":
        from bench_textpruner import taylor_scores

        data = load_split(task, "train", limit=APP_ATTRIBUTION.samples, seed=seed)
        return taylor_scores(model, task, data, args.max_length, "textpruner_taylor", "first-order Taylor")
    method = "ig" if pipeline == "best" else "grad_x_act"
    return attribute(model, task, replace(APP_ATTRIBUTION, method=method, units="both", seed=seed))


def head_grid_for(model, budget: float, args) -> tuple:
    """--head-grid, extended by its last step while none of its head sparsities fits `budget` even with 95% of the
    FFN neurons removed (FLOPs 20% of the demo needs more than half of the heads gone). A cell's cache name carries
    the grid it used, so the budgets that fit the plain grid keep their cached cells."""
    from tp_core.budget import unit_flops

    shape, grid = model.unit_shape(), list(args.head_grid)
    step = grid[-1] - grid[-2] if len(grid) > 1 else 0.25
    dense, per_ffn, per_head = unit_flops(model, shape, args.seq_len)  # FLOPs are linear in the kept units
    k_ffn = sum(max(1, int(round(0.05 * f))) for f in shape.ffn)  # 95% of the FFN neurons removed

    def fits(h: float) -> bool:
        k_heads = sum(max(1, n - int(round(h * n))) for n in shape.heads)
        return k_ffn * per_ffn + k_heads * per_head <= budget * dense

    while not any(fits(h) for h in grid) and grid[-1] + step < 1:
        grid.append(round(grid[-1] + step, 4))
    return tuple(grid)


def _measured(model, task, pipeline, seed, budget, val, args) -> dict:
    """A criterion row: every candidate split with lstsq, the split chosen by measured metric (cross-fitted)."""
    y = np.asarray(val.labels)
    t = time.perf_counter()
    scores = _scores(model, task, pipeline, seed, args)
    seen: list = []
    plan_flops(model, scores, budget, args.seq_len, head_grid=args.head_grid, ffn_step=0.01, ffn_max=0.95,
               choose=lambda c: (seen.extend(c), (0, {}))[1])
    calib = calibration_data(task, args.recover_samples, seed)
    n_ig = len(seen)  # candidates from here on are the Fisher search's masks
    if pipeline == "best" and args.fisher_candidate:
        seen.append(_fisher_candidate(model, task, budget, calib, seed, args))
    rcfg = RecoveryConfig(level="lstsq", samples=args.recover_samples, seed=seed, max_length=args.max_length)
    held = held_out_train(task, args.choose_n, seed, calib) if args.choose_on == "train" else None
    ok, ok_held = [], []
    for c in seen:
        rec = recover(model, task, c.masks, calib, rcfg)
        logits = masked_logits(model, task, val, c.masks, rec, max_length=args.max_length)
        ok.append(predictions(logits, "classification") == y)
        if held is not None:
            logits = masked_logits(model, task, held, c.masks, rec, max_length=args.max_length)
            ok_held.append(predictions(logits, "classification") == np.asarray(held.labels))
    ok = np.array(ok, dtype=np.float64)
    if held is not None:  # chosen once on the held-out train examples, reported on every validation example
        i = int(np.array(ok_held, dtype=np.float64).mean(1).argmax())
        return {"ok": ok[i], "seconds": time.perf_counter() - t, "candidates": len(seen), "chosen_on": len(held),
                "chosen": [[round(seen[i].config.ffn_sparsity, 4), round(seen[i].config.head_sparsity, 4)]
                           + (["fisher"] if i >= n_ig else [])],
                "flops_fraction": max(c.flops_fraction for c in seen)}
    perm = np.random.default_rng(0).permutation(len(y))
    halves = (perm[: len(y) // 2], perm[len(y) // 2:])
    chosen, out = [], np.empty(len(y))
    for sel, rep in (halves, halves[::-1]):
        i = int(ok[:, sel].mean(1).argmax())
        out[rep] = ok[i, rep]
        chosen.append([round(seen[i].config.ffn_sparsity, 4), round(seen[i].config.head_sparsity, 4)]
                      + (["fisher"] if i >= n_ig else []))
    return {"ok": out, "seconds": time.perf_counter() - t, "chosen": chosen, "candidates": len(seen),
            "flops_fraction": max(c.flops_fraction for c in seen)}


def held_out_train(task: str, n: int, seed: int, calib) -> object:
    """`n` labelled train examples (seeded) that neither trained the demo model (its recipe's seeded subset of each
    task's train split, tp_core.demo.DemoConfig) nor are among the calibration texts: where the criterion rows choose
    their split with --choose-on train, so that every validation example reports the one choice."""
    from tp_core.demo import DemoConfig

    cfg = DemoConfig.for_build(False)
    full = load_split(task, "train")
    used = set(load_split(task, "train", limit=cfg.per_task_caps.get(task, cfg.max_per_task), seed=cfg.seed).texts)
    used |= set(calib.texts)
    free = [i for i, text in enumerate(full.texts) if text not in used]
    pick = np.random.default_rng(10_000 + seed).choice(free, size=min(n, len(free)), replace=False)
    return full.subset(sorted(int(i) for i in pick))


def _fisher_candidate(model, task, budget, calib, seed, args) -> Candidate:
    """One more candidate of our best row: the masks of Kwon et al.'s Fisher search and rearrangement at the
    budget (their tuning left out: the candidate gets our lstsq like the others). Where the measured choice picks
    it, the row's masks are theirs and the recovery and the choice ours; `chosen` says so per half."""
    from tp_core.kwon import KwonConfig, kwon_pipeline

    cfg = KwonConfig(samples=args.recover_samples, seed=seed, seq_len=args.seq_len, max_length=args.max_length,
                     tuning="none")
    masks, _, info = kwon_pipeline(model, task, budget, calib, cfg)
    return Candidate(PruneConfig(masks.ffn_sparsity(), masks.head_sparsity()), masks, 0.0, info["flops_fraction"])


def _peer(model, task, pipeline, seed, budget, val, args) -> dict:
    """Kwon's pipeline or K-prune at the budget, on `recover_samples` seeded train texts."""
    from tp_core.kprune import KPruneConfig, kprune_pipeline
    from tp_core.kwon import KwonConfig, kwon_pipeline

    t = time.perf_counter()
    data = calibration_data(task, args.recover_samples, seed)
    if pipeline == "kwon":
        cfg = KwonConfig(samples=args.recover_samples, seed=seed, seq_len=args.seq_len, max_length=args.max_length)
        masks, rec, info = kwon_pipeline(model, task, budget, data, cfg)
    else:
        cfg = KPruneConfig(samples=args.recover_samples, seed=seed, seq_len=args.seq_len, max_length=args.max_length)
        masks, rec, info = kprune_pipeline(model, task, budget, data, cfg)
    seconds = time.perf_counter() - t
    logits = masked_logits(model, task, val, masks, rec, max_length=args.max_length)
    return {"ok": predictions(logits, "classification") == np.asarray(val.labels), "seconds": seconds,
            "flops_fraction": info["flops_fraction"], "stage_seconds": info["seconds"]}


def cell(model, task, pipeline, seed, budget, val, args) -> dict:
    """One cached cell: per-example correctness (a 0/1 string) and the pipeline's seconds. `args.head_grid` is the
    budget's (head_grid_for)."""
    grid = "-".join(f"{h:g}" for h in args.head_grid)  # the settings a cell depends on are in its name
    extra = "_fisher" if pipeline == "best" and args.fisher_candidate else ""
    if args.choose_on == "train" and pipeline not in ("kwon", "kprune"):
        extra += f"_ct{args.choose_n}"
    path = (args.cache / args.model / task / f"{pipeline}_f{budget:g}_s{seed}_n{len(val)}_r{args.recover_samples}"
            f"_h{grid}_l{args.seq_len}{extra}.json")
    if path.is_file():
        return json.loads(path.read_text())
    run = _peer if pipeline in ("kwon", "kprune") else _measured
    res = run(model, task, pipeline, seed, budget, val, args)
    res["ok"] = "".join("1" if x else "0" for x in res["ok"])
    res["seconds"] = round(res["seconds"], 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, default=float))
    return res


def run_task(model, task: str, args, log) -> dict:
    val = load_split(task, "validation", limit=args.cap, seed=0)
    y = np.asarray(val.labels)
    dense_ok = (predictions(masked_logits(model, task, val, None, max_length=args.max_length),
                            "classification") == y).astype(np.float64)
    dense = float(dense_ok.mean())
    cells, seconds = [], {p: [] for p in args.pipelines}
    for budget in args.budgets:
        ok = {}
        at = argparse.Namespace(**{**vars(args), "head_grid": head_grid_for(model, budget, args)})
        for p in args.pipelines:
            runs = [cell(model, task, p, s, budget, val, at) for s in args.seeds]
            ok[p] = np.mean([[c == "1" for c in r["ok"]] for r in runs], axis=0).astype(np.float64)
            seconds[p] += [r["seconds"] for r in runs]
            log(f"{task} FLOPs {budget:.0%} {p}: keep {ok[p].mean() / dense:.3f}, "
                f"{np.mean([r['seconds'] for r in runs]):.0f}s")
        cells.append({"task": task, "budget": budget,
                      "keep": {p: round(float(ok[p].mean()) / dense, 6) for p in ok},
                      "diff": {f"best-{p}": paired(ok["best"], ok[p], dense) for p in COMPARE if p in ok},
                      # the headroom: the unpruned model itself against each peer (a pipeline that keeps the dense
                      # model's every answer wins exactly where this is a win)
                      "headroom": {f"dense-{p}": paired(dense_ok, ok[p], dense) for p in COMPARE if p in ok}})
    return {"n_validation": len(y), "whole_split": len(y) < args.cap, "dense": round(dense, 6), "cells": cells,
            "seconds": {p: round(float(np.mean(v)), 1) for p, v in seconds.items() if v}}


def summarise(tasks: dict) -> dict:
    """The issue's keys: win rates of best against each row (with counts), keep at FLOPs 50%, seconds."""
    cells = [c for t in tasks.values() for c in t["cells"]]
    out = {}
    for p in COMPARE:
        here = [c["diff"][f"best-{p}"] for c in cells if f"best-{p}" in c["diff"]]
        if not here:
            continue
        v = [d["verdict"] for d in here]
        key = f"best_vs_{p}_win_rate" if p in ("kwon", "kprune") else f"best_vs_{p}"
        room = [c["headroom"][f"dense-{p}"]["verdict"] == "win" for c in cells if f"best-{p}" in c["diff"]]
        out[key] = {"value": round(v.count("win") / len(v), 3), "wins": v.count("win"), "losses": v.count("loss"),
                    "ties": v.count("tie"), "cells": len(v),
                    "mean_points": round(float(np.mean([d["points"] for d in here])), 3),
                    # cells where the dense model itself beats the peer (the win rate of a pipeline that keeps every
                    # answer of the dense model; elsewhere a win needs about more accuracy than the unpruned model),
                    # and our wins among them
                    "dense_wins": sum(room), "dense_win_rate": round(sum(room) / len(v), 3),
                    "wins_where_dense_wins": sum(1 for r, x in zip(room, v) if r and x == "win")}
    out["keep_at_flops_50"] = {c["task"]: c["keep"]["best"] for c in cells if abs(c["budget"] - 0.5) < 1e-9}
    out["pipeline_seconds"] = {p: {t: r["seconds"][p] for t, r in tasks.items() if p in r["seconds"]}
                               for p in PIPELINES if any(p in r["seconds"] for r in tasks.values())}
    return out


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--tasks", default="ag_news,mr,sst2,trec,cr")
    ap.add_argument("--budgets", default="0.6,0.5,0.4,0.3,0.2", help="FLOPs budgets (fractions of dense)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cap", type=int, default=2000, help="validation examples per task (seeded subset if larger)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per example for the FLOPs count")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--recover-samples", type=int, default=1024,
                    help="train texts for lstsq, Kwon's Fisher and tuning, K-prune")
    ap.add_argument("--head-grid", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                    help="head sparsities of the candidate splits of the criterion rows")
    ap.add_argument("--fisher-candidate", action="store_true",
                    help="our best row also gets the masks of Kwon's Fisher search as a candidate (an experiment: "
                         "the app's budget helper chooses among the ig splits only)")
    ap.add_argument("--choose-on", choices=("validation", "train"), default="validation",
                    help="where the criterion rows choose their split: cross-fitted on halves of the validation "
                         "examples (default), or once on --choose-n held-out train examples (not the demo's "
                         "training subset, not the calibration texts)")
    ap.add_argument("--choose-n", type=int, default=1000, help="held-out train examples for --choose-on train")
    ap.add_argument("--pipelines", default=",".join(PIPELINES))
    ap.add_argument("--label", default="full", help="what this run is (e.g. reduced), written beside the numbers")
    ap.add_argument("--merge", default=None, metavar="RESULTS_JSON")
    ap.add_argument("--merge-as", default="pipeline_benchmark", metavar="KEY",
                    help="results.json key of the run; under another key than the full table's, the run updates "
                         "only the headline keys of the rows it ran (the quiet full run's seconds stay)")
    args = ap.parse_args(argv)
    args.budgets = [float(x) for x in args.budgets.split(",") if x]
    args.seeds = [int(x) for x in args.seeds.split(",") if x]
    args.head_grid = tuple(float(x) for x in args.head_grid.split(",") if x)
    args.pipelines = [p for p in args.pipelines.split(",") if p in PIPELINES]
    if "best" not in args.pipelines:
        ap.error("--pipelines needs best (every comparison is against it)")
    args.skipped = []
    if "textpruner_lstsq" in args.pipelines and not _has_textpruner():
        args.pipelines.remove("textpruner_lstsq")
        args.skipped.append("textpruner_lstsq (the textpruner package is not installed)")
    args.cache = HERE / "out" / "pipelines"
    return args


def main(argv=None) -> int:
    args = _args(argv)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    model = load_model(args.model)
    settings = {k: v for k, v in vars(args).items() if k not in ("merge", "cache")}
    meta = {"model": args.model, "label": args.label, "settings": settings, "machine": machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "benchmarks/bench_pipelines.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    res = run_tasks(args.tasks, lambda task: run_task(model, task, args, log), summarise, meta,
                    HERE / "out" / "bench_pipelines.json", t0)
    if args.merge:
        full = args.merge_as == "pipeline_benchmark"
        merge_results(Path(args.merge), {args.merge_as: res, **{
            k: {**v, "run": args.label} if isinstance(v, dict) else v for k, v in res["summary"].items()
            if full or k != "pipeline_seconds"}})
    print(f"wrote {HERE / 'out' / 'bench_pipelines.json'} ({res['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
