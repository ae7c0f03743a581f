"""Render docs/RESULTS.md and the PNG plots from a results dict (every number comes from results.json)."""
from __future__ import annotations

import statistics
from pathlib import Path

import report_cli
import report_class
import report_demo
import report_llm
import report_llm_quality
import report_pipelines
import report_vocab
from common import BASELINES, METHODS, fmt, fmt_pct


def _stamp(res: dict, section: str | None = None) -> str:
    """Machine, date and command of a table; a section re-run on its own (`--rerun-speed`) carries its own."""
    m = res["meta"]
    mc = m["machine"]
    rerun = m.get(f"{section}_rerun") if section else None
    date, command = (rerun["date"], rerun["command"]) if rerun else (m["date"], m["command"])
    load = f"; load average {rerun['loadavg_start'][0]:.1f} at start" if rerun else ""
    return (f"_Machine: {mc['cpu']}, {mc['cores']} cores ({mc['torch_threads']} torch threads), torch {mc['torch']}; "
            f"date {date}; command `{command}`{load}._")


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    made = []
    q = res.get("quality")
    if q:
        g, s = q["grid"], res["meta"]["settings"]
        tasks = s["grid_tasks"]
        for kind, axis in (("ffn", "ffn_sparsity"), ("heads", "head_sparsity")):
            cols = min(3, len(tasks))
            rows_n = (len(tasks) + cols - 1) // cols
            fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
            for ax, task in zip(axes.flat, tasks):
                d = g["dense"][task]["metric"]
                for method in METHODS:
                    pts = {}
                    for r in g["records"]:
                        if r["task"] != task or r["method"] != method:
                            continue
                        other = r["head_sparsity"] if kind == "ffn" else r["ffn_sparsity"]
                        if other == 0:
                            pts.setdefault(r[axis], []).append(r["metric"] / d if d > 0 else np.nan)
                    xs = sorted(pts)
                    ys = [np.mean(pts[x]) for x in xs]
                    err = [(np.mean(pts[x]) - min(pts[x]), max(pts[x]) - np.mean(pts[x])) for x in xs]
                    xs, ys = [0.0] + xs, [1.0] + ys
                    err = [(0, 0)] + err
                    ax.errorbar([100 * x for x in xs], ys, yerr=np.array(err).T if method == "random" else None,
                                label=method, marker="o", ms=3, capsize=2)
                ax.set_title(f"{task} ({g['dense'][task]['metric_name']}, dense {d:.3f})", fontsize=9)
                ax.set_xlabel(f"{'FFN' if kind == 'ffn' else 'head'} sparsity (%)", fontsize=8)
                ax.set_ylabel("metric kept vs dense", fontsize=8)
                ax.grid(alpha=0.3)
            for ax in list(axes.flat)[len(tasks):]:
                ax.axis("off")
            axes.flat[0].legend(fontsize=7)
            fig.tight_layout()
            name = f"quality_{kind}.png"
            fig.savefig(out / name, dpi=90)
            plt.close(fig)
            made.append(name)
        lr = q.get("low_resource")
        if lr:
            fig, ax = plt.subplots(figsize=(5, 3.4))
            for task in s["low_resource_tasks"]:
                rows = [r for r in lr["rows"] if r["task"] == task and isinstance(r["n"], int)]
                for f, ls in (("50", "-"), ("70", "--")):
                    ax.plot([r["n"] for r in rows], [r[f"keep_{f}"] for r in rows], ls, marker="o",
                            label=f"{task} {f}% FFN")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("scoring examples N")
            ax.set_ylabel("metric kept vs dense")
            ax.set_title("ig in the low-resource setting", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(out / "low_resource.png", dpi=90)
            plt.close(fig)
            made.append("low_resource.png")
        o = q.get("ood")
        if o:
            names = list(dict.fromkeys(r["domain"] for r in o["rows"]))
            fig, ax = plt.subplots(figsize=(7, 3.4))
            w = 0.8 / len(METHODS)
            for i, method in enumerate(METHODS):
                ys = [next(r["keep_70"] for r in o["rows"] if r["domain"] == n and r["method"] == method)
                      for n in names]
                ax.bar(np.arange(len(names)) + i * w, ys, w, label=method)
            ax.set_xticks(np.arange(len(names)) + 0.4 - w / 2, names, fontsize=8)
            ax.set_ylabel("accuracy kept vs dense")
            ax.set_ylim(0.4, 1.05)
            ax.set_title("sst2 masks at 70% FFN sparsity, per domain", fontsize=9)
            ax.legend(fontsize=7, ncol=3)
            fig.tight_layout()
            fig.savefig(out / "ood.png", dpi=90)
            plt.close(fig)
            made.append("ood.png")
        sp = q.get("specificity")
        if sp:
            arr = np.array(sp["matrix"], dtype=float)
            fig, ax = plt.subplots(figsize=(4.8, 4))
            im = ax.imshow(arr, cmap="viridis")
            ax.set_xticks(range(len(sp["tasks"])), sp["tasks"], rotation=45, fontsize=8)
            ax.set_yticks(range(len(sp["tasks"])), sp["tasks"], fontsize=8)
            ax.set_xlabel("evaluated on task B")
            ax.set_ylabel("masks found on task A")
            for i in range(arr.shape[0]):
                for j in range(arr.shape[1]):
                    ax.text(j, i, f"{arr[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title("kept vs dense at 70% FFN (ig masks)", fontsize=9)
            fig.tight_layout()
            fig.savefig(out / "specificity.png", dpi=90)
            plt.close(fig)
            made.append("specificity.png")
    e = res.get("speed", {}).get("export")
    if e:
        rows = e["rows"]
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        lab = [f"{int(100 * r['ffn_sparsity'])}/{int(100 * r['head_sparsity'])}" for r in rows]
        x = np.arange(len(rows))
        ax.bar(x - 0.27, [r["flops_ratio"] for r in rows], 0.27, label="FLOPs ratio (limit)")
        ax.bar(x, [r["throughput_speedup"] for r in rows], 0.27, label="throughput speed-up (b32, L128)")
        ax.bar(x + 0.27, [r["latency_speedup"] for r in rows], 0.27, label="latency speed-up (b1)")
        ax.set_xticks(x, lab)
        ax.set_xlabel("FFN / head sparsity (%)")
        ax.set_ylabel("x dense")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / "export_speed.png", dpi=90)
        plt.close(fig)
        made.append("export_speed.png")
    return made


def _ood_verdict(o: dict, st: dict) -> str:
    diffs = o["ig_minus_best_baseline_70"]
    ahead = sum(1 for v in diffs.values() if v > 0)
    mean = o["mean_ig_minus_best_baseline_70"]
    return (f"ig is ahead of the best other method at 70% in {ahead} of {len(diffs)} domains; mean difference "
            f"`ood_ig_minus_best_baseline_70` = {100 * mean:+.1f} points, where one example is "
            f"{100 / st['ood_cap']:.1f} points - "
            f"{'ig ahead' if mean > 0 and ahead > len(diffs) / 2 else 'no clear ig advantage'} "
            "out of domain.")


def vs_verdict(base: str, r: dict) -> str:
    """'holds' only if ig wins clearly more often than it loses: a two-sided sign test over the non-tied cells
    (p < 0.05); otherwise the two are level within noise, or ig is clearly behind."""
    from scipy.stats import binomtest

    n = r["wins"] + r["losses"]
    p = binomtest(r["wins"], n, 0.5).pvalue if n else 1.0
    word = "level" if p >= 0.05 else ("holds" if r["wins"] > r["losses"] else "does not hold")
    return (f"{word}: ig beats {base} in {r['wins']} of {r['cells']} cells, loses {r['losses']}, ties {r['ties']} "
            f"(sign test p = {p:.3g})")


def _glance(res: dict) -> list[str]:
    """Every computed verdict in one list, so the claims that did not hold are easy to find."""
    q, sp, tp, st = res.get("quality", {}), res.get("speed", {}), res.get("textpruner", {}), res["meta"]["settings"]
    out = []
    vb = q.get("vs_baselines")
    if vb:
        for b in BASELINES:  # recomputed from the counts, so a re-render uses the current rule
            vb[b]["verdict"] = vs_verdict(b, vb[b])
        out += [f"ig vs {b}: {vb[b]['verdict']}" for b in BASELINES]
        out.append(f"ig beats every baseline in {vb['ig_beats_every_baseline']['count']} of "
                   f"{vb['ig_beats_every_baseline']['cells']} cells")
    out += [f"low-resource {v}" for v in (q.get("low_resource") or {}).get("verdicts", [])]
    out += [f"unsupervised {v}" for v in (q.get("unsupervised") or {}).get("verdicts", [])]
    if q.get("ood"):
        out.append("unseen domain: " + _ood_verdict(q["ood"], st))
    if q.get("specificity"):
        out.append("task-specificity: " + q["specificity"]["verdict"])
    c = sp.get("captum")
    if c:
        out.append(f"ig vs Captum: {'met' if c['ratio'] >= 3 and c['spearman'] >= 0.99 else 'missed'} - "
                   f"{c['ratio']:.2f}x faster (target 3x), Spearman {c['spearman']:.4f} (target 0.99)")
    if sp.get("export", {}).get("verdict"):
        out.append("pruned-model speed: " + sp["export"]["verdict"])
    if tp.get("verdict"):
        out.append("TextPruner: " + tp["verdict"])
    if res.get("ig_fidelity"):
        out.append(_ig_fidelity_glance(res["ig_fidelity"]))
    hb = res.get("recovery_benchmark") or {}
    w, g = hb.get("best_vs_textpruner_win_rate"), hb.get("recovery_gain_80_90")
    if w and g:
        out.append(f"our best pipeline against TextPruner's criterion (section 9, {', '.join(hb.get('tasks', {}))}): "
                   f"{w['wins']} wins, {w['losses']} losses, {w['ties']} ties at 70-90% FFN; recovery adds "
                   f"{fmt(g['value'], 2)} points at 80-90% (goal +8"
                   + (f", out of reach: mean headroom {fmt(_ceiling(hb), 2)})" if _ceiling(hb) is not None else ")"))
    rb = res.get("recovery_breadth") or {}
    if rb.get("recovery_level_effects"):
        levels = [lv for lv in ("none", "bias", "scale", "lstsq") if any(x["level"] == lv
                                                                          for x in rb.get("ig_vs_criteria", []))]
        out.append(f"recovery levels ({', '.join(rb.get('tasks', {}))}; section 9b): "
                   + _level_verdict(rb["recovery_level_effects"])
                   + "".join(f"; {v}" for v in _ig_verdicts(rb.get("ig_vs_criteria", []), levels)
                             if v.startswith(("with `none`", "with `lstsq`"))))
    if res.get("cli_examples"):
        out.append(report_cli.glance(res))
    if res.get("pipeline_benchmark"):
        out.append(report_pipelines.glance(res))
    if res.get("ig_low_resource_with_recovery"):
        out.append(report_pipelines.low_resource_glance(res))
    bb = res.get("budget_benchmark")
    if bb:
        out.append(f"budget targets (section 10): {_budget_verdict(bb['summary'])}")
    o = res.get("ood_benchmark")
    if o:
        out.append(f"unseen domain with intervals (section 9c): ig {_ood_counts(o, 'ig_vs_best_other')} cells "
                   "against the best other criterion; our best pipeline "
                   f"{_ood_counts(o, 'best_pipeline_vs_best_baseline')}"
                   " against the best baseline without recovery")
    return out


def _ig_fidelity_glance(f: dict) -> str:
    rec = f.get("recommended_default")
    if not rec:
        return "IG fidelity: no setting cheaper than the reference stayed within its interval in every cell"
    return (f"IG fidelity: cheapest setting within the reference's 95% interval in every cell: {rec['steps']} steps "
            f"`{rec['riemann']}` (reference {f['meta']['settings']['reference']['steps']} steps "
            f"`{f['meta']['settings']['reference']['riemann']}`; seeds checked {rec['seeds_checked']})")


BROWSER_GOALS = {"ui_longest_rerun_s": ("longest single page run during the default walk", "< 2 s", lambda v: v < 2),
                 "first_curve_point_s": ("opening Prune (scores cached) until the first pruned curve point", "<= 5 s",
                                         lambda v: v <= 5),
                 "default_curves_s": ("until every default curve is complete at its final resolution", "<= 60 s",
                                      lambda v: v <= 60),
                 "walk_blocking_s": ("sum of page runs over the default walk", "<= 30 s", lambda v: v <= 30),
                 "tour_longest_rerun_s": ("longest page run of the guided tour, walked forward and back once the "
                                          "warm start is done", "< 1 s", lambda v: v < 1),
                 "concurrent8_new_point_p95_s": ("8 sessions moving sliders at once: p95 until the new metric shows",
                                                 "<= 10 s", lambda v: v <= 10),
                 "shared_job_count": ("5 sessions asking for the same curve: computations per job", "1",
                                      lambda v: v == 1),
                 "estimate_error_max": ("largest relative error of a shown time estimate", "<= 0.3",
                                        lambda v: v <= 0.3)}


def _browser_section(res: dict) -> list[str]:
    """Section 5b: the app driven by real Chromium against `tp_core serve` (benchmarks/bench_interactive.py)."""
    meta = res.get("meta", {}).get("interactive")
    if not meta:
        return []
    rows = []
    for k, (what, goal, ok) in BROWSER_GOALS.items():
        v = res.get(k)
        rows.append([f"`{k}`", what, "not measured" if v is None else fmt(v, 2), goal,
                     "" if v is None else ("met" if ok(v) else "**not met**")])
    return ["## 5b. The app in a real browser (job engine)", "",
            f"benchmarks/bench_interactive.py: Debian Chromium against `python -m tp_core serve` (its Dask cluster, "
            f"{meta.get('engine') or 'one worker process with 2 threads x 1 torch thread'}), model "
            f"{meta.get('model')}, score and curve caches cold when the server starts"
            + ("" if meta.get("warm_start") is None else
               ", its warm start on (as `make run` starts it)" if meta["warm_start"] else ", its warm start off")
            + "; the browser runs on the same cores as the server"
            + (f" ({meta['machine']})" if meta.get("machine") else "") + f". Run {meta.get('date')}, load average "
            f"{fmt(meta.get('load_before'), 1)} before and {fmt(meta.get('load_after'), 1)} after "
            f"(`{meta.get('command')}`).", "",
            _table(["key", "what", "value", "goal", ""], rows), ""] + _browser_notes(meta) + [
        f"- `{k}` not measured: {why}." for k, why in (meta.get("not_measured") or {}).items()] + [
        "- The estimate error is the jobs panel's remaining-time estimate at a quarter of the attribution against the "
        "real remaining time; on cold caches the Attribution page shows no estimate before the first run (this "
        "machine's throughput is not measured yet), so there was no pre-run estimate to check.", ""]


def _browser_notes(meta: dict) -> list[str]:
    """Which run each part of section 5b comes from (a part skipped by a later run keeps its last measurement)."""
    notes = []
    d = meta.get("details") or {}
    for key, run in (("ui_longest_rerun_s", "walk_run"), ("shared_job_count", "shared_job_count_run"),
                     ("concurrent8_new_point_p95_s", "concurrent8_run"), ("tour_longest_rerun_s", "tour_run")):
        v = meta.get(run)
        if not v:
            continue
        where = "this run" if v.get("date") == meta.get("date") else \
            f"the run of {v['date']} (load {fmt(v.get('load_before'), 1)} before; `{v['command']}`)"
        extra = ""
        if key == "shared_job_count" and (v.get("shared_jobs_run") or d.get("shared_jobs_run")):
            extra = f"; {v.get('shared_jobs_run') or d.get('shared_jobs_run')} jobs ran, each once"
        if key == "concurrent8_new_point_p95_s" and d.get("concurrent8_new_point_median_s"):
            extra = (f"; median {fmt(d['concurrent8_new_point_median_s'], 1)} s over "
                     f"{len(d.get('concurrent8_new_point_s') or [])} slider presses, with the 8 Chromium pages on "
                     "the same 2 cores as the server")
            if d.get("concurrent8_coarse_point_p95_s") is not None:
                extra += (f"; the first estimate is on 32 examples, and the same point on the "
                          f"100-example subset showed at p95 {fmt(d['concurrent8_coarse_point_p95_s'], 1)} s (median "
                          f"{fmt(statistics.median(d['concurrent8_coarse_point_s']), 1)} s) after the press")
            if d.get("concurrent8_preempted_restarts") is not None:
                extra += f"; {d['concurrent8_preempted_restarts']} running curve points gave way to slider points"
        if key == "tour_longest_rerun_s" and d.get("tour_runs"):
            worst = max(d["tour_runs"], key=lambda r: r[0])
            wait = d.get("tour_warm_wait_s")
            extra = (f"; {len(d['tour_runs'])} page and fragment runs timed, the longest on step {worst[2]} "
                     f"({worst[1]} pass); " + ("the warm start was still running after the wait" if wait is None
                                               else f"it began once the cluster had nothing left to run, "
                                                    f"after a wait of {fmt(wait, 0)} s"))
        if key != "concurrent8_new_point_p95_s":  # the browsers' priority is set for the 8 sessions' presses only
            pass
        elif v.get("browser_nice") and v.get("browser_renice"):
            extra += (f"; Chromium held at nice {v['browser_nice']} (every thread of it, re-applied every 0.5 s: "
                      "the browsers stand in for the users' own machines and take the CPU the server and its "
                      "workers leave)")
        elif v.get("browser_nice"):
            extra += (f"; Chromium started at nice {v['browser_nice']} by a wrapper, which did not hold: Chromium "
                      "set its renderers back to nice 0 (its GPU process to -8), so the browsers competed with the "
                      "job workers at nice 10")
        if v.get("caveat"):
            extra += f"; **caveat**: {v['caveat']}"
        cores = d.get("concurrent8_cpu_cores") if key == "concurrent8_new_point_p95_s" else None
        if cores:
            extra += ("; CPU while the points were due, in cores: "
                      + ", ".join(f"{role} {fmt(c, 2)}" for role, c in cores.items()))
        label = "the walk's keys" if key == "ui_longest_rerun_s" else f"`{key}`"
        notes.append(f"- {label} from {where}{extra}.")
    hist = meta.get("history") or []
    if hist:
        keys = ["ui_longest_rerun_s", "first_curve_point_s", "default_curves_s", "walk_blocking_s",
                "estimate_error_max", "concurrent8_new_point_p95_s"]
        notes += ["", "Earlier runs of the same benchmark (same code base, earlier commits of the session; the spread "
                      "is run-to-run variation on 2 shared cores):", "",
                  _table(["run"] + [f"`{k}`" for k in keys] + ["note"],
                         [[h["date"]] + [fmt(h.get(k), 2) if h.get(k) is not None else "-" for k in keys]
                          + [h.get("note", "")] for h in hist]), ""]
    return notes


def _ci_text(ci) -> str:
    return "" if not ci else f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]"


