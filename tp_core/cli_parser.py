"""The command line's arguments: one parser, its sub-commands and their options (`cli.py` runs them)."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from .defaults import IG_QUADRATURE, IG_STEPS, LLM_RECOVERY_SAMPLES, QUADRATURES, RECOVERY_LEVEL, RECOVERY_SAMPLES, \
    SCORING_SAMPLES, SWEEP_LIMIT

# --recover's default on sweep and export: the level that helped every criterion most (docs/RESULTS.md section 9)
RECOVER_DEFAULT = RECOVERY_LEVEL


def limit_value(text: str) -> int | None:
    """--limit's value: a number of examples, or "all" (None: the whole split)."""
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of examples or 'all', got {text!r}") from None


def _model_args(sp, task=True):
    sp.add_argument("--model", required=True, help="demo, demo-quick, a local folder, or a hub id")
    if task:
        sp.add_argument("--task", required=True, help="task name from the data folder (see `tasks`)")
    sp.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    sp.add_argument("--trust-remote-code", action="store_true", help="allow custom model code (untrusted!)")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    if task:
        sp.add_argument("--data", default=None, metavar="FILE",
                        help="your own CSV/TSV/JSONL examples instead of the data folder's: the evaluation data "
                             "(for `attribute`: the scoring examples), labelled like the model's head for --task")
        sp.add_argument("--text-col", default="text", help="text column of --data")
        sp.add_argument("--pair-col", default=None, help="second text column of --data (pair tasks)")
        sp.add_argument("--label-col", default="label", help="label column of --data")

def _attr_args(sp, method=True):
    if method:
        sp.add_argument("--method", default="ig", help="ig, grad_x_act, activation, magnitude, random, wanda_sp "
                        "(Wanda-sp) or flap (FLAP's fluctuation metric)")
    sp.add_argument("--samples", type=int, default=SCORING_SAMPLES,
                    help=f"examples used for scoring (low-resource: small; default {SCORING_SAMPLES})")
    sp.add_argument("--steps", type=int, default=IG_STEPS,
                    help=f"integrated-gradients steps (default {IG_STEPS}, with --quadrature {IG_QUADRATURE}: "
                         "within the 50-step reference's interval in docs/RESULTS.md's fidelity study)")
    sp.add_argument("--quadrature", default=IG_QUADRATURE, choices=QUADRATURES,
                    help=f"how ig's integral is approximated (Captum's method names; default {IG_QUADRATURE}; "
                         "the study's reference: --steps 50 --quadrature riemann_middle)")
    sp.add_argument("--labels", default="gold", choices=["gold", "predicted"], help="predicted = unsupervised")
    sp.add_argument("--target", default="prob", choices=["prob", "logit"])
    sp.add_argument("--aggregation", default="abs_sum", choices=["abs_sum", "sum_abs", "signed"])
    sp.add_argument("--seed", type=int, default=0)

def _budget_args(sp):
    sp.add_argument("--flops-budget", type=float, default=None, metavar="F",
                    help="choose the FFN/head sparsities: at most F x the dense model's FLOPs (0 < F <= 1), "
                         "see --choose")
    sp.add_argument("--latency-budget-ms", type=float, default=None, metavar="MS",
                    help="choose the FFN/head sparsities: at most MS milliseconds per batch, measured on this "
                         "machine (--batch-size x --seq-len tokens)")
    sp.add_argument("--seq-len", type=int, default=None,
                    help="tokens per example for the budget (default: 128 for an encoder; for a causal LM the mean "
                         "length of the task's prompts, demonstrations included)")
    sp.add_argument("--pipeline", default="ours", choices=["ours", "kwon", "kprune"],
                    help="kwon: Kwon et al. 2022 instead (Fisher mask search at --flops-budget, rearrangement, "
                         "their mask tuning on --recover-samples train texts; tp_core/kwon.py); kprune: K-prune "
                         "(Park et al. 2024: knowledge-preserving search and weight tuning sub-layer by sub-layer; "
                         "tp_core/kprune.py)")
    sp.add_argument("--batch-size", type=int, default=1, help="examples per batch for --latency-budget-ms")
    sp.add_argument("--choose", default="metric", choices=["metric", "mass"],
                    help="among the splits meeting the budget (one per head sparsity 0, 0.1, ..., 0.9), the one "
                         "with the best metric on --select-n validation examples (with --recover when given; "
                         "default), or the one with the most score mass (every head count, no evaluation)")
    sp.add_argument("--select-n", type=int, default=500, metavar="N",
                    help="seeded validation examples (or --data examples) for --choose metric; export's "
                         "before/after metric is measured on a seeded sample of the same split, so after a "
                         "choice on overlapping examples it is slightly optimistic")

