"""IG fidelity against step count and quadrature (issue 11, point 3: "fast defaults that are honest").

For every (steps, quadrature) setting, on each task, with the app's attribution defaults otherwise (64 scoring
examples, gold labels, FFN neurons + heads, seed 0, probability target, abs_sum aggregation, max_length 128):

* (a) Spearman of the FFN scores (all layers flattened) and of the head scores with the reference setting
      (50 steps, riemann_middle);
* (b) metric kept vs dense (pruned / dense) at 50/70/90% FFN sparsity (global allocation, heads kept) on the full
      validation split (ag_news: a seeded subset), with a paired bootstrap 95% interval (scipy.stats.bootstrap,
      paired over evaluation examples) of the difference of kept-vs-dense to the reference's;
* (c) the attribution seconds of each setting (tp_core.attribution.attribute, use_cache=False, fresh each time).

The recommended default is the cheapest setting (fewest IG steps: every quadrature evaluates the model once per
step; ties broken by the higher Spearman with the reference) whose interval lies at or above zero, or contains it,
in every cell (task x sparsity x scoring seed). Seeds 1 and 2 re-run the reference and the cheapest seed-0
candidates with other scoring examples, when the time budget allows (seeds are cut first, then the ag_news size).

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/bench_ig_fidelity.py            # full, demo model
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_ig_fidelity.py --quick                # demo-quick, minutes

Writes benchmarks/out/ig_fidelity.json (plus the per-example predictions as ig_fidelity_preds.npz); put it into
docs/RESULTS.md and docs/results.json with `benchmarks/run_all.py --report-only --refresh-ig-fidelity`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
from scipy.stats import bootstrap, spearmanr  # noqa: E402

from common import ROOT, machine  # noqa: E402
from tp_core.attribution import AttributionConfig, _alphas, attribute, captum_reference_ffn_ig, scoring_data  # noqa: E402
from tp_core.data import load_split  # noqa: E402
from tp_core.evaluation import compute_metric, predict_logits, predictions  # noqa: E402
from tp_core.masks import PruneConfig, build_masks, overlap  # noqa: E402

OUT = HERE / "out"
QUADRATURES = ("riemann_middle", "riemann_trapezoid", "gausslegendre")


def _key(steps: int, riemann: str) -> str:
    return f"{riemann}@{steps}"


def _mask_hash(masks) -> str:
    h = hashlib.sha1()
    for m in masks.ffn + masks.heads:
        h.update(np.packbits(m).tobytes())
    return h.hexdigest()


def _git() -> dict:
    import subprocess

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "tp_core", "benchmarks").splitlines()}


def paired_ci(pruned: np.ndarray, ref: np.ndarray, dense: np.ndarray, labels: np.ndarray, metric: str,
              n_resamples: int, seed: int) -> tuple[float, float]:
    """95% paired bootstrap interval of kept(pruned) - kept(ref), kept = metric / dense metric, resampling examples
    (the same resampled examples for the pruned, reference and dense predictions)."""
    if np.array_equal(pruned, ref):  # identical predictions: the difference is 0 in every resample
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    if metric == "accuracy":
        cs, cr, cd = [(p == labels).astype(np.float64) for p in (pruned, ref, dense)]

        def stat(a, b, c, axis=-1):
            return (a.mean(axis) - b.mean(axis)) / c.mean(axis)

        data, vec = (cs, cr, cd), True
    else:
        def stat(i):
            i = np.asarray(i, dtype=int)
            d = compute_metric(metric, dense[i], labels[i])
            return (compute_metric(metric, pruned[i], labels[i]) - compute_metric(metric, ref[i], labels[i])) / d

        data, vec = (np.arange(len(labels)),), False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(data, stat, paired=True, vectorized=vec, n_resamples=n_resamples, confidence_level=0.95,
                        method="BCa", random_state=rng)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined (e.g. near-degenerate): percentile instead
            res = bootstrap(data, stat, paired=True, vectorized=vec, n_resamples=n_resamples, confidence_level=0.95,
                            method="percentile", random_state=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def summarize(rows: list[dict], ref_steps: int, ref_riemann: str) -> dict:
    """Per setting, over all cells measured: passes everywhere? cost, Spearman; and the recommendation: the
    cheapest setting (fewest steps; ties: higher FFN Spearman, then fewer seconds) passing in every cell, preferring
    settings measured on every seed that was run over those measured on seed 0 only."""
    by = {}
    for r in rows:
        by.setdefault((r["steps"], r["riemann"]), []).append(r)
    seeds_all = sorted({r["seed"] for r in rows})
    tasks_all = sorted({r["task"] for r in rows})
    table = []
    for (s, q), rs in by.items():
        table.append({"steps": s, "riemann": q, "reference": (s, q) == (ref_steps, ref_riemann),
                      "seeds": sorted({r["seed"] for r in rs}), "tasks": sorted({r["task"] for r in rs}),
                      "cells": sum(len(r["points"]) for r in rs),
                      "passes_all_cells": all(r["passes"] for r in rs),
                      "worst_ci_high": min(pt["ci_high"] for r in rs for pt in r["points"]),
                      "min_diff": min(pt["diff"] for r in rs for pt in r["points"]),
                      "mean_spearman_ffn": float(np.mean([r["spearman_ffn"] for r in rs])),
                      "mean_spearman_heads": (float(np.mean(hs))
                                              if (hs := [r["spearman_heads"] for r in rs
                                                         if r["spearman_heads"] is not None])
                                              else None),
                      "mean_seconds": float(np.mean([r["seconds"] for r in rs]))})
    table.sort(key=lambda t: (t["steps"], -t["mean_spearman_ffn"], t["mean_seconds"]))
    ok = [t for t in table if t["passes_all_cells"] and t["tasks"] == tasks_all]
    full = [t for t in ok if t["seeds"] == seeds_all]
    pick = (full or ok or [None])[0]
    rec = None if pick is None else {"steps": pick["steps"], "riemann": pick["riemann"], "seeds_checked": pick["seeds"],
                                     "tasks_checked": pick["tasks"], "cells": pick["cells"]}
    return {"settings": table, "recommended_default": rec}


def merge(paths: list[Path], out: Path) -> dict:
    """One result from several runs (e.g. one process per task): rows, tasks and wiring joined, summary redone."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    res = {"meta": dict(parts[0]["meta"]), "tasks": {}, "rows": []}
    res["meta"]["parts"] = [{"command": p["meta"]["command"], "date": p["meta"]["date"],
                             "total_seconds": p["meta"]["total_seconds"], "tasks": list(p["tasks"]),
                             "loadavg_start": p["meta"]["machine"]["loadavg_start"],
                             "loadavg_end": p["meta"].get("loadavg_end"), "partial": p["meta"].get("partial")}
                            for p in parts]
    res["meta"]["cuts"] = [c for p in parts for c in p["meta"].get("cuts", [])]
    res["meta"]["skipped"] = [c for p in parts for c in p["meta"].get("skipped", [])]
    res["meta"]["partial"] = any(p["meta"].get("partial") for p in parts)
    res["meta"]["total_seconds"] = max(p["meta"]["total_seconds"] for p in parts)
    res["meta"]["settings"]["tasks"] = [t for p in parts for t in p["meta"]["settings"]["tasks"]]
    res["meta"]["settings"]["eval_caps"] = {k: v for p in parts for k, v in p["meta"]["settings"]["eval_caps"].items()}
    res["meta"]["settings"]["units_by_task"] = {t: p["meta"]["settings"]["units"] for p in parts for t in p["tasks"]}
    for t, u in res["meta"]["settings"]["units_by_task"].items():
        if u != "both":
            res["meta"]["cuts"].append(f"{t} scored {u} units only (same FFN scores and masks as units=both, half the "
                                       f"cost; no head Spearman, and its seconds are for {u} units only), to fit the "
                                       "time budget")
    for p in parts:
        res["tasks"].update(p["tasks"])
        res["rows"] += p["rows"]
        if p.get("wiring"):
            res["wiring"] = p["wiring"]
    res["meta"]["seeds_run"] = sorted({r["seed"] for r in res["rows"]})
    default_caps = parse([]).eval_caps if res["meta"]["settings"].get("mode") == "full" else {}
    for t, d in (res["tasks"] if default_caps else {}).items():  # smaller than the full-mode default: a cut
        want = default_caps.get(t)
        if d["n_eval"] < min(want or d["n_validation"], d["n_validation"]):
            res["meta"]["cuts"].append(f"{t} evaluated on {d['n_eval']} seeded validation examples instead of "
                                       f"{min(want or d['n_validation'], d['n_validation'])}, to fit the time budget")
    ref = res["meta"]["settings"]["reference"]
    res.update(summarize(res["rows"], ref["steps"], ref["riemann"]))
    out.write_text(json.dumps(res, indent=1))
    return res


