"""`python -m tp_core`: the pipeline from the command line.

Machine-readable output is a contract: `evaluate --json` prints one record, `sweep --json F` writes a list of
records, each {method, ffn_sparsity, head_sparsity, kept_params, total_params, metric_name, metric};
`attribute --out F.json` writes {model, task, method, settings, ffn, heads}.
Bad input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from . import cli_parser
from .errors import TPError


@contextmanager
def progress_bar(desc: str, enabled: bool = True):
    """A tqdm bar on stderr driven by `progress(fraction, message)` callbacks."""
    if not enabled:
        yield lambda f, m: None
        return
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=desc, file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
        bar.set_postfix_str(message[:80], refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise TPError(f"{name} must be comma-separated numbers, got {text!r}.") from None
    for v in values:
        if not 0.0 <= v < 1.0:
            raise TPError(f"{name} values must be in [0, 1), got {v}.")
    if not values:
        raise TPError(f"{name} is empty.")
    return values


def _model(args):
    from .model import load_model

    if args.trust_remote_code:
        print("warning: --trust-remote-code lets the model folder's own Python code run on this machine with your "
              "permissions; use it only for models whose author you trust.", file=sys.stderr)
    return load_model(args.model, device=args.device, trust_remote_code=args.trust_remote_code)


def _user_data(args, model, task):
    """`--data FILE` as the task's examples, labelled like the model's head for `task` (None without --data)."""
    if not getattr(args, "data", None):
        return None
    from .data import load_file

    info = model.task_info(task)
    return load_file(args.data, text_col=args.text_col, label_col=args.label_col, pair_col=args.pair_col,
                     label_names=info.label_names if info.problem == "classification" else None,
                     metric=info.metric, name=Path(args.data).stem, problem=info.problem)


def _eval_data(args, task, model=None):
    from .data import load_split

    from .limits import limits

    if getattr(args, "data", None):
        data = _user_data(args, model, task).sample(args.limit)
    else:
        data = load_split(task, "validation", limit=args.limit)
    cap = limits().max_eval_examples
    if len(data) > cap:
        raise TPError(f"{args.data or task} has {len(data):,} evaluation examples, above this installation's limit "
                      f"of {cap:,}: pass --limit N to evaluate a seeded sample (or raise TP_MAX_EVAL_EXAMPLES).")
    return data


def _attr_cfg(args, method=None):
    from .attribution import AttributionConfig

    return AttributionConfig(method=method or args.method, samples=args.samples, steps=args.steps,
                             riemann=args.quadrature, labels=args.labels, units=getattr(args, "units", "both"),
                             target=args.target, aggregation=args.aggregation, seed=args.seed).validate()


def _recovery_cfg(args):
    """The RecoveryConfig of --recover / --recover-samples; None when --recover was not given."""
    if getattr(args, "recover", None) is None:
        return None
    from .recovery import as_config, samples_for

    return as_config(args.recover, samples_for(getattr(args, "model", None), args.recover_samples))


def cmd_limits(args):
    from dataclasses import asdict

    from .limits import limits

    cap = limits()
    if args.json:
        print(json.dumps(asdict(cap), indent=1))
        return
    for what, value, env in cap.describe():
        print(f"{what:34s} {value:>12s}   ({env})")


def cmd_tasks(args):
    from .data import list_tasks

    tasks = list_tasks()
    if args.json:
        print(json.dumps([{"name": t.name, "kind": t.kind, "problem": t.problem, "labels": list(t.label_names),
                           "metric": t.metric, "splits": list(t.splits)} for t in tasks], indent=1))
        return
    for t in tasks:
        print(f"{t.name:22s} {t.kind:6s} {t.problem:14s} {t.metric:9s} {','.join(t.splits):28s} "
              f"{'/'.join(t.label_names)[:50]}")


def cmd_build_demo(args):
    from .demo import build_demo, demo_path

    path = demo_path(args.quick)
    existed = (path / "taskprune.json").is_file() and not args.force
    with progress_bar("building demo model", not existed) as cb:
        path = build_demo(quick=args.quick, force=args.force, progress=cb)
    info = json.loads((path / "demo_build.json").read_text())
    built = "cached" if existed else f"built in {info['train_seconds']:.0f}s of training"
    print(f"demo model {'(quick) ' if args.quick else ''}at {path} ({built})")
    report = info["dense_validation"]
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for task, r in report.items():
            print(f"  {task:10s} dense validation {r['metric_name']:9s} {r['metric']:.4f}  (n={r['n']})")


def cmd_info(args):
    from .llm_source import describe_causal_lm, is_causal_lm_spec
    from .pruning import param_breakdown

    if is_causal_lm_spec(args.model):  # a decoder (smollm2, a .gguf, a Llama-layout folder): its shape and cache
        print(describe_causal_lm(args.model, as_json=args.json))
        return
    model = _model(args)
    shape = model.unit_shape()
    info = {
        "model": args.model, "kind": model.kind, "family": model.config.model_type, "base_model": model.base_model,
        "layers": shape.num_layers, "heads_per_layer": list(shape.heads), "ffn_per_layer": list(shape.ffn),
        "hidden": shape.hidden, "params": param_breakdown(model),
        "tasks": {k: {"labels": list(v.label_names), "metric": v.metric} for k, v in model.tasks.items()},
        "pruned": model.pruning is not None,
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return
    print(f"{args.model}: {info['family']} ({model.kind}), {shape.num_layers} layers, hidden {shape.hidden}")
    print(f"  heads per layer {list(shape.heads)}; FFN neurons per layer {list(shape.ffn)}")
    for k, v in info["params"].items():
        print(f"  params {k:10s} {v:>12,}")
    for k, v in info["tasks"].items():
        print(f"  task {k}: {v['metric']}, labels {v['labels']}")


def cmd_evaluate(args):
    from .evaluation import SweepRecord, evaluate
    from .pruning import count_params, kept_params

    model = _model(args)
    task = args.task
    data = _eval_data(args, task, model)
    total = count_params(model, task)
    rcfg = _recovery_cfg(args)
    if args.mask:
        from .evaluation import evaluate_masked
        from .recovery import load_plan, recover

        masks, recovery, doc = load_plan(args.mask, model)  # the mask file's own recovery, if it has one
        if rcfg is not None:  # --recover overrides it: none = plain masks, a level = fit that level now
            recovery = None
            if rcfg.level != "none":
                with progress_bar(f"recovery ({rcfg.level}) on {task}", not args.quiet) as cb:
                    recovery = recover(model, task, masks, None, rcfg, progress=cb)
        res = evaluate_masked(model, task, data, masks, recovery=recovery)
        method = doc.get("method", "mask") + (f"+{recovery.level}" if recovery is not None and recovery.corrections
                                              else "")
        rec = SweepRecord(method, round(masks.ffn_sparsity(), 6), round(masks.head_sparsity(), 6),
                          kept_params(model, masks, task), total, res.metric_name, res.metric)
    else:
        if rcfg is not None and rcfg.level != "none":
            raise TPError("--recover applies to a pruned model: pass --mask FILE (or evaluate an export, which "
                          "already has its recovery folded in).")
        res = evaluate(model, task, data)
        original = (model.pruning or {}).get("ffn_sparsity", 0.0), (model.pruning or {}).get("head_sparsity", 0.0)
        rec = SweepRecord("dense" if not model.pruning else model.pruning.get("method", "pruned"), original[0],
                          original[1], total, total, res.metric_name, res.metric)
    if args.json:
        print(json.dumps(rec.to_dict()))
    else:
        print(f"{task}: {rec.metric_name} = {rec.metric:.4f} on {res.n_examples} validation examples "
              f"({rec.kept_params:,} parameters)")


def _ref(args, model):
    """The model as the job engine's workers see it (in-process workers reuse this very object)."""
    from .work import model_ref, register_model

    register_model(args.model, model)
    return model_ref(model, args.trust_remote_code, args.model, tasks=[args.task])  # a decoder's prompt in its key