def _recover_args(sp, what, default=None):
    sp.add_argument("--recover", default=default, metavar="LEVEL",
                    help="training-free recovery after pruning: none, bias, scale or lstsq " + what)
    sp.add_argument("--recover-samples", type=int, default=None, metavar="N",
                    help="unlabeled calibration texts for --recover, a seeded sample of the task's train split "
                         f"(default {RECOVERY_SAMPLES}; {LLM_RECOVERY_SAMPLES} for a causal LM)")


def _add_setup_commands(sub, handlers: dict[str, Callable]) -> None:
    """serve, limits, tasks, build-demo: the app, the caps, the data folder, the demo model."""
    sp = sub.add_parser("serve", help="start the job engine (a Dask cluster), the warm start and the web app")
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--model", default="demo", help="model whose default task is warmed up (default: demo)")
    sp.add_argument("--no-warm", action="store_true", help="skip the background warm start")
    sp.set_defaults(fn=handlers["serve"])

    sp = sub.add_parser("limits", help="show the caps on file size, rows, examples, lengths and cache size")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=handlers["limits"])

    sp = sub.add_parser("tasks", help="list the tasks of the data folder")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=handlers["tasks"])

    sp = sub.add_parser("build-demo", help="build the demo multi-task MiniLM (cached under TP_HOME)")
    sp.add_argument("--quick", action="store_true", help="small build for tests (about a minute)")
    sp.add_argument("--force", action="store_true", help="rebuild even if cached")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=handlers["build-demo"])


def _add_model_commands(sub, handlers: dict[str, Callable]) -> None:
    """info, evaluate, attribute, sweep: a model's facts, metric, unit scores and curves."""
    sp = sub.add_parser("info", help="architecture, parameters by part, tasks")
    _model_args(sp, task=False)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=handlers["info"])

    sp = sub.add_parser("evaluate", help="task metric on the validation split (dense, or with --mask)")
    _model_args(sp)
    sp.add_argument("--limit", type=int, default=None, help="seeded subset of the validation split")
    sp.add_argument("--mask", default=None, help="a per-task mask file to apply to the model")
    _recover_args(sp, "(default: the mask file's own recovery, if any)")
    sp.add_argument("--json", action="store_true", help="print one JSON record")
    sp.set_defaults(fn=handlers["evaluate"])

    sp = sub.add_parser("attribute", help="score every FFN neuron / head for a task")
    _model_args(sp)
    _attr_args(sp)
    sp.add_argument("--units", default="both", choices=["ffn", "heads", "both"])
    sp.add_argument("--out", default=None, help="write scores as JSON")
    sp.set_defaults(fn=handlers["attribute"])

    sp = sub.add_parser("sweep", help="metric over sparsities and methods")
    _model_args(sp)
    _attr_args(sp, method=False)
    sp.add_argument("--methods", default="ig,random", help="comma-separated methods")
    sp.add_argument("--ffn-sparsity", default="0,0.5,0.7")
    sp.add_argument("--head-sparsity", default="0")
    sp.add_argument("--allocation", default="global", choices=["global", "per-layer"])
    sp.add_argument("--limit", type=limit_value, default=SWEEP_LIMIT, metavar="N|all",
                    help=f"a seeded subset of at most N validation examples (default {SWEEP_LIMIT}, so a large split "
                         "answers in minutes; smaller splits are evaluated whole); all: the whole split")
    sp.add_argument("--json", default=None, metavar="F", help="write the records to F")
    _recover_args(sp, "(adds '<method>+<level>' records beside the plain ones; default lstsq, the best level in "
                     "benchmarks/bench_recovery.py; none: plain records only)", default=RECOVER_DEFAULT)
    sp.add_argument("--n-iters", type=int, default=1, metavar="N",
                    help="reach each sparsity in N steps, re-scoring the surviving units on the pruned (and, with "
                         "--recover, recovered) model at each step, as TextPruner's n_iters (records "
                         "'<method>/iter<N>'; default 1 = one shot)")
    sp.set_defaults(fn=handlers["sweep"])


