"""Vocabulary pruning: keep only the tokens a task uses, and shrink the word-embedding matrix and the tokenizer.

MiniLM's 30,522 x 384 word embeddings are about half of its parameters; one task's texts use a small part of them.
`task_vocab` counts the tokens of the task's train texts (plus any extra texts) and keeps those seen at least
`min_count` times, every special token and, by default, the single-character pieces (`c` and `##c`) of every
character seen in those texts, so an unseen word made of seen characters still splits into pieces instead of [UNK].
`prune_vocab` rewrites the embedding rows and the tokenizer (`tokenizer.json` and `vocab.txt`), keeping the old id
order among the kept tokens.

Why logits stay identical on in-vocabulary text: WordPiece takes the longest vocabulary match at each position of a
word. Removing tokens only removes candidates, so a word whose original pieces were all kept gets the same pieces,
mapped to the same embedding rows. A word needing a removed piece falls back exactly as the tokenizer does for any
unknown piece (in BERT's WordPiece: the whole word becomes [UNK]). Only WordPiece tokenizers are supported (BERT,
DistilBERT, ELECTRA and MiniLM use it); BPE and Unigram vocabularies would also need their merges rewritten.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import torch
from torch import nn

from .errors import TPError

VOCAB_MODES = ("full", "task")
# `--vocab task` also keeps this many of the bundle's most frequent tokens (the general set): the size chosen by
# measuring parameters against the keep on unseen domains (benchmarks/vocab_guard.py)
GENERAL_TOKENS = 8000
GENERAL_SAMPLE = 1000  # train texts counted per bundle task for the general set (a seeded sample)
UNK_WARN_SHARE = 0.01  # above this share of [UNK] tokens in the user's texts, the export warns
_GENERAL_CACHE: dict[tuple, tuple[list[int], tuple[str, ...]]] = {}


def _whole_number(value: Any, least: int, what: str, why: str) -> int:
    """`value` as an int >= `least` when it is a whole number, else a TPError naming `what` it is and `why`."""
    try:
        n = int(value)
        ok = n == float(value) and n >= least
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise TPError(f"The {what} must be a whole number >= {least} ({why}), got {value!r}.")
    return n


def check_min_count(value: Any) -> int:
    """`min_count` as an int >= 1, or a clear error."""
    return _whole_number(value, 1, "vocabulary min count",
                         "a token is kept if it occurs at least that many times in the task's texts")


def check_general_tokens(value: Any) -> int:
    """The general set's size as an int >= 0, or a clear error."""
    return _whole_number(value, 0, "general vocabulary size", "how many of the bundle's most frequent tokens the "
                         "task vocabulary keeps too; 0: the task's tokens only")


def check_vocab_mode(mode: str) -> str:
    if mode not in VOCAB_MODES:
        raise TPError(f"Vocabulary mode must be one of {', '.join(VOCAB_MODES)}, got {mode!r}.")
    return mode


def check_vocab_applies(model, mode: str) -> str:
    """`mode` once it applies to `model`: a causal LM keeps its full vocabulary (its byte-level BPE tokenizer would
    need its merges rewritten, and its prompt's template, demonstrations and label words use tokens beyond the
    task's texts), so "task" is refused for one."""
    check_vocab_mode(mode)
    if mode == "task" and getattr(model, "kind", None) == "causal_lm":
        raise TPError("The task vocabulary applies to encoders with a WordPiece tokenizer; a causal LM keeps its full "
                      "vocabulary (byte-level BPE, and its prompt needs tokens beyond the task's texts): use "
                      "--vocab full.")
    return mode


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        raise TPError("Vocabulary pruning needs a fast (Rust `tokenizers`) tokenizer; this model's tokenizer has none.")
    doc = json.loads(backend.to_str())
    kind = (doc.get("model") or {}).get("type")
    if kind != "WordPiece":
        raise TPError(f"Vocabulary pruning supports WordPiece tokenizers (BERT, DistilBERT, ELECTRA, MiniLM); this "
                      f"model's tokenizer is {kind or 'of an unknown type'}. Use --vocab full.")
    return doc