def _int8_plan_text(p: dict | None) -> str:
    if not p:
        return ""
    tried = "; ".join(f"FFN {fmt_pct(t['ffn_sparsity'])} + heads {fmt_pct(t['head_sparsity'])}: "
                      f"{fmt(t['keep_selection'], 4)} ± {fmt(t['keep_selection_se'], 4)}" for t in p.get("trials", []))
    plan = f"FFN {fmt_pct(p['ffn_sparsity'])} + heads {fmt_pct(p['head_sparsity'])}"
    return (f"The int8 file's plan: {plan} ({'the same' if p.get('same_as_fp32') else 'its own'}; "
            f"{p['note']}; int8 keep on the selection set of each plan tried: {tried or 'none tried'}); the int8 "
            f"rows below are that file's. ")


def _export_section(e: dict) -> list[str]:
    """Section 8: the shipped model (benchmarks/bench_export.py, issue 13): size, formats, speed, vocabulary."""
    ch, rec = e["chosen"], e.get("recovery") or {}
    goal = lambda k: e.get("goals", {}).get(k, {})  # noqa: E731
    met = lambda k: "" if k not in e.get("goals", {}) else {True: "met", False: "**not met**", None: "not judged (contended)"}.get(goal(k).get("met"), "")  # noqa: E731,E501
    sp, sp8 = e["onnx_speedup_vs_torch_dense"], e["onnx_int8_speedup_vs_torch_dense"]
    spi, sp8i = e["onnx_speedup_vs_torch_dense_interval"], e["onnx_int8_speedup_vs_torch_dense_interval"]
    rows = [["`export_params_ratio`", "kept / dense parameters of the smallest export keeping >= 97% of dense",
             fmt(e["export_params_ratio"], 3), "<= 0.35", met("export_params_ratio")],
            ["`export_keep`", "its metric kept vs dense (TaskPrune folder)",
             fmt(e["export_keep"], 4) + _ci_text(e["export_keep_interval"]), ">= 0.97",
             met("export_keep") or ("met" if e["export_keep"] >= 0.97 else "**not met**")],
            ["`onnx_speedup_vs_torch_dense` batch 1", "pruned ONNX fp32 vs dense torch, 64 tokens",
             fmt(sp["batch_1"], 2) + _ci_text(spi["batch_1"]), ">= 4", met("onnx_speedup_vs_torch_dense_b1")],
            ["`onnx_speedup_vs_torch_dense` batch 32", "", fmt(sp["batch_32"], 2) + _ci_text(spi["batch_32"]), "", ""],
            ["`onnx_int8_speedup_vs_torch_dense` batch 1", "pruned ONNX int8 vs dense torch",
             fmt(sp8["batch_1"], 2) + _ci_text(sp8i["batch_1"]), ">= 6", met("onnx_int8_speedup_vs_torch_dense_b1")],
            ["`onnx_int8_speedup_vs_torch_dense` batch 32", "", fmt(sp8["batch_32"], 2) + _ci_text(sp8i["batch_32"]),
             "", ""],
            ["`onnx_int8_keep`", "int8 metric vs dense", fmt(e["onnx_int8_keep"], 4) + _ci_text(
                e["onnx_int8_keep_interval"]), ">= 0.97", met("onnx_int8_keep")],
            ["`vocab_kept_tokens`", f"of {e.get('vocab_original_tokens')} WordPiece tokens (sst2 train)",
             e["vocab_kept_tokens"], "report", ""]]
    off = [[t, fmt(x["vs_full_vocab"], 4) + _ci_text(x["interval"]), fmt(x["vs_dense"], 4), fmt_pct(x["unk_share"]),
            x["n"]] for t, x in e["vocab_offdomain_keep"].items()]
    grid = [[fmt_pct(r["ffn_sparsity"]), fmt_pct(r["head_sparsity"]), fmt(r["params_ratio"], 3),
             fmt(r.get("keep_selection"), 4) + (f" ± {fmt(r['keep_selection_se'], 4)}" if "keep_selection_se" in r
                                                else ""), fmt(r["keep"], 4)] for r in e["grid"]]
    by = e["bytes"]
    return ["## 8. The shipped model: export formats, size and speed", "",
            f"benchmarks/bench_export.py, run {e['date']} ({e['seconds'] / 60:.1f} min): model {e['model']}, task "
            f"{e['task']}, {e['method']} scores (the app's settings: {e['samples']} examples, {e['steps']} steps "
            f"{e.get('riemann', '')}), {e['allocation']} allocation, recovery {rec.get('level', 'none')} on "
            f"{rec.get('samples', 0)} unlabeled train texts, sst2 train vocabulary; metrics on {e['eval_examples']} "
            f"validation examples, intervals are 95% paired bootstraps over examples. Chosen plan: FFN "
            f"{fmt_pct(ch['ffn_sparsity'])} + heads {fmt_pct(ch['head_sparsity'])}, the smallest grid point keeping "
            f">= {fmt_pct(ch['keep_target'])} on the selection set"
            + (f" by a margin of {fmt(ch['margin_se'], 1)} bootstrap standard error(s)" if ch.get("margin_se") else "")
            + f" ({e.get('selection_note', '')}). " + _int8_plan_text(e.get("int8_plan"))
            + "Speed: median of the timed runs, torch and onnxruntime on "
            f"{e['threads']} threads, side by side in one run" + (f", on {e['machine']}" if e.get("machine") else "")
            + f"; {e['timing_note']}.", "",
            _table(["key", "what", "value [95% interval]", "goal", ""], rows), "",
            "The parameter ratio is that of the chosen plan; it answers the goal only where that plan's keep "
            "(reported examples) holds too." + (f" **Caveat**: {e['caveat']}." if e.get("caveat") else ""), "",
            f"Size on disk: dense fp32 {by.get('dense_fp32', 0) / 1e6:.1f} MB; " + ", ".join(
                f"{k} {v / 1e6:.1f} MB" for k, v in by.items() if k != "dense_fp32" and v) + ".", "",
            "Off-domain cost of the sst2 vocabulary (the same pruned model with its full vocabulary as reference):", "",
            _table(["task", "keep vs full vocabulary [95%]", "keep vs dense", "[UNK] share", "n"], off), "",
            "The grid the plan was chosen from (vocabulary pruned, recovery on, masked evaluation; keep on the "
            "selection set, and on the reported examples beside it):", "",
            _table(["FFN", "heads", "params ratio", "keep (selection)", "keep (reported)"], grid), ""]


