"""The default prompt of a causal LM chosen by measurement, and the dense metric of that default (issue 28).

Section `prompts`: for each task, a seeded held-out slice of the TRAIN split (never validation), disjoint from every
demonstration the configurations below render (the demonstrations are drawn first, seeded as the default prompt
draws them, and the slice is drawn from the other train examples). Configurations: template "task" (the
hand-written one of tp_core/prompts.py TEMPLATES) or "generic" ("Text: {text}\\nLabel:", the same label words),
times k demonstrations per label. Each gets the task's metric with a 95% bootstrap interval
(tp_core.evaluation.metric_interval), the mean prompt tokens (demonstrations included: what the product computes
per example) and seconds per example (wall time on a shared machine, so indicative).

Scoring: the product's batches (`MultiTaskModel.batches`, right-padded prompts, label words' logits at the last
real token), with one saving: every prompt of a configuration starts with the same tokens (the demonstrations and
the template's opening), so their keys and values are computed once and each batch runs only the rest of its
prompts on top of them (`cached_logits`). Under the causal mask that is the same computation; the first batch of
every configuration is checked against the full forward (`max_abs_diff`). Seconds per example are of this cached
scoring, so they grow with the examples' own tokens, not with the demonstrations.

Rule for the default, one global configuration (template kind, k) for every task: on a task, a configuration
qualifies when its metric is at least the lower end of the 95% interval of that task's best configuration (the
highest metric). The default is the configuration that qualifies on every measured task with the fewest prompt
tokens (summed over the tasks' means); where none qualifies on all, the one qualifying on the most tasks, then the
fewest tokens. tp_core/prompts.py's DEFAULT_TEMPLATE and DEFAULT_SHOTS are set to it by hand.

Section `dense`: the chosen configuration's metric on the validation split (capped at --dense-cap, seeded subset)
with its interval, beside the majority-class baseline on the same examples (tp_core.evaluation.majority_baseline).
`--choice-from RUN_JSON --tasks T` adds (or redoes) task T's figures on an earlier run's choice.

    .venv/bin/python benchmarks/llm_prompts.py                 # smollm2, both sections, into docs/results.json
    .venv/bin/python benchmarks/llm_prompts.py --merge-from benchmarks/out/llm_prompts.json   # merge a finished run

Results go to benchmarks/out/llm_prompts.json after every configuration, then into docs/results.json (keys
llm_prompts and llm_dense) and docs/RESULTS.md (report.py's section on them).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from common import DOCS, machine, merge_results  # noqa: E402

from tp_core import decoder, prompts  # noqa: E402
from tp_core.data import TaskData, get_task, load_split  # noqa: E402
from tp_core.evaluation import (MAX_PADDING, compute_metric, majority_baseline, metric_interval,  # noqa: E402
                                predictions)

TEMPLATE_KINDS = ("task", "generic")


def prompt_for(model, task: str, kind: str, shots: int):
    """(info, PromptTask) of configuration (`kind`, `shots`) for `task`, demonstrations seeded as the default's."""
    template = prompts.generic_template(task) if kind == "generic" else prompts.TEMPLATES[task][0]
    return prompts.default_prompt(model, task, shots=shots, seed=0, template=template)


def heldout(model, task: str, n: int, max_shots: int, seed: int) -> TaskData:
    """`n` train examples (seeded) outside every demonstration of 1..`max_shots` per label."""
    train = load_split(get_task(task), "train")
    demos = {i for k in range(1, max_shots + 1) for i in prompts.demo_rows(model, task, k, 0)}
    pool = np.array([i for i in range(len(train)) if i not in demos])
    pick = np.sort(np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False))
    return train.subset([int(i) for i in pick])


