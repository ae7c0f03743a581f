"""RESULTS.md's section on pruning a prompted decoder LLM per task (benchmarks/llm_quality.py: results.json keys
llm_quality, llm_keep_mlp50, llm_keep_mlp30_heads30, llm_best_vs_wanda_sp_win_rate, llm_scores_seconds)."""
from __future__ import annotations

from common import fmt

SECTION = "## 12. Pruning a prompted decoder LLM per task: our best pipeline against Wanda-sp and FLAP"
NAMES = {"grad_x_act": "grad×act", "ig": "ig", "wanda_sp": "Wanda-sp", "flap": "FLAP"}



def _prompt(st: dict) -> str:
    """The prompt the run asked (tp_core/prompts.py's default when it ran)."""
    p = st.get("prompt")
    if not p:
        return "tp_core/prompts.py's default"
    kind = "the hand-written template" if p["template"] == "task" else f"the {p['template']} template"
    return f"{kind}, {p['shots']} demonstration{'s' if p['shots'] != 1 else ''} per label"

def _ci(ci) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _kept(d: dict | None) -> str:
    return f"{fmt(d['value'])} {_ci(d['ci95'])}" if d else "–"


def _test(d: dict | None) -> str:
    if not d:
        return "–"
    t = d["ours_minus"]
    return f"{t['diff']:+.3f} {_ci(t['ci95'])} {t['verdict']}"


def _pipeline(o: dict) -> str:
    return NAMES.get(o["method"], o["method"]) + ("" if o["level"] == "none" else f" + {o['level']}")


def _settings_text(q: dict) -> str:
    st = q["settings"]
    runs = q.get("runs", [])
    seconds = q.get("timings", {}).get("timed_seconds", 0)
    load = ", ".join(f"{r['machine']['loadavg_start'][0]:.1f}" for r in runs)
    levels = " or ".join(st["levels"])
    return (f"Model `{st['model']}`, {st['mode']} mode (`{runs[-1]['command'] if runs else ''}`), started "
            f"{runs[0]['started'] if runs else '?'}: tasks {', '.join(st['tasks'])}; validation: a seeded sample of "
            f"at most {st['cap']:,} examples per task; scoring: {st['samples']} train examples per seed, seeds "
            f"{', '.join(str(s) for s in st['seeds'])}; "
            + (f"selection set: {st['select_n']} other train examples (in no scoring or calibration sample and no "
               "demonstration)" if len(st.get("ours", [1, 2])) * len(st["levels"]) > 1 else
               "no selection set (a single candidate pipeline)")
            + f"; recovery: {levels}"
            + (f" ({st['recover_samples']} calibration texts)" if st["levels"] != ["none"] else "")
            + "; the prompt: " + _prompt(st) + f"; {st['threads']} torch threads. "
            f"{seconds / 60:.0f} min of timed work (scoring, evaluation, recovery) in {len(runs)} run(s) of the "
            f"command, load average at the start of each: {load} "
            f"(a shared 2-core machine: timings are indicative).")


def _above_dense_note(q: dict) -> list[str]:
    """Say plainly where a pruned model is significantly more accurate than the dense one (kept interval above 1):
    a kept ratio above 1 reads as 'nothing lost', but it says the dense prompted model is weak on that task."""
    above = [c for c in q.get("cells", []) if c["ours"]["ci95"][0] > 1.0]
    if not above:
        return []
    out = []
    for task in sorted({c["task"] for c in above}):
        cells = [c for c in above if c["task"] == task]
        dense = q.get("dense", {}).get(task, {})
        sel = "; ".join(f"MLP {c['mlp_sparsity']:.0%} + heads {c['head_sparsity']:.0%}: "
                        + ", ".join(f"{k.replace('grad_x_act', 'grad×act')} {v:.3f}" for k, v in c["selection"].items())
                        for c in cells if c.get("selection"))
        out.append(f"**{task}: the pruned model beats the dense one** in {len(cells)} cell(s) (kept interval above 1; "
                   f"dense {fmt(dense.get('metric'))}): a kept ratio above 1 says the dense prompted model is weak on "
                   "this task and that removing units changed its answers for the better, not that the task is easy "
                   "to compress. Recovery that pulls toward the dense model's outputs scored lower on the selection "
                   f"set there ({sel}), so the selection chose no recovery.")
    return out + [""]


def _cell_rows(cells: list[dict]) -> list[list]:
    rows = []
    for c in cells:
        rows.append([c["task"], f"{c['mlp_sparsity']:.0%}", f"{c['head_sparsity']:.0%}", _pipeline(c["ours"]),
                     _kept(c["ours"]), _kept(c.get("wanda_sp")), _test(c.get("wanda_sp")), _kept(c.get("flap")),
                     _test(c.get("flap"))])
    return rows