def _export_levers_section(x: dict) -> list[str]:
    """Section 8, continued: which lever lifts the keep of the exports at a third of the parameters
    (benchmarks/export_levers.py)."""
    rows = []
    for name, s in x["summary"].items():
        cells = [name]
        for half in ("selection", "reported"):
            v = s[half]
            diff = "" if name == x["baseline"] else f"{100 * v['diff']:+.2f} [{100 * v['interval'][0]:+.2f}, " \
                                                     f"{100 * v['interval'][1]:+.2f}]"
            cells += [fmt(v["mean_keep"], 4), diff]
        rows.append(cells)
    plans = ", ".join(f"{fmt_pct(f)} + {fmt_pct(h)}" for f, h in x["plans"])
    n = x["examples"]
    title = "### What lifts the keep at a third of the parameters"
    if "--variants" in x["command"]:  # a later run of a few levers against the default of its day
        title += ": " + ", ".join(n for n in x["summary"] if n != x["baseline"])
    return [title, "",
            f"{x['command']}, run {x['date']} ({x['seconds'] / 60:.1f} min), {x['task']}: the mean keep over the "
            f"plans FFN + heads {plans} (0.29-0.34 of the parameters with the task vocabulary), on the selection "
            f"half ({n['selection']} examples) and the reported half ({n['reported']}) of bench_export.py; the "
            "difference to the default in points, with a 95% bootstrap interval over examples. A lever counts only "
            "where the interval on the reported half excludes zero.", "",
            _table(["variant", "keep (selection)", "vs default", "keep (reported)", "vs default"], rows), ""]


RECOVERY_GOALS = {"quality_validation_examples_min": (">= 800 or the whole split", None),
                  "recovery_gain_80_90": (">= +8 points", lambda v: v >= 8),
                  "recovery_seconds": ("< 60 s", lambda v: v < 60)}


