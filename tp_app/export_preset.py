"""The Export page's presets. "deploy" is what a deployment takes: the split the Prune page's budget helper finds
at its default budget (or the Prune page's sliders, when the user set them), lstsq recovery, the task vocabulary,
ONNX int8 and a Hugging Face folder, each with one line on what it buys. "custom" opens every choice. The deploy
split and its recovery are jobs submitted as the page opens, so that the click only writes and checks the files."""
from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st

from tp_core.budget import HEAD_GRID
from tp_core.defaults import RECOVERY_LEVEL
from tp_core.masks import PruneConfig, units_for
from tp_core.policy import PRIORITY
from tp_core.recovery import RecoveryConfig
from tp_core.settings import app_settings
from tp_core.vocab import GENERAL_TOKENS

from .jobs import data_ref, engine, eval_size, job_info, known_scores, ref, scores_job, submit
from .models import budget_tokens, head_for
from .state import DEFAULTS, FFN_MAX, FFN_STEP  # the Prune slider: a budget's split lies on its steps
from .state import recovery_config as app_recovery
from .state import session_id

DEPLOY_JOBS = "_deploy_jobs"  # session key: the jobs the deploy preset submitted as the page opened

PRESETS = {"deploy": "deploy (ready to ship)", "custom": "custom (choose everything)"}
DEPLOY_FORMATS = ["onnx-int8", "hf"]
DEPLOY_VOCAB = "task"
DEPLOY_RECOVERY = RECOVERY_LEVEL  # the measured default of every entry point
DEPLOY_FLOPS = 0.5  # the Prune page's budget helper's default budget (% of the dense FLOPs)


@dataclass
class DeploySplit:
    """The deploy preset's split: `pcfg` (None until the budget helper's job lands), where it comes from in words,
    and the job key to show progress for while it runs."""

    pcfg: PruneConfig | None
    source: str
    pending: str | None = None


def sliders_set() -> bool:
    """Whether the user chose the split on the Prune page: its sliders left their defaults, or its budget helper
    moved them (possibly onto the defaults)."""
    ss = st.session_state
    moved = (ss["ffn_sparsity"], ss["head_sparsity"]) != (DEFAULTS["ffn_sparsity"], DEFAULTS["head_sparsity"])
    found = ss.get("_budget_found") or {}
    return moved or found.get("kind") == "success"


def deploy_split(model, task: str, cfg, allocation: str) -> DeploySplit:
    """The Prune page's sliders when the user set them; else the split its "Find the split" gives at DEPLOY_FLOPS
    (the same job, so one found there is reused here): each candidate evaluated on the chart's examples."""
    ss = st.session_state
    if sliders_set():
        return DeploySplit(PruneConfig(ss["ffn_sparsity"], ss["head_sparsity"], allocation),
                           "the Prune page's sliders, which you set")
    from tp_core.work import budget_job

    head = head_for(task)
    bcfg = replace(cfg, units="both")  # a budget weighs heads against neurons
    n_full = eval_size(task)
    n_small = min(app_settings().coarse_examples, n_full)
    data = data_ref(task) if n_full > n_small else data_ref(task, n_small)  # the chart's full pass, as the Prune page
    job = budget_job(ref(model, task), head, scores_job(model, task, bcfg), known_scores(model, task, bcfg), "flops",
                     DEPLOY_FLOPS, max(8, budget_tokens(model, task, head)), 1, allocation, head_grid=HEAD_GRID,
                     ffn_step=FFN_STEP, ffn_max=FFN_MAX, data=data, n=n_full)
    key = submit_again(job, PRIORITY["budget"])
    remember(key)
    info = job_info(key)
    if info is not None and info.state == "done":
        plan = info.result
        return DeploySplit(plan.prune_config(), f"the Prune page's budget helper at {DEPLOY_FLOPS:.0%} of the dense "
                                                f"FLOPs ({plan.flops_fraction:.1%} at {plan.seq_len} tokens; "
                                                f"{plan.choice(cfg.method)})")
    if info is not None and info.state == "error":
        return DeploySplit(None, f"the budget helper found no split: {info.error}")
    return DeploySplit(None, f"finding the split within {DEPLOY_FLOPS:.0%} of the dense FLOPs", key)


def recovery_config() -> RecoveryConfig:
    """The deploy preset's recovery: lstsq on the app's calibration texts (TP_APP_RECOVER_SAMPLES)."""
    return app_recovery(DEPLOY_RECOVERY)