def shared_prefix(ids: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own."""
    first, n = ids[0], min(len(x) for x in ids) - 1
    for x in ids[1:]:
        n = next((i for i in range(n) if x[i] != first[i]), n)
    return max(n, 0)


@torch.no_grad()
def cached_logits(model, task: str, data: TaskData, args) -> tuple[np.ndarray, float]:
    """Task logits of every example (data order) through the product's right-padded batches, with the keys and
    values of the prompts' shared first tokens computed once (module docstring). Returns (logits, the largest
    difference from the full forward on the first batch's first rows)."""
    enc = decoder.encode(model, task, data.texts, data.pairs, args.max_length)
    P = shared_prefix(enc["input_ids"])
    prefix = torch.tensor(enc["input_ids"][0][:P], dtype=torch.long)[None]
    cache = model.base(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True).past_key_values
    out: list = [None] * len(data)
    diff = 0.0
    for b, (idx, batch) in enumerate(model.batches(data.texts, data.pairs, args.batch_size, args.max_length,
                                                   max_padding=MAX_PADDING, task=task)):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(idx))
        full_mask = torch.cat([torch.ones(len(idx), P, dtype=mask.dtype), mask[:, P:]], 1)
        pos = torch.arange(P, ids.shape[1])[None].expand(len(idx), -1)
        seq = model.base(input_ids=ids[:, P:], attention_mask=full_mask, position_ids=pos, past_key_values=past,
                         use_cache=True).last_hidden_state
        logits = model.head_logits(task, seq, mask[:, P:])
        if b == 0:
            rows = slice(0, min(4, len(idx)))
            full = model(input_ids=ids[rows], attention_mask=mask[rows], task=task)
            diff = float((full - logits[rows]).abs().max())
        for row, i in enumerate(idx):
            out[i] = logits[row].float().numpy()
    return np.stack(out), diff


def measure(model, task: str, data: TaskData, prompt, info, args) -> dict:
    """Metric, interval, mean prompt tokens and seconds per example of one prompt on `data`."""
    decoder.attach_prompt(model, info, prompt)
    enc = decoder.encode(model, task, data.texts, data.pairs, args.max_length)
    tokens = float(np.mean([len(x) for x in enc["input_ids"]]))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    logits, diff = cached_logits(model, task, data, args)
    seconds = time.perf_counter() - t0
    if diff > 1e-3:
        raise RuntimeError(f"cached scoring differs from the full forward by {diff:.2e} on {task}")
    preds = predictions(logits, data.spec.problem)
    metric = data.spec.metric
    lo, hi = metric_interval(metric, preds, data.labels, seed=0)
    return {"metric_name": metric, "metric": compute_metric(metric, preds, data.labels), "ci95": [lo, hi],
            "n": len(data), "tokens": round(tokens, 1), "shared_tokens": shared_prefix(enc["input_ids"]),
            "s_per_example": round(seconds / len(data), 4), "seconds": round(seconds, 1),
            "max_abs_diff": diff, "loadavg_1m": round(load0, 2)}


def choose(rows: list[dict], tasks: list[str]) -> dict:
    """The default configuration by the module docstring's rule, from rows of (task, template, shots, metric,
    ci95, tokens). Returns the choice, the per-task best and which configurations qualified where."""
    best = {t: max((r for r in rows if r["task"] == t), key=lambda r: (r["metric"], -r["tokens"])) for t in tasks}
    configs = sorted({(r["template"], r["shots"]) for r in rows})
    summary = []
    for kind, k in configs:
        mine = {r["task"]: r for r in rows if (r["template"], r["shots"]) == (kind, k)}
        ok = [t for t in tasks if t in mine and mine[t]["metric"] >= best[t]["ci95"][0]]
        summary.append({"template": kind, "shots": k, "qualifies_on": ok,
                        "tokens": round(sum(mine[t]["tokens"] for t in tasks if t in mine), 1)})
    pick = min(summary, key=lambda c: (-len(c["qualifies_on"]), c["tokens"]))
    return {"template": pick["template"], "shots": pick["shots"], "configs": summary,
            "best": {t: {"template": b["template"], "shots": b["shots"], "metric": b["metric"], "ci95": b["ci95"]}
                     for t, b in best.items()}}


def dense(model, task: str, choice: dict, args) -> dict:
    """The chosen configuration's metric on the validation split (seeded subset of --dense-cap), and the majority
    baseline on the same examples."""
    data = load_split(task, "validation", limit=args.dense_cap, seed=0)
    info, prompt = prompt_for(model, task, choice["template"], choice["shots"])
    out = measure(model, task, data, prompt, info, args)
    name, base = majority_baseline(data)
    out.update({"template": choice["template"], "shots": choice["shots"], "majority": base, "majority_name": name,
                "above_majority": out["metric"] - base,
                "matches_prompts_defaults": (choice["template"], choice["shots"]) == (prompts.DEFAULT_TEMPLATE,
                                                                                      prompts.DEFAULT_SHOTS)})
    return out


