"""RESULTS.md's section on the README's command-line examples (benchmarks/cli_examples.py: results.json keys
`cli_example_seconds` and `cli_examples`)."""
from __future__ import annotations


def _seconds(row: dict) -> str:
    return "–" if row.get("seconds") is None else f"{row['seconds']:.1f}"


def _load(row: dict) -> str:
    if row.get("loadavg_start") is None:
        return "–"
    return f"{row['loadavg_start']:.1f} → {row['loadavg_end']:.1f}"


def glance(res: dict) -> str:
    """One line for "Verdicts at a glance": how many examples met the goal, and the slowest."""
    c = res["cli_examples"]
    timed = [r for r in c["rows"] if r.get("seconds") is not None]
    slow = max(timed, key=lambda r: r["seconds"])
    met = sum(r["status"] == "met" for r in timed)
    return (f"README command-line examples: {met} of {len(timed)} within {c.get('goal_s', 120.0):.0f} s on the full "
            f"demo (slowest {slow['seconds']:.0f} s: `{slow['command'].replace('.venv/bin/python -m ', '')}`)")


def section(res: dict) -> list[str]:
    """The table of every example's wall time against the goal, with the run's conditions."""
    c = res["cli_examples"]
    goal = c.get("goal_s", 120.0)
    rows = c["rows"]
    timed = [r for r in rows if r.get("seconds") is not None]
    met = sum(r["status"] == "met" for r in timed)
    skipped = [r for r in rows if r.get("seconds") is None]
    m = c["machine"]
    L = ["## Command-line examples: each README example as written (`cli_example_seconds`)", "",
         f"`{c['command']}` ({c['date']}, {c['total_seconds'] / 60:.1f} min): every `python -m tp_core` example of "
         f"the README, run as written, one after the other in README order, each in a fresh working folder; caches "
         f"{c['caches']}, so an example reuses only what an earlier one computed. Wall seconds include Python's "
         f"start and the model load. {m['cpu']}, {m['cores']} cores, load average {m['loadavg_start'][0]:.1f} at "
         f"the start and {m.get('loadavg_end', [0])[0]:.1f} at the end (a shared machine: timings carry that "
         f"load). Goal: each example within {goal:.0f} s.", "",
         "| example | seconds | load average | goal |", "|---|---:|---:|---:|"]
    for r in rows:
        L.append(f"| `{r['command'].replace('.venv/bin/python -m ', '')}` | {_seconds(r)} | {_load(r)} | "
                 f"{r['status']} |")
    L += ["", f"Verdict: {met} of {len(timed)} timed examples within {goal:.0f} s"
          + (f"; {len(skipped)} decoder-LLM example(s) not run here (`--llm`; the README gives their measured "
             "ranges)." if skipped else "."), ""]
    return L
