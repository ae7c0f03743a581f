"""Unseen-domain benchmark with intervals (issue 12): masks found on sst2 by every criterion, without and with
recovery (calibrated on sst2's own train texts, as a user would), evaluated with the sst2 head on the whole
out-of-domain sentiment set (Yelp, Amazon, IMDb: 1,000 sentences each), over several scoring seeds.

    HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python benchmarks/bench_ood.py --model demo --merge docs/results.json

Per domain and cell (criterion x level x FFN sparsity): kept-vs-dense with a 95% percentile bootstrap over that
domain's sentences (the seeds' predictions resampled together; one resample matrix per domain, so comparisons are
paired). Per domain and sparsity: ig against the best other criterion at the same level, and "our best pipeline"
(criterion x level chosen on the in-domain sst2 selection set, as bench_recovery.py chooses it, never on the
out-of-domain data) against the best baseline, each with the paired scipy.stats.bootstrap interval of the difference:
a win or loss only when it excludes zero. The run is stored under `ood_benchmark` in results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_recovery import (ALL_METHODS, OURS, Run, TaskStats, _holdout, check_choices, ci, merge,  # noqa: E402
                            paired_test)
from tp_core import load_model  # noqa: E402
from tp_core.data import get_task, load_split  # noqa: E402
from tp_core.masks import PruneConfig, build_masks  # noqa: E402
from tp_core.recovery import RecoveryConfig, calibration_data, recover  # noqa: E402

OOD_TASK = "sentiment_sentences"


def run(args, log) -> dict:
    model = load_model(args.model)
    r = Run(args, model)
    src = args.task
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    levels = ["none"] + [x for x in args.levels.split(",") if x and x != "none"]
    ffn = [float(f) for f in args.ffn.split(",") if f]
    full = load_split(OOD_TASK, "validation")
    domains = {name: full.domain(name) for name in get_task(OOD_TASK).domains}
    sel = _holdout(src, args.select_n, args.samples, args.recover_samples, seeds, args.model)
    sets = {**domains, "_selection": sel}
    preds: dict = {}  # (set, method, f, level) -> [per seed]
    dense = {name: r.predict(src, data) for name, data in domains.items()}  # the selection set needs none
    shape = model.unit_shape()
    for seed in seeds:
        sdata = load_split(src, get_task(src).scoring_split, limit=args.samples, seed=seed)
        calib = calibration_data(src, args.recover_samples, seed)
        for method in methods:
            sc = r.scores(src, method, seed, sdata, "ffn")
            for f in ffn:
                masks = build_masks(sc, PruneConfig(f, 0.0), shape)
                for level in levels:
                    rec = recover(model, src, masks, calib, r.rcfg(level, seed)) if level != "none" else None
                    for name, data in sets.items():
                        preds.setdefault((name, method, f, level), []).append(r.predict(src, data, masks, rec))
            log(f"seed {seed} {method} done")
    return analyse(r, src, sets, dense, preds, methods, levels, ffn)


def analyse(r: Run, src, sets, dense, preds, methods, levels, ffn) -> dict:
    y_sel = np.asarray(sets["_selection"].labels)
    sel_score = {k[1:]: float(np.mean([np.mean(p == y_sel) for p in v])) for k, v in preds.items()
                 if k[0] == "_selection"}
    ours = [m for m in methods if m in OURS]
    baselines = [m for m in methods if m != "ig"]
    out: dict = {"source_task": src, "domains": {}, "cells": [], "comparisons": []}
    for i, name in enumerate(n for n in sets if n != "_selection"):
        y = np.asarray(sets[name].labels)
        st = TaskStats(y, "accuracy", seed=2000 + i)
        d_pt, d_boot = st.point([dense[name]]), st.boot([dense[name]])
        out["domains"][name] = {"n": len(y), "dense": round(d_pt, 6), "dense_ci95": ci(d_boot)}
        kept = {}
        for (n_, m, f, lv), p in preds.items():
            if n_ != name:
                continue
            kept[(m, f, lv)] = st.point(p) / d_pt
            out["cells"].append({"domain": name, "method": m, "ffn_sparsity": f, "level": lv,
                                 "metric": round(st.point(p), 6), "kept_vs_dense": round(kept[(m, f, lv)], 6),
                                 "kept_ci95": ci(st.boot(p) / d_boot)})
        for f in ffn:
            for lv in levels:
                others = [m for m in baselines if (m, f, lv) in kept]
                if "ig" not in methods or not others:
                    continue
                best_other = max(others, key=lambda m: kept[(m, f, lv)])
                test = paired_test(st, preds[(name, "ig", f, lv)], preds[(name, best_other, f, lv)])
                out["comparisons"].append({"domain": name, "ffn_sparsity": f, "level": lv, "kind": "ig_vs_best_other",
                                           "other": best_other, **_points(test, d_pt)})
            # our best pipeline, chosen on the in-domain selection set, against the best baseline without recovery
            cand = [(m, lv) for m in ours for lv in levels if (m, f, lv) in sel_score]
            if not cand:
                continue
            m_b, lv_b = max(cand, key=lambda c: sel_score[(c[0], f, c[1])])
            base = [m for m in methods if m != m_b and (m, f, "none") in kept]
            if not base:
                continue
            best_base = max(base, key=lambda m: kept[(m, f, "none")])
            test = paired_test(st, preds[(name, m_b, f, lv_b)], preds[(name, best_base, f, "none")])
            out["comparisons"].append({"domain": name, "ffn_sparsity": f, "kind": "best_pipeline_vs_best_baseline",
                                       "ours": {"method": m_b, "level": lv_b}, "other": best_base,
                                       "kept_ours": round(kept[(m_b, f, lv_b)], 6),
                                       "kept_other": round(kept[(best_base, f, "none")], 6), **_points(test, d_pt)})
    return out


def _points(test: dict, dense: float) -> dict:
    """A paired test of the metric, with the difference also in points of kept-vs-dense (same dense: a ratio)."""
    return {**test, "diff_keep_points": round(100 * test["diff"] / dense, 3),
            "ci95_keep_points": [round(100 * x / dense, 3) for x in test["ci95"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--task", default="sst2", help="the task whose masks and head are used")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--levels", default="none,lstsq")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--ffn", default="0.7,0.8,0.9")
    ap.add_argument("--select-n", type=int, default=500, help="in-domain selection-set size (train holdout)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--riemann", default="gausslegendre")
    ap.add_argument("--recover-samples", type=int, default=RecoveryConfig.samples)
    ap.add_argument("--ridge", type=float, default=RecoveryConfig.ridge)
    ap.add_argument("--damping", type=float, default=RecoveryConfig.damping)
    ap.add_argument("--head-refit", default="on", choices=["on", "off"])
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default=str(HERE / "out" / "bench_ood.json"))
    ap.add_argument("--merge", default=None, metavar="RESULTS_JSON", help="store the run under ood_benchmark there")
    args = ap.parse_args(argv)
    check_choices(ap, args)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:8.1f}s] {msg}", flush=True)

    res = run(args, log)
    res["meta"] = {"model": args.model, "settings": vars(args), "started": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "seconds": round(time.time() - t0, 1),
        "loadavg_end": list(os.getloadavg()),
        "command": "benchmarks/bench_ood.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    if args.merge:
        merge(res, Path(args.merge), "ood_benchmark")  # atomic; leaves every other key as it is
    for c in res["comparisons"]:
        print(json.dumps(c))
    print(f"wrote {out} ({res['meta']['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