def _engine():
    """The CLI's job engine: the cluster TP_SCHEDULER names, else an embedded one with a single worker thread that
    gets all the cores' torch threads (a command's jobs run one after the other, each as fast as it can, and a
    latency budget is timed as the process itself would run the model)."""
    from .engine import get_engine

    return get_engine(threads_per_worker=1)


def _engine_run(job, progress):
    """Run one job through the job engine and wait."""
    return _engine().run(job, owner="cli", priority=70, progress=progress)


def _scores(args, model, ref, acfg, progress):
    """The scores job of `acfg` (on the task's usual scoring examples) and its result."""
    from .work import scores_job

    job = scores_job(model, ref, args.task, acfg, None)
    return job, _engine_run(job, progress)


def cmd_serve(args):
    from .serve import serve

    raise SystemExit(serve(port=args.port, warm=not args.no_warm, spec=args.model))


def cmd_attribute(args):
    from .work import scores_job

    model = _model(args)
    cfg = _attr_cfg(args)
    data = _user_data(args, model, args.task)
    data = data.sample(cfg.samples, cfg.seed) if data is not None else None
    with progress_bar(f"{cfg.method} on {args.task}", not args.quiet) as cb:
        scores = _engine_run(scores_job(model, _ref(args, model), args.task, cfg, data), cb)
    doc = {"model": args.model, "task": args.task, "method": cfg.method, "settings": scores.settings,
           "ffn": None if scores.ffn is None else [s.tolist() for s in scores.ffn],
           "heads": None if scores.heads is None else [s.tolist() for s in scores.heads]}
    if args.out:
        from .paths import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(doc))
        print(f"wrote {args.out} ({scores.seconds:.1f}s, {scores.n_examples} examples)")
    else:
        for kind in ("ffn", "heads"):
            if doc[kind] is not None:
                means = [sum(x) / len(x) for x in doc[kind]]
                print(f"{kind} mean score per layer: " + " ".join(f"{m:.3g}" for m in means))