def _recovery_section(res: dict) -> list[str]:
    """Section 9: training-free recovery, iterative pruning and our best pipeline against TextPruner
    (benchmarks/bench_recovery.py --merge, issue 12)."""
    rb = res["recovery_benchmark"]
    meta = rb.get("meta", {})
    ok = lambda v: "" if v is None else ("met" if v else "**not met**")  # noqa: E731
    rows = []
    q = rb.get("quality_validation_examples_min")
    whole = rb.get("quality_validation_whole_split", {})
    ns = {t: i.get("n_validation") for t, i in (rb.get("tasks") or {}).items() if isinstance(i, dict)}
    # per task: at least 800 examples, or its whole validation split (trec's has 499)
    each = all((ns.get(t) or 0) >= 800 or whole.get(t) for t in ns) if ns else q is not None and q >= 800
    rows.append(["`quality_validation_examples_min`", q, ", ".join(f"{t} {n}" + (" (whole split)" if whole.get(t)
                                                                               else "") for t, n in ns.items()),
                 ">= 800 or the whole split", ok(q is not None and each)])
    g = rb.get("recovery_gain_80_90")
    if g:
        rows.append(["`recovery_gain_80_90`", fmt(g["value"], 2), _ci_text(g["ci95"]), ">= +8 points",
                     ok(g["value"] >= 8)])
    for name, goal in (("keep_90ffn", 0.97), ("keep_70ffn_50heads", 0.95)):
        for t, v in (rb.get(name) or {}).items():
            p = v["pipeline"]
            rows.append([f"`{name}` {t}", fmt(v["value"], 4),
                         _ci_text(v["ci95"]) + f" ({p['method']}, {p['level']}, {p['n_iters']} step(s))",
                         f">= {goal}" if t in ("sst2", "ag_news") else "report",
                         ok(v["value"] >= goal) if t in ("sst2", "ag_news") else ""])
    w = rb.get("best_vs_textpruner_win_rate")
    if w:
        rows.append(["`best_vs_textpruner_win_rate`", fmt(w["value"], 3),
                     f"{w['wins']} wins, {w['losses']} losses, {w['ties']} ties",
                     ">= 0.8, no significant loss", ok(w["value"] >= 0.8 and w["losses"] == 0)])
    rs = rb.get("recovery_seconds")
    if rs:
        rows.append(["`recovery_seconds`", fmt(rs["value"], 1),
                     f"{rs['level']}: fit {fmt(rs['fit_mean'], 1)} s + "
                     f"teacher pass {fmt(rs['teacher_pass_mean'], 1)} s "
                     f"({rs['samples']} texts)", "< 60 s", ok(rs["value"] < 60)])
    L = ["## 9. Training-free recovery and our best pipeline", "",
         f"benchmarks/bench_recovery.py, run {meta.get('started', '?')} ({rb.get('seconds', 0) / 3600:.1f} h, load "
         f"average {fmt((meta.get('loadavg_start') or [None])[0], 1)} at the start; "
         f"`{meta.get('command', '')}`). \"Our best pipeline\" in a cell is the criterion x recovery level "
         f"(x iterative) with the best metric on a selection set of train examples outside every scoring and "
         f"calibration sample and the demo's training sample (selection: {rb.get('selection')}), never chosen on "
         "validation. Metrics are means over "
         "the scoring seeds; intervals are 95% percentile bootstraps over validation examples, paired across cells "
         "of a task; a win or loss needs the paired interval of the difference to exclude zero.", "",
         _table(["key", "value", "95% interval / detail", "goal", ""], rows), ""]
    asked = [t for t in str((meta.get("settings") or {}).get("tasks", "")).split(",") if t]
    done = list(rb.get("tasks", {}))
    rs_from = meta.get("resumed_from")
    if rs_from:
        L += [f"Resumed run: {', '.join(rs_from['tasks'])} came from an earlier run with the same settings (started "
              f"{rs_from['started']}, `{rs_from['command']}`), the other tasks from this one (`--resume`).", ""]
    load = max((meta.get("loadavg_start") or [0])[0], (meta.get("loadavg_end") or [0])[0])
    if rs and load > 1.5:
        L += [f"`recovery_seconds` is wall-clock at the machine's load (load average "
              f"{fmt(meta['loadavg_start'][0], 1)} at the start, {fmt((meta.get('loadavg_end') or [0])[0], 1)} at "
              "the end: the run shared the two cores with other work), so it overstates the fit's cost on a quiet "
              "machine.", ""]
    if meta.get("caveat"):
        L += [f"**Caveat**: {meta['caveat']}", ""]
    quiet = res.get("recovery_timing") or {}
    if rs and quiet.get("recovery_seconds"):
        q, qm = quiet["recovery_seconds"], quiet.get("meta", {})
        L += [f"**Quiet re-measurement** ({qm.get('started', '?')}, {qm.get('cpu', '?')}, nothing else running; "
              f"`{qm.get('command', '')}`, stored under `recovery_timing`, timings only): `recovery_seconds` "
              f"{fmt(q['value'], 1)} s per pruned model ({q['level']}: fit {fmt(q['fit_mean'], 1)} s, slowest "
              f"{fmt(q['fit_max'], 1)} s, over {q['fits']} fits at the headline's sparsities, + teacher pass "
              f"{fmt(q['teacher_pass_mean'], 1)} s over {q['samples']} texts), against {fmt(rs['value'], 1)} s in the "
              "headline run above.", ""]
    small = {t: i.get("n_selection") for t, i in (rb.get("tasks") or {}).items()
             if isinstance(i, dict) and i.get("n_selection") is not None and i["n_selection"] < 100}
    if small:
        L += ["**Small selection sets:** " + ", ".join(f"{t} {n} example(s)" for t, n in small.items()) +
              " (the demo model was trained on nearly all of that train split, so few train examples lie outside "
              "its training, scoring and calibration samples): \"our best pipeline\" there is picked on almost "
              "nothing.", ""]
    if g and g.get("cells"):
        room = _headroom(rb)
        L += ["Recovery gain per cell (best criterion, points of kept-vs-dense, with minus without recovery; "
              "headroom: 100 x (1 - kept-vs-dense without recovery), the most recovery could add by bringing the "
              "pruned model back to the dense metric):", "",
              _table(["task", "FFN", "criterion", "gain [95%]", "headroom"],
                     [[c["task"], fmt_pct(c["ffn_sparsity"]), f"{c['method']} + {c['level']}",
                       fmt(c["gain_points"], 2) + _ci_text(c["ci95"]), fmt(h, 2)]
                      for c, h in zip(g["cells"], room)]), ""]
        ceiling = _ceiling(rb)
        if ceiling is not None:
            per_task: dict = {}
            for c, h in zip(g["cells"], room):
                per_task.setdefault(c["task"], []).append(h)
            low = [t for t, v in per_task.items() if sum(v) / len(v) < 3]
            L += [f"**The +8 goal is out of reach on this model with these criteria:** without recovery the chosen "
                  f"criteria lose {fmt(ceiling, 2)} points of kept-vs-dense on average over these cells, so even a "
                  f"recovery that restored the dense metric everywhere would give `recovery_gain_80_90` = "
                  f"{fmt(ceiling, 2)}. The measured {fmt(g['value'], 2)} is {fmt(100 * g['value'] / ceiling, 0)}% of "
                  "that headroom" + (f"; {' and '.join(low)} {'loses' if len(low) == 1 else 'lose'} under 3 points "
                                     "on average at 80-90% FFN sparsity, "
                                     "so there is little to recover there." if low else ".")
                  + (f" Even the most generous reading, the criterion recovery helps most in each cell "
                     f"({', '.join(most['methods'])}), averages {fmt(most['value'], 2)} points."
                     if (most := _most_gain(rb)) else "")
                  if ceiling < 8 else
                  f"Without recovery the chosen criteria lose {fmt(ceiling, 2)} points on average over these cells: "
                  f"the measured gain is {fmt(100 * g['value'] / ceiling, 0)}% of that headroom.", ""]
    if asked and done != asked:
        L += [f"**Partial run:** stopped after {', '.join(done)} of the {', '.join(asked)} it was started for "
              f"(merged from the output it writes after each task); every key above covers only "
              f"{', '.join(done)}.", ""]
    L += _kept_tables(rb)
    if w:
        L += ["Against TextPruner's criterion (no recovery; and with its own best recovery level), per cell:", "",
              _table(["task", "FFN", "ours", "difference [95%]", "verdict", "vs TextPruner + its best recovery"],
                     [[c["task"], fmt_pct(c["ffn_sparsity"]),
                       f"{c['ours']['method']} + {c['ours']['level']} ({c['ours']['n_iters']})",
                       fmt(c["vs_textpruner"].get("diff"), 4) + _ci_text(c["vs_textpruner"].get("ci95")),
                       c["vs_textpruner"]["verdict"],
                       f"{c['vs_textpruner_with_its_best_recovery']['level']}: "
                       f"{c['vs_textpruner_with_its_best_recovery']['verdict']}"] for c in w["cells"]]), ""]
    return L


def _ceiling(rb: dict) -> float | None:
    """The most recovery_gain_80_90 could be: the mean headroom of its cells (None when a cell's is unknown)."""
    room = _headroom(rb)
    return sum(room) / len(room) if room and None not in room else None


def _most_gain(rb: dict) -> dict | None:
    """recovery_gain_80_90's most generous reading: in each of its cells (task x FFN 80/90%, one step), the
    criterion whose best recovery level gains most over its own no-recovery metric, averaged over the cells, in
    points (None when the run has no such pair)."""
    cells = [c for c in rb.get("cells", []) if c["ffn_sparsity"] in (0.8, 0.9) and c["head_sparsity"] == 0.0
             and c["n_iters"] == 1]
    by: dict = {}
    for c in cells:
        by.setdefault((c["task"], c["ffn_sparsity"]), {}).setdefault(c["method"], {})[c["level"]] = c["kept_vs_dense"]
    gains = []
    for methods in by.values():
        per = [100 * (max(v for lv, v in lvs.items() if lv != "none") - lvs["none"])
               for lvs in methods.values() if "none" in lvs and len(lvs) > 1]
        if per:
            gains.append(max(per))
    if not gains:
        return None
    return {"value": sum(gains) / len(gains), "methods": sorted({c["method"] for c in cells})}


def _headroom(rb: dict) -> list:
    """Per recovery_gain_80_90 cell: 100 x (1 - kept-vs-dense of the same criterion without recovery), from the
    run's own cells (runs before the key was stored carry only the cells)."""
    g = rb["recovery_gain_80_90"]
    by = {(c["task"], c["method"], c["ffn_sparsity"], c["head_sparsity"], c["level"], c["n_iters"]): c
          for c in rb.get("cells", [])}
    out = []
    for c in g["cells"]:
        if "headroom_points" in c:
            out.append(c["headroom_points"])
            continue
        plain = by.get((c["task"], c["method"], c["ffn_sparsity"], 0.0, "none", c["n_iters"]))
        out.append(100 * (1 - plain["kept_vs_dense"]) if plain else None)
    return out


def _point_name(f: float, h: float) -> str:
    return f"FFN {fmt_pct(f)}" + (f" + heads {fmt_pct(h)}" if h else "")


def _kept_tables(rb: dict, level: str = "###") -> list[str]:
    """One table per task of a bench_recovery run: kept vs dense of every criterion x level x steps at every point."""
    L: list[str] = []
    cells = rb.get("cells", [])
    for t in sorted({c["task"] for c in cells}):
        pts = sorted({(c["ffn_sparsity"], c["head_sparsity"]) for c in cells if c["task"] == t})
        lines = sorted({(c["method"], c["level"], c["n_iters"]) for c in cells if c["task"] == t})
        by = {(c["method"], c["level"], c["n_iters"], c["ffn_sparsity"], c["head_sparsity"]): c
              for c in cells if c["task"] == t}
        d = rb.get("dense", {}).get(t, {})
        L += [f"{level} {t}: kept vs dense [95% interval] (dense {fmt(d.get('metric'), 4)} on {d.get('n')} examples)",
              "", _table(["criterion", "recovery", "steps"] + [_point_name(f, h) for f, h in pts],
                         [[m, lv, n] + [(fmt(by[(m, lv, n, f, h)]["kept_vs_dense"], 3) +
                                         _ci_text(by[(m, lv, n, f, h)]["kept_ci95"])) if (m, lv, n, f, h) in by else ""
                                        for f, h in pts] for m, lv, n in lines]), ""]
    return L


def _wlt(x: dict) -> str:
    return f"{x['wins']} / {x['losses']} / {x['ties']}"


def _level_verdict(eff: list[dict]) -> str:
    """Which recovery level adds the most, averaged over the criteria (recovery_level_effects)."""
    by_level: dict = {}
    for e in eff:
        by_level.setdefault(e["level"], []).append(e["mean_points"])
    best = max(by_level, key=lambda lv: sum(by_level[lv]) / len(by_level[lv]))
    return (f"averaged over the criteria, `{best}` adds the most ("
            + ", ".join(f"{lv} {sum(v) / len(v):+.2f}" for lv, v in by_level.items()) + " points)")


