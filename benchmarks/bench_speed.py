"""Speed: tp_core's ig against a plain per-layer Captum LayerIntegratedGradients loop (same settings), where the
time goes, physically pruned exports against the dense model (CPU throughput / latency / FLOPs / size), and the
interactive slider latency. Run through run_all.py."""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from common import RIEMANN, ROOT, Bench
from tp_core.attribution import AttributionConfig, attribute, captum_reference_ffn_ig
from tp_core.masks import PruneConfig


# ----- Captum comparison -----------------------------------------------------------------------------------------
def captum_all_layers(model, task, data, cfg, sort: bool):
    """A per-layer loop over Captum's LayerIntegratedGradients (tp_core's reference implementation, the one the
    equivalence test uses). sort=False: batches in data order, each padded to its longest example, as a plain loop
    does; sort=True: the same length-sorted batches the fast path uses."""
    batches = list(model.batches(data.texts, data.pairs, cfg.batch_size, cfg.max_length, sort=sort))
    t0 = time.perf_counter()
    scores = [captum_reference_ffn_ig(model, task, data, layer, cfg, batches=batches)
              for layer in range(model.num_layers)]
    return scores, time.perf_counter() - t0


def _padded_tokens(model, data, cfg, sort: bool) -> int:
    return sum(int(b["attention_mask"].numel())
               for _, b in model.batches(data.texts, data.pairs, cfg.batch_size, cfg.max_length, sort=sort))


def captum_compare(b: Bench) -> dict:
    """Same examples, steps, Riemann method, target, aggregation; FFN units of every layer; sst2."""
    s, model, task = b.s, b.model, "sst2"
    data = b.scoring_data(task, s.captum_samples)
    cfg = AttributionConfig(method="ig", samples=s.captum_samples, steps=s.captum_steps, units="ffn",
                            max_length=s.max_length, riemann=RIEMANN)
    model.eval()
    # ours (fresh, not cached)
    t0 = time.perf_counter()
    ours = attribute(model, task, cfg, data=data, use_cache=False)
    t_ours = time.perf_counter() - t0
    b.log(f"captum compare: ours {t_ours:.1f}s")
    # plain Captum loop, as a user would write it: data-order batches padded per batch, parameters require grad
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    ref, t_captum = captum_all_layers(model, task, data, cfg, sort=False)
    b.log(f"captum compare: captum plain {t_captum:.1f}s")
    # where the time goes: the same loop on our length-sorted batches (padding removed) ...
    _, t_captum_sorted = captum_all_layers(model, task, data, cfg, sort=True)
    b.log(f"captum compare: captum, length-sorted batches {t_captum_sorted:.1f}s")
    # ... and additionally with parameter gradients off
    model.requires_grad_(False)
    _, t_captum_frozen = captum_all_layers(model, task, data, cfg, sort=True)
    b.log(f"captum compare: captum, sorted batches, params frozen {t_captum_frozen:.1f}s")
    for p, f in zip(model.parameters(), flags):
        p.requires_grad_(f)
    # ours without batching the IG steps (one step per forward/backward)
    bs = cfg.batch_size
    t0 = time.perf_counter()
    attribute(model, task, replace(cfg, internal_batch=bs), data=data, use_cache=False)
    t_ours_unbatched = time.perf_counter() - t0
    b.log(f"captum compare: ours, steps unbatched {t_ours_unbatched:.1f}s")
    a, r = np.concatenate(ours.ffn), np.concatenate(ref)
    per_layer = [float(spearmanr(x, y).statistic) for x, y in zip(ours.ffn, ref)]
    # work model per IG step and example: for layer l Captum runs all L blocks forward, ours blocks l..L-1 (the
    # blocks below come from one cached dense pass); both back-propagate through blocks l..L-1 only
    L = model.num_layers
    fwd_captum = L * L
    fwd_ours = sum(L - l for l in range(L))
    return {
        "task": task, "samples": s.captum_samples, "steps": s.captum_steps, "riemann": cfg.riemann,
        "target": cfg.target, "aggregation": cfg.aggregation, "units": "ffn (all layers)", "batch_size": cfg.batch_size,
        "seconds_ours": t_ours, "seconds_captum": t_captum, "ratio": t_captum / t_ours,
        "seconds_captum_sorted_batches": t_captum_sorted, "ratio_same_batches": t_captum_sorted / t_ours,
        "seconds_captum_params_frozen": t_captum_frozen, "seconds_ours_steps_unbatched": t_ours_unbatched,
        "padded_tokens_plain": _padded_tokens(model, data, cfg, sort=False),
        "padded_tokens_sorted": _padded_tokens(model, data, cfg, sort=True),
        "spearman": float(spearmanr(a, r).statistic), "spearman_min_layer": min(per_layer),
        "max_rel_diff": float(np.max(np.abs(a - r)) / np.max(np.abs(r))),
        "block_forwards_captum": fwd_captum, "block_forwards_ours": fwd_ours, "block_backwards_both": fwd_ours,
        "layers": L,
    }