def _job_data(args, data):
    """The evaluation data as jobs take it: the bundle split by reference (`work.DataRef`, so the CLI's points
    share the app's cache entries for the same examples; a --limit above the split's size is the whole split), or
    the --data examples themselves."""
    from .work import DataRef

    if getattr(args, "data", None):
        return data
    whole = args.limit is None or len(data) < args.limit
    return DataRef(args.task, "validation", None if whole else args.limit)


def cmd_sweep(args):
    from .sweeps import run_sweep

    model = _model(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    ffn = _floats(args.ffn_sparsity, "--ffn-sparsity")
    heads = _floats(args.head_sparsity, "--head-sparsity")
    data = _eval_data(args, args.task, model)
    acfg, rcfg = _attr_cfg(args, methods[0]), _recovery_cfg(args)  # bad settings fail before the progress bar
    with progress_bar(f"sweep on {args.task}", not args.quiet) as cb:
        # every point is a job (work.point, its caches shared with the app) on the process's engine
        records = run_sweep(_engine(), model, _ref(args, model), args.task, methods, ffn, heads, args.allocation,
                            acfg, _job_data(args, data), len(data), cb, recovery=rcfg, n_iters=args.n_iters,
                            owner="cli")
    rows = [r.to_dict() for r in records]
    if args.json:
        from .paths import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(rows, indent=1))
    dense = records[0].metric
    print(f"{'method':11s} {'ffn':>5s} {'heads':>5s} {'kept params':>12s} {records[0].metric_name:>9s} "
          f"{'vs dense':>8s}")
    for r in records:
        print(f"{r.method:11s} {r.ffn_sparsity:5.2f} {r.head_sparsity:5.2f} {r.kept_params / r.total_params:11.1%} "
              f"{r.metric:9.4f} {r.metric / dense if dense else float('nan'):8.1%}")
    print(_sweep_examples_note(args, len(data)))


def _sweep_examples_note(args, n: int) -> str:
    """The line under sweep's table that says which examples it measured (a seeded subset, or all of them)."""
    if getattr(args, "data", None):
        return f"on {n:,} examples of {args.data}"
    from .data import load_split

    whole = len(load_split(args.task, "validation"))
    if n >= whole:
        return f"on all {n:,} validation examples of {args.task}"
    return (f"on a seeded subset of {n:,} of the {whole:,} validation examples of {args.task} "
            "(--limit all: every one)")


def _check_budget_args(args) -> None:
    """--flops-budget / --latency-budget-ms and their shape fail before any work (attribution can take minutes)."""
    from .budget import check_budget

    flops, latency = getattr(args, "flops_budget", None), getattr(args, "latency_budget_ms", None)
    if flops is None and latency is None:
        return
    if flops is not None and latency is not None:
        raise TPError("Give one budget: --flops-budget or --latency-budget-ms, not both.")
    check_budget(flops, latency, args.seq_len, getattr(args, "batch_size", 1))
    if args.choose == "metric" and args.select_n < 1:
        raise TPError(f"--select-n must be at least 1, got {args.select_n}.")