def _ig_verdicts(vs: list[dict], levels: list[str]) -> list[str]:
    """Per recovery level: the criteria ig is ahead of, level with and behind (ig_vs_criteria's mean intervals)."""
    out = []
    for lv in levels:
        row = [x for x in vs if x["level"] == lv]
        groups = (("ahead of", [x["other"] for x in row if x["ci95"][0] > 0]),
                  ("level with", [x["other"] for x in row if x["ci95"][0] <= 0 <= x["ci95"][1]]),
                  ("behind", [x["other"] for x in row if x["ci95"][1] < 0]))
        parts = [f"{what} {', '.join(ms)}" for what, ms in groups if ms]
        if parts:
            out.append(f"with `{lv}`: ig " + ", ".join(parts))
    return out


def _ood_counts(o: dict, kind: str) -> str:
    v = [c["verdict"] for c in o["comparisons"] if c["kind"] == kind]
    return f"wins {v.count('win')}, loses {v.count('loss')} and ties {v.count('tie')} of {len(v)}"


def _breadth_section(rb: dict) -> list[str]:
    """Section 9b: every criterion x every recovery level (x iterative for the best two) on a few tasks
    (benchmarks/bench_recovery.py --merge-as recovery_breadth)."""
    meta = rb.get("meta", {})
    st = meta.get("settings", {})
    tasks = list(rb.get("tasks", {}))
    cells = [c for c in rb.get("cells", []) if c["n_iters"] == 1]
    pts = sorted({(c["ffn_sparsity"], c["head_sparsity"]) for c in cells})
    rs = meta.get("resumed_from") or {}
    how = (f"computed by `{rs.get('command')}` (started {rs.get('started')}; tasks {', '.join(rs.get('tasks', []))}), "
           f"analysed by `{meta.get('command', '')}`" if rs else
           f"run {meta.get('started', '?')} ({rb.get('seconds', 0) / 3600:.1f} h; `{meta.get('command', '')}`")
    L = ["## 9b. Every criterion x every recovery level", "",
         f"benchmarks/bench_recovery.py, {how}: tasks {', '.join(tasks)} (whole validation splits), scoring seeds "
         f"{st.get('seeds')}, {st.get('samples')} scoring examples per seed, {st.get('recover_samples')} calibration "
         "texts. The same statistics as section 9: a difference is in points of kept-vs-dense, its interval a paired "
         "bootstrap over validation examples (tasks resampled independently); a cell (task x point) counts as a "
         "win or a loss only when the paired interval of the metric's difference excludes zero. This run covers "
         "fewer tasks than section 9 and does not feed the issue's headline keys.", ""]
    methods = sorted({c["method"] for c in cells})
    levels = [lv for lv in ("none", "bias", "scale", "lstsq") if any(c["level"] == lv for c in cells)]
    groups: dict = {}
    for c in cells:
        groups.setdefault((c["method"], c["level"], c["ffn_sparsity"], c["head_sparsity"]), []).append(
            c["kept_vs_dense"])
    mean = {k: sum(v) / len(v) for k, v in groups.items()}
    L += [f"Mean kept-vs-dense over {', '.join(tasks)}:", "",
          _table(["criterion", "recovery"] + [_point_name(f, h) for f, h in pts],
                 [[m, lv] + [fmt(mean.get((m, lv, f, h)), 3) for f, h in pts] for m in methods for lv in levels]), ""]
    eff = rb.get("recovery_level_effects") or []
    if eff:
        L += ["What each recovery level adds to each criterion (mean over task x point cells, points of "
              "kept-vs-dense, with minus without; wins / losses / ties over cells):", "",
              _table(["criterion", "level", "gain [95%]", "wins / losses / ties"],
                     [[e["method"], e["level"], fmt(e["mean_points"], 2) + _ci_text(e["ci95"]), _wlt(e)]
                      for e in eff]), "",
              f"Verdict: {_level_verdict(eff)}.", ""]
    vs = rb.get("ig_vs_criteria") or []
    if vs:
        L += ["ig against every other criterion at the same recovery level (ig minus the other; mean over cells; "
              "wins / losses / ties for ig):", "",
              _table(["recovery", "other criterion", "ig minus other [95%]", "wins / losses / ties"],
                     [[x["level"], x["other"], fmt(x["mean_points"], 2) + _ci_text(x["ci95"]), _wlt(x)]
                      for x in vs]), ""]
        L += ["Where ig earns its cost (the mean difference's interval excluding zero): "
              + "; ".join(_ig_verdicts(vs, levels)) + ".", ""]
    it = rb.get("iterative_effects") or []
    if it:
        L += ["Iterative pruning (re-scoring the surviving units on the pruned and recovered model at each step) "
              "against one step, same criterion and level:", "",
              _table(["criterion", "level", "steps", "gain [95%]", "wins / losses / ties"],
                     [[x["method"], x["level"], x["n_iters"], fmt(x["mean_points"], 2) + _ci_text(x["ci95"]), _wlt(x)]
                      for x in it]), ""]
    return L + _kept_tables(rb, "####")


def _cap_section(head: dict, earlier: dict) -> list[str]:
    """Section 9d: the headline run (the issue's cap of 2,000 validation examples) cell by cell beside the earlier
    headline run, which capped at 1,000 (kept as recovery_cap1000), and what changed in the win rate."""
    em = earlier.get("meta", {})
    new = {(c["task"], c["ffn_sparsity"]): c for c in (head.get("best_vs_textpruner_win_rate") or {}).get("cells", [])}
    old = {(c["task"], c["ffn_sparsity"]): c
           for c in (earlier.get("best_vs_textpruner_win_rate") or {}).get("cells", [])}

    def cell(c):
        if c is None:
            return "-"
        v = c["vs_textpruner"]
        return (f"{c['ours']['method']} + {c['ours']['level']}: {100 * v['diff']:+.1f} [{100 * v['ci95'][0]:+.1f}, "
                f"{100 * v['ci95'][1]:+.1f}] {v['verdict']}")

    def n(run, t):
        return (run.get("tasks", {}).get(t) or {}).get("n_validation", "-")

    rows = [[t, fmt_pct(f), n(earlier, t), cell(old.get((t, f))), n(head, t), cell(new.get((t, f)))]
            for (t, f) in sorted(set(new) | set(old))]
    changed = [f"{t} {fmt_pct(f)}" for (t, f) in sorted(new) if old.get((t, f)) and
               old[(t, f)]["vs_textpruner"]["verdict"] != new[(t, f)]["vs_textpruner"]["verdict"]]
    ow = earlier.get("best_vs_textpruner_win_rate") or {}
    nw = head.get("best_vs_textpruner_win_rate") or {}
    return ["## 9d. Against the earlier headline run (cap 1,000)", "",
            f"The headline run above follows the issue's cap of 2,000 validation examples per task. The earlier "
            f"headline run (started {em.get('started', '?')}, on {em.get('cpu') or 'the earlier machine (AMD EPYC)'}; "
            f"`{em.get('command', '')}`) had the same settings but capped at 1,000, which only ag_news and mr exceed. "
            "Our best pipeline against TextPruner's criterion, points of kept-vs-dense with the paired 95% interval:",
            "", _table(["task", "FFN", "examples (cap 1,000)", "cap 1,000", "examples (cap 2,000)", "cap 2,000"],
                       rows), "",
            f"`best_vs_textpruner_win_rate`: {fmt(ow.get('value'), 3)} ({ow.get('wins')} wins, {ow.get('losses')} "
            f"losses) at cap 1,000, {fmt(nw.get('value'), 3)} ({nw.get('wins')} wins, {nw.get('losses')} losses) at "
            f"cap 2,000. Verdicts that changed: {', '.join(changed) or 'none'}. The tasks under 1,000 examples ran on "
            "the same whole splits in both runs; their pipelines were recomputed on another machine, so a cell can "
            "move by floating-point differences.", ""]


def _ood_section(o: dict) -> list[str]:
    """Section 9c: the unseen-domain table with intervals (benchmarks/bench_ood.py --merge)."""
    meta, st = o.get("meta", {}), o.get("meta", {}).get("settings", {})
    doms = o["domains"]
    L = ["## 9c. Unseen domain with intervals: sst2 masks on Yelp / Amazon / IMDb", "",
         f"benchmarks/bench_ood.py, run {meta.get('started', '?')} ({meta.get('seconds', 0) / 60:.0f} min; "
         f"`{meta.get('command', '')}`): masks and recovery found on {o['source_task']} (scoring seeds "
         f"{st.get('seeds')}, recovery calibrated on {o['source_task']}'s train texts), evaluated with its head on "
         "every sentence of each domain: "
         + ", ".join(f"{d} {v['n']} (dense {fmt(v['dense'], 3)})" for d, v in doms.items())
         + ". Kept-vs-dense per domain with a 95% bootstrap interval over its sentences; differences are paired "
         "tests (a win or loss only when the interval excludes zero). \"Our best pipeline\" is chosen on the "
         "in-domain selection set, never on these sentences; the \"best other\" criterion or baseline it is compared "
         "with is the one best on the domain's own sentences, a pick that favours it. "
         "This replaces nothing above: section 2's table "
         "(150 sentences per domain, no recovery) stays as it was measured.", ""]
    cells = o["cells"]
    pts = sorted({c["ffn_sparsity"] for c in cells})
    lines = sorted({(c["method"], c["level"]) for c in cells})
    by = {(c["domain"], c["method"], c["level"], c["ffn_sparsity"]): c for c in cells}
    for d in doms:
        L += [f"### {d}: kept vs dense [95% interval]", "",
              _table(["criterion", "recovery"] + [f"FFN {fmt_pct(f)}" for f in pts],
                     [[m, lv] + [fmt(by[(d, m, lv, f)]["kept_vs_dense"], 3) + _ci_text(by[(d, m, lv, f)]["kept_ci95"])
                                 if (d, m, lv, f) in by else "" for f in pts] for m, lv in lines]), ""]
    comp = o["comparisons"]
    rows = [[c["domain"], fmt_pct(c["ffn_sparsity"]), c["level"], c["other"],
             fmt(c["diff_keep_points"], 2) + _ci_text(c["ci95_keep_points"]), c["verdict"]]
            for c in comp if c["kind"] == "ig_vs_best_other"]
    if rows:
        L += ["ig against the best other criterion at the same recovery level (points of kept-vs-dense):", "",
              _table(["domain", "FFN", "recovery", "best other", "ig minus other [95%]", "verdict"], rows), "",
              f"Verdict: ig {_ood_counts(o, 'ig_vs_best_other')} domain x sparsity x level cells against the best "
              "other criterion.", ""]
    rows = [[c["domain"], fmt_pct(c["ffn_sparsity"]), f"{c['ours']['method']} + {c['ours']['level']}",
             fmt(c["kept_ours"], 3), c["other"], fmt(c["kept_other"], 3),
             fmt(c["diff_keep_points"], 2) + _ci_text(c["ci95_keep_points"]), c["verdict"]]
            for c in comp if c["kind"] == "best_pipeline_vs_best_baseline"]
    if rows:
        L += ["Our best pipeline (with recovery when chosen) against the best baseline without recovery:", "",
              _table(["domain", "FFN", "ours", "kept", "best baseline", "kept", "difference [95%]", "verdict"], rows),
              "", f"Verdict: our best pipeline {_ood_counts(o, 'best_pipeline_vs_best_baseline')} domain x sparsity "
              "cells out of domain.", ""]
    return L