def attribution_speed(b: Bench, quality: dict | None) -> dict:
    """Wall time per method and task at the grid settings (as recorded when the scores were computed)."""
    rows = []
    secs = (quality or {}).get("grid", {}).get("attribution_seconds", {})
    for task in b.s.grid_tasks:
        row = {"task": task}
        for m in ("ig", "grad_x_act", "activation"):
            row[m] = secs.get(task, {}).get(m)
        t0 = time.perf_counter()
        b.scores(task, "magnitude", use_cache=False)
        row["magnitude"] = time.perf_counter() - t0
        rows.append(row)
    return {"rows": rows, "samples": b.s.samples, "steps": b.s.steps, "units": "FFN neurons + heads"}


# ----- pruned-model speed ----------------------------------------------------------------------------------------
def _flops(model, task, ids, mask) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(ids, mask, torch.zeros_like(ids), task=task)
    return int(fc.get_total_flops())


def _time(model, task, ids, mask, reps: int) -> list[float]:
    tt = torch.zeros_like(ids)
    out = []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            model(ids, mask, tt, task=task)
            out.append(time.perf_counter() - t0)
    return out


def export_speed(b: Bench) -> dict:
    """Physically pruned exports (ig sst2 scores, global) reloaded from disk vs the dense one-task export."""
    from tp_core.export import export_pruned, folder_bytes, load_export
    from tp_core.pruning import count_params

    s, task = b.s, "sst2"
    sc = b.scores(task, "ig")
    points = [(0.0, 0.0)] + list(s.export_points)
    tok = b.model.tokenizer
    text = " ".join(b.eval_data(task).texts)
    ids_full = tok(text, truncation=True, max_length=128, return_tensors="pt")["input_ids"]
    assert ids_full.shape[1] == 128, "need 128 tokens of text"
    thr_ids = ids_full.repeat(32, 1)
    thr_mask = torch.ones_like(thr_ids)
    lat_ids, lat_mask = ids_full, torch.ones_like(ids_full)
    models, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for f, h in points:
            r = export_pruned(b.model, task, sc, PruneConfig(f, h, "global"), Path(tmp) / f"e{int(f*100)}_{int(h*100)}",
                              eval_data=b.eval_data(task), command="benchmarks/run_all.py (export speed)")
            m = load_export(r.path).eval()
            models[(f, h)] = m
            rows.append({"ffn_sparsity": f, "head_sparsity": h, "params": count_params(m, task),
                         "bytes_on_disk": folder_bytes(Path(r.path)), "metric_dense": r.metric_dense,
                         "metric_pruned": r.metric_pruned,
                         "flops_b32_l128": _flops(m, task, thr_ids, thr_mask)})
        b.log("export speed: exports written and reloaded")
        thr = {k: [] for k in models}
        lat = {k: [] for k in models}
        for _, m in models.items():  # warm-up
            _time(m, task, thr_ids, thr_mask, 1)
            _time(m, task, lat_ids, lat_mask, 2)
        for _ in range(s.throughput_reps):  # interleaved, so load changes hit every model alike
            for k, m in models.items():
                thr[k] += _time(m, task, thr_ids, thr_mask, 1)
        for _ in range(s.latency_reps):
            for k, m in models.items():
                lat[k] += _time(m, task, lat_ids, lat_mask, 1)
    dense = rows[0]
    # best of the repeats: on a shared CPU other processes only ever add time, so the minimum is the estimate
    d_thr = 32 / min(thr[(0.0, 0.0)])
    d_lat = min(lat[(0.0, 0.0)])
    for row, k in zip(rows, points):
        row["throughput_eps"] = 32 / min(thr[k])
        row["latency_ms"] = 1000 * min(lat[k])
        row["throughput_median_eps"] = 32 / statistics.median(thr[k])
        row["latency_median_ms"] = 1000 * statistics.median(lat[k])
        row["throughput_speedup"] = row["throughput_eps"] / d_thr
        row["latency_speedup"] = d_lat / min(lat[k])
        row["flops_ratio"] = dense["flops_b32_l128"] / row["flops_b32_l128"]
        row["params_ratio"] = row["params"] / dense["params"]
        row["size_ratio"] = row["bytes_on_disk"] / dense["bytes_on_disk"]
        row["speedup_over_flops"] = row["throughput_speedup"] / row["flops_ratio"]
    p = next((r for r in rows if r["ffn_sparsity"] == 0.5 and r["head_sparsity"] == 0.5), None)
    verdict = None
    if p:
        ok = p["speedup_over_flops"] >= 0.8
        verdict = (f"{'met' if ok else 'missed'}: at 50% FFN + 50% heads the measured throughput speed-up is "
                   f"{p['throughput_speedup']:.2f}x against a FLOPs ratio of {p['flops_ratio']:.2f}x "
                   f"({100 * p['speedup_over_flops']:.0f}% of the limit; target 80%)")
    return {"task": task, "rows": rows, "batch": 32, "seq_len": 128, "throughput_reps": s.throughput_reps,
            "latency_reps": s.latency_reps, "threads": torch.get_num_threads(), "verdict": verdict}