def _resolve_seq_len(args, model) -> None:
    """--seq-len's default once the model is loaded: budget.budget_seq_len (an encoder's 128 tokens; a causal LM's
    mean rendered prompt length on the task's examples: a seeded sample of --data, or of the bundle task)."""
    if getattr(args, "seq_len", 0) is not None or (getattr(args, "flops_budget", None) is None
                                                    and getattr(args, "latency_budget_ms", None) is None):
        return
    from .budget import PROMPT_SAMPLE, budget_seq_len

    user = _user_data(args, model, args.task) if model.kind == "causal_lm" else None
    args.seq_len = budget_seq_len(model, args.task, None if user is None else user.sample(PROMPT_SAMPLE))


def _budget_plan(args, model, ref, scores, progress=None, recovery=None):
    """The BudgetPlan of --flops-budget / --latency-budget-ms (None when neither was given), a budget job
    (`work.budget`) on the engine: with --choose metric the candidate with the best metric on --select-n seeded
    validation examples (each recovered first with `recovery`, fitted on the task's train texts or on --data),
    with --choose mass the one with the most score mass. `scores` = (scores job, its result). The callers check
    the budget's numbers first (`_check_budget_args`, before attribution)."""
    from .budget import HEAD_GRID
    from .work import DataRef, budget_job

    flops, latency = getattr(args, "flops_budget", None), getattr(args, "latency_budget_ms", None)
    if flops is None and latency is None:
        return None
    data, calib, grid = None, None, None
    if args.choose == "metric":
        user = _user_data(args, model, args.task)
        data = user.sample(args.select_n) if user is not None else DataRef(args.task, "validation", args.select_n)
        if recovery is not None:
            calib = user.sample(recovery.samples, recovery.seed) if user is not None else \
                DataRef(args.task, "train", recovery.samples, recovery.seed)
        grid = HEAD_GRID
    kind, value = ("flops", flops) if flops is not None else ("latency", latency)
    job = budget_job(ref, args.task, scores[0], scores[1], kind, value, args.seq_len, getattr(args, "batch_size", 1),
                     args.allocation, grid, data=data, n=args.select_n if data is not None else 0,
                     recovery=recovery, prune_heads=getattr(args, "units", "both") != "ffn", calib=calib)
    return _engine_run(job, progress)


def _peer_run(args, model, cb):
    """(masks, recovery, info) of --pipeline kwon (tp_core/kwon.py) or kprune (tp_core/kprune.py) at
    --flops-budget on --recover-samples seeded train texts."""
    from .recovery import DEFAULT_SAMPLES, samples_for

    samples = samples_for(args.model, getattr(args, "recover_samples", None)) or DEFAULT_SAMPLES
    if args.pipeline == "kprune":
        from .kprune import KPruneConfig, kprune_pipeline

        kcfg = KPruneConfig(samples=samples, seed=args.seed, seq_len=args.seq_len)
        return kprune_pipeline(model, args.task, args.flops_budget, config=kcfg, progress=cb)
    from .kwon import KwonConfig, kwon_pipeline

    kcfg = KwonConfig(samples=samples, seed=args.seed, labels=args.labels, seq_len=args.seq_len)
    return kwon_pipeline(model, args.task, args.flops_budget, config=kcfg, progress=cb)


def _kwon_plan(args, model, report: bool = False):
    """--pipeline kwon / kprune: Kwon et al.'s pipeline (Fisher search, rearrangement, mask tuning) or K-prune's
    (knowledge-preserving search and weight tuning per sub-layer) at --flops-budget. `report`: print it (budget);
    else (scores, config, recovery) that export turns into exactly these masks."""
    from .kwon import mask_scores

    name = "K-prune" if args.pipeline == "kprune" else "Kwon et al. pipeline"
    if args.flops_budget is None:
        raise TPError(f"--pipeline {args.pipeline} needs --flops-budget F ({name}: a search under a FLOPs "
                      "constraint).")
    with progress_bar(name, not args.quiet) as cb:
        masks, rec, info = _peer_run(args, model, cb)
    if not report:
        return (*mask_scores(masks, model.source, args.task, info["config"], method=args.pipeline), rec)
    if args.json:
        print(json.dumps(info, default=float))
        return None
    sec = ", ".join(f"{k} {v:.1f}s" for k, v in info["seconds"].items())
    print(f"{name}: FFN sparsity {info['ffn_sparsity']:.4f}, head sparsity {info['head_sparsity']:.4f}: "
          f"{info['flops_fraction']:.1%} of the dense FLOPs at {args.seq_len} tokens; {sec}")
    return None