def deploy_recovery(model, task: str, cfg, pcfg: PruneConfig, rcfg: RecoveryConfig | None = None):
    """(what the export's `recovery` argument gets, the job key while it runs): the recovery `rcfg` (default the
    deploy preset's lstsq) for `pcfg`, submitted now so that it is fitted before the click; a click before then
    makes the export wait for it; if the fit failed, the export fits it again itself (and reports its error)."""
    from tp_core.work import recovery_job

    rcfg = rcfg or recovery_config()
    scfg = replace(cfg, units=units_for(pcfg.ffn_sparsity, pcfg.head_sparsity, cfg.units))
    job = recovery_job(ref(model, task), head_for(task), scores_job(model, task, scfg),
                       known_scores(model, task, scfg), pcfg, data_ref(task), rcfg)
    key = submit_again(job, PRIORITY["export"])
    info = job_info(key)
    if info is not None and info.state == "done":
        return info.result, None
    if info is None or info.state in ("error", "cancelled"):
        return rcfg, None
    return job, key


def submit_again(job, priority: int) -> str:
    """Submit one of the preset's jobs, again if it was cancelled (the user left the preset before it landed and
    came back); a failed one is not retried on every page run."""
    info = job_info(job.key)
    return submit(job, priority, retry=info is not None and info.state == "cancelled")


def remember(key: str | None) -> None:
    """Note a job the deploy preset submitted for itself (its split, its recovery), to withdraw it if the user
    leaves the preset before it lands."""
    if key:
        keys = st.session_state.setdefault(DEPLOY_JOBS, [])
        if key not in keys:
            keys.append(key)


def withdraw_deploy_jobs(keep: tuple = ()) -> list[str]:
    """Withdraw this session's interest in the deploy preset's jobs still running (the user chose custom): each
    stops unless another session wants it. `keep`: keys someone here still waits for (an export that takes the
    recovery as its input, the Prune page's own budget search). Returns the keys withdrawn."""
    eng, sid, out = engine(), session_id(), []
    for key in st.session_state.pop(DEPLOY_JOBS, []):
        info = job_info(key)
        if key in keep or info is None or info.state not in ("queued", "running"):
            continue
        eng.cancel(key, owner=sid)
        out.append(key)
    return out


def deploy_lines(split: DeploySplit, vocab_kind: str | None) -> list[str]:
    """One line per deploy choice: what it is and what it buys (size, speed, compatibility); `vocab_kind`: how the
    model's vocabulary can be cut (`tp_core.vocab.vocab_kind`)."""
    p = split.pcfg
    where = (f"FFN **{p.ffn_sparsity:.0%}**, heads **{p.head_sparsity:.0%}** ({p.allocation}), from {split.source}"
             if p is not None else split.source + " ...")
    vocab = {
        None: "**Vocabulary: full** - this model's tokenizer is neither WordPiece nor byte-level BPE.",
        "bpe": f"**Vocabulary: the task prompts' tokens + {GENERAL_TOKENS:,} general ones** - size: far fewer rows "
               "in the input and output embeddings, same speed; the task's prompts get the same tokens and logits, "
               "a word it no longer knows splits into smaller kept pieces (never an unknown token).",
        "wordpiece": f"**Vocabulary: the task's tokens + {GENERAL_TOKENS:,} general ones** - size: far fewer "
                     "word-embedding rows, same speed; text made of kept tokens gets the same logits, other words "
                     "split into kept pieces. The general set (the bundle's most frequent tokens) keeps texts of new "
                     "domains readable; check yours below, or choose custom to measure related tasks."}[vocab_kind]
    return [
        f"**Split:** {where} - speed: fewer FLOPs per example on every runtime, and size: fewer parameters.",
        f"**Recovery: lstsq** - quality: re-fits the kept output columns on {recovery_config().samples:,} "
        "unlabeled train texts (no training step), more of the metric at the same size and speed; fitted as the "
        "page opens.",
        vocab,
        "**ONNX int8** - size and speed: the smallest file and the fastest on a CPU, with onnxruntime, tokenizers "
        "and numpy alone (no torch); int8 rounding costs a little metric, measured here.",
        "**Hugging Face folder** - compatibility: plain transformers (`AutoModel.from_pretrained`, no custom "
        "code), float32.",
    ]
