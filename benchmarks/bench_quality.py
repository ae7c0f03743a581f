"""Pruning quality and the paper's claims: the sparsity grid, ig vs baselines, low-resource, unsupervised,
unseen domain (out-of-domain sentiment) and task-specificity. Run through run_all.py."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

import report
from common import BASELINES, METHODS, Bench, keep


def grid(b: Bench) -> dict:
    """Metric of every method at every grid point, per task (global allocation)."""
    s = b.s
    points = [(f, 0.0) for f in s.ffn_grid] + [(0.0, h) for h in s.head_grid] + list(s.combined_grid)
    records, dense, seconds = [], {}, {}
    for task in s.grid_tasks:
        data = b.eval_data(task)
        d = b.dense(task)
        dense[task] = {"metric_name": data.spec.metric, "metric": d, "n": len(data)}
        b.log(f"grid {task}: dense {data.spec.metric} {d:.4f} on {len(data)} examples")
        for method in METHODS:
            seeds = s.random_seeds if method == "random" else (0,)
            for seed in seeds:
                sc = b.scores(task, method, seed=seed)
                if method not in ("magnitude", "random"):
                    seconds.setdefault(task, {})[method] = sc.seconds
                pts = points if seed == seeds[0] else list(s.random_extra_points)
                for f, h in pts:
                    m = b.masked(task, b.masks(sc, f, h))
                    records.append({"task": task, "method": method, "seed": seed, "ffn_sparsity": f,
                                    "head_sparsity": h, "metric": m, "keep": keep(m, d)})
            b.log(f"grid {task}: {method} done")
    return {"records": records, "dense": dense, "attribution_seconds": seconds, "points": points}


def _cell(records, task, method, f, h):
    """Metric of one method at one point; random = mean over the seeds evaluated there."""
    vals = [r["metric"] for r in records if r["task"] == task and r["method"] == method
            and r["ffn_sparsity"] == f and r["head_sparsity"] == h]
    return float(np.mean(vals)) if vals else float("nan")


def summary(g: dict, s) -> dict:
    """Kept vs dense at the summary points: mean (and, for random, spread over seeds) per task and method."""
    rows = []
    for task in s.grid_tasks:
        d = g["dense"][task]["metric"]
        for method in METHODS:
            row = {"task": task, "method": method}
            for f, h in s.summary_points:
                vals = [r["metric"] for r in g["records"] if r["task"] == task and r["method"] == method
                        and r["ffn_sparsity"] == f and r["head_sparsity"] == h]
                key = f"ffn{int(f * 100)}_heads{int(h * 100)}"
                row[key] = keep(float(np.mean(vals)), d) if vals else None
                if method == "random" and len(vals) > 1:
                    row[key + "_spread"] = (max(vals) - min(vals)) / d if d > 0 else None
            rows.append(row)
    return {"rows": rows}


def vs_baselines(g: dict, s) -> dict:
    """ig against each baseline over tasks x grid points: wins / ties / losses, and the share where ig beats all."""
    out = {}
    cells = [(t, f, h) for t in s.grid_tasks for f, h in g["points"]]
    for base in BASELINES:
        w = l = t_ = 0
        for task, f, h in cells:
            a, c = _cell(g["records"], task, "ig", f, h), _cell(g["records"], task, base, f, h)
            if a > c:
                w += 1
            elif a < c:
                l += 1
            else:
                t_ += 1
        out[base] = {"wins": w, "ties": t_, "losses": l, "cells": len(cells)}
    beats_all = sum(all(_cell(g["records"], t, "ig", f, h) > _cell(g["records"], t, b_, f, h) for b_ in BASELINES)
                    for t, f, h in cells)
    out["ig_beats_every_baseline"] = {"cells": len(cells), "count": beats_all, "rate": beats_all / len(cells)}
    for base in BASELINES:
        out[base]["verdict"] = report.vs_verdict(base, out[base])
    return out


def low_resource(b: Bench) -> dict:
    """ig (FFN units) with N scoring examples: kept vs dense at 50% / 70% FFN sparsity."""
    s = b.s
    rows = []
    for task in s.low_resource_tasks:
        d = b.dense(task)
        for n in s.low_resource_n:
            sc = b.scores(task, "ig", units="ffn", samples=n, steps=s.low_resource_steps)
            row = {"task": task, "n": n, "seconds": sc.seconds}
            for f in (0.5, 0.7):
                row[f"keep_{int(f * 100)}"] = keep(b.masked(task, b.masks(sc, f)), d)
            rows.append(row)
            b.log(f"low-resource {task} N={n}: {row}")
        for base in ("magnitude", "random"):
            sc = b.scores(task, base)
            row = {"task": task, "n": base}
            for f in (0.5, 0.7):
                row[f"keep_{int(f * 100)}"] = keep(b.masked(task, b.masks(sc, f)), d)
            rows.append(row)
    verdicts = []
    for task in s.low_resource_tasks:
        ig_rows = [r for r in rows if r["task"] == task and isinstance(r["n"], int)]
        small, large = ig_rows[1] if len(ig_rows) > 1 else ig_rows[0], ig_rows[-1]
        data_free = max(r["keep_70"] for r in rows if r["task"] == task and not isinstance(r["n"], int))
        gap = large["keep_70"] - small["keep_70"]
        ok = gap <= 0.02 and small["keep_70"] >= data_free
        verdicts.append(f"{task}: {'holds' if ok else 'does not hold'} - at 70% ig with N={small['n']} keeps "
                        f"{100 * small['keep_70']:.1f}% vs {100 * large['keep_70']:.1f}% with N={large['n']} "
                        f"(best data-free baseline {100 * data_free:.1f}%)")
    return {"rows": rows, "steps": s.low_resource_steps, "verdicts": verdicts}


def unsupervised(b: Bench) -> dict:
    """ig with the model's predicted labels vs gold labels (FFN units): score agreement and kept vs dense."""
    rows = []
    for task in b.s.unsup_tasks:
        d = b.dense(task)
        gold = b.scores(task, "ig", labels="gold")  # FFN part = an ffn-only run (layers are scored independently)
        pred = b.scores(task, "ig", labels="predicted", units="ffn")
        g, p = np.concatenate(gold.ffn), np.concatenate(pred.ffn)
        row = {"task": task, "classes": b.model.task_info(task).num_labels,
               "max_abs_diff": float(np.max(np.abs(g - p))),
               "max_rel_diff": float(np.max(np.abs(g - p)) / np.max(np.abs(g))),
               "spearman": float(spearmanr(g, p).statistic)}
        for f in (0.5, 0.7):
            mg, mp = b.masks(gold, f), b.masks(pred, f)
            row[f"gold_keep_{int(f * 100)}"] = keep(b.masked(task, mg), d)
            row[f"pred_keep_{int(f * 100)}"] = keep(b.masked(task, mp), d)
            same = sum(int((x == y).sum()) for x, y in zip(mg.ffn, mp.ffn)) / sum(len(x) for x in mg.ffn)
            row[f"mask_agreement_{int(f * 100)}"] = same
        rows.append(row)
        b.log(f"unsupervised {task}: {row}")
    verdicts = []
    for r in rows:
        gap = max(r["gold_keep_50"] - r["pred_keep_50"], r["gold_keep_70"] - r["pred_keep_70"])
        trivial = (" (binary task: identical scores, trivially true)"
                   if r["classes"] == 2 and r["max_rel_diff"] < 1e-6 else "")
        verdicts.append(f"{r['task']} ({r['classes']} classes): {'holds' if gap <= 0.01 else 'does not hold'} - "
                        f"predicted labels lose at most {100 * max(gap, 0):.1f} points of kept metric vs gold, "
                        f"Spearman {r['spearman']:.4f}{trivial}")
    return {"rows": rows, "verdicts": verdicts}