def cmd_budget(args):
    if args.flops_budget is None and args.latency_budget_ms is None:
        raise TPError("Give a budget: --flops-budget F (fraction of the dense FLOPs) or --latency-budget-ms MS.")
    _check_budget_args(args)
    model = _model(args)
    _resolve_seq_len(args, model)
    if args.pipeline in ("kwon", "kprune"):
        return _kwon_plan(args, model, report=True)
    acfg, ref = _attr_cfg(args), _ref(args, model)
    with progress_bar(f"{acfg.method} on {args.task}", not args.quiet) as cb:
        scores = _scores(args, model, ref, acfg, cb)
    with progress_bar("planning", not args.quiet and (args.latency_budget_ms is not None or
                                                      args.choose == "metric")) as cb:
        plan = _budget_plan(args, model, ref, scores, cb)
    if args.json:
        print(json.dumps(plan.to_dict()))
        return
    lat = (f"; measured {plan.latency['measured_ms']:.1f} ms (dense {plan.latency['dense_ms']:.1f} ms) at batch "
           f"{args.batch_size} x {args.seq_len} tokens" if plan.latency else "")
    print(f"FFN sparsity {plan.ffn_sparsity:.4f}, head sparsity {plan.head_sparsity:.4f} ({plan.allocation}): "
          f"{plan.flops_fraction:.1%} of the dense FLOPs at {plan.seq_len} tokens{lat}; chosen for "
          + plan.choice(acfg.method))


def cmd_export(args):
    from .export import export_pruned
    from .masks import PruneConfig

    from .export import parse_formats
    from .vocab import GENERAL_TOKENS, check_general_tokens, check_min_count, check_vocab_applies, check_vocab_mode

    formats = parse_formats(args.format)  # bad --format / --vocab / --vocab-min-count fail before any work
    check_vocab_mode(args.vocab)
    check_min_count(args.vocab_min_count)
    args.vocab_general = check_general_tokens(GENERAL_TOKENS if args.vocab_general is None else args.vocab_general)
    texts = args.vocab_text_lines = _vocab_texts(args.vocab_texts)
    model = _model(args)
    check_vocab_applies(model, args.vocab)
    args.texts_check = _check_texts(args, model, texts)
    cfg = PruneConfig(args.ffn_sparsity, args.head_sparsity, args.allocation).validate()
    rcfg = _recovery_cfg(args)
    _check_budget_args(args)
    _resolve_seq_len(args, model)
    if args.pipeline in ("kwon", "kprune"):  # a peer's masks and tuning instead of scores + budget plan
        scores, cfg, rcfg = _kwon_plan(args, model)
        ref = scores_run = args.flops_budget = args.latency_budget_ms = None
    else:
        acfg, ref = _attr_cfg(args), _ref(args, model)
        with progress_bar(f"{acfg.method} on {args.task}", not args.quiet) as cb:
            scores_run = _scores(args, model, ref, acfg, cb)
        scores = scores_run[1]
    with progress_bar("budget", not args.quiet and (args.flops_budget is not None or
                                                    args.latency_budget_ms is not None)) as cb:
        plan = _budget_plan(args, model, ref, scores_run, cb,
                            rcfg if rcfg is not None and rcfg.level != "none" else None)
    if plan is not None:  # a budget chooses the sparsities (tp_core/budget.py)
        cfg = plan.prune_config()
        args.ffn_sparsity, args.head_sparsity = cfg.ffn_sparsity, cfg.head_sparsity
        if not args.quiet:
            print(f"budget: FFN sparsity {cfg.ffn_sparsity:.4f}, head sparsity {cfg.head_sparsity:.4f} "
                  f"({plan.flops_fraction:.1%} of the dense FLOPs), chosen for {plan.choice(acfg.method)}",
                  file=sys.stderr)
    if formats != ["taskprune"] or args.vocab != "full" or args.latency:  # tp_core/export/formats.py
        return _export_formats(args, model, scores, cfg, formats, _eval_data(args, args.task, model), rcfg)
    res = export_pruned(model, args.task, scores, cfg, Path(args.out), _eval_data(args, args.task, model),
                        overwrite=args.overwrite, recovery=rcfg if rcfg is not None and rcfg.level != "none" else None)
    if args.json:
        check = getattr(args, "texts_check", None)
        print(json.dumps({**res.to_dict(), **({"vocab_texts": check} if check else {})}))
    else:
        print(f"exported {res.path} ({res.params_after:,} of {res.params_before:,} parameters, "
              f"{res.bytes_on_disk / 1e6:.1f} MB); {res.metric_name} {res.metric_dense:.4f} -> "
              f"{res.metric_pruned:.4f}; "
              f"mask file {res.mask_file}")