def run(args, log) -> dict:
    """Both sections (or, with --choice-from, the dense section on an earlier run's choice)."""
    from tp_core.model import load_model

    torch.set_num_threads(args.threads)
    tasks = [t for t in args.tasks.split(",") if t]
    model = load_model(args.model)
    command = "benchmarks/llm_prompts.py " + " ".join(sys.argv[1:])
    t0 = time.time()
    if args.choice_from:
        res = json.loads(Path(args.choice_from).read_text())
        res["meta"]["dense_command"] = command
    else:
        res = {"meta": {"model": args.model, "command": command,
                        "settings": {k: v for k, v in vars(args).items() if k not in ("merge", "merge_from")},
                        "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
               "rows": []}
        choose_section(model, tasks, res, args, log)
        res["meta"]["prompts_seconds"] = round(time.time() - t0, 1)
    if args.dense:
        t1 = time.time()
        res.setdefault("dense", {})  # an earlier run's tasks stay (--choice-from on other --tasks)
        for task in tasks:
            res["dense"][task] = {**dense(model, task, res["choice"], args), "cap": args.dense_cap}
            d = res["dense"][task]
            log(f"dense {task}: {d['metric']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}] (n={d['n']}), "
                f"majority {d['majority']:.3f}, {d['seconds']:.0f}s")
            save(res, args)
        res["meta"]["dense_seconds"] = round(res["meta"].get("dense_seconds", 0) + time.time() - t1, 1)
    res["meta"]["seconds"] = round(res["meta"].get("prompts_seconds", 0) + res["meta"].get("dense_seconds", 0), 1)
    res["meta"]["loadavg_end"] = list(os.getloadavg())
    save(res, args)
    return res


def choose_section(model, tasks: list[str], res: dict, args, log) -> None:
    """Every configuration on every task's held-out slice (rows), then the choice."""
    shots = [int(k) for k in args.shots.split(",") if k]
    for task in tasks:
        data = heldout(model, task, args.heldout, max(shots), args.seed)
        for kind in TEMPLATE_KINDS:
            for k in shots:
                info, prompt = prompt_for(model, task, kind, k)
                row = {"task": task, "template": kind, "template_text": prompt.template, "shots": k,
                       **measure(model, task, data, prompt, info, args)}
                res["rows"].append(row)
                log(f"{task} {kind} k={k}: {row['metric']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] "
                    f"{row['tokens']:.0f} tokens {row['s_per_example']:.3f} s/example")
                save(res, args)
    res["choice"] = choose(res["rows"], tasks)
    log(f"chosen: template {res['choice']['template']}, k={res['choice']['shots']}")
    save(res, args)


def save(res: dict, args) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))


def merge(res: dict, path: Path) -> None:
    """Into results.json: the whole run as llm_prompts, the dense figures per task as llm_dense; then RESULTS.md
    re-rendered from it (as run_all.py --report-only does)."""
    import report

    updates = {"llm_prompts": res}
    if res.get("dense"):
        updates["llm_dense"] = {t: {k: d[k] for k in ("metric_name", "metric", "ci95", "n", "majority",
                                                      "above_majority", "template", "shots", "cap") if k in d}
                                for t, d in res["dense"].items()}
    merge_results(path, updates)
    report.write(json.loads(path.read_text()), path.parent)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", default="sst2,trec,ag_news")
    ap.add_argument("--shots", default="0,1,2", help="demonstrations per label to compare")
    ap.add_argument("--heldout", type=int, default=150, help="held-out train examples per task")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    ap.add_argument("--dense-cap", type=int, default=2000, help="validation examples per task (seeded subset)")
    ap.add_argument("--no-dense", dest="dense", action="store_false", help="skip the validation section")
    ap.add_argument("--choice-from", default=None, metavar="RUN_JSON",
                    help="only the validation section, on the choice of an earlier run (its output JSON)")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per example text (templates not clipped)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "out" / "llm_prompts.json"))
    ap.add_argument("--merge", default=str(DOCS / "results.json"), metavar="RESULTS_JSON")
    ap.add_argument("--no-merge", dest="merge", action="store_const", const=None)
    ap.add_argument("--merge-from", default=None, metavar="RUN_JSON", help="merge a finished run into --merge, stop")
    args = ap.parse_args(argv)
    if args.merge_from:
        merge(json.loads(Path(args.merge_from).read_text()), Path(args.merge))
        return 0
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    res = run(args, log)
    if args.merge:
        merge(res, Path(args.merge))
    log(f"done in {res['meta']['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
