"""A vocabulary that survives new domains (issue 29): the shipped sst2 export plan with the full vocabulary, the
task's tokens only, and the task's tokens plus the general set (the bundle's most frequent tokens,
`tp_core.vocab.general_ranking`) at several sizes, on unseen domains: sentiment_sentences' Yelp, Amazon and IMDb
sentences (1,000 each; no train split, so none of its text reaches the general set).

The plan is bench_export's chosen plan as docs/results.json records it (`export_bench.chosen`: FFN and head
sparsity; its attribution settings and recovery), else FFN 85% + heads 70% with lstsq. For each vocabulary: the
parameter ratio of the exported model (`export_params_ratio`, word embeddings included, as bench_export counts it),
the [UNK] share per domain, and kept-vs-dense accuracy per domain and pooled, with 95% paired percentile bootstrap
intervals over the examples (scipy.stats.bootstrap); the difference to the full vocabulary in points, paired.

Keys: `vocab_general_keep` (pooled kept-vs-dense at the default size `tp_core.vocab.GENERAL_TOKENS`, goal: within
1 point of the full vocabulary), `vocab_general_params_ratio` (its export_params_ratio, goal <= 0.35), details under
`vocab_guard`. The chosen size is the smallest measured one within 1 point of the full vocabulary (pooled, over the
whole 95% interval of the difference), with no more [UNK] than the full vocabulary on any unseen domain, whose
parameter ratio stays <= 0.35; the script says whether that is the default. Beside keep and [UNK]: the share of
sentences split into other pieces than with the full vocabulary (what a smaller vocabulary changes at the input).

    TP_HOME=~/.cache/taskprune nice .venv/bin/python benchmarks/vocab_guard.py --merge docs/results.json
    .venv/bin/python benchmarks/vocab_guard.py --limit 300      # fewer sentences per domain (a quick look)
    ... --tokenizer-order 4000,8000    # also rank the general set by the WordPiece vocabulary's own order
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from common import merge_results  # noqa: E402

B_RESAMPLES = 2000
PARAMS_GOAL = 0.35
POINTS_GOAL = 1.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def keep_ci(ok: np.ndarray, dense_ok: np.ndarray) -> dict:
    """Kept-vs-dense accuracy (mean(ok) / mean(dense_ok)) with a 95% paired percentile bootstrap interval."""
    from scipy.stats import bootstrap

    def ratio(a, b, axis=-1):
        return a.mean(axis=axis) / np.maximum(b.mean(axis=axis), 1e-12)

    res = bootstrap((ok.astype(float), dense_ok.astype(float)), ratio, paired=True, vectorized=True,
                    n_resamples=B_RESAMPLES, method="percentile", random_state=np.random.default_rng(7))
    return {"keep": round(float(ratio(ok, dense_ok)), 4),
            "ci95": [round(float(res.confidence_interval.low), 4), round(float(res.confidence_interval.high), 4)]}


def points_ci(ok: np.ndarray, ref_ok: np.ndarray, dense: float) -> dict:
    """(ok - ref_ok) in points of kept-vs-dense, with a 95% paired percentile bootstrap interval."""
    from scipy.stats import bootstrap

    d = 100.0 * (ok.astype(float) - ref_ok.astype(float)) / dense
    res = bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=B_RESAMPLES, method="percentile",
                    random_state=np.random.default_rng(7), vectorized=True, axis=-1)
    return {"points": round(float(d.mean()), 3),
            "ci95": [round(float(res.confidence_interval.low), 3), round(float(res.confidence_interval.high), 3)]}


def shipped_plan(results: Path) -> dict:
    """bench_export's chosen plan and settings from results.json, else the issue's (FFN 85% + heads 70%, lstsq)."""
    try:
        e = json.loads(results.read_text())["export_bench"]
        return {"ffn_sparsity": e["chosen"]["ffn_sparsity"], "head_sparsity": e["chosen"]["head_sparsity"],
                "allocation": e.get("allocation", "global"), "method": e.get("method", "ig"),
                "samples": e.get("samples"), "steps": e.get("steps"), "recovery": e.get("recovery", {}),
                "source": "docs/results.json export_bench.chosen"}
    except (OSError, ValueError, KeyError):
        return {"ffn_sparsity": 0.85, "head_sparsity": 0.7, "allocation": "global", "method": "ig", "samples": None,
                "steps": None, "recovery": {"level": "lstsq"}, "source": "the issue's plan (no export_bench found)"}


def domains(limit: int | None):
    """{domain: TaskData} of sentiment_sentences, at most `limit` sentences each (a seeded subset)."""
    import random

    from tp_core.data import load_split

    data = load_split("sentiment_sentences", "validation")
    out = {}
    for name, (a, b) in data.spec.domains.items():
        rows = list(range(a, b))
        if limit and limit < len(rows):
            rows = sorted(random.Random(0).sample(rows, limit))
        out[name] = data.subset(rows)
    return out


def build(args):
    """(dense model, the pruned structure with recovery folded in, the plan) for sst2."""
    from tp_core.attribution import AttributionConfig, attribute
    from tp_core.export.folder import prune_for_task
    from tp_core.masks import PruneConfig
    from tp_core.model import load_model
    from tp_core.policy import APP_ATTRIBUTION
    from tp_core.recovery import as_config

    plan = shipped_plan(Path(args.results_from))
    model = load_model(args.model, device="cpu")
    acfg = AttributionConfig(**{**APP_ATTRIBUTION.__dict__, "method": plan["method"],
                                "samples": plan["samples"] or APP_ATTRIBUTION.samples,
                                "steps": plan["steps"] or APP_ATTRIBUTION.steps})
    log(f"scores: {acfg.method} on sst2 (samples {acfg.samples}, steps {acfg.steps}; cached if computed before)")
    scores = attribute(model, "sst2", acfg)
    rec = plan["recovery"] or {}
    rcfg = as_config(rec.get("level", "lstsq"), rec.get("samples"))
    cfg = PruneConfig(plan["ffn_sparsity"], plan["head_sparsity"], plan["allocation"])
    saved = Path(args.keep_pruned) if args.keep_pruned else None
    if saved is not None and saved.is_dir():
        log(f"the pruned structure from {saved}")
        small = load_model(saved, device="cpu")
    else:
        log(f"pruning FFN {cfg.ffn_sparsity} heads {cfg.head_sparsity}, recovery {rcfg.level}")
        _, small, _ = prune_for_task(model, "sst2", scores, cfg, rcfg if rcfg.level != "none" else None)
        if saved is not None:
            small.save(saved)
    plan.update({"attribution": {"samples": acfg.samples, "steps": acfg.steps}, "recovery_level": rcfg.level})
    return model, small, plan


def vocab_rows(model, small, doms: dict, sizes: list[int], extra: dict) -> list[dict]:
    """One row per vocabulary: params ratio, tokens kept, and per domain the predictions' correctness and [UNK]."""
    from tp_core.data import load_split
    from tp_core.evaluation import predict_logits, predictions
    from tp_core.export import params_by_part
    from tp_core.vocab import prune_vocab, task_vocab, texts_unk_share, token_stats

    dense_total = params_by_part(model, "sst2")["total"]
    train = load_split("sst2", "train")
    choices = [("full vocabulary", None, None)] + [(f"task + {n:,} general" if n else "task only", n, None)
                                                    for n in sizes]
    choices += [(name, n, excl) for name, (n, excl) in extra.items()]
    rows = []
    for name, n, exclude in choices:
        t = time.time()
        vm, plan = small, None
        if n is not None:
            plan = task_vocab(model.tokenizer, train.texts, train.pairs, general_tokens=n)
            if exclude:  # another general set: counted without some tasks, or the tokenizer's own order
                plan = _plan_from(model.tokenizer, train, n, _ranking(model.tokenizer, exclude))
            vm = copy.deepcopy(small)
            prune_vocab(vm, plan)
        row = {"vocab": name, "general_tokens": n, "general_excludes": exclude,
               "kept_tokens": plan.size if plan else len(model.tokenizer),
               "general_added": plan.n_general if plan else None,
               "export_params_ratio": params_by_part(vm, "sst2")["total"] / dense_total, "domains": {}}
        for d, data in doms.items():
            ok = predictions(predict_logits(vm, "sst2", data), "classification") == np.asarray(data.labels)
            unk = texts_unk_share(model.tokenizer, data.texts, plan.kept_ids if plan else None)
            changed = token_stats(vm.tokenizer, data.texts, None, model.tokenizer).examples_changed
            row["domains"][d] = {"ok": ok, "unk_share": unk["unk_share"], "changed_share": changed / len(data)}
        rows.append(row)
        log(f"{name}: {row['kept_tokens']:,} tokens, params ratio {row['export_params_ratio']:.4f}, accuracy "
            + ", ".join(f"{d} {x['ok'].mean():.4f} ([UNK] {x['unk_share']:.2%}, split differently "
                        f"{x['changed_share']:.1%})" for d, x in row["domains"].items())
            + f" ({time.time() - t:.0f}s)")
    return rows


