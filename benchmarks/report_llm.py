"""RESULTS.md's section on a prompted decoder LLM (benchmarks/llm_prompts.py: results.json keys llm_prompts and
llm_dense)."""
from __future__ import annotations

from common import fmt

TEMPLATE_NAMES = {"task": "hand-written", "generic": "generic"}
DENSE_GOAL = 0.15  # issue 28: the default prompt's dense metric at least this far above the majority class
GOAL_TASKS = ("sst2", "ag_news")


def _ci(ci) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _config(template: str, shots: int) -> str:
    return f"{TEMPLATE_NAMES.get(template, template)} template, k = {shots}"


def _prompt_rows(p: dict) -> list[list]:
    qualify = {(c["template"], c["shots"]): set(c["qualifies_on"]) for c in p["choice"]["configs"]}
    chosen = (p["choice"]["template"], p["choice"]["shots"])
    rows = []
    for r in p["rows"]:
        key = (r["template"], r["shots"])
        best = p["choice"]["best"][r["task"]]
        mark = "best" if key == (best["template"], best["shots"]) else ("yes" if r["task"] in qualify[key] else "no")
        rows.append([r["task"], TEMPLATE_NAMES.get(r["template"], r["template"]) + (" (chosen)" if key == chosen
                                                                                    else ""),
                     r["shots"], f"{fmt(r['metric'])} {_ci(r['ci95'])}", fmt(r["tokens"], 0),
                     fmt(r["s_per_example"], 3), mark])
    return rows


def _dense_rows(d: dict) -> list[list]:
    rows = []
    for task, r in d.items():
        goal = (("met" if r["above_majority"] >= DENSE_GOAL else "not met") if task in GOAL_TASKS else "-")
        rows.append([task, r["n"], r["metric_name"], f"{fmt(r['metric'])} {_ci(r['ci95'])}", fmt(r["majority"]),
                     f"{r['above_majority']:+.3f}", goal])
    return rows


def llm_section(res: dict) -> list[str]:
    """Section 11: the default prompt of a causal LM chosen by measurement, and its dense metric."""
    from report import _table as _table_md  # report.write calls this, so report is loaded
    p = res["llm_prompts"]
    meta, st, c = p["meta"], p["meta"]["settings"], p["choice"]
    mc = meta["machine"]
    minutes = meta.get("prompts_seconds", 0) / 60
    L = ["## 11. A prompted decoder LLM: the default prompt, chosen by measurement", "",
         f"benchmarks/llm_prompts.py on `{meta['model']}`, run {meta['started']} ({minutes:.0f} min for the "
         f"choice; {mc['cpu']}, {st['threads']} torch threads on a machine shared with other work; "
         f"`{meta['command']}`). Each task is asked through a template and label words (tp_core/prompts.py) with k "
         f"demonstrations per label drawn seeded from the train split; the label words' next-token logits at the "
         f"prompt's last token are the task's logits. Measured on {st['heldout']} held-out TRAIN examples per task "
         "(seeded, disjoint from every demonstration used; validation is never used for the choice): the task's "
         "metric with its 95% bootstrap interval, the mean prompt tokens (demonstrations included: what the product "
         "computes per example) and seconds per example. Templates: the hand-written one of the task, or the "
         "generic one ('Text: {text}', then 'Label:' on the next line; the same label words). Seconds per "
         "example are of the benchmark's scoring, "
         "which computes the demonstrations' keys and values once per configuration (checked equal to the full "
         "forward), so they grow with the examples' own tokens; the product's cost grows with the tokens column.",
         "",
         "Rule: on a task, a configuration qualifies when its metric is at least the lower end of the 95% interval "
         "of the task's best configuration. The default, one for every task, is the configuration that qualifies "
         "on every task with the fewest prompt tokens (summed over the tasks); where none qualifies on all, the one "
         "qualifying on the most tasks, then the fewest tokens.", "",
         _table_md(["task", "template", "k", "metric [95% CI]", "prompt tokens", "s / example", "qualifies"],
                   _prompt_rows(p)), "",
         f"Chosen default: {_config(c['template'], c['shots'])} (tp_core/prompts.py DEFAULT_TEMPLATE, "
         f"DEFAULT_SHOTS). Qualifies on: "
         + "; ".join(f"{_config(x['template'], x['shots'])}: {', '.join(x['qualifies_on']) or 'none'} "
                     f"({fmt(x['tokens'], 0)} tokens)"
                     for x in sorted(c["configs"], key=lambda x: x["tokens"])) + ".", ""]
    if res.get("llm_dense"):
        d = res["llm_dense"]
        caps = ", ".join(f"{t} {r.get('cap', st['dense_cap']):,}" for t, r in d.items())
        L += ["### The default prompt's dense metric on validation (`llm_dense`)", "",
              "The chosen default on the validation split (all of it, or a seeded sample where it is larger than the "
              f"cap: {caps}),"
              f" with its 95% bootstrap interval, beside the majority class on the same examples (issue 28's goal: "
              f"at least {DENSE_GOAL} above it on {' and '.join(GOAL_TASKS)}). "
              f"{meta.get('dense_seconds', 0) / 60:.0f} min.", "",
              _table_md(["task", "n", "metric", "default prompt [95% CI]", "majority class", "above majority",
                         "goal"], _dense_rows(d)), ""]
    if res.get("llm_first_curve_point_s"):
        L += first_point_section(res["llm_first_curve_point_s"])
    return L


