"""Pruning quality of a prompted decoder LLM per task (issue 28): our best pipeline at 50% of the MLP neurons and at
30% MLP + 30% key/value groups, against Wanda-sp (FLAP beside it) at 30/50/70% MLP, and the attribution wall times.

    # quick (sst2 and ag_news, 200 validation examples each, one scoring seed, grad_x_act only, no recovery; ig
    # only timed, on 8 examples: it integrates layer by layer, a cost in the square of the depth): a shared 2-core CPU
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llm_quality.py --quick --no-merge   # then --merge-only
    # full (sst2, ag_news, trec, whole validation split capped at 2,000, three scoring seeds, recovery none or
    # lstsq chosen on the selection set): for a quiet machine or a GPU. On a 2-core AMD EPYC, cap 200 and 3 seeds:
    # sst2 about 2 hours, ag_news 46 min (recovery runs the shared demonstrations once: recovery_passes.py)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llm_quality.py
    # re-render the keys from a finished (or partial) run's state without computing anything
    .venv/bin/python benchmarks/llm_quality.py --quick --merge-only

Per task and scoring seed: the dense model's prompt is the bundle's default (tp_core/prompts.py); 64 scoring
examples are a seeded sample of the train split (as for every data method); calibration texts for recovery another
seeded train sample (recovery.calibration_data). The *selection set* is a seeded sample of the other train examples:
in no scoring sample, no calibration sample and no demonstration of the prompt. Evaluation: the validation split,
a seeded sample capped at --cap.

"Our best pipeline" in a cell (task x point) is the criterion (--ours: grad_x_act, or ig with the app's settings:
policy.APP_ATTRIBUTION) and recovery level (--levels) with the best seed-mean metric on the selection set, never
chosen on validation (a single candidate needs no selection set). Wanda-sp and FLAP (structured.py) get the
recovery level ours chose in that cell, so the comparison is on equal footing. Masks: global allocation, as for
every criterion (masks.py).

Statistics as in bench_recovery.py (whose TaskStats, paired_test and ci this reuses): a cell's metric is the mean over
seeds, its interval a percentile bootstrap over the validation examples with one resample matrix per task, so a
kept-vs-dense ratio is paired with the dense metric; a win or a loss against Wanda-sp needs the paired bootstrap
interval of the difference to exclude zero, otherwise it is a tie.

Resumable: every prediction vector (per task, data set, criterion, level, point, seed) and every timing goes into a
state JSON (--state; default TP_HOME/bench/llm_quality-<mode>-<model>.json) as soon as it is computed, and a restart
computes only what is missing (attribution scores are also cached on disk by tp_core). At the end, or with
--merge-only on whatever is finished, the keys llm_keep_mlp50, llm_keep_mlp30_heads30,
llm_best_vs_wanda_sp_win_rate, llm_scores_seconds and the section llm_quality go into --merge (docs/results.json),
and docs/RESULTS.md is re-rendered (report_llm_quality.py). A run stopped before every cell is marked partial.
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

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):  # before transformers is imported
    os.environ.setdefault(_var, "1")

from bench_recovery import TaskStats, ci, paired_test  # noqa: E402
from common import DOCS, machine, merge_results  # noqa: E402

OURS = ("grad_x_act", "ig")  # "our best pipeline" picks among these (cheapest first: it wins ties)
RIVALS = ("wanda_sp", "flap")  # the structured criteria of the LLM pruning field, at ours' recovery level
MLP_GRID = (0.3, 0.5, 0.7)  # the win-rate cells' MLP sparsities (heads kept)
COMBINED = (0.3, 0.3)  # llm_keep_mlp30_heads30
POINTS = ((0.5, 0.0), COMBINED, (0.3, 0.0), (0.7, 0.0))  # computation order in a task: the headline cell first
WIN_GOAL, KEEP_GOAL = 0.6, 0.95
# the results.json keys this benchmark writes (besides its section llm_quality)
KEYS = ("llm_keep_mlp50", "llm_keep_mlp30_heads30", "llm_best_vs_wanda_sp_win_rate", "llm_scores_seconds")
QUICK = {"tasks": "sst2,ag_news", "cap": 200, "seeds": "0", "select_n": 64, "levels": "none", "ours": "grad_x_act",
         "ig_time_n": 8}
FULL = {"tasks": "sst2,ag_news,trec", "cap": 2000, "seeds": "0,1,2", "select_n": 200, "levels": "none,lstsq",
        "ours": ",".join(OURS), "ig_time_n": 64}


# ----- pure parts: the choice of our pipeline, the verdicts and the keys ------------------------------------------
def cell_key(task: str, which: str, method: str, level: str, f: float, h: float, seed: int) -> str:
    return f"{task}|{which}|{method}|{level}|{f:g}|{h:g}|{seed}"


def choose(sel_metric: dict[tuple[str, str], float]) -> tuple[str, str]:
    """The (criterion, level) with the best selection-set metric; ties go to the first listed (the cheaper)."""
    best = None
    for cand, v in sel_metric.items():
        if best is None or v > sel_metric[best]:
            best = cand
    return best


def win_rate(verdicts: list[str]) -> dict:
    """Share of cells that are wins (a paired interval above zero), with the losses and ties counted."""
    n = len(verdicts)
    wins, losses = verdicts.count("win"), verdicts.count("loss")
    return {"value": round(wins / n, 4) if n else None, "wins": wins, "losses": losses, "ties": n - wins - losses,
            "n_cells": n}


# ----- the run ---------------------------------------------------------------------------------------------------
class State:
    """The run's predictions and timings, written (atomically) to a JSON file after every entry."""

    def __init__(self, path: Path):
        self.path = path
        self.doc = json.loads(path.read_text()) if path.is_file() else {"preds": {}, "timings": {}, "meta": {}}

    def put(self, section: str, key: str, value) -> None:
        from tp_core.paths import atomic_write_text

        self.doc[section][key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.doc))