def ood(b: Bench) -> dict:
    """sst2 masks of every method on the out-of-domain sentiment set, per domain, with the sst2 head."""
    from tp_core.data import load_split

    full = load_split("sentiment_sentences", "validation")
    domains = {name: full.domain(name) for name in ("yelp", "amazon", "imdb")}
    domains = {k: v.sample(b.s.ood_cap, seed=0) for k, v in domains.items()}
    sets = {"sst2 (in domain)": b.eval_data("sst2"), **domains}
    rows = []
    for name, data in sets.items():
        d = b.dense("sst2", data)
        for method in METHODS:
            seeds = b.s.random_seeds if method == "random" else (0,)
            row = {"domain": name, "method": method, "dense": d, "n": len(data)}
            for f in (0.5, 0.7):
                vals = [b.masked("sst2", b.masks(b.scores("sst2", method, seed=sd), f), data) for sd in seeds]
                row[f"metric_{int(f * 100)}"] = float(np.mean(vals))
                row[f"keep_{int(f * 100)}"] = keep(float(np.mean(vals)), d)
            rows.append(row)
        b.log(f"ood {name} done")
    diffs = {}
    verdicts = []
    for name in domains:
        r = {x["method"]: x for x in rows if x["domain"] == name}
        best = max((m for m in METHODS if m != "ig"), key=lambda m: r[m]["keep_70"])
        diffs[name] = r["ig"]["keep_70"] - r[best]["keep_70"]
        verdicts.append(f"{name}: ig keeps {100 * r['ig']['keep_70']:.1f}% at 70%, best other ({best}) "
                        f"{100 * r[best]['keep_70']:.1f}% -> {'ig ahead' if diffs[name] > 0 else 'ig not ahead'}")
    return {"rows": rows, "ig_minus_best_baseline_70": diffs,
            "mean_ig_minus_best_baseline_70": float(np.mean(list(diffs.values()))), "verdicts": verdicts}


def specificity(b: Bench) -> dict:
    """ig masks found on task A (rows) evaluated on task B (columns) at 70% FFN sparsity, kept vs B's dense."""
    tasks = list(b.s.grid_tasks)
    mat = []
    for a in tasks:
        m = b.masks(b.scores(a, "ig"), 0.7)
        mat.append([keep(b.masked(t, m), b.dense(t)) for t in tasks])
        b.log(f"specificity row {a} done")
    arr = np.array(mat)
    own_best = [bool(arr[j, j] >= np.nanmax(arr[:, j]) - 1e-12) for j in range(len(tasks))]
    off = arr[~np.eye(len(tasks), dtype=bool)]
    verdict = (f"{'holds' if sum(own_best) > len(tasks) / 2 else 'does not hold'}: a task's own masks are the best "
               f"for it in {sum(own_best)} of {len(tasks)} tasks; own-task keep {100 * np.nanmean(np.diag(arr)):.1f}% "
               f"on average vs {100 * np.nanmean(off):.1f}% with another task's masks")
    return {"tasks": tasks, "matrix": mat, "own_best": own_best, "verdict": verdict}


def run(b: Bench) -> dict:
    g = grid(b)
    out = {"grid": g, "summary": summary(g, b.s), "vs_baselines": vs_baselines(g, b.s)}
    out["unsupervised"] = unsupervised(b)
    out["ood"] = ood(b)
    out["specificity"] = specificity(b)
    kept50 = [_cell(g["records"], t, "ig", 0.5, 0.0) / g["dense"][t]["metric"] for t in b.s.grid_tasks
              if g["dense"][t]["metric"] > 0]
    out["ig_keep_ratio_50"] = float(np.mean(kept50)) if kept50 else math.nan
    return out