def _ig_fidelity_section(f: dict) -> list[str]:
    """Section 7: IG fidelity against step count and quadrature (benchmarks/bench_ig_fidelity.py)."""
    m, st = f["meta"], f["meta"]["settings"]
    ref = st["reference"]
    tasks = [t for t in st["tasks"] if t in f["tasks"]]
    mc = m["machine"]
    parts = m.get("parts") or [{"command": m["command"], "date": m["date"], "total_seconds": m["total_seconds"],
                                "loadavg_start": mc["loadavg_start"], "loadavg_end": m.get("loadavg_end")}]
    stamp = (f"_Machine: {mc['cpu']}, {mc['cores']} cores, "
             f"{st.get('torch_threads', mc['torch_threads'])} torch thread(s) "
             f"per process, torch {mc['torch']}, nice {m.get('nice', 0)}; " + "; ".join(
                 f"`{p['command']}` ({p['date']}, {p['total_seconds'] / 60:.0f} min, load average "
                 f"{p['loadavg_start'][0]:.1f} at start, {(p.get('loadavg_end') or [float('nan')])[0]:.1f} at the end)"
                 for p in parts) + "._")
    rows0 = [r for r in f["rows"] if r["seed"] == 0]
    order = sorted({(r["steps"], r["riemann"]) for r in rows0},
                   key=lambda x: (x[0], ["riemann_middle", "riemann_trapezoid", "gausslegendre"].index(x[1])
                                  if x[1] in ("riemann_middle", "riemann_trapezoid", "gausslegendre") else 9))
    get = {(r["task"], r["steps"], r["riemann"]): r for r in rows0}
    passes = {(t["steps"], t["riemann"]): t for t in f.get("settings", [])}
    units = st.get("units_by_task") or {t: st["units"] for t in tasks}
    ev = ", ".join(f"{t} {f['tasks'][t]['n_eval']} of {f['tasks'][t]['n_validation']} validation examples "
                   f"(dense {f['tasks'][t]['metric_name']} {f['tasks'][t]['dense']:.4f})" for t in tasks)
    L = ["## 7. IG fidelity: steps and quadrature", "",
         f"Integrated gradients with 2-{max(st['steps'])} steps and the quadratures "
         f"{', '.join(f'`{q}`' for q in st['quadratures'])} "
         f"(Captum's approximation methods, passed through `AttributionConfig.riemann`), against the reference "
         f"{ref['steps']} steps `{ref['riemann']}`. The app's settings otherwise: {st['samples']} scoring examples "
         f"(seed 0), {st['labels']} labels, " + ", ".join(
             f"{t}: {'FFN neurons + heads' if units.get(t) == 'both' else units.get(t, '?') + ' units only'}"
             for t in tasks) + f"; {st['target']} target, `{st['aggregation']}`, "
         f"max length {st['max_length']}. Pruning: FFN sparsity "
         f"{', '.join(f'{int(100 * x)}%' for x in st['sparsities'])}, "
         f"{st['allocation']} allocation, heads kept; evaluated on {ev}. Every quadrature evaluates the model once "
         "per step, so the step count is the cost; seconds are the wall time of one `attribute()` run "
         "(cache off) on the shared machine, so they carry its load.", "",
         "### Rank agreement with the reference and cost (seed 0)", "",
         _table(["steps", "quadrature"] + [f"{t} Spearman FFN" for t in tasks] + [f"{t} Spearman heads" for t in tasks]
                + [f"{t} s" for t in tasks] + ["within interval everywhere"],
                [[s, f"`{q}`" + (" (reference)" if (s, q) == (ref["steps"], ref["riemann"]) else "")]
                 + [fmt(get[(t, s, q)]["spearman_ffn"], 4) if (t, s, q) in get else "–" for t in tasks]
                 + [fmt(get[(t, s, q)]["spearman_heads"], 4) if (t, s, q) in get else "–" for t in tasks]
                 + [fmt(get[(t, s, q)]["seconds"], 1) if (t, s, q) in get else "–" for t in tasks]
                 + [("yes" if passes[(s, q)]["passes_all_cells"] else "**no**") if (s, q) in passes else "–"]
                 for s, q in order]), "", stamp, ""]
    for t in tasks:
        d = f["tasks"][t]
        L += [f"### {t}: metric kept vs dense, and its difference to the reference [paired bootstrap 95% interval]", "",
              f"Dense {d['metric_name']} {d['dense']:.4f} on {d['n_eval']} examples; cells read kept (difference "
              "[interval]); the reference's own kept-vs-dense is its row.", "",
              _table(["steps", "quadrature"] + [f"FFN {int(100 * x)}%" for x in st["sparsities"]],
                     [[s, f"`{q}`"] + [
                         "–" if (t, s, q) not in get else (
                             f"{pt['kept']:.3f}" if get[(t, s, q)]["reference"] else
                             f"{pt['kept']:.3f} ({pt['diff']:+.3f} [{pt['ci_low']:+.3f}, {pt['ci_high']:+.3f}])"
                             + ("" if pt["passes"] else " **below**"))
                         for pt in (get[(t, s, q)]["points"] if (t, s, q) in get else [None] * len(st["sparsities"]))]
                      for s, q in order]), "", stamp, ""]
    extra = [r for r in f["rows"] if r["seed"] != 0]
    if extra:
        L += ["### Other scoring seeds (reference against the cheapest seed-0 candidates)", "",
              _table(["task", "seed", "steps", "quadrature", "Spearman FFN", "Spearman heads"]
                     + [f"FFN {int(100 * x)}%" for x in st["sparsities"]],
                     [[r["task"], r["seed"], r["steps"], f"`{r['riemann']}`", fmt(r["spearman_ffn"], 4),
                       fmt(r["spearman_heads"], 4)] + [
                         f"{pt['kept']:.3f}" if r["reference"] else
                         f"{pt['kept']:.3f} ({pt['diff']:+.3f} [{pt['ci_low']:+.3f}, {pt['ci_high']:+.3f}])"
                         + ("" if pt["passes"] else " **below**") for pt in r["points"]]
                      for r in sorted(extra, key=lambda r: (r["task"], r["seed"], not r["reference"], r["steps"]))]),
              "", stamp, ""]
    L += ["### Recommended default", "",
          "Rule: the cheapest setting (fewest steps; ties: higher Spearman with the reference) whose interval of the "
          "kept-vs-dense difference to the reference contains zero or lies above it in every measured cell (task x "
          "sparsity x seed). An interval that contains zero is absence of evidence of a loss at this sample size, not "
          "proof of equality; the Spearman columns say how close the rankings are.", "",
          f"- {_ig_fidelity_glance(f)}."]
    w = f.get("wiring")
    if w:
        L.append(f"- Quadrature wiring ({w['task']}, layer {w['layer']}, {w['steps']} steps, {w['samples']} examples): "
                 "tp_core's fast path against Captum's LayerIntegratedGradients with the same method name, "
                 "max relative difference "
                 + ", ".join(f"`{x['riemann']}` {x['max_rel_diff_vs_captum']:.1e}" for x in w["rows"])
                 + "; the quadratures' scores differ from each other (" + ", ".join(
                     f"`{x['riemann']}` {x['max_rel_diff_vs_' + w['rows'][0]['riemann']]:.1e}" for x in w["rows"][1:])
                 + f" relative to `{w['rows'][0]['riemann']}`), so the setting reaches the computation.")
        tz = w.get("weight_sums", {}).get("riemann_trapezoid")
        if tz:
            L.append("- Captum's `riemann_trapezoid` weights sum to (n-1)/n, not 1 (" + ", ".join(
                f"{k} steps: {v:.3f}" for k, v in tz.items()) + "): its scores are scaled down by that factor. The "
                "factor is the same for every unit of a run, so rankings and masks are unaffected, but absolute scores "
                "are not comparable across step counts.")
    for c in m.get("cuts", []):
        L.append(f"- Cut: {c}.")
    L.append("")
    return L