def _ranking(tokenizer, exclude: tuple[str, ...]) -> list[int]:
    """Another general-set ranking: ("tokenizer order",) lists the WordPiece vocabulary's tokens in id order (BERT's
    vocabularies list words by corpus frequency), [unused] slots and specials left out; a tuple of task names counts
    the bundle's train splits without those tasks, as `tp_core.vocab.general_ranking` does."""
    from collections import Counter

    from tp_core.data import list_tasks, load_split
    from tp_core.vocab import GENERAL_SAMPLE, _plain_backend, special_ids

    specials = special_ids(tokenizer)
    if exclude == ("tokenizer order",):
        vocab = tokenizer.get_vocab()
        return [i for t, i in sorted(vocab.items(), key=lambda kv: kv[1])
                if i not in specials and not t.startswith("[unused")]
    counts: Counter[int] = Counter()
    backend = _plain_backend(tokenizer)
    for spec in list_tasks():
        if "train" in spec.splits and spec.name not in exclude:
            data = load_split(spec, "train", limit=GENERAL_SAMPLE)
            texts = list(data.texts) + ([p for p in data.pairs if p] if data.pairs is not None else [])
            for enc in backend.encode_batch(texts, add_special_tokens=False):
                counts.update(enc.ids)
    return sorted((i for i in counts if i not in specials), key=lambda i: (-counts[i], i))


