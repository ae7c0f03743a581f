"""RESULTS.md's section on the vocabulary on unseen domains (benchmarks/vocab_guard.py: results.json keys
vocab_general_keep, vocab_general_params_ratio and vocab_guard)."""
from __future__ import annotations

from common import fmt, fmt_pct


def _ci(ci) -> str:
    return f" [{fmt(ci[0], 4)}, {fmt(ci[1], 4)}]"


def _points(x: dict) -> str:
    return f"{x['points']:+.2f} [{x['ci95'][0]:+.2f}, {x['ci95'][1]:+.2f}]"


def _rows(v: dict) -> list[list]:
    """One row per vocabulary: tokens, parameter ratio, and per domain keep [95%] and [UNK] share; pooled last."""
    domains = list(v["dense_accuracy"]) + ["pooled"]
    rows = []
    for r in v["rows"]:
        name = r["vocab"] + (" (default)" if r["general_tokens"] == v["default_general_tokens"]
                             and not r["general_excludes"] else "")
        cells = [name, f"{r['kept_tokens']:,}", fmt(r["export_params_ratio"], 3)]
        for d in domains:
            x = r["domains"][d]
            cells.append(f"{fmt(x['keep'], 4)}{_ci(x['ci95'])}; [UNK] {fmt_pct(x['unk_share'], 2)}"
                         + (f"; split differently {fmt_pct(x['changed_share'])}" if "changed_share" in x else ""))
        cells.append(_points(r["domains"]["pooled"]["vs_full_vocab"]))
        rows.append(cells)
    return rows


def section(res: dict) -> list[str]:
    """The vocabulary guard: the shipped sst2 plan with each vocabulary on sentiment_sentences' domains."""
    from report import _table

    v = res["vocab_guard"]
    p, g = v["plan"], v["vocab_general_keep"]
    goals = v.get("goals", {})
    met = lambda k: "met" if goals.get(k, {}).get("met") else "**not met**"  # noqa: E731
    n = v["rows"][0]["domains"]["pooled"]["n"]
    head = ["vocabulary", "tokens", "export_params_ratio"] + [
        f"{d} keep [95%]" for d in v["dense_accuracy"]] + ["pooled keep [95%]", "vs full vocab, points [95%]"]
    return ["## The vocabulary on unseen domains", "",
            f"benchmarks/vocab_guard.py, run {v['date']} ({v['seconds'] / 60:.1f} min): model {v['model']}, the "
            f"shipped sst2 plan (FFN {fmt_pct(p['ffn_sparsity'])} + heads {fmt_pct(p['head_sparsity'])}, "
            f"{p['method']} scores, recovery {p.get('recovery_level', '')}; from {p['source']}) with each "
            f"vocabulary, on {v['unseen']}: {n:,} sentences"
            + (f" ({v['per_domain_limit']} per domain, a seeded subset)" if v.get("per_domain_limit") else "")
            + ", none of them in any train split the general set is counted on. Keep = accuracy / the dense "
            "model's accuracy (dense: " + ", ".join(f"{d} {fmt(a, 4)}" for d, a in v["dense_accuracy"].items())
            + "); intervals are 95% paired percentile bootstraps over the sentences (scipy.stats.bootstrap). "
            "The general set is the N most frequent tokens over a seeded sample of every bundle task's train "
            "texts (tp_core.vocab.general_ranking); cr and mr are reviews too, so one row counts it without them.",
            "",
            _table(["key", "what", "value", "goal", ""],
                   [["`vocab_general_keep`", f"pooled keep with the task vocabulary + {g['general_tokens']:,} "
                     f"general tokens (full vocabulary: {fmt(g['full_vocab_keep'], 4)})",
                     f"{fmt(g['keep'], 4)}{_ci(g['ci95'])}", "within 1 point of the full vocabulary",
                     met("vocab_general_keep")],
                    ["`export_params_ratio`", "of that export (word embeddings included)",
                     fmt(res.get("vocab_general_params_ratio"), 3), "<= 0.35", met("export_params_ratio")]]), "",
            _table(head, _rows(v)), "", _choice(v), ""]


def _choice(v: dict) -> str:
    """Which size the measurement chose, and whether `--vocab task` keeps it by default."""
    chosen = v.get("chosen_general_tokens")
    text = (f"Chosen size: {chosen:,} general tokens, the smallest measured one within 1 point of the full "
            "vocabulary (pooled, over the whole 95% interval of the difference), with no more [UNK] than the full "
            "vocabulary on any domain and a parameter ratio <= 0.35" if chosen is not None else
            "No measured size came within 1 point of the full vocabulary, with no more [UNK] than it on every "
            "domain and a parameter ratio <= 0.35")
    return text + f"; `--vocab task` keeps {v['default_general_tokens']:,} by default" + (
        "." if v.get("default_is_chosen") else " (**not** the measured choice).")