def write(res: dict, out: Path) -> None:
    out = Path(out)
    _plots(res, out)
    m, st = res["meta"], res["meta"]["settings"]
    stamp = _stamp(res)
    speed_stamp = _stamp(res, "speed")
    L = ["# Benchmark results", ""] + (["**Partial: the run was still going when this was written.**", ""]
                                         if m.get("partial") else []) + [
         f"Generated by `benchmarks/run_all.py` ({'quick' if st['mode'] == 'quick' else 'full'} mode) - no number here "
         "is typed by hand; all of them are in `results.json` beside this file.", "", stamp, ""] + ([
         "_Which demo build: the default demo is now the five-task recipe (`models/demo-r2`; see *Every demo task "
         "against its majority baseline*). Sections whose run is dated before that build measured the earlier "
         "nine-task build (`models/demo`, the same training run for the five shared tasks' recipe aside from the "
         "left-out tasks); the app-in-a-browser section (5b) and the demo margins are of the five-task build. "
         "`make bench` reruns every section on the current build._", ""] if res.get("demo_task_margin") else []) + [

         f"Model `{st['model']}`; total wall time {m['total_seconds'] / 60:.1f} min "
         f"(load average {m['machine']['loadavg_start'][0]:.1f} at start, "
         f"{m['machine'].get('loadavg_end', [0])[0]:.1f} "
         "at the end: the CPU is shared, so timings carry that noise). Section times: " +
         ", ".join(f"{k} {v / 60:.1f} min" for k, v in m["section_seconds"].items()) + ".", "",
         "Settings: grid tasks " + ", ".join(st["grid_tasks"]) + f"; each metric on a seeded subset of at most "
         f"{st['eval_cap']} validation examples per task, inputs truncated to {st.get('max_length', 128)} tokens "
         "(the demo "
         f"model's training length); data-driven scores from {st['samples']} seeded training "
         f"examples; ig with {st['steps']} Riemann steps (`riemann_middle`), probability target, `abs_sum` token "
         "aggregation, FFN neurons and heads scored; global allocation unless stated; random over seeds "
         f"{', '.join(map(str, st['random_seeds']))}.", ""]
    L += ["## Verdicts at a glance", "", *[f"- {v}" for v in _glance(res)], "",
          "A verdict is computed from the numbers below; with a few hundred evaluation examples, differences of one "
          "or two points are within noise.", ""]
    L += ["## Headline numbers", "", _table(["key", "value"], [[k, fmt(v, 4)] for k, v in res.items()
                                                                if not isinstance(v, (dict, list))]), "", stamp, ""]
    dense = m.get("dense_all_tasks", {})
    if dense:
        L += ["## Dense model", "", _table(["task", "metric", "value", "n"],
                                           [[t, d["metric_name"], fmt(d["metric"]), d["n"]] for t, d in dense.items()]),
              "", stamp, ""]
        missing = [t for t in dense if t not in st["grid_tasks"]]
        if missing:
            L += [f"Not in the pruning grid: {', '.join(missing)}. Kept-vs-dense ratios mean little where the dense "
                  "head is near chance (see the dense metrics above: cola, rte, wnli), and the time budget of "
                  "`make bench` on 2 shared cores does not fit every task (pair tasks have 2-3x longer inputs).", ""]
    q = res.get("quality")
    if q:
        pts = [tuple(p) for p in st["summary_points"]]
        hdr = ["task", "method"] + [f"FFN {int(100 * f)}% / heads {int(100 * h)}%" for f, h in pts]
        rows = []
        for r in q["summary"]["rows"]:
            cells = []
            for f, h in pts:
                k = f"ffn{int(f * 100)}_heads{int(h * 100)}"
                v = fmt_pct(r.get(k))
                if r.get(k + "_spread") is not None:
                    v += f" (±{100 * r[k + '_spread'] / 2:.1f})"
                cells.append(v)
            rows.append([r["task"], r["method"]] + cells)
        L += ["## 1. Pruning quality", "", "Metric kept vs dense (pruned / dense) at the summary points; random is the "
              "mean over seeds (± half the range) at FFN 50/70/90%, seed 0 elsewhere. "
              "Full curves: FFN sparsity 10-90% and head sparsity 25-75% below; "
              "every grid point (also the combined FFN+head grid) is in `results.json` "
              "under `quality.grid.records`.", "",
              _table(hdr, rows), "", stamp, ""]
        L += [f"![FFN sparsity]({'quality_ffn.png'})", "", f"![head sparsity]({'quality_heads.png'})", ""]
        vb = q["vs_baselines"]
        L += ["## 2. The paper's claims", "", "### ig against each baseline", "",
              f"Cells: {len(st['grid_tasks'])} tasks x "
              f"{vb['ig_beats_every_baseline']['cells'] // len(st['grid_tasks'])} "
              "grid points (FFN, heads, combined). A difference of one example is a win here; at "
              f"{st['eval_cap']} examples one example is {100 / st['eval_cap']:.1f} points of accuracy.", "",
              _table(["baseline", "ig wins", "ties", "ig losses", "verdict"],
                     [[b, vb[b]["wins"], vb[b]["ties"], vb[b]["losses"], vb[b]["verdict"].split(":")[0]]
                      for b in BASELINES]),
              "", f"ig beats every baseline in {vb['ig_beats_every_baseline']['count']} of "
              f"{vb['ig_beats_every_baseline']['cells']} cells "
              f"(`ig_win_rate` {vb['ig_beats_every_baseline']['rate']:.3f}).",
              "", stamp, ""]
        lr = q.get("low_resource")
        L += [] if not lr else ["### Low-resource: ig with few examples", "",
              f"ig on FFN neurons with {lr['steps']} steps, N seeded training examples; kept vs dense at 50% / 70% FFN "
              "sparsity; data-free baselines for reference.", "",
              _table(["task", "N", "keep 50%", "keep 70%", "scoring s"],
                     [[r["task"], r["n"], fmt_pct(r["keep_50"]), fmt_pct(r["keep_70"]), fmt(r.get("seconds"), 1)]
                      for r in lr["rows"]]), "", *[f"- Verdict {v}" for v in lr["verdicts"]], "", stamp, "",
              "![low resource](low_resource.png)", ""]
        un = q["unsupervised"]
        L += ["### Unsupervised: predicted labels against gold labels", "",
              "ig FFN scores with the model's own predictions as targets vs gold labels (same examples and settings). "
              "For binary tasks with the probability target and abs aggregation the two are equal exactly: "
              "p0 = 1 - p1, so dp0/da = -dp1/da and |sum| is the same whichever class is the target - the claim "
              "is trivially true there, so it is measured on multi-class tasks (ag_news 4 classes, trec 6) too.", "",
              _table(["task", "classes", "max rel. score diff", "Spearman", "gold keep 50%", "pred keep 50%",
                      "gold keep 70%", "pred keep 70%", "mask agreement 70%"],
                     [[r["task"], r["classes"], f"{r['max_rel_diff']:.2e}", fmt(r["spearman"], 4),
                       fmt_pct(r["gold_keep_50"]), fmt_pct(r["pred_keep_50"]), fmt_pct(r["gold_keep_70"]),
                       fmt_pct(r["pred_keep_70"]), fmt_pct(r["mask_agreement_70"])] for r in un["rows"]]), "",
              *[f"- Verdict {v}" for v in un["verdicts"]], "", stamp, ""]
        o = q["ood"]
        names = list(dict.fromkeys(r["domain"] for r in o["rows"]))
        rows = []
        for n in names:
            for method in METHODS:
                r = next(x for x in o["rows"] if x["domain"] == n and x["method"] == method)
                rows.append([n, r["n"], method, fmt(r["dense"]), fmt(r["metric_50"]), fmt_pct(r["keep_50"]),
                             fmt(r["metric_70"]), fmt_pct(r["keep_70"])])
        L += ["### Unseen domain: sst2 masks on Yelp / Amazon / IMDb", "",
              "Masks found on sst2 (every method), evaluated with the sst2 head on the bundle's out-of-domain "
              f"sentiment set (seeded subset of {st['ood_cap']} per domain); FFN sparsity, heads kept.", "",
              _table(["eval set", "n", "method", "dense acc", "acc 50%", "kept 50%", "acc 70%", "kept 70%"], rows), "",
              *[f"- {v}" for v in o["verdicts"]],
              f"- Verdict: {_ood_verdict(o, st)}", "",
              stamp, "", "![ood](ood.png)", ""]
        sp = q["specificity"]
        L += ["### Task-specificity: masks of task A on task B (70% FFN, ig)", "",
              _table(["A \\ B"] + sp["tasks"],
                     [[a] + [fmt(v, 3) for v in row] for a, row in zip(sp["tasks"], sp["matrix"])]),
              "", f"- Verdict {sp['verdict']}", "", stamp, "", "![specificity](specificity.png)", ""]
    sp = res.get("speed")
    if sp:
        c = sp["captum"]
        L += ["## 3. Attribution speed", "",
              f"Wall time of one scoring run at the grid settings ({st['samples']} examples, "
              f"{st['steps']} steps for ig, FFN neurons + heads), as recorded when the scores were computed in this "
              "run (magnitude timed here).", "",
              _table(["task", "ig s", "grad_x_act s", "activation s", "magnitude s"],
                     [[r["task"], fmt(r["ig"], 1), fmt(r["grad_x_act"], 1), fmt(r["activation"], 1),
                       fmt(r["magnitude"], 2)] for r in sp["attribution_speed"]["rows"]]), "", stamp, "",
              "### tp_core ig vs a per-layer Captum LayerIntegratedGradients loop", "",
              f"{c['task']}, {c['samples']} examples, {c['steps']} steps, `{c['riemann']}`, {c['target']} target, "
              f"{c['aggregation']}, FFN neurons of all layers, batch {c['batch_size']}. "
              "The plain loop takes batches in "
              "data order, each padded to its longest example (what `tokenizer(..., padding=True)` gives); "
              "the fast path "
              "sorts examples by length.", "",
              _table(["run", "seconds", "x vs fast path"],
                     [["tp_core ig (fast path)", fmt(c["seconds_ours"], 1), "1.00"],
                      ["Captum loop, plain (data-order batches, parameters require grad)", fmt(c["seconds_captum"], 1),
                       fmt(c["seconds_captum"] / c["seconds_ours"], 2)],
                      ["Captum loop on the fast path's length-sorted batches",
                       fmt(c.get("seconds_captum_sorted_batches"), 1),
                       fmt((c.get("seconds_captum_sorted_batches") or float("nan")) / c["seconds_ours"], 2)],
                      ["  ... and parameter grads off", fmt(c["seconds_captum_params_frozen"], 1),
                       fmt(c["seconds_captum_params_frozen"] / c["seconds_ours"], 2)],
                      ["tp_core ig, IG steps not batched", fmt(c["seconds_ours_steps_unbatched"], 1),
                       fmt(c["seconds_ours_steps_unbatched"] / c["seconds_ours"], 2)]]), "",
              (f"Padded tokens per pass: {c['padded_tokens_plain']} in data-order batches, {c['padded_tokens_sorted']} "
               "length-sorted. " if c.get("padded_tokens_plain") else ""),
              f"Ratio Captum / tp_core: **{c['ratio']:.2f}x** (target >= 3); Spearman over all neurons "
              f"**{c['spearman']:.5f}** (min per layer {c['spearman_min_layer']:.5f}; max relative difference "
              f"{c['max_rel_diff']:.1e}). Verdict: {'met' if c['ratio'] >= 3 and c['spearman'] >= 0.99 else 'missed'}.",
              f"Work per IG step and example: Captum runs {c['block_forwards_captum']} block forwards over the "
              f"{c['layers']} layers' attributions, the fast path {c['block_forwards_ours']}; "
              "both back-propagate through "
              f"{c['block_backwards_both']} blocks.", "", speed_stamp, ""]
        e = sp["export"]
        L += ["## 4. Pruned-model speed", "",
              f"Exports of the {e['task']} head (ig scores, global allocation) written with `export_pruned` and "
              f"reloaded with `load_export`; CPU ({e['threads']} threads) throughput at batch {e['batch']} x length "
              f"{e['seq_len']} (best of {e['throughput_reps']}) and latency at batch 1 x length {e['seq_len']} "
              f"(best of {e['latency_reps']}), models interleaved (medians in results.json); "
              "FLOPs counted by torch's FlopCounterMode.", "",
              _table(["FFN / heads", "params", "size MB", "metric", "examples/s", "latency ms", "throughput x",
                      "latency x", "FLOPs ratio", "speed-up / FLOPs ratio"],
                     [[f"{int(100 * r['ffn_sparsity'])}% / {int(100 * r['head_sparsity'])}%", f"{r['params']:,}",
                       f"{r['bytes_on_disk'] / 1e6:.1f}", fmt(r["metric_pruned"]), fmt(r["throughput_eps"], 1),
                       fmt(r["latency_ms"], 1), fmt(r["throughput_speedup"], 2), fmt(r["latency_speedup"], 2),
                       fmt(r["flops_ratio"], 2), fmt_pct(r["speedup_over_flops"], 0)] for r in e["rows"]]), "",
              f"Verdict: {e['verdict']}.", "", speed_stamp, "", "![export speed](export_speed.png)", ""]
        it = sp["interactive"]
        L += ["## 5. Interactive latency", "", f"Source: {it['source']}.", "",
              _table(["what", "seconds"], [["cached slider move", fmt(it["slider_cached_s"], 4)],
                                           ["new sparsity point", fmt(it["slider_new_point_s"], 3)]]), "", stamp, ""]
    L += _browser_section(res)
    tp = res.get("textpruner")
    if tp:
        L += ["## 6. Against TextPruner", "", "TextPruner's `prune()` fails on transformers 5 (it calls the removed "
              "`prune_heads`), so its importance scores (`TransformerPruner.get_importance_score`: first-order Taylor "
              "|weight x loss gradient| per FFN neuron and head) are applied with tp_core's own masks and allocations. "
              f"Same model, task and {st['samples']} scoring examples for both; FFN sparsity, heads kept.", "",
              _table(["task", "criterion", "scoring s", "global 50%", "global 70%", "per-layer 50%", "per-layer 70%"],
                     [[r["task"], r["criterion"], fmt(r["seconds"], 2), fmt_pct(r["global_50"]),
                       fmt_pct(r["global_70"]), fmt_pct(r["per-layer_50"]), fmt_pct(r["per-layer_70"])]
                      for r in tp["rows"]]), "",
              f"Verdict {tp['verdict']}.", "", stamp, "",
              f"What closes the gap ({tp['gap_study_task']}, FFN units; variants of ig against TextPruner):", "",
              _table(["variant", "scoring s", "global 70%", "per-layer 70%"],
                     [[r["variant"], fmt(r["seconds"], 2), fmt_pct(r["global_70"]), fmt_pct(r["per-layer_70"])]
                      for r in tp["gap_study"]]), "", stamp, ""]
    if res.get("ig_fidelity"):
        L += _ig_fidelity_section(res["ig_fidelity"])
    if res.get("export_bench"):
        L += _export_section(res["export_bench"])
    if res.get("vocab_guard"):
        L += report_vocab.section(res)
    if res.get("demo_task_margin"):
        L += report_demo.section(res)
    for key in sorted(k for k in res if k.startswith("export_levers")):  # the full run, then subset runs
        L += _export_levers_section(res[key])
    if res.get("recovery_benchmark"):
        L += _recovery_section(res)
    if res.get("recovery_breadth"):
        L += _breadth_section(res["recovery_breadth"])
    if res.get("ood_benchmark"):
        L += _ood_section(res["ood_benchmark"])
    if res.get("recovery_cap1000") and res.get("recovery_benchmark"):
        L += _cap_section(res["recovery_benchmark"], res["recovery_cap1000"])
    if res.get("budget_benchmark"):
        L += _budget_section(res["budget_benchmark"])
    if res.get("llm_prompts", {}).get("choice"):
        L += report_llm.llm_section(res)
    if res.get("llm_quality"):
        L += report_llm_quality.section(res)
    if res.get("llm_export"):
        L += report_llm.export_section(res)
    if res.get("cli_examples"):
        L += report_cli.section(res)
    if res.get("pipeline_benchmark"):
        L += report_pipelines.section(res)
    if res.get("ig_low_resource_with_recovery"):
        L += report_pipelines.low_resource_section(res)
    if res.get("class30"):
        L += report_class.section(res)
    (out / "RESULTS.md").write_text("\n".join(L) + "\n")


