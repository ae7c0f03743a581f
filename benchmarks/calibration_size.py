"""How many unlabeled calibration texts lstsq recovery needs (the figures behind recovery.DEFAULT_SAMPLES).

One seed, no interval: a quick look; benchmarks/bench_recovery.py --recover-samples N measures with intervals.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/calibration_size.py [--points 0.9:0.5,0.85:0.5] [--samples 256,1024]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--points", default="0.9:0.5,0.85:0.5,0.9:0.25,0.8:0.6", help="FFN:heads sparsities")
    ap.add_argument("--samples", default="256,1024,2048")
    ap.add_argument("--ridge", type=float, default=1e-2)
    ap.add_argument("--attr-samples", type=int, default=32)
    ap.add_argument("--attr-steps", type=int, default=12)
    a = ap.parse_args()
    import torch

    from tp_core.attribution import AttributionConfig, attribute
    from tp_core.data import load_split
    from tp_core.evaluation import evaluate, evaluate_masked
    from tp_core.masks import PruneConfig, build_masks
    from tp_core.model import load_model
    from tp_core.recovery import RecoveryConfig, recover

    torch.set_num_threads(2)
    model = load_model(a.model, device="cpu")
    scores = attribute(model, a.task, AttributionConfig(method="ig", samples=a.attr_samples, steps=a.attr_steps))
    val = load_split(a.task, "validation")
    dense = evaluate(model, a.task, val).metric
    print(f"{a.task}: dense {dense:.4f} on {len(val)} validation examples")
    for pt in a.points.split(","):
        f, h = (float(x) for x in pt.split(":"))
        masks = build_masks(scores, PruneConfig(f, h, "global"), model.unit_shape())
        for n in (int(x) for x in a.samples.split(",")):
            t = time.perf_counter()
            rec = recover(model, a.task, masks, None, RecoveryConfig("lstsq", samples=n, ridge=a.ridge))
            fit = time.perf_counter() - t
            keep = evaluate_masked(model, a.task, val, masks, recovery=rec).metric / dense
            print(f"FFN {f:.2f} heads {h:.2f}  {n:5d} texts  keep {keep:.4f}  fit {fit:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
