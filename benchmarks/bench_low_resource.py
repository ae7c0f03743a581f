"""Where the paper's ig earns its cost (issue 29, part 3): ig against grad x act with lstsq recovery on, when the
scoring examples are few (8, 16, 32, and the default 64) and when the model's own predictions replace the labels.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_low_resource.py --merge docs/results.json      # default run
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_low_resource.py --tasks sst2 --seeds 0 --ns 8 \\
        --points 0.7:0 --cap 200 --no-merge                                                       # a smoke run

Per task and scoring seed: the scoring examples are a seeded sample of the train split of size N (the attribution
stage's own `scoring_data`), the calibration texts of the lstsq recovery another seeded train sample (recovery's
`calibration_data`, shared by every fit of the seed, so the dense teacher pass runs once). Both criteria score FFN
neurons and heads with the app's settings (policy.APP_ATTRIBUTION: ig with its quadrature and steps) and prune at
each point with global allocation; every pruned model gets lstsq recovery; "predicted" cells score with the dense
model's own predictions instead of the gold labels (the paper's unsupervised setting).

Statistics as in bench_recovery.py (TaskStats, paired_test): the validation split, a seeded sample capped at --cap;
a cell's metric is the mean over seeds; ig minus grad x act carries a paired bootstrap 95% interval over the
validation examples, and is a win or a loss only when that interval excludes zero. The verdict counts the cells.

Writes benchmarks/out/bench_low_resource.json (predictions per cell, so --analyse-only re-renders) and, with
--merge, the key `ig_low_resource_with_recovery` into docs/results.json and docs/RESULTS.md re-rendered from it.
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

from bench_recovery import TaskStats, ci, paired_test  # noqa: E402
from common import machine, merge_results  # noqa: E402

METHODS = ("ig", "grad_x_act")
# settings a run's predictions depend on throughout (the seeds by position): another value needs another --out
FIXED = ("model", "seeds", "cap", "recover_samples")
CACHE_HIT_S = 0.05  # a scores time below this was read from tp_core's scores cache, not computed
OUT = HERE / "out" / "bench_low_resource.json"


def cell_key(task: str, n: int, labels: str, method: str, f: float, h: float) -> str:
    return f"{task}|{n}|{labels}|{method}|{f:g}|{h:g}"


def parse_points(text: str) -> list[tuple[float, float]]:
    out = []
    for part in text.split(","):
        f, _, h = part.partition(":")
        out.append((float(f), float(h or 0)))
    return out


def cells(args) -> list[tuple[int, str]]:
    """(N, labels) of every cell group: gold labels at every N, the model's predictions at --predicted-ns."""
    ns = [int(x) for x in args.ns.split(",") if x]
    pred = [int(x) for x in args.predicted_ns.split(",") if x]
    return [(n, "gold") for n in ns] + [(n, "predicted") for n in pred]


def run(args, doc: dict, save, log) -> None:
    import torch

    from tp_core import load_model
    from tp_core.attribution import attribute, scoring_data
    from tp_core.data import load_split
    from tp_core.evaluation import masked_logits, predictions
    from tp_core.masks import PruneConfig, build_masks
    from tp_core.policy import APP_ATTRIBUTION
    from tp_core.recovery import RecoveryConfig, calibration_data, recover

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    shape = model.unit_shape()
    seeds = [int(s) for s in args.seeds.split(",")]
    preds, times = doc.setdefault("preds", {}), doc.setdefault("times", {"scores": {}, "recovery": []})
    for task in [t for t in args.tasks.split(",") if t]:
        val = load_split(task, "validation", limit=args.cap, seed=0)
        doc.setdefault("labels", {})[task] = [int(y) if val.spec.problem != "regression" else float(y)
                                              for y in val.labels]
        doc.setdefault("metric", {})[task] = val.spec.metric
        if f"{task}|dense" not in preds:
            preds[f"{task}|dense"] = [predictions(masked_logits(model, task, val, None, batch_size=64),
                                                  val.spec.problem).tolist()]
        for si, seed in enumerate(seeds):
            calib = calibration_data(task, args.recover_samples, seed)
            rcfg = RecoveryConfig(level="lstsq", samples=args.recover_samples, seed=seed)
            for n, labels in cells(args):
                for method in METHODS:
                    todo = [(f, h) for f, h in parse_points(args.points)
                            if len(preds.get(cell_key(task, n, labels, method, f, h), [])) <= si]
                    if not todo:
                        continue
                    cfg = replace(APP_ATTRIBUTION, method=method, samples=n, labels=labels, units="both", seed=seed)
                    t0 = time.perf_counter()
                    sc = attribute(model, task, cfg, data=scoring_data(task, cfg))
                    times["scores"].setdefault(f"{method}|{n}", []).append(round(time.perf_counter() - t0, 3))
                    for f, h in todo:
                        masks = build_masks(sc, PruneConfig(f, h, "global"), shape)
                        rec = recover(model, task, masks, calib, rcfg)
                        times["recovery"].append(round(rec.seconds, 3))
                        p = predictions(masked_logits(model, task, val, masks, rec, batch_size=64), val.spec.problem)
                        preds.setdefault(cell_key(task, n, labels, method, f, h), []).append(p.tolist())
                    save()
                log(f"{task} seed {seed} N={n} {labels} done")


