"""Recovery benchmark (issue 12): criteria x training-free recovery levels (x iterative pruning for the best two) on
the full validation split of each task (capped), scoring examples drawn with several seeds, bootstrap 95% intervals
on every figure, and the results.json keys of the issue.

    # what it will cost on this machine (a tiny timed trial, then an extrapolation for the flags given):
    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python benchmarks/bench_recovery.py --model demo --estimate
    # the full run (writes benchmarks/out/bench_recovery[-TAG].json and .npz; --merge adds the keys to results.json):
    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python benchmarks/bench_recovery.py --model demo --merge docs/results.json

What is measured, per task: the dense model and, for every criterion (ig, grad_x_act, activation, magnitude, random,
TextPruner's first-order Taylor criterion "textpruner"), every scoring seed, every point (FFN 50/70/80/90%, FFN 70% +
heads 50%) and every recovery level (none, bias, scale, lstsq), the predictions on the validation split (seeded subset
when larger than --cap) and on a *selection* set: --select-n train examples outside every scoring and calibration
sample and outside the demo model's own training sample (demo_build.json). Scoring examples (--samples) and recovery
calibration texts (--recover-samples) are seeded samples of the train split, one draw per seed. Then, for the two
criteria best on the selection set, iterative pruning (--n-iters steps, re-scoring on the pruned and recovered model)
with the best recovery level.

"Our best pipeline" in a cell (task x point) is the criterion x level (x iterative) with the best mean metric on the
selection set over the seeds, never chosen on validation (--select validation does, and says so). TextPruner's
criterion is one of the candidates only in the "best recovery" tables, never in "our best pipeline".

Statistics: a metric of a cell is the mean over seeds of the task metric; its interval is a percentile bootstrap over
the validation examples (1,000 resamples; the seeds' predictions are resampled together, example by example). Each
task has one resample matrix shared by all its cells, so differences and ratios (kept-vs-dense) are paired, and means
over tasks are stratified bootstraps (each task resampled independently). A win or a loss against TextPruner needs
the paired interval of the difference (scipy.stats.bootstrap, paired) to exclude zero; otherwise it is a tie.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tp_core import load_model  # noqa: E402
from tp_core.attribution import AttributionConfig, UnitScores, attribute  # noqa: E402
from tp_core.data import TaskData, get_task, load_split  # noqa: E402
from tp_core.evaluation import compute_metric, masked_logits, predict_logits, predictions  # noqa: E402
from tp_core.masks import PruneConfig, build_masks  # noqa: E402
from tp_core.recovery import RecoveryConfig, calibration_data, recover  # noqa: E402
from common import machine, merge_results  # noqa: E402

ALL_METHODS = ("ig", "grad_x_act", "activation", "magnitude", "random", "textpruner")
OURS = ("ig", "grad_x_act", "activation", "magnitude", "random")  # "our best pipeline" picks among these
LEVELS = ("none", "bias", "scale", "lstsq")
B_RESAMPLES = 1000
RESULT_KEYS = ("quality_validation_examples_min", "recovery_gain_80_90", "keep_90ffn", "best_vs_textpruner_win_rate",
               "keep_70ffn_50heads", "recovery_seconds")  # the keys, merged at the top of results.json


# ----- TextPruner's criterion ---------------------------------------------------------------------------------------
def textpruner_scores(model, task: str, data: TaskData, max_length: int) -> UnitScores:
    """TextPruner's first-order Taylor importance of every FFN neuron and head (its `get_importance_score`), on
    `data` with gold labels: what bench_textpruner.py measures, for any scoring sample."""
    from bench_textpruner import taylor_scores

    return taylor_scores(model, task, data, max_length, "textpruner", "first-order Taylor")


# ----- statistics ---------------------------------------------------------------------------------------------------
class TaskStats:
    """One task's labels, metric and bootstrap resample matrix (shared by all its cells: paired comparisons)."""

    def __init__(self, y: np.ndarray, metric: str, seed: int, n_resamples: int = B_RESAMPLES):
        self.y, self.metric = np.asarray(y), metric
        self.R = np.random.default_rng(seed).integers(0, len(y), (n_resamples, len(y)))

    def point(self, preds: list[np.ndarray]) -> float:
        return float(np.mean([compute_metric(self.metric, p, self.y) for p in preds]))

    def boot(self, preds: list[np.ndarray]) -> np.ndarray:
        """The bootstrap distribution (one value per resample) of the seed-mean metric."""
        if self.metric == "accuracy":
            c = np.mean([(p == self.y).astype(np.float64) for p in preds], axis=0)
            return c[self.R].mean(1)
        return np.array([np.mean([compute_metric(self.metric, p[r], self.y[r]) for p in preds]) for r in self.R])


def ci(boot: np.ndarray) -> list[float]:
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return [round(float(lo), 6), round(float(hi), 6)]