def _add_pruning_commands(sub, handlers: dict[str, Callable]) -> None:
    """export and budget: a pruned model written to disk, sparsities chosen by a budget."""
    sp = sub.add_parser("export", help="export a physically pruned model + mask file")
    _model_args(sp)
    _attr_args(sp)
    sp.add_argument("--units", default="both", choices=["ffn", "heads", "both"])
    sp.add_argument("--ffn-sparsity", type=float, default=0.5)
    sp.add_argument("--head-sparsity", type=float, default=0.0)
    sp.add_argument("--allocation", default="global", choices=["global", "per-layer"])
    sp.add_argument("--limit", type=int, default=None, help="validation subset for the before/after metric")
    sp.add_argument("--out", required=True, help="export folder to create")
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--format", default="taskprune", help="comma-separated: taskprune (default: the folder itself), "
                    "onnx, onnx-int8, hf (then OUT/onnx/, OUT/hf/, OUT/taskprune/ and OUT/README.md)")
    sp.add_argument("--vocab", default="full", help="full, or task: keep the tokens of the task's train texts and "
                    "the general set (see --vocab-general)")
    sp.add_argument("--vocab-min-count", default="1", metavar="N",
                    help="with --vocab task: keep tokens seen >= N times")
    sp.add_argument("--vocab-general", default=None, metavar="N",
                    help="with --vocab task: keep the N most frequent tokens of the bundle's train texts too, so "
                    "text from new domains loses fewer words to [UNK] (default: the size benchmarks/vocab_guard.py "
                    "chose, tp_core.vocab.GENERAL_TOKENS; 0: the task's tokens only)")
    sp.add_argument("--vocab-texts", default=None, metavar="FILE", help="texts like those the model will see (a "
                    "UTF-8 text file, one text per line): their [UNK] share with the chosen vocabulary is reported, "
                    "with a warning above 1%%; with --vocab task their tokens are kept too")
    sp.add_argument("--latency", action="store_true", help="time dense torch, pruned torch and each ONNX file "
                    "(batch 1 and 32, 64 tokens) for the model card")
    sp.add_argument("--json", action="store_true")
    _recover_args(sp, "(folded into the exported weights and stored in the mask file; default lstsq, the best "
                     "level in benchmarks/bench_recovery.py; none: plain masks)", default=RECOVER_DEFAULT)
    _budget_args(sp)
    sp.set_defaults(fn=handlers["export"])

    sp = sub.add_parser("budget", help="FFN/head sparsities meeting a FLOPs or measured latency budget")
    _model_args(sp)
    _attr_args(sp)
    sp.add_argument("--units", default="both", choices=["ffn", "both"], help="ffn: prune FFN neurons only")
    sp.add_argument("--allocation", default="global", choices=["global", "per-layer"])
    _budget_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=handlers["budget"])


def build_parser(handlers: dict[str, Callable]) -> argparse.ArgumentParser:
    """The parser of `python -m tp_core`; `handlers` maps each sub-command to the function that runs it."""
    p = argparse.ArgumentParser(prog="python -m tp_core",
                                description="Training-free task-specific pruning by attribution.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_add_setup_commands, _add_model_commands, _add_pruning_commands):
        add(sub, handlers)
    return p
