"""Pairs two calibration sizes of bench_pipelines.py's cached cells: for each cell of its last run (the larger
--recover-samples), our best and Kwon's rows against the same cells with `--base` calibration texts (which a run of
the same settings must have cached), as paired bootstrap differences. Writes results.json `pipeline_recover_1024`
(RESULTS' pipelines section, "Four times more calibration texts").

    python benchmarks/bench_pipelines.py --model demo --tasks mr,cr --budgets 0.5 --seeds 0,1,2 --cap 1000 \
        --recover-samples 256 --head-grid 0,0.25,0.5 --pipelines best,kwon
    python benchmarks/bench_pipelines.py ... --tasks trec,ag_news,sst2,mr,cr ... --recover-samples 1024 ...
    python benchmarks/pair_recover.py --base 256 --results docs/results.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_pipelines import paired  # noqa: E402

ROWS = ("best", "kwon")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=int, default=256, help="the smaller --recover-samples to pair against")
    ap.add_argument("--results", default=str(HERE.parent / "docs" / "results.json"))
    ap.add_argument("--extra-seconds", type=float, default=0.0,
                    help="seconds of earlier runs whose cells the last run found cached")
    ap.add_argument("--note", default="", help="how the cells were computed, written beside the numbers")
    args = ap.parse_args(argv)
    run = json.loads((HERE / "out" / "bench_pipelines.json").read_text())
    st, model = run["meta"]["settings"], run["meta"]["model"]
    grid = "-".join(f"{h:g}" for h in st["head_grid"])

    def ok(task: str, row: str, budget: float, n: int, r: int) -> np.ndarray:
        runs = [json.loads((HERE / "out" / "pipelines" / model / task /
                            f"{row}_f{budget:g}_s{s}_n{n}_r{r}_h{grid}_l{st['seq_len']}.json").read_text())
                for s in st["seeds"]]
        return np.mean([[c == "1" for c in x["ok"]] for x in runs], axis=0).astype(np.float64)

    cells = []
    for task, t in run["tasks"].items():
        for c in t["cells"]:
            big = {p: ok(task, p, c["budget"], t["n_validation"], st["recover_samples"]) for p in ROWS}
            base = {p: ok(task, p, c["budget"], t["n_validation"], args.base) for p in ROWS}
            cells.append({"task": task, "budget": c["budget"], "keep_1024": c["keep"],
                          "keep_256": {p: round(float(base[p].mean()) / t["dense"], 6) for p in ROWS},
                          "best-kwon_1024": c["diff"]["best-kwon"],
                          "r1024_minus_r256": {p: paired(big[p], base[p], t["dense"]) for p in ROWS}})
    out = {"command": run["meta"]["command"], "started": run["meta"]["started"],
           "seconds": round(run["seconds"] + args.extra_seconds), "cells": cells, "summary": run["summary"],
           **({"note": args.note} if args.note else {})}
    from tp_core.paths import atomic_write_text

    path = Path(args.results)
    doc = json.loads(path.read_text())
    doc["pipeline_recover_1024"] = out
    atomic_write_text(path, json.dumps(doc, indent=1))
    print(json.dumps([{k: c[k] for k in ("task", "keep_256", "keep_1024")} for c in cells]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