def _plain_backend(tokenizer):
    """A copy of the Rust tokenizer without truncation or padding (for counting every token)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def special_ids(tokenizer) -> set[int]:
    doc = _tokenizer_json(tokenizer)
    ids = {int(t["id"]) for t in doc.get("added_tokens", [])}
    ids |= {int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None}
    return ids


def _texts_of(texts: Sequence[str], pairs: Sequence[str] | None) -> list[str]:
    return list(texts) + ([p for p in pairs if p] if pairs is not None else [])


@dataclass
class VocabPlan:
    """Which old token ids stay (sorted, so the old order is kept) and why."""

    kept_ids: list[int]
    original_size: int
    min_count: int
    n_texts: int
    n_counted: int  # distinct tokens seen in the texts
    n_special: int
    n_char_fallback: int  # single-character pieces added for fallback (not already kept)
    extra_texts: int = 0
    general_tokens: int = 0  # the size of the general set asked for
    n_general: int = 0  # general-set tokens kept that the task's texts did not bring

    @property
    def size(self) -> int:
        return len(self.kept_ids)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("kept_ids")
        d["kept_tokens"] = self.size
        return d


def _tokenizer_signature(tokenizer) -> str:
    """A short hash of the tokenizer's vocabulary: the general set's cache key."""
    vocab = _tokenizer_json(tokenizer)["model"]["vocab"]
    return hashlib.sha1(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]


def general_ranking(tokenizer, per_task: int = GENERAL_SAMPLE) -> tuple[list[int], tuple[str, ...]]:
    """Token ids (specials left out) by frequency over a seeded sample of up to `per_task` train texts of every
    bundle task with a train split, most frequent first (ties by id), and the tasks counted. Every task weighs the
    same, so one large train split does not make the set its own; kept in memory per tokenizer and bundle."""
    from .data import data_dir, list_tasks, load_split

    specs = [s for s in list_tasks() if "train" in s.splits]
    key = (_tokenizer_signature(tokenizer), str(data_dir()), per_task, tuple(s.name for s in specs))
    if key not in _GENERAL_CACHE:
        backend = _plain_backend(tokenizer)
        counts: Counter[int] = Counter()
        for spec in specs:
            data = load_split(spec, "train", limit=per_task)
            for enc in backend.encode_batch(_texts_of(data.texts, data.pairs), add_special_tokens=False):
                counts.update(enc.ids)
        specials = special_ids(tokenizer)
        ranked = sorted((i for i in counts if i not in specials), key=lambda i: (-counts[i], i))
        _GENERAL_CACHE[key] = (ranked, tuple(s.name for s in specs))
    return _GENERAL_CACHE[key]


def task_vocab(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, min_count: int = 1,
               extra_texts: Sequence[str] = (), char_fallback: bool = True, general_tokens: int = 0) -> VocabPlan:
    """The tokens to keep for these texts: seen >= `min_count` times, specials, (optionally) character pieces, and
    the `general_tokens` most frequent tokens of the bundle (`general_ranking`), so that text from domains the task
    never saw loses fewer words to [UNK]."""
    min_count = check_min_count(min_count)
    general_tokens = check_general_tokens(general_tokens)
    doc = _tokenizer_json(tokenizer)
    vocab: dict[str, int] = doc["model"]["vocab"]
    all_texts = _texts_of(texts, pairs) + [t for t in extra_texts if t]
    if not all_texts:
        raise TPError("Vocabulary pruning needs texts to count tokens in; the task has none.")
    backend = _plain_backend(tokenizer)
    counts: Counter[int] = Counter()
    for start in range(0, len(all_texts), 2048):
        for enc in backend.encode_batch(all_texts[start:start + 2048], add_special_tokens=False):
            counts.update(enc.ids)
    specials = special_ids(tokenizer)
    kept = {i for i, c in counts.items() if c >= min_count} | specials
    n_chars = 0
    if char_fallback:
        norm = backend.normalizer
        chars: set[str] = set()
        for t in all_texts:
            chars.update(norm.normalize_str(t) if norm is not None else t)
        prefix = doc["model"].get("continuing_subword_prefix", "##")
        for c in chars:
            for piece in (c, prefix + c):
                i = vocab.get(piece)
                if i is not None and i not in kept:
                    kept.add(i)
                    n_chars += 1
    general = set(general_ranking(tokenizer)[0][:general_tokens]) - kept if general_tokens else set()
    size = max(vocab.values()) + 1 if vocab else 0
    size = max(size, max(specials) + 1 if specials else 0)
    return VocabPlan(sorted(kept | general), size, min_count, len(all_texts), len(counts), len(specials), n_chars,
                     len([t for t in extra_texts if t]), general_tokens, len(general))


def _remap_post_processor(node: Any, old2new: dict[int, int]) -> Any:
    """Rewrite the token ids a post-processor stores (TemplateProcessing `ids`, Bert/Roberta `cls`/`sep` pairs)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "ids" and isinstance(v, list):
                out[k] = [old2new[int(i)] for i in v]
            elif k in ("cls", "sep") and isinstance(v, list) and len(v) == 2 and isinstance(v[1], int):
                out[k] = [v[0], old2new[v[1]]]
            else:
                out[k] = _remap_post_processor(v, old2new)
        return out
    if isinstance(node, list):
        return [_remap_post_processor(v, old2new) for v in node]
    return node