class Task:
    """One task's data: validation sample, selection set, and per seed the scoring and calibration samples."""

    def __init__(self, model, name: str, args):
        from tp_core import decoder
        from tp_core.data import get_task, load_split
        from tp_core.recovery import calibration_data

        spec = get_task(name)
        self.name, self.seeds = name, [int(s) for s in args.seeds.split(",")]
        self.val = load_split(spec, "validation", limit=args.cap, seed=0)
        self.scoring = {s: load_split(spec, spec.scoring_split, limit=args.samples, seed=s) for s in self.seeds}
        self.calib = {s: calibration_data(name, args.recover_samples, s) for s in self.seeds}
        used = {t for d in (*self.scoring.values(), *self.calib.values()) for t in d.texts}
        used |= {t for t, _, _ in model.prompts[decoder.resolve(model, name)].demos}
        train = load_split(spec, "train")
        self.sel = train.subset([i for i, t in enumerate(train.texts) if t not in used]).sample(args.select_n, 12345)
        self.data = {"val": self.val, "sel": self.sel}


class Run:
    def __init__(self, args, model, state: State, log):
        self.a, self.model, self.st, self.log = args, model, state, log
        self.scores_mem: dict = {}
        self.levels = [x for x in args.levels.split(",") if x]
        self.ours = [x for x in args.ours.split(",") if x]

    def cfg(self, method: str, seed: int):
        from tp_core.policy import APP_ATTRIBUTION

        return replace(APP_ATTRIBUTION, method=method, samples=self.a.samples, units="both", seed=seed,
                       max_length=self.a.max_length)

    def scores(self, t: Task, method: str, seed: int, n: int | None = None):
        """Unit scores (tp_core's disk cache); the first computation's wall time and load average are recorded.
        `n`: only time the method on the first n scoring examples (for a criterion too dear to run in full)."""
        from tp_core.attribution import attribute

        key = f"{t.name}|{method}|{seed}"
        if (t.name, method, seed) not in self.scores_mem and not (n and key in self.st.doc["timings"]):
            data = t.scoring[seed] if n is None else t.scoring[seed].subset(range(min(n, len(t.scoring[seed]))))
            load = list(os.getloadavg())
            t0 = time.perf_counter()
            # --retime: a timing not in the state yet is measured, never read from tp_core's scores cache (whose
            # seconds are the first computation's, perhaps by older code or on a busier machine)
            fresh = self.a.retime and key not in self.st.doc["timings"]
            sc = attribute(self.model, t.name, self.cfg(method, seed), data=data, use_cache=not fresh)
            wall = time.perf_counter() - t0
            if key not in self.st.doc["timings"]:
                self.st.put("timings", key, {"seconds": round(sc.seconds, 2), "wall": round(wall, 2),
                                             "loadavg_start": load, "n": len(data),
                                             "steps": self.cfg(method, seed).steps,
                                             "riemann": self.cfg(method, seed).riemann})
                self.log(f"scores {t.name} {method} seed {seed}: {sc.seconds:.1f}s (load {load[0]:.1f})")
            if n is not None:
                return sc
            self.scores_mem[(t.name, method, seed)] = sc
        return self.scores_mem.get((t.name, method, seed))

    def preds(self, t: Task, which: str, method: str, level: str, f: float, h: float, seed: int, rec_memo: dict):
        """Predictions of one setting on one data set (from the state when there); recoveries fitted once per
        cell (`rec_memo`)."""
        from tp_core.evaluation import masked_logits, predictions
        from tp_core.masks import PruneConfig, build_masks
        from tp_core.recovery import RecoveryConfig, recover

        key = cell_key(t.name, which, method, level, f, h, seed)
        if key in self.st.doc["preds"]:
            return np.asarray(self.st.doc["preds"][key])
        data, t0 = t.data[which], time.perf_counter()
        masks = rec = None
        if method != "dense":
            masks = build_masks(self.scores(t, method, seed), PruneConfig(f, h), self.model.unit_shape())
            if level != "none":
                mk = (method, level, f, h, seed)
                if mk not in rec_memo:
                    rcfg = RecoveryConfig(level=level, samples=self.a.recover_samples, seed=seed,
                                          max_length=self.a.max_length)
                    rec_memo[mk] = recover(self.model, t.name, masks, t.calib[seed], rcfg)
                    self.st.put("timings", f"recovery|{key}", round(rec_memo[mk].seconds, 2))
                rec = rec_memo[mk]
        logits = masked_logits(self.model, t.name, data, masks, rec, batch_size=32, max_length=self.a.max_length)
        p = predictions(logits, data.spec.problem)
        self.st.put("preds", key, [int(x) for x in p])
        self.st.put("timings", f"eval|{key}", round(time.perf_counter() - t0, 2))
        self.log(f"{key}: metric {compute(t, which, [p]):.3f} ({time.perf_counter() - t0:.0f}s)")
        return p

    def cell(self, t: Task, f: float, h: float) -> None:
        """Every candidate of ours on the selection set, the choice, then the chosen one and (MLP-only points) the
        rivals at its level on validation."""
        memo: dict = {}
        cands = [(m, lv) for m in self.ours for lv in self.levels]
        sel = {c: 0.0 for c in cands}
        for m, lv in cands if len(cands) > 1 else []:  # a single candidate needs no choice
            sel[(m, lv)] = compute(t, "sel", [self.preds(t, "sel", m, lv, f, h, s, memo) for s in t.seeds])
        m, lv = choose(sel)
        for s in t.seeds:
            self.preds(t, "val", m, lv, f, h, s, memo)
            if h == 0:
                for r in RIVALS:
                    self.preds(t, "val", r, lv, f, h, s, memo)