def paired_test(stats: TaskStats, a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Seed-mean metric of a minus b with a paired scipy.stats.bootstrap 95% interval over the examples."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(7)
    diff = stats.point(a) - stats.point(b)
    if stats.metric == "accuracy":
        d = (np.mean([(p == stats.y).astype(float) for p in a], 0)
             - np.mean([(p == stats.y).astype(float) for p in b], 0))
        res = bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=B_RESAMPLES, method="percentile",
                        random_state=rng, vectorized=True, axis=-1)
    else:
        k = len(a)

        def stat(*arrs):
            y = arrs[-1]
            return (np.mean([compute_metric(stats.metric, p, y) for p in arrs[:k]])
                    - np.mean([compute_metric(stats.metric, p, y) for p in arrs[k:-1]]))

        res = bootstrap((*a, *b, stats.y), stat, paired=True, vectorized=False, confidence_level=0.95,
                        n_resamples=400, method="percentile", random_state=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    verdict = "win" if lo > 0 else ("loss" if hi < 0 else "tie")
    return {"diff": round(diff, 6), "ci95": [round(lo, 6), round(hi, 6)], "verdict": verdict}


# ----- the run ------------------------------------------------------------------------------------------------------
def trained_on(model_name: str, task: str) -> TaskData | None:
    """The train examples a demo model was trained on (its demo_build.json: a seeded sample of each train split),
    None for other models (whose training data this benchmark cannot know)."""
    if model_name not in ("demo", "demo-quick"):
        return None
    from tp_core.demo import demo_path

    try:
        cfg = json.loads((demo_path(model_name == "demo-quick") / "demo_build.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None
    cap = cfg.get("per_task_caps", {}).get(task, cfg["max_per_task"])
    return load_split(get_task(task), "train", limit=cap, seed=cfg["seed"]) if cap else None


def _holdout(task: str, n: int, samples: int, recover_samples: int, seeds: list[int],
             model_name: str | None = None) -> TaskData:
    """`n` train examples in no scoring sample and no calibration sample of any seed, nor in the demo model's own
    training sample (the selection set: held out from everything the model or the pipeline saw)."""
    spec = get_task(task)
    train = load_split(spec, "train")
    seen = trained_on(model_name, task) if model_name else None
    used: set = set(seen.rows) if seen is not None else set()
    for s in seeds:
        used |= set(train.sample(samples, s).rows)
        used |= set(calibration_data(task, recover_samples, s).rows)
    rest = [i for i, r in enumerate(train.rows) if r not in used]
    return train.subset(rest).sample(n, 12345)


class Run:
    def __init__(self, args, model):
        self.a, self.model = args, model
        self.preds: dict = {}  # (task, method, f, h, level, iters) -> {"val": [per seed], "sel": [per seed]}
        self.times: dict = {"attribution": [], "recovery": {}, "recovery_cpu": {}, "teacher": [], "iterative": []}
        self.eval_s = self.eval_cpu = 0.0
        self.eval_n = 0

    def predict(self, task, data, masks=None, rec=None) -> np.ndarray:
        """Predictions of the dense model, or of `masks` with recovery `rec` (sliced when that is faster)."""
        t, c = time.perf_counter(), time.process_time()
        if masks is None:
            logits = predict_logits(self.model, task, data, None, batch_size=64, max_length=self.a.max_length)
        else:
            logits = masked_logits(self.model, task, data, masks, rec, batch_size=64, max_length=self.a.max_length)
        p = predictions(logits, data.spec.problem)
        self.eval_s += time.perf_counter() - t
        self.eval_cpu += time.process_time() - c
        self.eval_n += len(data)
        return p

    def scores(self, task, method, seed, sdata, units) -> UnitScores:
        t, c = time.perf_counter(), time.process_time()
        if method == "textpruner":
            sc = textpruner_scores(self.model, task, sdata, self.a.max_length)
        else:
            cfg = AttributionConfig(method=method, samples=self.a.samples, steps=self.a.steps, riemann=self.a.riemann,
                                    units=units, seed=seed, max_length=self.a.max_length)
            sc = attribute(self.model, task, cfg, data=sdata)
        self.times["attribution"].append({"task": task, "method": method, "seconds": round(time.perf_counter() - t, 3),
                                          "cpu_seconds": round(time.process_time() - c, 3)})
        return sc

    def rcfg(self, level, seed) -> RecoveryConfig:
        return RecoveryConfig(level=level, samples=self.a.recover_samples, seed=seed, ridge=self.a.ridge,
                              damping=self.a.damping, max_length=self.a.max_length,
                              head=self.a.head_refit == "on")

    def store(self, key, which, seed_index, pred):
        self.preds.setdefault(key, {"val": {}, "sel": {}})[which][seed_index] = pred


def points(args) -> list[tuple[float, float]]:
    pts = [(float(f), 0.0) for f in args.ffn.split(",") if f]
    for c in (args.combined.split(",") if args.combined else []):
        f, h = c.split(":")
        pts.append((float(f), float(h)))
    return pts


def run_task(r: Run, task: str, log) -> dict:
    a, model = r.a, r.model
    shape = model.unit_shape()
    seeds = [int(s) for s in a.seeds.split(",")]
    val = load_split(task, "validation", limit=a.cap, seed=0)
    sel = _holdout(task, a.select_n, a.samples, a.recover_samples, seeds, a.model) if a.select == "holdout" else None
    info = {"n_validation": len(val), "validation_split_size": len(load_split(task, "validation")),
            "n_selection": len(sel) if sel is not None else 0, "metric": val.spec.metric}
    r.store((task, "dense"), "val", 0, r.predict(task, val))
    if sel is not None:
        r.store((task, "dense"), "sel", 0, r.predict(task, sel))
    pts = points(a)
    units = "both" if any(h > 0 for _, h in pts) else "ffn"
    methods = [m for m in a.methods.split(",") if m]
    levels = ["none"] + [x for x in a.levels.split(",") if x and x != "none"]
    for si, seed in enumerate(seeds):
        sdata = load_split(task, get_task(task).scoring_split, limit=a.samples, seed=seed)
        calib = calibration_data(task, a.recover_samples, seed)
        if {"scale", "lstsq"} & set(levels):  # the dense teacher pass, once per calibration set (then cached)
            from tp_core.recovery_passes import dense_teacher

            t, c = time.perf_counter(), time.process_time()
            dense_teacher(model, task, calib, r.rcfg("lstsq", seed))
            r.times["teacher"].append({"task": task, "seconds": round(time.perf_counter() - t, 3),
                                       "cpu_seconds": round(time.process_time() - c, 3)})
        for method in methods:
            sc = r.scores(task, method, seed, sdata, units)
            for f, h in pts:
                masks = build_masks(sc, PruneConfig(f, h), shape)
                for level in levels:
                    c = time.process_time()
                    rec = recover(model, task, masks, calib, r.rcfg(level, seed)) if level != "none" else None
                    if rec is not None:
                        r.times["recovery"].setdefault(level, []).append(round(rec.seconds, 3))
                        r.times["recovery_cpu"].setdefault(level, []).append(round(time.process_time() - c, 3))
                    key = (task, method, f, h, level, 1)
                    r.store(key, "val", si, r.predict(task, val, masks, rec))
                    if sel is not None:
                        r.store(key, "sel", si, r.predict(task, sel, masks, rec))
            log(f"{task} seed {seed} {method} done")
    # iterative pruning for the two criteria best on the selection set, with their best recovery level
    if a.n_iters > 1 and a.iterative_methods != "none":
        from tp_core.iterative import iterative_masks

        chosen = choose_iterative(r, task, pts, methods, levels) if a.iterative_methods == "auto" else \
            [(m, best_level(r, task, pts, m, levels)) for m in a.iterative_methods.split(",")]
        info["iterative"] = [{"method": m, "level": lv} for m, lv in chosen]
        for si, seed in enumerate(seeds):
            sdata = load_split(task, get_task(task).scoring_split, limit=a.samples, seed=seed)
            calib = calibration_data(task, a.recover_samples, seed)
            for method, level in chosen:
                cfg = AttributionConfig(method=method, samples=a.samples, steps=a.steps, riemann=a.riemann, units=units,
                                        seed=seed, max_length=a.max_length)
                for f, h in pts:
                    t = time.perf_counter()
                    it = iterative_masks(model, task, cfg, PruneConfig(f, h), a.n_iters,
                                         recovery=r.rcfg(level, seed) if level != "none" else None, data=sdata,
                                         calib=calib)
                    r.times["iterative"].append(round(time.perf_counter() - t, 3))
                    for lv, rec in (("none", None), (level, it.recovery)):
                        key = (task, method, f, h, lv, a.n_iters)
                        if key in r.preds and si in r.preds[key]["val"]:
                            continue
                        r.store(key, "val", si, r.predict(task, val, it.masks, rec))
                        if sel is not None:
                            r.store(key, "sel", si, r.predict(task, sel, it.masks, rec))
                log(f"{task} seed {seed} iterative {method}+{level} done")
    return info


def _sel_score(r: Run, task: str, key, which: str) -> float:
    d = r.preds[key][which]
    data_y = r.labels[task][which]
    return float(np.mean([compute_metric(r.metric[task], p, data_y) for p in d.values()]))


def best_level(r: Run, task, pts, method, levels) -> str:
    which = "sel" if r.a.select == "holdout" else "val"
    means = {lv: np.mean([_sel_score(r, task, (task, method, f, h, lv, 1), which) for f, h in pts]) for lv in levels}
    return max(means, key=means.get)


def choose_iterative(r: Run, task, pts, methods, levels) -> list[tuple[str, str]]:
    which = "sel" if r.a.select == "holdout" else "val"
    ours = [m for m in methods if m in OURS and m != "random"]
    best = {}
    for m in ours:
        lv = best_level(r, task, pts, m, levels)
        best[m] = (np.mean([_sel_score(r, task, (task, m, f, h, lv, 1), which) for f, h in pts]), lv)
    return [(m, best[m][1]) for m in sorted(best, key=lambda m: -best[m][0])[:2]]


# ----- analysis -----------------------------------------------------------------------------------------------------
def analyse(r: Run, tasks: list[str], infos: dict) -> dict:
    a = r.a
    pts = points(a)
    which = "sel" if a.select == "holdout" else "val"
    stats = {t: TaskStats(r.labels[t]["val"], r.metric[t], seed=1000 + i) for i, t in enumerate(tasks)}
    dense_boot = {t: stats[t].boot([r.preds[(t, "dense")]["val"][0]]) for t in tasks}
    dense = {t: stats[t].point([r.preds[(t, "dense")]["val"][0]]) for t in tasks}

    def val_preds(key):
        d = r.preds[key]["val"]
        return [d[i] for i in sorted(d)]

    @functools.cache  # every cell is compared many times (levels, criteria, iterative): one bootstrap each
    def keep(t, key):
        b = stats[t].boot(val_preds(key)) / dense_boot[t]
        return stats[t].point(val_preds(key)) / dense[t], b

    cells = []
    for key in sorted(k for k in r.preds if len(k) == 6 and k[0] in stats):  # resumed tasks join when reached
        t = key[0]
        pt, kb = keep(t, key)
        mb = stats[t].boot(val_preds(key))
        cells.append({"task": t, "method": key[1], "ffn_sparsity": key[2], "head_sparsity": key[3], "level": key[4],
                      "n_iters": key[5], "seeds": len(r.preds[key]["val"]),
                      "metric": round(stats[t].point(val_preds(key)), 6),
                      "metric_ci95": ci(mb), "kept_vs_dense": round(pt, 6), "kept_ci95": ci(kb),
                      "selection_metric": round(_sel_score(r, t, key, which), 6)})

    def candidates(t, f, h, methods=OURS, levels=None):
        return [k for k in r.preds if len(k) == 6 and k[0] == t and k[2] == f and k[3] == h and k[1] in methods
                and (levels is None or k[4] in levels)]

    def best(t, f, h, **kw):
        c = candidates(t, f, h, **kw)
        return max(c, key=lambda k: _sel_score(r, t, k, which)) if c else None

    out: dict = {"selection": a.select}
    out["quality_validation_examples_min"] = min(infos[t]["n_validation"] for t in tasks)
    out["quality_validation_whole_split"] = {t: infos[t]["n_validation"] == infos[t]["validation_split_size"]
                                             for t in tasks}
    # recovery_gain_80_90: per task and sparsity, the best criterion (with recovery, chosen on selection) and its best
    # level; gain = keep(best level) - keep(none), in points; mean over tasks and the two sparsities
    gains, boots, rows = [], [], []
    for f in (0.8, 0.9):
        if (f, 0.0) not in pts:
            continue
        for t in tasks:
            k = best(t, f, 0.0, levels=[lv for lv in LEVELS if lv != "none"] or None)
            if k is None:
                continue
            plain = (t, k[1], f, 0.0, "none", k[5])
            if plain not in r.preds:
                continue
            g_pt = keep(t, k)[0] - keep(t, plain)[0]
            g_b = keep(t, k)[1] - keep(t, plain)[1]
            gains.append(100 * g_pt)
            boots.append(100 * g_b)
            rows.append({"task": t, "ffn_sparsity": f, "method": k[1], "level": k[4], "n_iters": k[5],
                         "gain_points": round(100 * g_pt, 3), "ci95": ci(100 * g_b),
                         "headroom_points": round(100 * (1 - keep(t, plain)[0]), 3)})
    if gains:
        out["recovery_gain_80_90"] = {"value": round(float(np.mean(gains)), 3), "ci95": ci(np.mean(boots, 0)),
                                      "unit": "points of kept-vs-dense", "goal": 8.0, "cells": rows}
    # keep_90ffn and keep_70ffn_50heads per task: our best pipeline (chosen on selection)
    for name, (f, h) in (("keep_90ffn", (0.9, 0.0)), ("keep_70ffn_50heads", (0.7, 0.5))):
        if (f, h) not in pts:
            continue
        per = {}
        for t in tasks:
            k = best(t, f, h)
            if k is None:
                continue
            pt, kb = keep(t, k)
            per[t] = {"value": round(pt, 6), "ci95": ci(kb), "pipeline": {"method": k[1], "level": k[4],
                                                                          "n_iters": k[5]}}
        out[name] = per
    # best_vs_textpruner_win_rate over task x sparsity cells at 70-90% FFN
    wl = []
    for f in (0.7, 0.8, 0.9):
        if (f, 0.0) not in pts:
            continue
        for t in tasks:
            tp = (t, "textpruner", f, 0.0, "none", 1)
            k = best(t, f, 0.0)
            if tp not in r.preds or k is None:
                continue
            test = paired_test(stats[t], val_preds(k), val_preds(tp))
            tp_best = best(t, f, 0.0, methods=("textpruner",))
            test_rec = paired_test(stats[t], val_preds(k), val_preds(tp_best))
            wl.append({"task": t, "ffn_sparsity": f, "ours": {"method": k[1], "level": k[4], "n_iters": k[5]},
                       "vs_textpruner": test, "vs_textpruner_with_its_best_recovery": {
                           "level": tp_best[4], **test_rec}})
    if wl:
        wins = sum(c["vs_textpruner"]["verdict"] == "win" for c in wl)
        losses = sum(c["vs_textpruner"]["verdict"] == "loss" for c in wl)
        out["best_vs_textpruner_win_rate"] = {
            "value": round(wins / len(wl), 4), "wins": wins, "losses": losses, "ties": len(wl) - wins - losses,
            "cells": wl, "goal": 0.8,
            "with_its_best_recovery": {
                "wins": sum(c["vs_textpruner_with_its_best_recovery"]["verdict"] == "win" for c in wl),
                "losses": sum(c["vs_textpruner_with_its_best_recovery"]["verdict"] == "loss" for c in wl)}}
    # recovery_seconds: what the best recovery level adds per task (fit time per pruned model)
    level_counts: dict = {}
    for t in tasks:
        for f, h in pts:
            k = best(t, f, h)
            if k is not None and k[4] != "none":
                level_counts[k[4]] = level_counts.get(k[4], 0) + 1
    top = max(level_counts, key=level_counts.get) if level_counts else "lstsq"
    secs = r.times["recovery"].get(top, [])
    if secs:
        teacher = [x["seconds"] for x in r.times["teacher"]] if top in ("scale", "lstsq") else []
        fit, dense_pass = float(np.mean(secs)), float(np.mean(teacher)) if teacher else 0.0
        out["recovery_seconds"] = {
            "value": round(fit + dense_pass, 3), "level": top, "fit_mean": round(fit, 3),
            "fit_max": round(float(np.max(secs)), 3), "teacher_pass_mean": round(dense_pass, 3), "fits": len(secs),
            "goal": 60.0, "samples": a.recover_samples, "load_average": list(os.getloadavg()),
            "note": "per pruned model: one fit plus the dense-teacher pass over the calibration texts (done once per "
                    "task and calibration set, shared by every fit); wall-clock on this machine at its load"}
    out["dense"] = {t: {"metric": round(dense[t], 6), "ci95": ci(dense_boot[t]), "n": infos[t]["n_validation"]}
                    for t in tasks}
    out.update(breadth(r, tasks, stats, keep, val_preds))
    out["cells"] = cells
    return out


def _summary(diffs: list[float], boots: list[np.ndarray], tests: list[dict]) -> dict:
    """Mean over cells (points of kept-vs-dense) with its stratified interval, and the per-cell verdicts."""
    v = [t["verdict"] for t in tests]
    return {"mean_points": round(float(np.mean(diffs)), 3), "ci95": ci(np.mean(boots, 0)), "cells": len(diffs),
            "wins": v.count("win"), "losses": v.count("loss"), "ties": v.count("tie")}


def breadth(r: Run, tasks, stats, keep, val_preds) -> dict:
    """What each recovery level adds to each criterion, how ig compares with every other criterion at each level,
    and what iterative pruning adds, over every task x point cell of the run. Differences are in points of
    kept-vs-dense (paired bootstrap, tasks resampled independently); a cell's verdict is the paired test of the
    metric."""
    keys = [k for k in r.preds if len(k) == 6 and k[0] in stats]
    methods = sorted({k[1] for k in keys})
    levels = [lv for lv in LEVELS if any(k[4] == lv for k in keys)]
    cells = sorted({(k[0], k[2], k[3]) for k in keys})

    def compare(a_key, b_key):
        t = a_key[0]
        (ka, ba), (kb, bb) = keep(t, a_key), keep(t, b_key)
        return 100 * (ka - kb), 100 * (ba - bb), paired_test(stats[t], val_preds(a_key), val_preds(b_key))

    def over(pairs):
        got = [compare(a, b) for a, b in pairs if a in r.preds and b in r.preds]
        return _summary([g[0] for g in got], [g[1] for g in got], [g[2] for g in got]) if got else None

    out: dict = {}
    effects = []
    for m in methods:
        for lv in levels:
            if lv == "none":
                continue
            s = over([((t, m, f, h, lv, 1), (t, m, f, h, "none", 1)) for t, f, h in cells])
            if s:
                effects.append({"method": m, "level": lv, **s})
    if effects:
        out["recovery_level_effects"] = effects
    if "ig" in methods and len(methods) > 1:
        vs = []
        for lv in levels:
            for m in methods:
                if m == "ig":
                    continue
                s = over([((t, "ig", f, h, lv, 1), (t, m, f, h, lv, 1)) for t, f, h in cells])
                if s:
                    vs.append({"level": lv, "other": m, **s})
        out["ig_vs_criteria"] = vs
    iters = sorted({(k[1], k[4], k[5]) for k in keys if k[5] > 1})
    effects = []
    for m, lv, n in iters:
        s = over([((t, m, f, h, lv, n), (t, m, f, h, lv, 1)) for t, f, h in cells])
        if s:
            effects.append({"method": m, "level": lv, "n_iters": n, **s})
    if effects:
        out["iterative_effects"] = effects
    return out


def extrapolate(args, timing: dict) -> dict:
    """Hours the run of `args` takes from per-component timings {eval_per_example, attribution: {method}, teacher,
    fit: {level}} (seconds; the same keys with CPU seconds under "cpu")."""
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    levels = ["none"] + [x for x in args.levels.split(",") if x and x != "none"]
    pts = points(args)
    tasks = [t for t in args.tasks.split(",") if t]
    n_val = {t: min(args.cap, len(load_split(t, "validation"))) for t in tasks}
    n_eval = {t: n_val[t] + (args.select_n if args.select == "holdout" else 0) for t in tasks}
    evals = len(seeds) * len(methods) * len(pts) * len(levels) + 1
    iters = 2 if args.n_iters > 1 and args.iterative_methods != "none" else 0

    def hours(tm: dict) -> float:
        attr = {m: tm["attribution"].get(m, max(tm["attribution"].values())) for m in methods}
        fits = [tm["fit"].get(lv, max(tm["fit"].values(), default=0.0)) for lv in levels[1:]]
        ours = [attr[m] for m in methods if m != "textpruner"] or [0.0]
        total = 0.0
        for t in tasks:
            total += evals * n_eval[t] * tm["eval_per_example"]
            total += len(seeds) * (sum(attr.values()) + (tm["teacher"] if {"scale", "lstsq"} & set(levels) else 0))
            total += len(seeds) * len(methods) * len(pts) * sum(fits)
            if iters:
                step = float(np.mean(ours)) + max(fits, default=0.0)
                total += len(seeds) * iters * len(pts) * (args.n_iters * step + 2 * n_eval[t] * tm["eval_per_example"])
        return total / 3600

    cores = max(1, min(os.cpu_count() or 1, __import__("torch").get_num_threads()))
    return {"validation_examples": n_val, "evaluations_per_task": evals,
            "estimated_hours_at_measured_load": round(hours(timing), 2),
            "estimated_hours_quiet": round(hours(timing["cpu"]) / cores, 2),
            "note": f"quiet = the measured CPU seconds spread over {cores} cores (a lower bound); attribution and "
                    "recovery times of the trial task are used for every task (longer texts cost more)"}


def timing_from_run(path: Path) -> dict:
    """Per-component timings from an earlier bench_recovery output JSON (--estimate-from)."""
    res = json.loads(Path(path).read_text())
    tm = res["times"]

    def part(key):
        attr: dict = {}
        for x in tm["attribution"]:
            attr.setdefault(x["method"], []).append(x[key])
        fits = tm["recovery"] if key == "seconds" else tm["recovery_cpu"]
        return {"attribution": {m: float(np.mean(v)) for m, v in attr.items()},
                "fit": {lv: float(np.mean(v)) for lv, v in fits.items()},
                "teacher": float(np.mean([x[key] for x in tm["teacher"]])) if tm["teacher"] else 0.0,
                "eval_per_example": res["eval_seconds_per_example" if key == "seconds"
                                        else "eval_cpu_seconds_per_example"]}

    return {**part("seconds"), "cpu": part("cpu_seconds")}


def estimate(args, model, log) -> int:
    """A tiny timed trial on the first task (wall and CPU seconds of each component), extrapolated to the flags."""
    from tp_core.recovery_passes import dense_teacher

    task = args.tasks.split(",")[0]
    methods = [m for m in args.methods.split(",") if m]
    levels = ["none"] + [x for x in args.levels.split(",") if x and x != "none"]
    pts = points(args)
    units = "both" if any(h > 0 for _, h in pts) else "ffn"
    r = Run(args, model)
    val = load_split(task, "validation", limit=min(args.cap, args.trial_examples), seed=0)
    r.predict(task, val)  # warm-up
    r.eval_s = r.eval_cpu = r.eval_n = 0
    r.predict(task, val)
    timing: dict = {"attribution": {}, "fit": {}, "eval_per_example": r.eval_s / max(r.eval_n, 1),
                    "cpu": {"attribution": {}, "fit": {}, "eval_per_example": r.eval_cpu / max(r.eval_n, 1)}}
    sdata = load_split(task, get_task(task).scoring_split, limit=args.samples, seed=0)
    calib = calibration_data(task, args.recover_samples, 0)
    sc = None
    for m in methods:
        t, c = time.perf_counter(), time.process_time()
        sc = r.scores(task, m, 0, sdata, units)
        timing["attribution"][m], timing["cpu"]["attribution"][m] = time.perf_counter() - t, time.process_time() - c
        log(f"trial: {m} scores {timing['attribution'][m]:.1f}s (cpu {timing['cpu']['attribution'][m]:.1f}s)")
    t, c = time.perf_counter(), time.process_time()
    dense_teacher(model, task, calib, r.rcfg("lstsq", 0))
    timing["teacher"], timing["cpu"]["teacher"] = time.perf_counter() - t, time.process_time() - c
    log(f"trial: dense teacher pass {timing['teacher']:.1f}s (cpu {timing['cpu']['teacher']:.1f}s)")
    masks = build_masks(sc, PruneConfig(*pts[-1]), model.unit_shape())
    for lv in levels[1:]:
        t, c = time.perf_counter(), time.process_time()
        recover(model, task, masks, calib, r.rcfg(lv, 0))
        timing["fit"][lv], timing["cpu"]["fit"][lv] = time.perf_counter() - t, time.process_time() - c
        log(f"trial: {lv} recovery {timing['fit'][lv]:.1f}s (cpu {timing['cpu']['fit'][lv]:.1f}s)")
    print(json.dumps({"trial_task": task, "timing": timing, **extrapolate(args, timing)}, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--tasks", default="sst2,ag_news,trec")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--seeds", default="0,1,2", help="scoring (and calibration) sample seeds")
    ap.add_argument("--ffn", default="0.5,0.7,0.8,0.9", help="FFN sparsities (heads kept)")
    ap.add_argument("--combined", default="0.7:0.5", help="FFN:heads points, comma-separated ('' for none)")
    ap.add_argument("--cap", type=int, default=2000, help="validation examples per task (seeded subset when larger)")
    ap.add_argument("--select", default="holdout", choices=["holdout", "validation"],
                    help="where 'our best pipeline' is chosen (validation is optimistic: reported as such)")
    ap.add_argument("--select-n", type=int, default=500, help="selection-set size (train holdout)")
    ap.add_argument("--samples", type=int, default=64, help="scoring examples per seed")
    ap.add_argument("--steps", type=int, default=2, help="IG steps (the app's default: 2 Gauss-Legendre)")
    ap.add_argument("--riemann", default="gausslegendre")
    ap.add_argument("--recover-samples", type=int, default=RecoveryConfig.samples)
    ap.add_argument("--ridge", type=float, default=RecoveryConfig.ridge)
    ap.add_argument("--damping", type=float, default=RecoveryConfig.damping)
    ap.add_argument("--head-refit", default="on", choices=["on", "off"],
                    help="lstsq also re-fits the task head's first projection (the product's default: on)")
    ap.add_argument("--n-iters", type=int, default=4, help="iterative pruning steps for the best two (1: off)")
    ap.add_argument("--iterative-methods", default="auto", help="auto (best two on the selection set), none, or "
                                                                "a comma-separated list")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--estimate", action="store_true", help="time a tiny trial and print the run's estimated hours")
    ap.add_argument("--trial-examples", type=int, default=200)
    ap.add_argument("--estimate-from", default=None, metavar="JSON",
                    help="estimate the run of these flags from an earlier run's timings (its output JSON)")
    ap.add_argument("--merge", default=None, metavar="RESULTS_JSON",
                    help="also write the issue's keys into this results.json (top level) and the tables under "
                         "'recovery_benchmark'")
    ap.add_argument("--tag", default="")
    ap.add_argument("--resume", default=None, metavar="RUN_JSON",
                    help="take the tasks a stopped run (same settings) finished from its .json/.npz; run the rest")
    ap.add_argument("--merge-from", default=None, metavar="RUN_JSON",
                    help="merge an earlier run's output (e.g. one stopped after its first task: the file is written "
                         "after each task) into --merge's results.json, and stop")
    ap.add_argument("--merge-as", default="recovery_benchmark", metavar="KEY",
                    help="the results.json key the run goes under; any other than recovery_benchmark (e.g. "
                         "recovery_breadth) leaves the issue's headline keys as they are")
    ap.add_argument("--merge-fields", default=None, metavar="A,B",
                    help="merge only these fields of the run (meta always), e.g. recovery_seconds,times,seconds for "
                         "a timing re-run whose small-cap quality figures should not be stored")
    args = ap.parse_args(argv)
    if args.merge_fields and args.merge_as == "recovery_benchmark":
        ap.error("--merge-fields needs --merge-as KEY (other than recovery_benchmark)")
    fields = args.merge_fields.split(",") if args.merge_fields else None
    if args.merge_from:
        if not args.merge:
            ap.error("--merge-from needs --merge RESULTS_JSON")
        res = json.loads(Path(args.merge_from).read_text())
        res.setdefault("meta", {})["merged_from"] = args.merge_from
        merge(res, Path(args.merge), args.merge_as, fields)
        return 0
    check_choices(ap, args)

    import torch

    t_start = time.time()

    def log(msg):
        print(f"[{time.time() - t_start:8.1f}s] {msg}", flush=True)

    if args.estimate_from:
        print(json.dumps(extrapolate(args, timing_from_run(Path(args.estimate_from))), indent=1))
        return 0
    model = load_model(args.model)
    if args.estimate:
        return estimate(args, model, log)
    tasks = [t for t in args.tasks.split(",") if t]
    r = Run(args, model)
    r.labels, r.metric = {}, {}
    infos = {}
    out_path = HERE / "out" / f"bench_recovery{('-' + args.tag) if args.tag else ''}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "settings": vars(args), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu": machine()["cpu"], "platform": platform.platform(),
            "loadavg_start": list(os.getloadavg()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "benchmarks/bench_recovery.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    done = resume(r, Path(args.resume), args) if args.resume else {}
    if args.resume:
        meta["resumed_from"] = getattr(args, "resumed_from", None)
    for task in tasks:
        seeds = [int(s) for s in args.seeds.split(",")]
        val = load_split(task, "validation", limit=args.cap, seed=0)
        r.metric[task] = val.spec.metric
        r.labels[task] = {"val": np.asarray(val.labels)}
        if args.select == "holdout":
            r.labels[task]["sel"] = np.asarray(_holdout(task, args.select_n, args.samples, args.recover_samples,
                                                        seeds, args.model).labels)
        infos[task] = done[task] if task in done else run_task(r, task, log)
        log(f"{task}: {'taken from ' + args.resume if task in done else 'done'} ({infos[task]})")
        res = analyse(r, list(infos), infos)
        res.update(meta=meta, tasks=infos, seconds=round(time.time() - t_start, 1), times=r.times,
                   eval_seconds_per_example=round(r.eval_s / max(r.eval_n, 1), 6),
                   eval_cpu_seconds_per_example=round(r.eval_cpu / max(r.eval_n, 1), 6),
                   cpu_seconds=round(time.process_time(), 1))
        out_path.write_text(json.dumps(res, indent=1))
        np.savez_compressed(out_path.with_suffix(".npz"), **{"|".join(map(str, k)) + f"|{w}|{s}": p
                                                             for k, d in r.preds.items() for w in d
                                                             for s, p in d[w].items()})
    res["meta"]["loadavg_end"] = list(os.getloadavg())
    out_path.write_text(json.dumps(res, indent=1))
    summary = {k: res[k] for k in RESULT_KEYS if k in res}
    for k, v in summary.items():
        if isinstance(v, dict):
            short = {kk: vv for kk, vv in v.items() if kk != "cells"}
            print(f"{k}: {json.dumps(short)}")
        else:
            print(f"{k}: {v}")
    if args.merge:
        merge(res, Path(args.merge), args.merge_as, fields)
    print(f"wrote {out_path} ({res['seconds']:.0f}s)")
    return 0


def check_choices(ap: argparse.ArgumentParser, args) -> None:
    """--methods and --levels name known criteria and recovery levels (else argparse's one-line error, exit 2)."""
    for m in args.methods.split(","):
        if m and m not in ALL_METHODS:
            ap.error(f"unknown method {m!r}")
    for lv in args.levels.split(","):
        if lv and lv not in LEVELS:
            ap.error(f"unknown level {lv!r}")


RESUME_SETTINGS = ("model", "methods", "levels", "seeds", "ffn", "combined", "cap", "select", "select_n", "samples",
                   "steps", "riemann", "recover_samples", "ridge", "damping", "n_iters", "iterative_methods",
                   "max_length", "head_refit")
# a setting added after some runs were made: what those runs did
RESUME_DEFAULTS = {"head_refit": "off"}  # runs before the head re-fit (08be436) had none


def resume(r: Run, path: Path, args) -> dict:
    """Load the finished tasks of an earlier run (its .json for their infos and times, its .npz for every
    prediction) into `r`, so a stopped run goes on where it stopped. Its settings must equal this run's."""
    prev = json.loads(path.read_text())
    old = prev["meta"]["settings"]
    diff = [k for k in RESUME_SETTINGS if str(old.get(k, RESUME_DEFAULTS.get(k))) != str(getattr(args, k))]
    if diff:
        raise SystemExit(f"--resume: {path} was run with other settings ({', '.join(diff)})")
    with np.load(path.with_suffix(".npz")) as z:
        for k in z.files:
            *kp, which, s = k.split("|")
            key = tuple(kp) if len(kp) == 2 else (kp[0], kp[1], float(kp[2]), float(kp[3]), kp[4], int(kp[5]))
            r.store(key, which, int(s), z[k])
    for name, part in prev.get("times", {}).items():
        if isinstance(part, dict):
            for lv, xs in part.items():
                r.times[name].setdefault(lv, []).extend(xs)
        else:
            r.times[name].extend(part)
    args.resumed_from = {"tasks": list(prev["tasks"]), "started": prev["meta"].get("started"),
                         "command": prev["meta"].get("command")}
    return dict(prev["tasks"])


def merge(res: dict, path: Path, key: str = "recovery_benchmark", fields: list[str] | None = None) -> None:
    """The issue's keys at the top of results.json and the whole run under `recovery_benchmark`, written
    atomically (results.json is never left half-written). Under another `key` (--merge-as: a run on some tasks
    only, e.g. every criterion x level on two tasks) the run is stored there and the issue's keys are left alone;
    `fields` (--merge-fields): only those fields of the run, and its meta."""
    if fields:
        res = {k: v for k, v in res.items() if k in {"meta", *fields}}
    top = {k: res[k] for k in RESULT_KEYS if k in res} if key == "recovery_benchmark" else {}
    merge_results(path, {**top, key: res})


if __name__ == "__main__":
    raise SystemExit(main())