def pruned_tokenizer_files(tokenizer, kept_ids: Sequence[int], folder: Path) -> dict[int, int]:
    """Write the tokenizer for `kept_ids` into `folder` (tokenizer.json, vocab.txt, tokenizer_config.json, ...).

    Returns the old -> new id map.
    """
    doc, old2new = _pruned_doc(tokenizer, kept_ids)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)  # tokenizer_config.json and special-token maps
    (folder / "tokenizer.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    ordered = sorted(doc["model"]["vocab"].items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in ordered), encoding="utf-8")
    cfg_file = folder / "tokenizer_config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if isinstance(cfg.get("added_tokens_decoder"), dict):
            cfg["added_tokens_decoder"] = {str(old2new[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()
                                           if int(k) in old2new}
            cfg_file.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    return old2new


def _pruned_doc(tokenizer, kept_ids: Sequence[int]) -> tuple[dict, dict[int, int]]:
    """The tokenizer.json document for `kept_ids` (new ids in the old order) and the old -> new id map."""
    doc = _tokenizer_json(tokenizer)
    old2new = {int(old): new for new, old in enumerate(kept_ids)}
    id2tok = {i: t for t, i in doc["model"]["vocab"].items()}
    for t in doc.get("added_tokens", []):
        id2tok.setdefault(int(t["id"]), t["content"])
    missing = [i for i in kept_ids if i not in id2tok]
    if missing:
        raise TPError(f"Vocabulary plan names token ids the tokenizer does not have (e.g. {missing[:3]}).")
    new_vocab = {id2tok[old]: new for old, new in old2new.items()}
    doc["model"]["vocab"] = new_vocab
    doc["added_tokens"] = [dict(t, id=old2new[int(t["id"])]) for t in doc.get("added_tokens", [])
                           if int(t["id"]) in old2new]
    if doc.get("post_processor"):
        doc["post_processor"] = _remap_post_processor(doc["post_processor"], old2new)
    if doc.get("padding") and "pad_id" in doc["padding"]:
        doc["padding"]["pad_id"] = old2new.get(int(doc["padding"]["pad_id"]), 0)
    return doc, old2new


def prune_vocab(model, plan: VocabPlan) -> dict[int, int]:
    """Shrink `model` (a MultiTaskModel, changed in place) to `plan`'s tokens: embedding rows, config, tokenizer."""
    from transformers import AutoTokenizer

    emb = model.encoder.get_input_embeddings()
    if emb.num_embeddings < plan.original_size:
        raise TPError(f"The model's embedding matrix has {emb.num_embeddings} rows but its tokenizer knows "
                      f"{plan.original_size} tokens; was the vocabulary pruned already?")
    with tempfile.TemporaryDirectory(prefix="tp-vocab-") as tmp:
        old2new = pruned_tokenizer_files(model.tokenizer, plan.kept_ids, Path(tmp))
        tok = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)
    if len(tok) != plan.size:
        raise TPError(f"The rewritten tokenizer has {len(tok)} tokens, expected {plan.size}; vocabulary pruning is "
                      "not supported for this tokenizer.")
    index = torch.tensor(plan.kept_ids, dtype=torch.long, device=emb.weight.device)
    pad_old = model.config.pad_token_id
    pad_new = old2new.get(pad_old) if pad_old is not None else None
    new = nn.Embedding(plan.size, emb.embedding_dim, padding_idx=pad_new).to(emb.weight.device, emb.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(emb.weight.index_select(0, index))
    model.encoder.set_input_embeddings(new)
    model.config.vocab_size = plan.size
    if pad_old is not None:
        model.config.pad_token_id = pad_new
    model.tokenizer = tok
    model._fingerprint = None
    model.pruning = dict(model.pruning or {})
    if "ffn_keep" not in model.pruning:  # a dense structure: record the identity plan, as a pruned model would
        shape = model.unit_shape()
        model.pruning.update({"ffn_keep": [list(range(n)) for n in shape.ffn],
                              "heads_keep": [list(range(n)) for n in shape.heads],
                              "original_ffn": list(shape.ffn), "original_heads": list(shape.heads)})
    model.pruning["vocab"] = {"kept_tokens": plan.size, "original_tokens": plan.original_size,
                              "min_count": plan.min_count, "char_fallback_tokens": plan.n_char_fallback,
                              "general_tokens": plan.general_tokens, "general_added": plan.n_general}
    return old2new


@dataclass
class TokenStats:
    """How a tokenizer covers some texts: tokens (without specials), [UNK]s among them."""

    tokens: int
    unk: int
    examples_changed: int | None = None  # examples tokenized differently from the full vocabulary
    examples: int = 0

    @property
    def unk_share(self) -> float:
        return self.unk / self.tokens if self.tokens else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "unk_share": self.unk_share}


def token_stats(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None,
                reference=None) -> TokenStats:
    """Tokens and [UNK]s of `tokenizer` on these texts; with `reference` (the full tokenizer), also how many examples
    tokenize into different pieces than with it."""
    all_texts = _texts_of(texts, pairs)
    backend = _plain_backend(tokenizer)
    unk_id = tokenizer.unk_token_id
    encs = backend.encode_batch(all_texts, add_special_tokens=False)
    tokens = sum(len(e.ids) for e in encs)
    unk = sum(sum(1 for i in e.ids if i == unk_id) for e in encs)
    changed = None
    if reference is not None:
        ref = _plain_backend(reference).encode_batch(all_texts, add_special_tokens=False)
        changed = sum(1 for a, b in zip(encs, ref) if a.tokens != b.tokens)
    return TokenStats(tokens, unk, changed, len(all_texts))


@dataclass
class VocabReport:
    """What vocabulary pruning kept and what it cost, in domain and off-domain."""

    task: str
    kept_tokens: int
    original_tokens: int
    min_count: int
    char_fallback_tokens: int
    embedding_params_before: int
    embedding_params_after: int
    validation: dict = field(default_factory=dict)  # TokenStats.to_dict() on the task's validation texts
    metric_name: str = ""
    metric_full_vocab: float | None = None  # the (structurally pruned) model with the full vocabulary
    metric_task_vocab: float | None = None
    offdomain: dict = field(default_factory=dict)  # task -> {unk_share, metric_full_vocab, metric_task_vocab, n}
    general_tokens: int = 0  # the general set asked for, and the tokens it added beyond the task's
    general_added: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def plan_for_task(model, task: str, min_count: int = 1, extra_texts: Sequence[str] = (),
                  char_fallback: bool = True, general_tokens: int = GENERAL_TOKENS) -> VocabPlan:
    """`task_vocab` over the task's scoring split (train when it has one) of the data bundle, with the general set
    (`GENERAL_TOKENS` by default)."""
    from .data import get_task, load_split

    spec = get_task(task)
    data = load_split(spec, spec.scoring_split)
    return task_vocab(model.tokenizer, data.texts, data.pairs, min_count, extra_texts, char_fallback, general_tokens)


def embedding_params_saved(model, plan: VocabPlan) -> int:
    """Parameters that `prune_vocab(model, plan)` removes (word-embedding rows), computed without doing it; subtract
    from `pruning.kept_params` for the parameter count of a structure + vocabulary pruned model."""
    emb = model.encoder.get_input_embeddings()
    return (emb.num_embeddings - plan.size) * emb.embedding_dim


def _unk_counts(backend, texts: Sequence[str], unk: str) -> tuple[int, int]:
    """(tokens, [UNK] tokens) of `backend` over `texts`, specials left out."""
    encs = backend.encode_batch(list(texts), add_special_tokens=False)
    return sum(len(e.tokens) for e in encs), sum(t == unk for e in encs for t in e.tokens)


def texts_unk_share(tokenizer, texts: Sequence[str], kept_ids: Sequence[int] | None = None) -> dict:
    """How many of the tokens of `texts` become [UNK] with the vocabulary `kept_ids` (None: the full vocabulary),
    and with the full vocabulary beside it; `warn` when the share is above `UNK_WARN_SHARE`."""
    from tokenizers import Tokenizer

    texts = [t for t in texts if t and t.strip()]
    full = _plain_backend(tokenizer)
    unk = tokenizer.unk_token or "[UNK]"
    tokens, unk_full = _unk_counts(full, texts, unk)
    n_unk = unk_full
    if kept_ids is not None:
        kept = Tokenizer.from_str(json.dumps(_pruned_doc(tokenizer, kept_ids)[0]))
        kept.no_truncation()
        kept.no_padding()
        n_unk = _unk_counts(kept, texts, unk)[1]
    share = n_unk / tokens if tokens else 0.0
    return {"texts": len(texts), "tokens": tokens, "unk": n_unk, "unk_share": share,
            "unk_share_full": unk_full / tokens if tokens else 0.0, "vocab": "full" if kept_ids is None else "task",
            "warn": share > UNK_WARN_SHARE}


def check_texts(model, task: str, texts: Sequence[str], vocab: str = "task", min_count: int = 1,
                general_tokens: int = GENERAL_TOKENS) -> dict:
    """`texts_unk_share` of the user's texts with the vocabulary an export of `task` keeps (`vocab`, `min_count`,
    `general_tokens`; built without these texts, so the share is what texts like them meet), and `message`: one
    warning line when the share is above `UNK_WARN_SHARE`, else None."""
    check_vocab_mode(vocab)
    plan = plan_for_task(model, task, min_count, general_tokens=general_tokens) if vocab == "task" else None
    res = texts_unk_share(model.tokenizer, texts, plan.kept_ids if plan is not None else None)
    res["message"] = unk_warning(res)
    return res


def unk_warning(res: dict) -> str | None:
    """One line for a `texts_unk_share` result above the warning share, else None."""
    if not res["warn"]:
        return None
    which = "the task vocabulary" if res["vocab"] == "task" else "the model's full vocabulary"
    advice = (f"(the full vocabulary: {res['unk_share_full']:.1%}); export with the full vocabulary, or a larger "
              "general set, for texts like these" if res["vocab"] == "task" else
              "- the model does not know this script or these symbols; its predictions on such text are unreliable")
    return (f"{res['unk_share']:.1%} of the {res['tokens']:,} tokens of your {res['texts']:,} texts become [UNK] "
            f"with {which}, above {UNK_WARN_SHARE:.0%} {advice}.")


def lines_of(raw: bytes, where: str) -> list[str]:
    """The non-empty lines of an uploaded or read text file (UTF-8, a BOM allowed), or a clear error."""
    from .limits import limits

    cap = limits().max_file_mb * 1_000_000
    if len(raw) > cap:
        raise TPError(f"{where} is {len(raw) / 1e6:.0f} MB, above the {limits().max_file_mb} MB file limit.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TPError(f"{where} is not UTF-8 text (one text per line).") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