def analyse(args, doc: dict) -> dict:
    """Per cell (task, N, labels, point): both criteria's kept-vs-dense and ig minus grad x act with its paired
    interval; the counts of wins, losses and ties, and the verdict in a sentence."""
    rows, counts = [], {"win": 0, "loss": 0, "tie": 0}
    for task, labels_list in doc.get("labels", {}).items():
        y = np.asarray(labels_list)
        stats = TaskStats(y, doc["metric"][task], seed=0)
        dense = [np.asarray(p) for p in doc["preds"][f"{task}|dense"]]
        dboot = stats.boot(dense)
        d = stats.point(dense)
        for n, labels in cells(args):
            for f, h in parse_points(args.points):
                got = {m: [np.asarray(p) for p in doc["preds"].get(cell_key(task, n, labels, m, f, h), [])]
                       for m in METHODS}
                k = min(len(v) for v in got.values())
                if k == 0:
                    continue
                got = {m: v[:k] for m, v in got.items()}  # the seeds both criteria have
                row = {"task": task, "n": n, "labels": labels, "ffn": f, "heads": h, "seeds": k,
                       "dense": round(d, 6)}
                for m in METHODS:
                    row[m] = {"metric": round(stats.point(got[m]), 6), "keep": round(stats.point(got[m]) / d, 6),
                              "keep_ci95": ci(stats.boot(got[m]) / dboot)}
                row["ig_minus_gxa"] = paired_test(stats, got["ig"], got["grad_x_act"])
                counts[row["ig_minus_gxa"]["verdict"]] += 1
                rows.append(row)
    n_cells = sum(counts.values())
    small = [r for r in rows if r["n"] < 64]
    wins_small = sum(r["ig_minus_gxa"]["verdict"] == "win" for r in small)
    losses_small = sum(r["ig_minus_gxa"]["verdict"] == "loss" for r in small)
    by_point = {}
    for r in small:
        by_point.setdefault(_point_text(r["ffn"], r["heads"]), []).append(r["ig_minus_gxa"]["verdict"])
    per_point = {p: {v: vs.count(v) for v in ("win", "loss", "tie")} for p, vs in by_point.items()}
    verdict = (f"With lstsq recovery on, ig against grad x act over {n_cells} cells: {counts['win']} wins, "
               f"{counts['loss']} losses, {counts['tie']} ties (a win or loss only when the paired 95% interval "
               f"excludes zero); with fewer than 64 scoring examples: {wins_small} wins, {losses_small} losses of "
               f"{len(small)} (" + "; ".join(f"{p}: {c['win']} wins, {c['loss']} losses of {sum(c.values())}"
                                             for p, c in per_point.items()) + "). " + _verdict(per_point))
    sc = doc.get("times", {}).get("scores", {})
    return {"cells": rows, "counts": counts, "n_cells": n_cells, "verdict": verdict,
            "scores_seconds_median": {k: round(float(np.median(c)), 3) for k, v in sc.items()
                                      if (c := [x for x in v if x >= CACHE_HIT_S])},
            "recovery_seconds_median": round(float(np.median(doc["times"]["recovery"])), 3)
            if doc.get("times", {}).get("recovery") else None,
            "settings": doc.get("settings"), "runs": doc.get("runs"), "partial": bool(doc.get("partial", True))}


def _point_text(f: float, h: float) -> str:
    return f"FFN {f:.0%}" + (f" + heads {h:.0%}" if h else "")


def _verdict(per_point: dict) -> str:
    """Where ig earns its cost: the points at which, over the low-resource cells, it wins more than it loses and at
    least a third of them; elsewhere grad x act does as well (or better, where ig loses more) at a fraction of it."""
    earns = [p for p, c in per_point.items() if c["win"] > c["loss"] and c["win"] >= max(1, sum(c.values()) // 3)]
    worse = [p for p, c in per_point.items() if c["loss"] > c["win"]]
    if not earns:
        return "ig does not earn its cost here: grad x act does " + ("better in more low-resource cells" if worse
                                                                      else "as well") + ", at a fraction of it."
    rest = [p for p in per_point if p not in earns]
    return (f"ig earns its cost in the low-resource cells at {', '.join(earns)}" +
            (f"; at {', '.join(rest)} grad x act does as well at a fraction of it." if rest else "."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--tasks", default="sst2,ag_news,trec")
    ap.add_argument("--ns", default="8,16,32,64", help="scoring examples with gold labels")
    ap.add_argument("--predicted-ns", default="16,64", help="scoring examples with the model's predictions")
    ap.add_argument("--points", default="0.7:0,0.7:0.5", help="FFN:head sparsities")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cap", type=int, default=2000, help="validation examples per task (seeded sample)")
    ap.add_argument("--recover-samples", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--merge", default=None, help="results.json to write `ig_low_resource_with_recovery` into")
    ap.add_argument("--no-merge", dest="merge", action="store_const", const=None)
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "merge", "analyse_only")}
    old = doc.get("settings")
    if old is not None and any(old[k] != settings[k] for k in FIXED):
        print(f"{out} was made with other settings ({', '.join(k for k in FIXED if old[k] != settings[k])}); use "
              "another --out", file=sys.stderr)
        return 2
    doc["settings"] = settings  # more tasks, N, labels or points extend a run: its cells are keyed by them
    t0 = time.time()

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, out)

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    if not args.analyse_only:
        doc.setdefault("runs", []).append({"command": "benchmarks/bench_low_resource.py " + " ".join(sys.argv[1:]),
                                           "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                           "machine": machine()})
        doc["partial"] = True
        save()
        run(args, doc, save, log)
        doc["runs"][-1]["seconds"] = round(time.time() - t0, 1)
        doc["partial"] = False
        save()
    res = analyse(args, doc)
    log(res["verdict"])
    if args.merge:
        import report

        merge_results(Path(args.merge), {"ig_low_resource_with_recovery": res})
        report.write(json.loads(Path(args.merge).read_text()), Path(args.merge).parent)  # RESULTS.md beside it
        log(f"merged into {args.merge} and re-rendered its RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
