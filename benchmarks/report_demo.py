"""RESULTS.md's section on the demo's tasks against their majority-class baselines (benchmarks/demo_margins.py:
results.json keys demo_task_margin and demo_task_margin_meta)."""
from __future__ import annotations

from common import fmt


def _goal(task: str, goals: dict) -> str:
    kind, bar = goals.get(task, ("at_least", None))
    if kind == "always_positive":
        return f"F1 >= always-positive + {bar:g}, margin > 0"
    return f">= {bar:g}, margin > 0" if bar is not None else "margin > 0"


def _row(task: str, r: dict, goals: dict) -> list:
    if "dense" not in r:
        return [task, "", "", "", "", "", "", "left out: " + r.get("reason", "")]
    kept = "kept" if r["kept_in_demo"] else "left out: " + r.get("reason", "")
    return [task, r["metric"], f"{fmt(r['dense'], 4)} [{fmt(r['dense_lo'], 3)}, {fmt(r['dense_hi'], 3)}]",
            f"{fmt(r['majority'], 4)} ({r['majority_label']})"
            + (f"; always positive {fmt(r['always_positive'], 4)}" if r.get("always_positive") is not None else ""),
            f"{r['margin']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]", f"{r['n']:,}",
            _goal(task, goals) + (": met" if r["goal_met"] else ": **not met**"), kept]


def section(res: dict) -> list[str]:
    """One row per bundle task the demo recipe trains or leaves out."""
    from report import _table

    rows, meta = res["demo_task_margin"], res.get("demo_task_margin_meta", {})
    goals = meta.get("goals", {})
    kept = sorted(t for t, r in rows.items() if r.get("kept_in_demo"))
    built = ("the build of the shipped recipe" if meta.get("built_with_this_recipe") else
             "**not** a build of the shipped recipe (it trains every task): the kept tasks' figures are that build's, "
             "and the recipe's own build is to be measured with the same command")
    cand = f" Left-out tasks it does not have are measured on {meta['candidates']}." if meta.get("candidates") else ""
    return ["## Every demo task against its majority baseline", "",
            f"benchmarks/demo_margins.py, run {meta.get('date', '?')} ({meta.get('seconds', 0):.0f} s) on "
            f"`{meta.get('model', 'demo')}`, {built}; at most {meta.get('limit', '?')} validation examples per task "
            "(seeded subset). Majority: always answering the train split's most frequent label, on the same "
            "examples; margin: dense minus majority, with a paired percentile bootstrap 95% interval over the "
            f"examples (scipy.stats.bootstrap, 1,000 resamples).{cand} Kept in the default demo: "
            f"{', '.join(kept)} (recipe {meta.get('recipe_digest', '?')}, tp_core/demo.py).", "",
            _table(["task", "metric", "dense [95%]", "majority baseline", "margin [95%]", "examples", "goal",
                    "in the demo"], [_row(t, rows[t], goals) for t in sorted(rows)]), ""]