# ----- interactive latency ---------------------------------------------------------------------------------------
INTERACTIVE_JSON = "benchmarks/out/bench_interactive.json"  # written by benchmarks/bench_interactive.py (app engineer)


def interactive(b: Bench) -> dict:
    """Slider latency. Uses benchmarks/bench_interactive.py's output (a full rerun of the Prune page through
    Streamlit's AppTest) when it exists for this model; otherwise measures the engine part itself: cached move =
    scores from the on-disk cache + masks + memoised metric lookup; new point = the same + one masked evaluation on
    `interactive_n` validation examples."""
    p = ROOT / INTERACTIVE_JSON
    if p.is_file():
        try:
            doc = json.loads(p.read_text())
            if doc.get("model") == b.s.model:
                return {"source": f"{INTERACTIVE_JSON} (benchmarks/bench_interactive.py: full Prune-page rerun via "
                                  f"Streamlit AppTest; model {doc['model']}, task {doc.get('task')}, "
                                  f"{doc.get('validation_examples')} validation examples, medians; file modified "
                                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(p.stat().st_mtime))})",
                        "slider_cached_s": float(doc["cached_move_s"]["median"]),
                        "slider_new_point_s": float(doc["new_point_s"]["median"]), "raw": doc}
        except (OSError, ValueError, TypeError, KeyError):
            pass
    from tp_core.data import load_split
    from tp_core.evaluation import evaluate_masked

    task = "sst2"
    data = load_split(task, "validation", limit=b.s.interactive_n, seed=0)
    b.scores(task, "ig")  # make sure the scores are cached
    memo = {}
    new_times, cached_times = [], []
    for f in (0.35, 0.45, 0.55, 0.65, 0.75):
        t0 = time.perf_counter()
        sc = b.scores(task, "ig")
        m = b.masks(sc, f)
        memo[f] = evaluate_masked(b.model, task, data, m).metric
        new_times.append(time.perf_counter() - t0)
    for f in memo:
        t0 = time.perf_counter()
        sc = b.scores(task, "ig")
        b.masks(sc, f)
        _ = memo[f]
        cached_times.append(time.perf_counter() - t0)
    return {"source": f"measured by benchmarks/bench_speed.py, engine only (no {INTERACTIVE_JSON} for this model)",
            "task": task, "n": len(data), "slider_cached_s": statistics.median(cached_times),
            "slider_new_point_s": statistics.median(new_times)}


def run(b: Bench, quality: dict | None = None) -> dict:
    out = {"captum": captum_compare(b)}
    out["attribution_speed"] = attribution_speed(b, quality)
    out["export"] = export_speed(b)
    out["interactive"] = interactive(b)
    return out
