"""Every task of the demo model against its majority-class baseline: results.json key `demo_task_margin`.

    .venv/bin/python benchmarks/demo_margins.py                      # the demo in TP_HOME, into docs/results.json
    .venv/bin/python benchmarks/demo_margins.py --model demo --candidates /tmp/build-with-all-tasks --limit 2000

Per task: the dense validation metric (a seeded subset of at most --limit examples, the demo build's own
evaluation size), the metric of always answering the train split's most frequent label on the same examples, the
margin with a paired bootstrap 95% interval (tp_core.baselines, through the dense point job's code path), and
whether the task is kept in the default demo. `--candidates` names a model folder trained with tasks the default
recipe leaves out (the build the choice was made on), so their figures are recorded beside the reason.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from common import DOCS, machine, merge_results  # noqa: E402


def task_rows(model, name: str, limit: int, tasks=None) -> dict:
    """{task: figures} for the model's tasks (all of them, or `tasks`), each evaluated by `work.point`."""
    from tp_core.data import load_split
    from tp_core.demo import meets_goal
    from tp_core.work import point, register_model

    ref = register_model(name, model)
    out = {}
    for task in tasks or model.tasks:
        data = load_split(task, "validation", limit=limit)
        m = point(lambda f, msg: None, ref, task, None, None, data).margin()
        if m is None:
            continue
        out[task] = {"metric": m.metric_name, "dense": m.dense, "dense_lo": m.dense_lo, "dense_hi": m.dense_hi,
                     "majority": m.majority, "majority_label": m.majority_label, "always_positive": m.always_positive,
                     "margin": m.margin, "lo": m.lo, "hi": m.hi, "n": m.n, "near_majority": m.near_majority,
                     "goal_met": meets_goal(task, m)}
        print(f"{task:10s} {m.metric_name:9s} dense {m.dense:.4f} majority {m.majority:.4f} "
              f"margin {m.margin:+.4f} [{m.lo:+.4f}, {m.hi:+.4f}] n={m.n}", flush=True)
    return out


def built_recipe(folder: Path) -> str | None:
    """The recipe digest of a demo build (from its demo_build.json), None for another model."""
    import json

    from tp_core.demo import DemoConfig, recipe_digest

    try:
        cfg = json.loads((folder / "demo_build.json").read_text())["config"]
        return recipe_digest(DemoConfig(**{**cfg, "tasks": tuple(cfg.get("tasks", ()))}))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="the model whose tasks are measured (default: the demo)")
    ap.add_argument("--candidates", default=None, help="a model folder trained with the tasks the recipe leaves out")
    ap.add_argument("--limit", type=int, default=2000, help="validation examples per task (seeded subset)")
    ap.add_argument("--out", default=str(DOCS / "results.json"))
    args = ap.parse_args()

    from dataclasses import asdict

    from tp_core.demo import DEMO_GOALS, RECIPE_DIGEST, DemoConfig, demo_path, demo_tasks, left_out_tasks
    from tp_core.model import load_model

    t0 = time.time()
    kept = {t.name for t in demo_tasks(DemoConfig.for_build(False))}
    left = left_out_tasks()
    rows = task_rows(load_model(args.model, device="cpu"), f"margins-{args.model}", args.limit)
    if args.candidates:
        cand = load_model(args.candidates, device="cpu")
        todo = [t for t in left if t in cand.tasks and t not in rows]
        rows.update({t: {**r, "measured_on": "candidates"}
                     for t, r in task_rows(cand, "margins-candidates", args.limit, todo).items()})
    for task, r in rows.items():
        r["kept_in_demo"] = task in kept
        if task in left:
            r["reason"] = left[task]
    for task, why in left.items():
        rows.setdefault(task, {"kept_in_demo": False, "reason": why})
    build = Path(args.model).expanduser() if Path(args.model).expanduser().is_dir() else \
        demo_path(args.model == "demo-quick")
    meta = {"model": args.model, "folder": str(build), "limit": args.limit, "seconds": round(time.time() - t0, 1),
            "date": time.strftime("%Y-%m-%d"), "goals": {k: list(v) for k, v in DEMO_GOALS.items()},
            "recipe": asdict(DemoConfig.for_build(False)), "recipe_digest": RECIPE_DIGEST,
            "built_with_this_recipe": built_recipe(build) == RECIPE_DIGEST, "machine": machine(),
            "candidates": args.candidates}
    merge_results(Path(args.out), {"demo_task_margin": rows, "demo_task_margin_meta": meta})


if __name__ == "__main__":
    main()