def _plan_from(tokenizer, train, n: int, ranked: list[int]):
    """The task plan with the first `n` of `ranked` as its general set."""
    from tp_core.vocab import task_vocab

    base = task_vocab(tokenizer, train.texts, train.pairs, general_tokens=0)
    kept = set(base.kept_ids)
    general = set(ranked[:n]) - kept
    base.kept_ids, base.general_tokens, base.n_general = sorted(kept | general), n, len(general)
    return base


def summarize(rows: list[dict], dense_ok: dict) -> list[dict]:
    """Per row and domain (and pooled): accuracy, kept-vs-dense with its interval, points vs the full vocabulary."""
    full = rows[0]
    pooled_dense = np.concatenate([dense_ok[d] for d in dense_ok])
    out = []
    for r in rows:
        s = {k: v for k, v in r.items() if k != "domains"}
        s["domains"] = {}
        for d in list(dense_ok) + ["pooled"]:
            ok = np.concatenate([r["domains"][x]["ok"] for x in dense_ok]) if d == "pooled" else r["domains"][d]["ok"]
            ref = np.concatenate([full["domains"][x]["ok"] for x in dense_ok]) if d == "pooled" else \
                full["domains"][d]["ok"]
            dn = pooled_dense if d == "pooled" else dense_ok[d]
            unk, changed = ((float(np.mean([r["domains"][x][k] for x in dense_ok])) if d == "pooled"
                             else r["domains"][d][k]) for k in ("unk_share", "changed_share"))
            s["domains"][d] = {"n": int(len(ok)), "accuracy": round(float(ok.mean()), 4), **keep_ci(ok, dn),
                               "vs_full_vocab": points_ci(ok, ref, float(dn.mean())), "unk_share": round(unk, 5),
                               "changed_share": round(changed, 4)}
        out.append(s)
    return out