def compute(t: Task, which: str, preds: list) -> float:
    from tp_core.evaluation import compute_metric

    d = t.data[which]
    return float(np.mean([compute_metric(d.spec.metric, p, d.labels) for p in preds]))


def run(args, state: State, log) -> None:
    import torch

    from tp_core.model import load_model

    torch.set_num_threads(args.threads)
    t_start = time.time()
    model = load_model(args.model)
    tasks = [Task(model, n, args) for n in args.tasks.split(",") if n]
    meta = state.doc["meta"]
    meta.setdefault("runs", []).append({"command": "benchmarks/llm_quality.py " + " ".join(sys.argv[1:]),
                                        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                        "machine": machine()})
    state.put("meta", "settings", settings(args))
    state.put("meta", "labels", {t.name: {w: [int(y) for y in t.data[w].labels] for w in t.data} for t in tasks})
    state.put("meta", "metric", {t.name: t.val.spec.metric for t in tasks})
    r = Run(args, model, state, log)
    for t in tasks:  # task by task, so a stopped run leaves whole tasks; scores computed where first needed
        r.preds(t, "val", "dense", "none", 0.0, 0.0, 0, {})
        if len(r.ours) * len(r.levels) > 1:
            r.preds(t, "sel", "dense", "none", 0.0, 0.0, 0, {})
        for f, h in POINTS:
            r.cell(t, f, h)
            log(f"cell {t.name} mlp {f:.0%} heads {h:.0%} done")
        if t.name == "sst2" and "ig" not in r.ours:  # llm_scores_seconds: ig timed on a few examples
            r.scores(t, "ig", 0, n=args.ig_time_n)
    meta["runs"][-1]["seconds"] = round(time.time() - t_start, 1)
    meta["runs"][-1]["loadavg_end"] = list(os.getloadavg())
    state.put("meta", "runs", meta["runs"])