def _key_rows(res: dict) -> list[list]:
    rows = []
    for key in ("llm_keep_mlp50", "llm_keep_mlp30_heads30"):
        for task, d in res.get(key, {}).items():
            rows.append([f"`{key}`", task, _pipeline(d), _kept(d), f"≥ {d['goal']}",
                         "met" if d["value"] >= d["goal"] else "not met"])
    w = res.get("llm_best_vs_wanda_sp_win_rate")
    if w:
        rows.append(["`llm_best_vs_wanda_sp_win_rate`", "all", "ours vs Wanda-sp",
                     f"{fmt(w['value'])} ({w['wins']} wins, {w['ties']} ties, {w['losses']} losses of "
                     f"{w['n_cells']} cells{', partial' if w.get('partial') else ''})",
                     f"≥ {w['goal']}, no loss",
                     "partial: no verdict" if w.get("partial") else
                     "met" if w["value"] >= w["goal"] and w["losses"] == 0 else "not met"])
    return rows


def section(res: dict) -> list[str]:
    """Section 12: llm_quality's cells and the issue's keys."""
    from report import _table  # report.write calls this, so report is loaded

    q = res["llm_quality"]
    L = [SECTION, "", _settings_text(q), "",
         "Our best pipeline in a cell is the criterion (grad×act, or ig with the app's settings) and recovery level "
         "with the best metric on the selection set (held-out train examples), never chosen on validation; "
         "Wanda-sp and FLAP are evaluated at the level ours chose. Kept = metric / dense metric on the same "
         "validation examples with its 95% bootstrap interval (paired with the dense metric); ours − rival is the "
         "difference of the task metric with its paired 95% bootstrap interval: a win or a loss only when the "
         "interval excludes zero (bench_recovery.py's paired_test).", ""]
    if "ig" not in q["settings"].get("ours", ["ig"]):
        L += [f"This run's pipeline uses grad×act only: ig (layer-by-layer integration over 30 layers) is too dear "
              f"for this run on this machine, so it is timed on {q['settings'].get('ig_time_n')} examples "
              "below and left to a run with `--ours grad_x_act,ig` as a candidate.", ""]
    if q["settings"]["levels"] == ["none"]:
        L += ["This run has no recovery. `lstsq` works on the Llama layout (it re-fits the kept columns of `down_proj` "
              "and `o_proj`, which have no bias; tests/test_llama.py), but each fit is a layer-by-layer pass over its "
              "calibration texts per criterion and cell, too dear for the quick mode on this machine; the full mode "
              "lets the selection set choose between none and lstsq.", ""]
    if q.get("partial"):
        L += [f"**Partial run**: these cells were not finished and are absent: {', '.join(q['partial'])}. Every "
              "figure below is from finished cells only.", ""]
    if q.get("dense"):
        L += ["Dense (the default prompt):", "",
              _table(["task", "metric", "n", "dense [95% CI]"],
                     [[t, d["metric_name"], d["n"], f"{fmt(d['metric'])} {_ci(d['ci95'])}"]
                      for t, d in q["dense"].items()]), ""]
    if _key_rows(res):
        L += ["### The issue's keys", "", _table(["key", "task", "pipeline", "value [95% CI]", "goal", "status"],
                                                 _key_rows(res)), ""]
    if q.get("cells"):
        L += ["### Every cell", "",
              _table(["task", "MLP", "heads", "ours (chosen)", "ours kept", "Wanda-sp kept", "ours − Wanda-sp",
                      "FLAP kept", "ours − FLAP"], _cell_rows(q["cells"])), ""]
    L += _above_dense_note(q)
    s = res.get("llm_scores_seconds")
    if s:
        L += ["### Attribution wall time (`llm_scores_seconds`)", "",
              f"On {s['task']}, {s['threads']} torch threads, MLP neurons and key/value groups scored together: "
              f"grad×act on {s['grad_x_act']['n']} examples {s['grad_x_act']['seconds']:.1f} s (goal ≤ "
              f"{s['goal_grad_x_act']:.0f} s on 64; load average {s['grad_x_act']['loadavg_start'][0]:.1f} at its "
              f"start); ig with the app's {s['ig']['steps']} {s['ig_riemann']} steps on {s['ig']['n']} examples "
              f"{s['ig']['seconds']:.1f} s (load average {s['ig']['loadavg_start'][0]:.1f}). ig integrates layer by "
              "layer (each layer's units scaled with the layers above it recomputed), so its cost grows with the "
              "square of the depth: on a 30-layer decoder it is far dearer than grad×act.", ""]
    return L
