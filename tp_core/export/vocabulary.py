"""The export's vocabulary step: the pruned model with only the task's tokens (`tp_core.vocab`), what that costs on
the task's validation texts and on related tasks (off-domain), and which examples stay in the kept vocabulary."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from ..errors import TPError


def related_tasks(task: str) -> list[str]:
    """Other bundle tasks of the same kind (same problem, input kind and label names) with a validation split:
    where a task's vocabulary is tried off-domain (sst2 -> mr, cr, sentiment_sentences)."""
    from ..data import get_task, list_tasks

    try:
        spec = get_task(task)
    except TPError:
        return []
    key = lambda s: (s.kind, s.problem, tuple(x.lower() for x in s.label_names))  # noqa: E731
    return [s.name for s in list_tasks() if s.name != spec.name and key(s) == key(spec) and "validation" in s.splits]


def in_vocab_indices(model, task: str, kept: set[int] | None, texts, pairs, n: int) -> list[int]:
    """Up to n example indices whose full-vocabulary tokens (a causal LM's: of the rendered prompt) are all kept
    (all of them without vocabulary pruning)."""
    if kept is None:
        return list(range(min(n, len(texts))))
    if getattr(model, "kind", None) == "causal_lm":
        from ..decoder import encode

        enc = encode(model, task, list(texts), list(pairs) if pairs is not None else None, 128)
    else:
        enc = model.tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                              max_length=128)
    return [i for i, ids in enumerate(enc["input_ids"]) if all(t in kept for t in ids)][:n]


def task_vocabulary(model, small_full, task: str, min_count: int, extra_texts: Sequence[str], eval_data,
                    metric_name: str, general_tokens: int | None = None, plan=None, keep_full: bool = True):
    """(pruned model, kept token ids, `vocab.VocabReport`): a copy of `small_full` (the pruned structure; itself
    when not `keep_full`) keeping only the tokens of `task`'s scoring split (+ `extra_texts`) and the general set
    (`general_tokens` of the bundle's most frequent tokens; None: `vocab.GENERAL_TOKENS`), and its token statistics
    on `eval_data` (else the task's validation split, when there is one). `plan`: that `vocab.VocabPlan` when
    already counted for this model (used only if it has these settings). The report's metrics are the caller's to
    fill in."""
    from ..data import get_task, load_split
    from ..vocab import GENERAL_TOKENS, VocabReport, plan_for_task, prune_vocab, token_stats

    spec = get_task(task)
    general = GENERAL_TOKENS if general_tokens is None else general_tokens
    if plan is None or extra_texts or (plan.min_count, plan.general_tokens) != (min_count, general):
        plan = plan_for_task(model, task, min_count, extra_texts, general_tokens=general)
    small = copy.deepcopy(small_full) if keep_full else small_full
    emb_before = small.encoder.get_input_embeddings().weight.numel()
    prune_vocab(small, plan)
    small.pruning["vocab"]["source"] = f"{spec.name}/{spec.scoring_split}" + (
        f" + {plan.extra_texts} extra texts" if plan.extra_texts else "")
    report = VocabReport(task=task, kept_tokens=plan.size, original_tokens=plan.original_size, min_count=min_count,
                         char_fallback_tokens=plan.n_char_fallback, embedding_params_before=emb_before,
                         embedding_params_after=small.encoder.get_input_embeddings().weight.numel(),
                         metric_name=metric_name, general_tokens=plan.general_tokens, general_added=plan.n_general)
    val = eval_data if eval_data is not None else load_split(spec, "validation", limit=2000) \
        if "validation" in spec.splits else None
    if val is not None:
        report.validation = token_stats(small.tokenizer, val.texts, val.pairs, model.tokenizer).to_dict()
    return small, set(plan.kept_ids), report


def offdomain_rows(model, small_full, small, task: str, others: Sequence[str], limit: int | None,
                   progress: Callable[[float, str], None]) -> dict[str, dict]:
    """{other task: row} for a task vocabulary tried on other tasks' validation splits (at most `limit` examples
    each): [UNK] share, examples split differently, and the metric of the dense model, the pruned structure with the
    full vocabulary and with the task vocabulary."""
    from ..data import load_split
    from ..evaluation import compute_metric, predict_logits, predictions
    from ..vocab import token_stats

    rows = {}
    for j, other in enumerate(others):
        progress(0.25 + 0.15 * j / max(len(others), 1), f"off-domain: {other}")
        od = load_split(other, "validation", limit=limit)
        st = token_stats(small.tokenizer, od.texts, od.pairs, model.tokenizer)
        row = {"n": len(od), "unk_share": st.unk_share, "examples_changed": st.examples_changed,
               "metric_name": od.spec.metric}
        for label, m in (("metric_dense", model), ("metric_full_vocab", small_full), ("metric_task_vocab", small)):
            logits = predict_logits(m, task, od)
            row[label] = compute_metric(od.spec.metric, predictions(logits, od.spec.problem), od.labels)
        rows[other] = row
    return rows