def _check_texts(args, model, texts: list[str]) -> dict | None:
    """The [UNK] share of --vocab-texts with the vocabulary the export keeps (built without them), and one warning
    line on stderr above 1%; None without --vocab-texts."""
    if not texts:
        return None
    from .vocab import check_texts

    res = check_texts(model, args.task, texts, args.vocab, int(args.vocab_min_count), args.vocab_general)
    if res["message"]:
        kept = " Their own tokens are kept in this export; other texts like them are not." if args.vocab == "task" \
            else ""
        print(f"warning: {res['message']}{kept}", file=sys.stderr)
    elif not args.quiet:
        print(f"--vocab-texts: {res['unk_share']:.2%} of the {res['tokens']:,} tokens of your {res['texts']:,} texts "
              f"become [UNK] with the {res['vocab']} vocabulary", file=sys.stderr)
    return res


def _vocab_texts(path: str | None) -> list[str]:
    """The non-empty lines of --vocab-texts (within the file size limit); none without it."""
    if not path:
        return []
    from .limits import limits
    from .vocab import lines_of

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits().max_file_mb * 1_000_000:
            raise TPError(f"{path} is {size / 1e6:.0f} MB, above the {limits().max_file_mb} MB file limit.")
        return lines_of(path.read_bytes(), f"--vocab-texts {path}")
    except OSError as exc:
        raise TPError(f"Cannot read --vocab-texts {path}: {exc.strerror or exc}.") from None


def _export_formats(args, model, scores, cfg, formats: list[str], eval_data, rcfg):
    """`export --format ... --vocab ... --latency`: `export.export_formats`, then a summary (or the JSON report)."""
    from .export import export_formats, jsonable, metric_text as fmt

    extra_texts = args.vocab_text_lines if args.vocab == "task" else []
    with progress_bar(f"export {','.join(formats)}", not args.quiet) as cb:
        rep = export_formats(model, args.task, scores, cfg, Path(args.out), formats, vocab=args.vocab,
                             min_count=args.vocab_min_count, extra_texts=extra_texts, eval_data=eval_data,
                             offdomain=None, offdomain_limit=args.limit, latency=args.latency,
                             overwrite=args.overwrite, progress=cb,
                             recovery=rcfg if rcfg is not None and rcfg.level != "none" else None,
                             general_tokens=args.vocab_general)
    check = getattr(args, "texts_check", None)
    if args.json:
        print(json.dumps({**rep.to_dict(), **({"vocab_texts": check} if check else {})}, default=jsonable))
        return rep
    d, p = rep.params_dense["total"], rep.params_pruned["total"]
    print(f"exported {rep.out_dir} ({p:,} of {d:,} parameters, {p / d:.1%}); {rep.metric_name} "
          f"{fmt(rep.metric_dense)} dense -> {fmt(rep.metric_pruned)} pruned")
    for f in rep.formats:
        diff = "" if f.check_max_abs_diff is None else f", max |logit diff| {f.check_max_abs_diff:.1e} vs masked"
        print(f"  {f.format:10s} {f.path}  {f.params:,} params, {f.bytes_on_disk / 1e6:.1f} MB, "
              f"{rep.metric_name} {fmt(f.metric)}{diff}")
    if rep.vocab:
        v = rep.vocab
        print(f"  vocabulary {v['kept_tokens']:,} of {v['original_tokens']:,} tokens ({v.get('general_added', 0):,} "
              f"of them from the general set of {v.get('general_tokens', 0):,}); validation [UNK] share "
              f"{v['validation'].get('unk_share', 0):.2%}; " + "; ".join(
                  f"{t}: {x['metric_full_vocab']:.4f} -> {x['metric_task_vocab']:.4f}"
                  for t, x in v["offdomain"].items()))
    print(f"  model card {Path(rep.out_dir) / 'README.md'}")
    return rep


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command bound to the function below that runs it."""
    return cli_parser.build_parser({
        "serve": cmd_serve, "limits": cmd_limits, "tasks": cmd_tasks, "build-demo": cmd_build_demo, "info": cmd_info,
        "evaluate": cmd_evaluate, "attribute": cmd_attribute, "sweep": cmd_sweep, "export": cmd_export,
        "budget": cmd_budget})


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "limit", None) is not None:
            from .limits import limits

            if args.limit < 1:
                raise TPError("--limit must be at least 1.")
            limits().check("max_eval_examples", args.limit, "--limit")
        args.fn(args)
    except TPError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