def first_point_section(f: dict) -> list[str]:
    """The Prune page's first curve point on the LLM in a real browser (benchmarks/llm_first_point.py)."""
    jobs = "; ".join(f"{j['what'] or j['key']} ({j['start']:.1f}–"
                     f"{'…' if j.get('end') is None else format(j['end'], '.1f')} s)"
                     for j in f.get("jobs_before_first_point", []))
    verdict = "meets" if f["llm_first_curve_point_s"] <= f["goal_s"] else "misses"
    return ["### The Prune page's first curve point on the LLM (`llm_first_curve_point_s`)", "",
            f"`{f['command']}` ({f['date']}; {f['machine']}; load average {f['load_before']:.1f} before, "
            f"{f['load_after']:.1f} after). Chromium opens the Prune page of `{f['model']}` on {f['task']} "
            f"(method {f['method']}, no baselines) on a server started as `make run` starts it; cached: "
            f"{f['cached']}; cold: {f['cold']}. From the navigation to the first pruned point drawn on the chart: "
            f"**{f['llm_first_curve_point_s']:.1f} s** ({verdict} the goal of ≤ {f['goal_s']:.0f} s), a first "
            f"estimate on {f.get('first_point_examples') or '?'} examples (the page says how many). Jobs that "
            f"started before it (seconds from the navigation): {jobs or 'none recorded'}.", ""]



EXPORT_GOALS = {"params": 0.5, "speedup": 3.0, "kept": 0.95}  # issue 28's goals for the export keys