BUDGET_RULES = {"raw": "raw score mass (old default)", "share": "score mass, per-kind shares",
                "measured": "measured metric (cross-fitted)", "ffn_only": "FFN only (no head removed)",
                "oracle": "oracle (in-sample best)"}


def _budget_verdict(s: dict) -> str:
    m, r = s["measured-share"], s["measured-raw"]
    return (f"the measured choice against score-mass shares: {m['mean_points']:+.2f} points of kept-vs-dense on "
            f"average ({m['wins']} wins, {m['losses']} losses, {m['ties']} ties of {m['cells']} cells); against the "
            f"old raw score mass: {r['mean_points']:+.2f} ({r['wins']} wins, {r['losses']} losses, {r['ties']} ties)")


def _budget_section(b: dict) -> list[str]:
    """Section 10: which rule picks the FFN/head split within a FLOPs budget (benchmarks/bench_budget.py)."""
    meta, s = b["meta"], b["summary"]
    st = meta["settings"]
    cells = [c for t in b["tasks"].values() for c in t["cells"]]
    rows = [[c["task"], fmt_pct(c["budget"], 0)]
            + [fmt(c["keep"][r]) if c["keep"][r] is not None else "-" for r in ("raw", "share", "measured",
                                                                                 "ffn_only", "oracle")]
            + [f"{c['diff'][k]['points']:+.2f} [{c['diff'][k]['ci95'][0]:+.2f}, {c['diff'][k]['ci95'][1]:+.2f}] "
               f"{c['diff'][k]['verdict']}" for k in ("measured-share", "measured-raw")] for c in cells]
    heads = {}
    for c in cells:
        for p in c["picks"]:
            for r in ("raw", "share"):
                heads.setdefault(r, []).append(p[r][1])
    L = ["## 10. Budget targets: choosing the FFN/head split", "",
         f"benchmarks/bench_budget.py, run {meta['started']} ({b['seconds'] / 60:.0f} min, {meta['machine']['cpu']}; "
         f"`{meta['command']}`). For each task, FLOPs budget (at {st['seq_len']} tokens) and scoring seed "
         f"({len(st['seeds'])} seeds of the app's ig settings), the planner's candidates are the splits on the Prune "
         "page's slider steps: head sparsity 0, 0.1, ..., 0.9, each with the fewest FFN neurons removed (steps of "
         "0.01) that fit the budget. Every candidate is evaluated on the whole validation split (capped at "
         f"{st['cap']:,}); kept-vs-dense is averaged over the seeds. The measured rule is cross-fitted: the split "
         "chosen on one seeded half of the validation examples is reported on the other half, and the halves are "
         "put together, so no example both chooses and reports. The oracle is the best candidate in-sample (an "
         "upper bound, not a rule). Differences are paired 95% bootstrap intervals over the examples, in points of "
         "kept-vs-dense.", "",
         _table(["task", "FLOPs", "raw mass", "share mass", "measured", "FFN only", "oracle",
                 "measured - share", "measured - raw"], rows), "",
         f"Mean kept-vs-dense over the {s['mean_keep_cells']} cells where every rule has a split (FFN only cannot "
         "reach a budget below what the FFN slider's 95% gives: '-' above): "
         + ", ".join(f"{BUDGET_RULES[r]} {fmt(v)}" for r, v in s["mean_keep"].items()) + ".", "",
         f"Verdict: {_budget_verdict(s)}. Share score mass against raw: {s['share-raw']['mean_points']:+.2f} points "
         f"({s['share-raw']['wins']} wins, {s['share-raw']['losses']} losses, {s['share-raw']['ties']} ties). Measured "
         f"against FFN only (the FFN slider alone; {s['measured-ffn_only']['cells']} cells where it reaches the "
         f"budget): {s['measured-ffn_only']['mean_points']:+.2f} points ({s['measured-ffn_only']['wins']} wins, "
         f"{s['measured-ffn_only']['losses']} losses, {s['measured-ffn_only']['ties']} ties). The raw "
         f"rule removed {fmt_pct(statistics.mean(heads['raw']), 0)} of the heads on average, the share rule "
         f"{fmt_pct(statistics.mean(heads['share']), 0)}.", "",
         "What the product does with it: the Prune page's 'Meet a budget' and the CLI's `budget` / `export "
         "--flops-budget` choose by measured metric (on the chart's validation examples in the app, 500 by default; "
         "on 500 seeded "
         "validation examples in the CLI; `--choose mass` for the share rule without evaluation). The measured "
         "rule's edge over share score mass is small (a few tenths of a point on average, significant in a fifth of "
         "the cells) and it costs one evaluation per candidate; the share rule is the one to use without data. The "
         "measured rule here chose on half of each split (250 to 1,000 examples); the app chooses on its chart's "
         "examples and shows them, which makes its number there slightly optimistic.", ""]
    return L