def settings(args) -> dict:
    from tp_core import prompts

    return {"prompt": {"template": prompts.DEFAULT_TEMPLATE, "shots": prompts.DEFAULT_SHOTS},
            "model": args.model, "mode": "quick" if args.quick else "full", "tasks": args.tasks.split(","),
            "cap": args.cap, "seeds": [int(s) for s in args.seeds.split(",")], "samples": args.samples,
            "select_n": args.select_n, "levels": args.levels.split(","), "recover_samples": args.recover_samples,
            "max_length": args.max_length, "threads": args.threads, "points": [list(p) for p in POINTS],
            "ours": args.ours.split(","), "rivals": list(RIVALS), "ig_time_n": args.ig_time_n}


# ----- analysis: the state's predictions -> results.json keys -----------------------------------------------------
class Cells:
    """Seed lists of validation / selection predictions of one task, from the state document."""

    def __init__(self, doc: dict, task: str, index: int):
        st = doc["meta"]["settings"]
        self.doc, self.task, self.seeds, self.levels = doc, task, st["seeds"], st["levels"]
        self.ours = st.get("ours", list(OURS))
        labels = doc["meta"]["labels"][task]
        self.metric = doc["meta"]["metric"][task]
        self.stats = TaskStats(np.asarray(labels["val"]), self.metric, seed=1000 + index)
        self.sel_stats = TaskStats(np.asarray(labels["sel"]), self.metric, seed=2000 + index, n_resamples=1)
        self.dense = self.get("val", "dense", "none", 0.0, 0.0, seeds=[0])
        self.dense_boot = self.stats.boot(self.dense) if self.dense else None

    def get(self, which: str, method: str, level: str, f: float, h: float, seeds=None) -> list | None:
        """The predictions of every seed, or None while one is missing."""
        p = self.doc["preds"]
        keys = [cell_key(self.task, which, method, level, f, h, s) for s in (seeds or self.seeds)]
        return [np.asarray(p[k]) for k in keys] if all(k in p for k in keys) else None

    def chosen(self, f: float, h: float) -> tuple[str, str] | None:
        if len(self.ours) * len(self.levels) == 1:
            return self.ours[0], self.levels[0]
        sel = {}
        for m in self.ours:
            for lv in self.levels:
                got = self.get("sel", m, lv, f, h)
                if got is None:
                    return None
                sel[(m, lv)] = self.sel_stats.point(got)
        return choose(sel)

    def keep(self, preds: list) -> dict:
        boot = self.stats.boot(preds) / self.dense_boot
        return {"value": round(self.stats.point(preds) / self.stats.point(self.dense), 6), "ci95": ci(boot),
                "metric": round(self.stats.point(preds), 6)}


def cell_summary(c: Cells, f: float, h: float) -> dict | None:
    """Ours (chosen on selection) at one point, and the rivals at its level with the paired tests; None until ours'
    validation predictions are there."""
    pick = c.chosen(f, h)
    ours = c.get("val", *pick, f, h) if pick else None
    if ours is None or c.dense is None:
        return None
    out = {"task": c.task, "mlp_sparsity": f, "head_sparsity": h, "ours": {"method": pick[0], "level": pick[1],
                                                                          **c.keep(ours)}}
    out["selection"] = {f"{m}+{lv}": round(c.sel_stats.point(got), 6) for m in c.ours for lv in c.levels
                        if (got := c.get("sel", m, lv, f, h)) is not None}
    for r in RIVALS:
        theirs = c.get("val", r, pick[1], f, h)
        if theirs is not None:
            out[r] = {**c.keep(theirs), "ours_minus": paired_test(c.stats, ours, theirs)}
    return out