def choose(summary: list[dict]) -> dict | None:
    """The smallest measured general set (plain bundle counts) within POINTS_GOAL of the full vocabulary (pooled)
    over the whole 95% interval of the difference, with no more [UNK] than the full vocabulary on any unseen domain
    (what the guard is for: the words of a new domain survive) and export_params_ratio <= PARAMS_GOAL."""
    full = summary[0]["domains"]
    ok = [r for r in summary if r["general_tokens"] is not None and not r["general_excludes"]
          and -r["domains"]["pooled"]["vs_full_vocab"]["ci95"][0] <= POINTS_GOAL
          and all(x["unk_share"] <= full[d]["unk_share"] for d, x in r["domains"].items())
          and r["export_params_ratio"] <= PARAMS_GOAL]
    return min(ok, key=lambda r: r["general_tokens"]) if ok else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--sizes", default="0,2000,4000,8000,12000", help="general-set sizes to measure")
    ap.add_argument("--limit", type=int, default=None, help="sentences per domain (default: all 1,000)")
    ap.add_argument("--tokenizer-order", default="", help="general-set sizes to measure with the tokenizer's own "
                    "id order as the ranking (comma-separated; none by default)")
    ap.add_argument("--keep-pruned", default=None, metavar="DIR", help="save the pruned structure there, or load "
                    "it when the folder exists (a second run skips the recovery fit)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results-from", default=str(ROOT / "docs" / "results.json"),
                    help="where bench_export's chosen plan is read")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "vocab_guard.json"))
    ap.add_argument("--merge", default=None, metavar="JSON", help="results.json to merge the keys into")
    args = ap.parse_args(argv)

    import torch

    from tp_core.evaluation import predict_logits, predictions
    from tp_core.vocab import GENERAL_TOKENS

    torch.set_num_threads(args.threads)
    t0 = time.time()
    sizes = sorted({int(x) for x in args.sizes.split(",")} | {GENERAL_TOKENS})
    model, small, plan = build(args)
    doms = domains(args.limit)
    dense_ok = {d: predictions(predict_logits(model, "sst2", x), "classification") == np.asarray(x.labels)
                for d, x in doms.items()}
    log("dense accuracy " + ", ".join(f"{d} {v.mean():.4f}" for d, v in dense_ok.items()))
    extra = {f"task + {GENERAL_TOKENS:,} general, counted without cr and mr": (GENERAL_TOKENS, ("cr", "mr"))}
    extra.update({f"task + the tokenizer's first {int(n):,}": (int(n), ("tokenizer order",))
                  for n in args.tokenizer_order.split(",") if n.strip()})
    summary = summarize(vocab_rows(model, small, doms, sizes, extra), dense_ok)
    default = next(r for r in summary if r["general_tokens"] == GENERAL_TOKENS and not r["general_excludes"])
    chosen = choose(summary)
    out = {"what": "issue 29 item 4: a vocabulary that survives new domains (benchmarks/vocab_guard.py)",
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": args.model, "task": "sst2", "plan": plan,
           "unseen": "sentiment_sentences (Yelp, Amazon, IMDb)", "per_domain_limit": args.limit,
           "dense_accuracy": {d: round(float(v.mean()), 4) for d, v in dense_ok.items()},
           "default_general_tokens": GENERAL_TOKENS,
           "chosen_general_tokens": chosen["general_tokens"] if chosen else None,
           "default_is_chosen": bool(chosen and chosen["general_tokens"] == GENERAL_TOKENS),
           "rows": summary, "seconds": round(time.time() - t0, 1)}
    out["vocab_general_keep"] = {**default["domains"]["pooled"], "general_tokens": GENERAL_TOKENS,
                                 "full_vocab_keep": summary[0]["domains"]["pooled"]["keep"],
                                 "per_domain": {d: default["domains"][d]["keep"] for d in dense_ok}}
    out["vocab_general_params_ratio"] = default["export_params_ratio"]
    out["goals"] = {"vocab_general_keep": {"goal": f"within {POINTS_GOAL} point of the full vocabulary",
                                           "met": -default["domains"]["pooled"]["vs_full_vocab"]["points"]
                                           <= POINTS_GOAL},
                    "export_params_ratio": {"goal": f"<= {PARAMS_GOAL}",
                                            "met": default["export_params_ratio"] <= PARAMS_GOAL}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    log(f"wrote {args.out} in {out['seconds']:.0f}s; chosen size {out['chosen_general_tokens']}, default "
        f"{GENERAL_TOKENS}")
    if args.merge:
        merge_results(Path(args.merge), {"vocab_general_keep": out["vocab_general_keep"],
                                         "vocab_general_params_ratio": out["vocab_general_params_ratio"],
                                         "vocab_guard": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