class Run:
    def __init__(self, args):
        self.args = args
        from tp_core.model import load_model

        self.t_start = time.time()
        self.model = load_model(args.model)
        self.model.eval()
        self.shape = self.model.unit_shape()
        self.eval_data: dict = {}
        self.pred_cache: dict = {}  # (task, mask hash) -> predictions on the task's evaluation data
        self.eval_seconds: list[float] = []
        self.ref_scores: dict = {}  # (task, seed) -> UnitScores
        self.ref_preds: dict = {}  # (task, seed, sparsity) -> predictions
        self.ref_masks: dict = {}
        self.rows: list[dict] = []
        self.res = {"meta": {"command": "benchmarks/bench_ig_fidelity.py " + " ".join(sys.argv[1:]),
                             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                             "nice": os.nice(0), "git": _git(), "settings": {}, "cuts": []}}

    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t_start:7.1f}s] {msg}", flush=True)

    # ----- data and evaluation -------------------------------------------------------------------------------------
    def data(self, task: str):
        if task not in self.eval_data:
            cap = self.args.eval_caps.get(task)
            self.eval_data[task] = load_split(task, "validation", limit=cap, seed=0)
        return self.eval_data[task]

    def predict(self, task: str, masks=None) -> np.ndarray:
        data = self.data(task)
        key = (task, "dense" if masks is None else _mask_hash(masks))
        if key not in self.pred_cache:
            t0 = time.perf_counter()
            gates = None if masks is None else masks.gates(self.model.device)
            logits = predict_logits(self.model, task, data, gates, batch_size=64, max_length=self.args.max_length)
            self.pred_cache[key] = predictions(logits, data.spec.problem)
            self.eval_seconds.append(time.perf_counter() - t0)
        return self.pred_cache[key]

    def metric(self, task: str, preds: np.ndarray) -> float:
        data = self.data(task)
        return compute_metric(data.spec.metric, preds, data.labels)

    # ----- one setting -----------------------------------------------------------------------------------------
    def cfg(self, steps: int, riemann: str, seed: int) -> AttributionConfig:
        return AttributionConfig(method="ig", samples=self.args.samples, steps=steps, riemann=riemann, labels="gold",
                                 units=self.args.units, seed=seed, max_length=self.args.max_length)

    def measure(self, task: str, steps: int, riemann: str, seed: int) -> dict:
        a = self.args
        cfg = self.cfg(steps, riemann, seed)
        sdata = scoring_data(task, cfg)  # the examples attribute() would load itself; loaded outside the timing
        t0 = time.perf_counter()
        scores = attribute(self.model, task, cfg, data=sdata, use_cache=False)
        wall = time.perf_counter() - t0
        is_ref = (steps, riemann) == (a.ref_steps, a.ref_riemann)
        if is_ref:
            self.ref_scores[(task, seed)] = scores
        ref = self.ref_scores[(task, seed)]
        f, fr = np.concatenate(scores.ffn), np.concatenate(ref.ffn)
        data = self.data(task)
        labels = np.asarray(data.labels)
        dense_p = self.predict(task)
        dense = self.metric(task, dense_p)
        row = {"task": task, "seed": seed, "steps": steps, "riemann": riemann, "reference": is_ref,
               "seconds": scores.seconds, "wall_seconds": round(wall, 3),
               "spearman_ffn": float(spearmanr(f, fr).statistic),
               "spearman_heads": None if scores.heads is None else float(spearmanr(np.concatenate(scores.heads),
                                                                                   np.concatenate(ref.heads)).statistic),
               "spearman_ffn_min_layer": float(min(spearmanr(x, y).statistic for x, y in zip(scores.ffn, ref.ffn))),
               "score_scale_vs_ref": float(f.sum() / fr.sum()) if fr.sum() else None,
               "points": []}
        for sp in a.sparsities:
            masks = build_masks(scores, PruneConfig(sp, 0.0, "global"), self.shape)
            p = self.predict(task, masks)
            if is_ref:
                self.ref_preds[(task, seed, sp)] = p
                self.ref_masks[(task, seed, sp)] = masks
            rp = self.ref_preds[(task, seed, sp)]
            m, mr = self.metric(task, p), self.metric(task, rp)
            kept, kept_ref = m / dense, mr / dense
            lo, hi = (0.0, 0.0) if is_ref else paired_ci(p, rp, dense_p, labels, data.spec.metric, a.n_resamples,
                                                         seed=1000 * seed + int(100 * sp) + steps)
            ov = overlap(masks, self.ref_masks[(task, seed, sp)])["ffn"]
            row["points"].append({"ffn_sparsity": sp, "metric": m, "kept": kept, "kept_ref": kept_ref,
                                  "diff": kept - kept_ref, "ci_low": lo, "ci_high": hi, "passes": hi >= -1e-9,
                                  "predictions_differ": int((p != rp).sum()), "jaccard_ffn_vs_ref": ov["jaccard"]})
        row["passes"] = all(pt["passes"] for pt in row["points"])
        self.rows.append(row)
        pts = " ".join(f"{int(100 * pt['ffn_sparsity'])}%:{pt['kept']:.3f}({pt['diff']:+.3f} "
                       f"[{pt['ci_low']:+.3f},{pt['ci_high']:+.3f}])" for pt in row["points"])
        self.log(f"{task} seed {seed} {_key(steps, riemann)}: {wall:.1f}s, Spearman ffn {row['spearman_ffn']:.4f} "
                 f"heads {row['spearman_heads']}; kept {pts}")
        return row

    # ----- wiring check ----------------------------------------------------------------------------------------
    def wiring_check(self) -> dict:
        """Every quadrature reaches the fast path: its scores equal Captum's LayerIntegratedGradients run with the
        same method name (one layer, few examples), and differ between quadratures at the same step count."""
        a = self.args
        task, layer, steps, n = a.tasks[0], self.model.num_layers - 1, 4, a.wiring_samples
        out = {"task": task, "layer": layer, "steps": steps, "samples": n, "rows": []}
        per = {}
        for q in a.quadratures:
            cfg = AttributionConfig(method="ig", samples=n, steps=steps, riemann=q, units="ffn",
                                    max_length=a.max_length)
            sdata = scoring_data(task, cfg)
            ours = attribute(self.model, task, cfg, data=sdata, use_cache=False).ffn[layer]
            ref = captum_reference_ffn_ig(self.model, task, sdata, layer, cfg)
            sizes, alphas = _alphas(q, steps)
            per[q] = ours
            out["rows"].append({"riemann": q, "alphas": [round(x, 6) for x in alphas],
                                "weights": [round(x, 6) for x in sizes], "weight_sum": float(sum(sizes)),
                                "max_rel_diff_vs_captum": float(np.abs(ours - ref).max() / np.abs(ref).max())})
        base = per[a.quadratures[0]]
        for r in out["rows"]:
            r["max_rel_diff_vs_" + a.quadratures[0]] = float(np.abs(per[r["riemann"]] - base).max()
                                                             / np.abs(base).max())
        out["weight_sums"] = {q: {s: float(sum(_alphas(q, s)[0])) for s in a.steps if s > 1 or q != "riemann_trapezoid"}
                              for q in a.quadratures}
        self.log(f"wiring check: {[(r['riemann'], r['max_rel_diff_vs_captum']) for r in out['rows']]}")
        return out

    # ----- results ---------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        return summarize(self.rows, self.args.ref_steps, self.args.ref_riemann)

    def save(self, partial: bool) -> None:
        self.res["meta"]["partial"] = partial
        self.res["meta"]["total_seconds"] = time.time() - self.t_start
        self.res["meta"]["eval_seconds_mean"] = float(np.mean(self.eval_seconds)) if self.eval_seconds else None
        self.res["meta"]["loadavg_end"] = list(os.getloadavg())
        self.res["rows"] = self.rows
        if self.rows:
            self.res.update(self.summary())
        self.res["meta"]["machine"]["torch_threads"] = __import__("torch").get_num_threads()
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = OUT / f"{self.args.out.name}.tmp"
        tmp.write_text(json.dumps(self.res, indent=1))
        tmp.replace(self.args.out)

    def save_preds(self) -> None:
        arrays = {f"{t}__{k}": v for (t, k), v in self.pred_cache.items()}
        for t, d in self.eval_data.items():
            arrays[f"{t}__labels"] = np.asarray(d.labels)
        np.savez_compressed(self.args.out.with_name(self.args.out.stem + "_preds.npz"), **arrays)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="demo-quick, tiny sizes (a couple of minutes)")
    ap.add_argument("--model", default=None, help="model spec (default: demo, or demo-quick with --quick)")
    ap.add_argument("--tasks", default="sst2,ag_news")
    ap.add_argument("--steps", default=None, help="comma-separated step counts (default 2,4,8,16,20,50)")
    ap.add_argument("--quadratures", default=",".join(QUADRATURES))
    ap.add_argument("--ref-steps", type=int, default=None, help="reference step count (default 50)")
    ap.add_argument("--ref-riemann", default="riemann_middle")
    ap.add_argument("--samples", type=int, default=None, help="scoring examples (default 64, the app's)")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per example (AttributionConfig default, "
                                                                "what the app uses)")
    ap.add_argument("--units", default="both", choices=("both", "ffn"),
                    help="units scored (both: the app's default; ffn halves the cost and gives the same FFN scores "
                         "and masks, without the head Spearman)")
    ap.add_argument("--sparsities", default="0.5,0.7,0.9")
    ap.add_argument("--eval-cap", action="append", default=None, metavar="TASK=N",
                    help="validation examples of TASK (seeded subset); default: ag_news=2000, others all")
    ap.add_argument("--extra-seeds", default=None, help="scoring seeds besides 0 for the reference vs the cheapest "
                                                        "candidates (default 1,2)")
    ap.add_argument("--extra-candidates", type=int, default=2,
                    help="how many of the cheapest seed-0 passing settings to re-check on the extra seeds")
    ap.add_argument("--budget-min", type=float, default=60.0, help="wall-time budget; extra seeds are cut to fit")
    ap.add_argument("--n-resamples", type=int, default=None, help="bootstrap resamples (default 2000)")
    ap.add_argument("--wiring-samples", type=int, default=4,
                    help="examples of the quadrature wiring check against Captum (0: skip it)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on the shared, oversubscribed 2 cores one thread per process is "
                         "2-3x faster than 2; run one process per task to use both cores)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                    help="only merge these result files (e.g. one per task) into --out, redoing the summary")
    ap.add_argument("--out", type=Path, default=None, help="output JSON (default benchmarks/out/ig_fidelity.json, "
                                                           "or ig_fidelity_quick.json with --quick)")
    a = ap.parse_args(argv)
    q = a.quick
    a.model = a.model or ("demo-quick" if q else "demo")
    a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    a.steps = [int(x) for x in (a.steps or ("2,4" if q else "2,4,8,16,20,50")).split(",")]
    a.quadratures = [x.strip() for x in a.quadratures.split(",") if x.strip()]
    a.ref_steps = a.ref_steps or (4 if q else 50)
    if a.ref_steps not in a.steps:
        a.steps.append(a.ref_steps)
    a.samples = a.samples or (4 if q else 64)
    a.sparsities = [float(x) for x in a.sparsities.split(",")]
    caps = {"sst2": 100, "ag_news": 100} if q else {"ag_news": 2000}
    for item in a.eval_cap or []:
        t, n = item.split("=")
        caps[t] = None if n in ("all", "") else int(n)
    a.eval_caps = caps
    a.extra_seeds = [int(x) for x in (a.extra_seeds if a.extra_seeds is not None else ("1" if q else "1,2")).split(",")
                     if x.strip()]
    a.n_resamples = a.n_resamples or (500 if q else 2000)
    if q and a.extra_candidates == 2:
        a.extra_candidates = 1
    a.out = a.out or OUT / ("ig_fidelity_quick.json" if q else "ig_fidelity.json")
    return a


def plan_seed0(a) -> list[tuple[int, int, str]]:
    """(priority, steps, quadrature) of seed 0, in the order they run: the reference, then the cheap settings that
    can become the default, then the app's current default (riemann_middle@20), then the rest, dearest last."""
    ref = (a.ref_steps, a.ref_riemann)
    rest = [(s, q) for s in sorted(a.steps) for q in a.quadratures if (s, q) != ref]
    plan = [(0, *ref)]
    for s, q in rest:
        if s >= a.ref_steps:  # as dear as the reference or dearer: can never be the cheaper default
            prio = 4
        elif (s, q) == (20, "riemann_middle"):  # the app's default today
            prio = 2
        elif s <= 8:
            prio = 1
        else:
            prio = 3
        plan.append((prio, s, q))
    rank = {"riemann_middle": 0, "gausslegendre": 1, "riemann_trapezoid": 2}  # within a step count: the likelier
    plan.sort(key=lambda x: (x[0], x[1], rank.get(x[2], 3)))  # default first (trapezoid spends 2 points on the ends)
    return plan


def main(argv=None) -> int:
    a = parse(argv)
    if a.merge:
        res = merge(a.merge, a.out)
        print(f"merged {len(a.merge)} files into {a.out}; recommended default {res['recommended_default']}")
        return 0
    import torch

    torch.set_num_threads(a.threads)
    r = Run(a)
    r.res["meta"]["settings"] = {
        "model": a.model, "mode": "quick" if a.quick else "full", "tasks": a.tasks, "steps": sorted(a.steps),
        "quadratures": a.quadratures, "reference": {"steps": a.ref_steps, "riemann": a.ref_riemann},
        "samples": a.samples, "labels": "gold", "units": a.units, "target": AttributionConfig.target,
        "aggregation": AttributionConfig.aggregation, "batch_size": AttributionConfig.batch_size,
        "internal_batch": AttributionConfig.internal_batch, "max_length": a.max_length, "seed": 0,
        "extra_seeds_requested": a.extra_seeds, "extra_candidates": a.extra_candidates,
        "sparsities": a.sparsities, "allocation": "global", "head_sparsity": 0.0,
        "eval_caps": a.eval_caps, "n_resamples": a.n_resamples, "bootstrap": "scipy.stats.bootstrap, paired, BCa, 95%",
        "budget_min": a.budget_min, "torch_threads": torch.get_num_threads()}
    r.log(f"model {a.model}; tasks {a.tasks}; steps {sorted(a.steps)}; quadratures {a.quadratures}")
    r.res["tasks"] = {}
    for task in a.tasks:
        d = r.data(task)
        t0 = time.perf_counter()
        dense = r.metric(task, r.predict(task))
        r.res["tasks"][task] = {"metric_name": d.spec.metric, "dense": dense, "n_eval": len(d),
                                "n_validation": sum(1 for _ in open(d.spec.path / "validation.jsonl")),
                                "eval_cap": a.eval_caps.get(task), "dense_eval_seconds": time.perf_counter() - t0}
        r.log(f"{task}: dense {d.spec.metric} {dense:.4f} on {len(d)} validation examples "
              f"({time.perf_counter() - t0:.1f}s)")
    if a.wiring_samples > 0:
        r.res["wiring"] = r.wiring_check()
    r.save(partial=True)
    budget = a.budget_min * 60
    skipped = []

    def fits(task: str, steps: int, n_new_evals: int) -> bool:
        """Whether one more setting fits the budget, from this run's own rates: attribution seconds per IG step
        (the task's reference) and seconds per evaluation of the task's validation data."""
        ref = next((x for x in r.rows if x["task"] == task and x["reference"]), None)
        if ref is None:
            return True
        est = steps * ref["wall_seconds"] / a.ref_steps + n_new_evals * r.res["tasks"][task]["dense_eval_seconds"]
        return time.time() - r.t_start + 1.1 * est <= budget

    # seed 0: the reference of every task first, then each setting on every task, cheapest groups first
    for prio, steps, q in plan_seed0(a):
        for task in a.tasks:
            if prio > 0 and not fits(task, steps, len(a.sparsities)):
                skipped.append({"task": task, "seed": 0, "steps": steps, "riemann": q, "priority": prio})
                r.log(f"skipped {task} {_key(steps, q)}: does not fit the {a.budget_min:.0f}-min budget")
                continue
            r.measure(task, steps, q, 0)
            r.save(partial=True)
    r.res["meta"]["seed0_seconds"] = time.time() - r.t_start
    # extra seeds: the reference and the cheapest seed-0 candidates, as far as the budget allows
    summ = r.summary()
    cands = [(t["steps"], t["riemann"]) for t in summ["settings"] if t["passes_all_cells"] and not t["reference"]
             and t["cells"] == len(a.tasks) * len(a.sparsities)][: a.extra_candidates]
    r.res["meta"]["extra_seed_candidates"] = [{"steps": s, "riemann": q} for s, q in cands]
    for seed in a.extra_seeds:
        if not cands:
            break
        per_seed = 0.0
        for task in a.tasks:
            rate = next(x["wall_seconds"] for x in r.rows if x["task"] == task and x["reference"]) / a.ref_steps
            per_seed += rate * (a.ref_steps + sum(s for s, _ in cands))
            per_seed += (1 + len(cands)) * len(a.sparsities) * r.res["tasks"][task]["dense_eval_seconds"]
        if time.time() - r.t_start + 1.1 * per_seed > budget:
            skipped.append({"seed": seed, "estimate_s": per_seed})
            r.log(f"skipped seed {seed}: about {per_seed / 60:.1f} min, does not fit the budget")
            continue
        for task in a.tasks:
            for s, q in [(a.ref_steps, a.ref_riemann)] + cands:
                r.measure(task, s, q, seed)
                r.save(partial=True)
    if a.extra_seeds and not cands:
        r.res["meta"]["cuts"].append("no extra seeds: no non-reference setting passed every seed-0 cell")
    seeds_cut = [x["seed"] for x in skipped if "steps" not in x]
    if seeds_cut:
        r.res["meta"]["cuts"].append(f"seeds {seeds_cut} not run: they did not fit the {a.budget_min:.0f}-min budget "
                                     "after seed 0 (seeds are cut first)")
    settings_cut = [x for x in skipped if "steps" in x]
    if settings_cut:
        r.res["meta"]["cuts"].append("seed-0 settings not run (budget): " + ", ".join(
            f"{x['task']} {_key(x['steps'], x['riemann'])}" for x in settings_cut))
    r.res["meta"]["skipped"] = skipped
    r.res["meta"]["seeds_run"] = sorted({x["seed"] for x in r.rows})
    r.save(partial=False)
    r.save_preds()
    rec = r.res.get("recommended_default")
    r.log(f"recommended default: {rec}; wrote {a.out} in {(time.time() - r.t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