def analyse(doc: dict) -> dict:
    """The issue's keys (and the section's table) from whatever the state holds; `partial` lists what is missing."""
    st = doc["meta"]["settings"]
    cells, missing, dense = [], [], {}
    for i, task in enumerate(st["tasks"]):
        if task not in doc["meta"]["labels"]:
            missing += [f"{task} (not started)"]
            continue
        c = Cells(doc, task, i)
        if c.dense is not None:
            dense[task] = {"metric_name": c.metric, "metric": round(c.stats.point(c.dense), 6),
                           "ci95": ci(c.dense_boot), "n": len(c.dense[0]), "n_selection": len(c.sel_stats.y)}
        for f, h in POINTS:
            s = cell_summary(c, f, h)
            if s is None or (h == 0 and not all(r in s for r in RIVALS)):
                missing.append(f"{task} mlp {f:.0%} heads {h:.0%}")
            if s is not None:
                cells.append(s)
    out = {"llm_quality": {"settings": st, "runs": doc["meta"].get("runs", []), "dense": dense, "cells": cells,
                           "timings": timing_summary(doc), "partial": missing}}
    for name, (f, h) in (("llm_keep_mlp50", (0.5, 0.0)), ("llm_keep_mlp30_heads30", COMBINED)):
        per = {c["task"]: {**c["ours"], "goal": KEEP_GOAL} for c in cells if (c["mlp_sparsity"], c["head_sparsity"])
               == (f, h)}
        if per:
            out[name] = per
    wl = [c for c in cells if c["head_sparsity"] == 0 and c["mlp_sparsity"] in MLP_GRID and "wanda_sp" in c]
    if wl:
        out["llm_best_vs_wanda_sp_win_rate"] = {
            **win_rate([c["wanda_sp"]["ours_minus"]["verdict"] for c in wl]), "goal": WIN_GOAL,
            "vs_flap": win_rate([c["flap"]["ours_minus"]["verdict"] for c in wl if "flap" in c]),
            "cells": [{"task": c["task"], "mlp_sparsity": c["mlp_sparsity"], "verdict":
                       c["wanda_sp"]["ours_minus"]["verdict"], "diff": c["wanda_sp"]["ours_minus"]["diff"],
                       "ci95": c["wanda_sp"]["ours_minus"]["ci95"]} for c in wl]}
    secs = {m: doc["timings"].get(f"sst2|{m}|0") for m in OURS}
    if all(secs.values()):
        out["llm_scores_seconds"] = {m: {k: v[k] for k in ("seconds", "n", "steps", "loadavg_start")}
                                     for m, v in secs.items()}
        out["llm_scores_seconds"].update({"task": "sst2", "goal_grad_x_act": 30.0, "ig_riemann": secs["ig"]["riemann"],
                                          "threads": st["threads"]})
    if "llm_best_vs_wanda_sp_win_rate" in out:
        out["llm_best_vs_wanda_sp_win_rate"]["partial"] = any(not m.endswith("heads 30%") for m in missing)
    return out


def timing_summary(doc: dict) -> dict:
    """Mean evaluation seconds per example and mean recovery fit, per task; every timed step's seconds summed."""
    out: dict = {}
    total = 0.0
    for key, sec in doc["timings"].items():
        parts = key.split("|")
        total += sec["wall"] if isinstance(sec, dict) else sec
        if parts[0] == "eval":
            n = len(doc["preds"].get("|".join(parts[1:]), [])) or 1
            out.setdefault(parts[1], {}).setdefault("eval_s_per_example", []).append(sec / n)
        elif parts[0] == "recovery":
            out.setdefault(parts[1], {}).setdefault("recovery_fit_s", []).append(sec)
    return {"timed_seconds": round(total, 1),
            **{t: {k: round(float(np.mean(v)), 3) for k, v in d.items()} for t, d in out.items()}}


def merge(doc: dict, path: Path) -> dict:
    import report

    res = analyse(doc)
    merge_results(path, res, replaces=("llm_quality", *KEYS))
    report.write(json.loads(path.read_text()), path.parent)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sst2 and ag_news, 200 examples, one seed, no recovery")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--cap", type=int, default=None, help="validation examples per task (seeded sample)")
    ap.add_argument("--seeds", default=None, help="scoring (and calibration) seeds, comma-separated")
    ap.add_argument("--select-n", type=int, default=None, help="selection-set examples (held-out train)")
    ap.add_argument("--levels", default=None, help="recovery levels ours chooses among (none, lstsq, scale)")
    ap.add_argument("--ours", default=None, help="the criteria our pipeline chooses among (grad_x_act,ig)")
    ap.add_argument("--ig-time-n", type=int, default=None,
                    help="where ig is not among --ours: time it on this many sst2 scoring examples")
    ap.add_argument("--samples", type=int, default=64, help="scoring examples")
    ap.add_argument("--recover-samples", type=int, default=256, help="calibration texts of a recovery")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per example text (templates not clipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--retime", action="store_true",
                    help="compute every scores timing not in the state yet (no scores cache read for it)")
    ap.add_argument("--state", default=None, help="the resumable state JSON")
    ap.add_argument("--merge", default=str(DOCS / "results.json"), help="results.json to write the keys into")
    ap.add_argument("--no-merge", dest="merge", action="store_const", const=None)
    ap.add_argument("--merge-only", action="store_true", help="only analyse the state and merge (no computing)")
    args = ap.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    from tp_core.paths import tp_home

    mode = "quick" if args.quick else "full"
    default = tp_home() / "bench" / f"llm_quality-{mode}-{Path(args.model).name}.json"
    state = State(Path(args.state) if args.state else default)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    log(f"state {state.path}")
    if not args.merge_only:
        run(args, state, log)
    if args.merge:
        res = merge(state.doc, Path(args.merge))
        log(f"merged into {args.merge}; missing: {res['llm_quality']['partial'] or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