def export_section(res: dict) -> list[str]:
    """Section 13: one export of a causal LM (benchmarks/llm_export.py: results.json key llm_export)."""
    from report import _table as _table_md  # report.write calls this, so report is loaded
    e = res["llm_export"]
    rows = [[name, f"{r['params']:,}", fmt(r["params_ratio"]), f"{r['bytes'] / 1e6:.0f} MB",
             f"{fmt(r['metric'])} {_ci(r['metric_interval'])}", fmt(r["kept"]),
             "–" if r["median_ms_batch1"] is None else f"{r['median_ms_batch1']:.1f}"]
            for name, r in e["formats"].items()]
    speed = e["int8_speedup_vs_torch_dense"]
    kept = e["formats"].get("onnx-int8", {}).get("kept")
    v = e.get("vocab")
    emb = ("the ONNX graph keeps the whole input embedding and only the label words' rows of the output embedding"
           if not v else f"the task vocabulary keeps {v['kept_tokens']:,} of {v['original_tokens']:,} tokens (the "
           "task's prompts, byte pieces and merge parts" + (f", and {v['general_added']:,} of the "
           f"{v['general_tokens']:,} general ones not already kept" if v["general_tokens"] else "; no general set")
           + "): input and tied output embedding "
           f"{v['embedding_params_before']:,} -> {v['embedding_params_after']:,} parameters")
    lat = ("no latency measured in this run" if e.get("torch_dense_median_ms_batch1") is None else
           f"Latency: batch 1, {e['latency_seq_len']} tokens, {e['latency_threads']} threads, median; torch dense "
           f"{e['torch_dense_median_ms_batch1']:.1f} ms; load average {e['load_avg_before']:.1f} before the timing")
    vocab_lines = [] if not v else [
        f"Task vocabulary: {fmt(v['metric_task_vocab'])} with it against {fmt(v['metric_full_vocab'])} with the full "
        f"vocabulary (same pruned structure) on the task; related tasks (off-domain, first {e['eval_examples']} "
        "validation examples each; dense / full vocabulary / task vocabulary): " + "; ".join(
            f"{t} {fmt(r['metric_dense'])} / {fmt(r['metric_full_vocab'])} / {fmt(r['metric_task_vocab'])}"
            for t, r in v["offdomain"].items()) + ".", ""]
    return ["## 13. Exporting a pruned decoder LLM: size and speed", "",
            f"`{e['command']}` ({e['created']}), read by benchmarks/llm_export.py. Plan: {e['method']} on "
            f"{e['task']}, {e['ffn_sparsity']:.0%} of the MLP neurons and {e['head_sparsity']:.0%} of the key/value "
            f"groups removed, recovery: {e['recovery']}; metric on {e['eval_examples']} validation examples (dense "
            f"{fmt(e['metric_dense'])} {_ci(e['metric_dense_interval'])}). Parameters as each format holds them "
            f"(dense {e['params_dense']:,}; {emb}). {lat}.", "",
            _table_md(["format", "parameters", "of dense", "on disk", "metric [95% CI]", "kept", "ms, batch 1"],
                      rows), "",
            f"`llm_export_params_ratio` (ONNX): {fmt(e['onnx_params_ratio'])} (goal ≤ {EXPORT_GOALS['params']} at "
            f"a plan keeping ≥ {EXPORT_GOALS['kept']} of dense). `llm_onnx_int8_speedup_vs_torch_dense`: "
            f"{'–' if speed is None else f'{speed:.1f}x'} (goal ≥ {EXPORT_GOALS['speedup']:.0f}x); the int8 file "
            f"keeps {'–' if kept is None else fmt(kept)} of the dense metric (dynamic quantization, the input "
            "embedding included).", "", *vocab_lines, *_variant_lines(res.get("llm_export_variants") or []),
            *_int8_lines(res.get("llm_int8_variants"))]


def _int8_lines(r: dict | None) -> list[str]:
    """benchmarks/llm_int8_variants.py: the int8 file's accuracy with groups of projections left in fp32."""
    from report import _table as _table_md

    if not r:
        return []
    body = [[x["variant"], fmt(x["accuracy"]), fmt(x["agrees_with_fp32"]), f"{x['mb']} MB", f"{x['seconds']:.0f}"]
            for x in r["rows"]]
    return [f"Why the int8 file loses accuracy (`{r['command']}`, {r['n']} {r['task']} validation prompts): "
            "onnxruntime's dynamic quantization scales each activation with one number per tensor, and a decoder's "
            "MLP activations have outliers; leaving projections in fp32 recovers part of it, no variant reaches fp32. "
            "The export still writes the plain int8 file; weight-only int8 (activations in fp32) is the known remedy "
            "and is not built here.", "",
            _table_md(["variant", "accuracy", "agrees with fp32", "file", "seconds (2 threads)"], body), ""]


def _variant_lines(rows: list[dict]) -> list[str]:
    """The plans exported side by side (benchmarks/llm_export.py with several folders): size against kept share."""
    from report import _table as _table_md

    if len(rows) < 2:
        return []
    body = [[f"{r['ffn_sparsity']:.0%} / {r['head_sparsity']:.0%}", r["recovery"],
             r["vocab"] + ("" if r["general_tokens"] is None else f" (+{r['general_tokens']:,} general)"),
             "–" if r["kept_tokens"] is None else f"{r['kept_tokens']:,}", fmt(r["params_ratio"]), fmt(r["kept"]),
             fmt(r["int8_kept"]), "–" if r["int8_speedup_vs_torch_dense"] is None
             else f"{r['int8_speedup_vs_torch_dense']:.1f}x"] for r in rows]
    return ["Plans exported side by side (the same command but for the plan and vocabulary; kept shares on the first "
            f"{rows[0]['eval_examples']} validation examples, so a few points are within noise):", "",
            _table_md(["MLP / kv groups removed", "recovery", "vocabulary", "tokens", "params of dense", "kept (ONNX)",
                       "kept (int8)", "int8 speed-up"], body), ""]
