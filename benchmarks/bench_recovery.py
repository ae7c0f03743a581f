"""Quick measurement of training-free recovery (tp_core/recovery.py): sst2 and ag_news at 80% and 90% FFN sparsity,
grad_x_act and ig masks (global allocation), each recovery level, on the full validation split (capped, seeded), with
bootstrap 95% intervals (scipy.stats.bootstrap, percentile) on each metric and on each paired difference
"recovered minus plain masks", plus the seconds each recovery adds.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/bench_recovery.py --model demo-quick

Writes benchmarks/out/bench_recovery[-<tag>].json (not committed) and prints a table. Calibration texts are a seeded
sample of the task's *train* split; scoring examples for the masks too; validation examples are only evaluated.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tp_core import load_model  # noqa: E402
from tp_core.attribution import AttributionConfig, attribute  # noqa: E402
from tp_core.data import load_split  # noqa: E402
from tp_core.evaluation import compute_metric, predict_logits, predictions  # noqa: E402
from tp_core.masks import PruneConfig, build_masks  # noqa: E402
from tp_core.recovery import RecoveryConfig, calibration_data, recover  # noqa: E402


def interval(values: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    """Bootstrap 95% percentile interval of the mean of per-example values (accuracy = mean correctness)."""
    from scipy.stats import bootstrap

    res = bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=n, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True, axis=-1)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo-quick")
    ap.add_argument("--tasks", default="sst2,ag_news")
    ap.add_argument("--methods", default="grad_x_act,ig")
    ap.add_argument("--ffn", default="0.8,0.9")
    ap.add_argument("--heads", default="0")
    ap.add_argument("--levels", default="none,bias,scale,lstsq")
    ap.add_argument("--cap", type=int, default=2000, help="validation examples per task (seeded subset when larger)")
    ap.add_argument("--samples", type=int, default=64, help="scoring examples for the attribution")
    ap.add_argument("--steps", type=int, default=20, help="IG steps")
    ap.add_argument("--recover-samples", type=int, default=256)
    ap.add_argument("--ridge", type=float, default=RecoveryConfig.ridge)
    ap.add_argument("--damping", type=float, default=RecoveryConfig.damping)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--eval", default="validation", choices=["validation", "train-holdout"],
                    help="train-holdout: evaluate on --cap train examples outside the calibration sample (for "
                         "choosing settings without looking at validation)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    import torch

    t_start = time.time()
    model = load_model(args.model)
    out: dict = {"model": args.model, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                 "platform": platform.platform(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "settings": vars(args), "cells": []}
    path = ROOT / "benchmarks" / "out" / f"bench_recovery{('-' + args.tag) if args.tag else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = ["none"] + [x for x in args.levels.split(",") if x and x != "none"]  # gains are against plain masks
    for task in args.tasks.split(","):
        if args.eval == "validation":
            val = load_split(task, "validation", limit=args.cap)
        else:  # train rows in neither the calibration sample nor the scoring sample (both drawn with seed 0)
            train = load_split(task, "train")
            used = set(train.sample(args.samples, 0).rows)  # the same holdout whatever --recover-samples is
            for n in sorted({256, 512, 1024, args.recover_samples}):
                used |= set(calibration_data(task, n, 0).rows)
            rest = [i for i, r in enumerate(train.rows) if r not in used]
            val = train.subset(rest).sample(args.cap, 1)
        y = np.asarray(val.labels)
        spec = val.spec
        dense_pred = predictions(predict_logits(model, task, val, max_length=args.max_length), spec.problem)
        dense_ok = (dense_pred == y).astype(float)
        dense = compute_metric(spec.metric, dense_pred, y)
        lo, hi = interval(dense_ok)
        out[f"dense_{task}"] = {"metric": dense, "ci95": [lo, hi], "n": len(val)}
        print(f"{task}: dense {spec.metric} {dense:.4f} [{lo:.4f}, {hi:.4f}] on {len(val)} {args.eval} examples",
              flush=True)
        t = time.perf_counter()
        calib = calibration_data(task, args.recover_samples, 0)
        calib_load_s = time.perf_counter() - t
        for method in args.methods.split(","):
            t = time.perf_counter()
            scores = attribute(model, task, AttributionConfig(method=method, samples=args.samples, steps=args.steps,
                                                              units="both" if args.heads != "0" else "ffn",
                                                              max_length=args.max_length))
            attr_s = time.perf_counter() - t
            for f in [float(x) for x in args.ffn.split(",")]:
                for h in [float(x) for x in args.heads.split(",")]:
                    masks = build_masks(scores, PruneConfig(f, h), model.unit_shape())
                    plain_ok = None
                    for level in levels:
                        cfg = RecoveryConfig(level=level, samples=args.recover_samples, ridge=args.ridge,
                                             damping=args.damping, max_length=args.max_length)
                        rec = recover(model, task, masks, calib, cfg)
                        pred = predictions(predict_logits(model, task, val, masks.gates(recovery=rec),
                                                          max_length=args.max_length), spec.problem)
                        ok = (pred == y).astype(float)
                        metric = compute_metric(spec.metric, pred, y)
                        cell = {"task": task, "method": method, "ffn_sparsity": f, "head_sparsity": h,
                                "level": level, "metric_name": spec.metric, "metric": metric,
                                "ci95": list(interval(ok)), "kept_vs_dense": metric / dense,
                                "recovery_seconds": round(rec.seconds, 2), "calibration_load_seconds":
                                round(calib_load_s, 2), "attribution_seconds": round(attr_s, 2),
                                "recovery": rec.summary(), "n": len(val)}
                        if level == "none":
                            plain_ok = ok
                        else:
                            diff = ok - plain_ok
                            cell["gain_vs_plain"] = float(diff.mean())
                            cell["gain_ci95"] = list(interval(diff))
                            cell["gain_significant"] = not (cell["gain_ci95"][0] <= 0.0 <= cell["gain_ci95"][1])
                            errs = [(c.info.get("err_before"), c.info.get("err_after")) for c in rec.corrections
                                    if c.info.get("err_before") is not None]
                            if errs:
                                cell["mean_rel_err_before_after"] = [float(np.mean([e[0] for e in errs])),
                                                                     float(np.mean([e[1] for e in errs]))]
                        out["cells"].append(cell)
                        g = (f" gain {cell['gain_vs_plain']:+.4f} [{cell['gain_ci95'][0]:+.4f}, "
                             f"{cell['gain_ci95'][1]:+.4f}]") if level != "none" else ""
                        print(f"  {method:10s} ffn {f:.0%} heads {h:.0%} {level:5s} {metric:.4f} "
                              f"[{cell['ci95'][0]:.4f}, {cell['ci95'][1]:.4f}] kept {metric / dense:6.1%}{g} "
                              f"({rec.seconds:.1f}s)", flush=True)
                        out["seconds"] = round(time.time() - t_start, 1)
                        path.write_text(json.dumps(out, indent=1))
    out["seconds"] = round(time.time() - t_start, 1)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path} ({out['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
