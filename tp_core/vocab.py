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
unknown piece (in BERT's WordPiece: the whole word becomes [UNK]).

Byte-level BPE (the causal LMs: Llama 3, Qwen, SmolLM, GPT-2; or BPE with byte fallback: Llama 2, Mistral) keeps, beside
the counted tokens, every byte piece and every token a kept token is merged from (`_merge_closure`), and only the
merges whose parts and result are all kept. A word whose original merges built only kept tokens gets the same merges
in the same order (each step's highest-ranked applicable merge is still there, and no new merge was added), so its
tokens are the same; any other text still tokenizes, into smaller kept pieces down to single bytes: there is no
[UNK]. For a causal LM the counted texts are the task's prompts as the model renders them (template,
demonstrations, label words). Unigram vocabularies are not supported.
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
    """`mode` once it applies to `model`: "task" needs a tokenizer whose vocabulary can be cut (WordPiece, or
    byte-level BPE), so anything else is refused before an export starts."""
    check_vocab_mode(mode)
    if mode == "task":
        _tokenizer_json(model.tokenizer)
    return mode


def _has_type(node: Any, kind: str) -> bool:
    """Whether a tokenizer.json component (or a Sequence of them, nested) has a part of type `kind`."""
    if isinstance(node, dict):
        return node.get("type") == kind or any(_has_type(v, kind) for v in node.values())
    return isinstance(node, list) and any(_has_type(v, kind) for v in node)


def _byte_bpe(doc: dict) -> bool:
    """A BPE tokenizer that can spell any text from byte pieces (ByteLevel pre-tokenizer, or byte fallback)."""
    model = doc.get("model") or {}
    return model.get("type") == "BPE" and (bool(model.get("byte_fallback"))
                                           or _has_type(doc.get("pre_tokenizer"), "ByteLevel"))


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        raise TPError("Vocabulary pruning needs a fast (Rust `tokenizers`) tokenizer; this model's tokenizer has none.")
    doc = json.loads(backend.to_str())
    kind = (doc.get("model") or {}).get("type")
    if kind != "WordPiece" and not _byte_bpe(doc):
        raise TPError(f"Vocabulary pruning supports WordPiece tokenizers (BERT, DistilBERT, ELECTRA, MiniLM) and "
                      f"byte-level BPE (Llama, Qwen, Mistral, SmolLM, GPT-2); this model's tokenizer is "
                      f"{kind or 'of an unknown type'}{' without byte pieces' if kind == 'BPE' else ''}. "
                      "Use --vocab full.")
    return doc


def vocab_kind(model) -> str | None:
    """How `model`'s vocabulary can be cut: "wordpiece" (unknown words become [UNK]), "bpe" (byte-level: unknown
    words split into smaller kept pieces) or None (not supported: the task vocabulary is not offered). Reads the Rust
    tokenizer's model and pre-tokenizer only (a page asks on every run; the whole tokenizer.json is megabytes)."""
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    kind = type(getattr(backend, "model", None)).__name__
    if kind == "WordPiece":
        return "wordpiece"
    if kind != "BPE":
        return None
    pre = backend.pre_tokenizer
    byte_level = backend.model.byte_fallback or (pre is not None and _has_type(json.loads(pre.__getstate__()),
                                                                                  "ByteLevel"))
    return "bpe" if byte_level else None


def _merges(doc: dict) -> list[tuple[str, str]]:
    """A BPE model's merges as pairs, in rank order (tokenizer.json writes "a b" strings or [a, b] lists)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in doc["model"].get("merges", [])]


def _byte_pieces(doc: dict) -> set[int]:
    """The ids of a byte-level BPE's single-byte pieces (the ByteLevel alphabet, or the <0xNN> fallback tokens)."""
    from tokenizers import pre_tokenizers

    vocab = doc["model"]["vocab"]
    pieces = ([f"<0x{b:02X}>" for b in range(256)] if doc["model"].get("byte_fallback")
              else pre_tokenizers.ByteLevel.alphabet())
    return {vocab[p] for p in pieces if p in vocab}


def _merge_closure(doc: dict, kept: set[int]) -> set[int]:
    """`kept` plus every token a kept token is merged from, recursively (by its highest-ranked merge), so that the
    merges left after pruning still build each kept token."""
    vocab = doc["model"]["vocab"]
    made: dict[str, tuple[str, str]] = {}
    for a, b in _merges(doc):
        made.setdefault(a + b, (a, b))
    id2tok = {i: t for t, i in vocab.items()}
    out, todo = set(kept), list(kept)
    while todo:
        for part in made.get(id2tok.get(todo.pop(), ""), ()):
            j = vocab.get(part)
            if j is not None and j not in out:
                out.add(j)
                todo.append(j)
    return out


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
    n_char_fallback: int  # single-character (byte-level BPE: single-byte) pieces added for fallback
    extra_texts: int = 0
    general_tokens: int = 0  # the size of the general set asked for
    n_general: int = 0  # general-set tokens kept that the task's texts did not bring
    n_merge_parts: int = 0  # byte-level BPE: tokens kept because a kept token is merged from them

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
               extra_texts: Sequence[str] = (), char_fallback: bool = True, general_tokens: int = 0,
               must_keep: Sequence[int] = ()) -> VocabPlan:
    """The tokens to keep for these texts: seen >= `min_count` times, specials, `must_keep`, (optionally) character
    pieces (byte-level BPE: its byte pieces, always), and the `general_tokens` most frequent tokens of the bundle
    (`general_ranking`), so that text from domains the task never saw loses fewer words to [UNK] (BPE: is split
    into fewer pieces); a byte-level BPE also keeps what its kept tokens are merged from."""
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
    kept = {i for i, c in counts.items() if c >= min_count} | specials | {int(i) for i in must_keep}
    n_chars = 0
    bpe = doc["model"]["type"] == "BPE"
    if bpe:
        pieces = _byte_pieces(doc)
        n_chars = len(pieces - kept)
        kept |= pieces
    elif char_fallback:
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
    chosen = kept | general
    closed = _merge_closure(doc, chosen) if bpe else chosen
    size = max(vocab.values()) + 1 if vocab else 0
    size = max(size, max(specials) + 1 if specials else 0)
    return VocabPlan(sorted(closed), size, min_count, len(all_texts), len(counts), len(specials), n_chars,
                     len([t for t in extra_texts if t]), general_tokens, len(general), len(closed - chosen))


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
    if doc["model"]["type"] == "BPE":  # only merges among kept tokens (_merge_closure kept the parts of each)
        doc["model"]["merges"] = [[a, b] for a, b in _merges(doc)
                                  if a in new_vocab and b in new_vocab and a + b in new_vocab]
    return doc, old2new


def _remap_special_ids(config, old2new: dict[int, int]) -> None:
    """The pad/bos/eos token ids of a (generation) config mapped to the new ids (None where the token is gone)."""
    if config is None:
        return
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        old = getattr(config, name, None)
        if isinstance(old, int):
            setattr(config, name, old2new.get(old))
        elif isinstance(old, list):
            setattr(config, name, [old2new[i] for i in old if i in old2new] or None)


def _new_output_embeddings(lm, index: torch.Tensor, new: nn.Embedding) -> None:
    """A causal LM's output embedding cut to the kept rows: tied to the new input embedding when it was tied."""
    out = lm.get_output_embeddings()
    if out is None:
        return
    bias = getattr(out, "bias", None)
    head = nn.Linear(out.weight.shape[1], len(index), bias=bias is not None).to(out.weight.device, out.weight.dtype)
    with torch.no_grad():
        if out.weight is lm.get_input_embeddings().weight or getattr(lm.config, "tie_word_embeddings", False):
            head.weight = new.weight
        else:
            head.weight.copy_(out.weight.index_select(0, index))
        if bias is not None:
            head.bias.copy_(bias.index_select(0, index))
    lm.set_output_embeddings(head)


def _relabel_prompts(model) -> list[str]:
    """A causal LM's label rows found again in its new tokenizer; a task whose label words are no longer single
    tokens there is dropped (it cannot be asked with this vocabulary). Returns the dropped tasks."""
    from .decoder import label_rows

    dropped = []
    for name, prompt in list(model.prompts.items()):
        try:
            ids, labels = label_rows(model.tokenizer, prompt)
        except TPError:
            dropped.append(name)
            for table in (model.prompts, model.label_rows, model.tasks):
                table.pop(name, None)
            continue
        model.label_rows[name] = (torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))
    return dropped


def prune_vocab(model, plan: VocabPlan) -> dict[int, int]:
    """Shrink `model` (a MultiTaskModel, changed in place) to `plan`'s tokens: embedding rows (a causal LM's output
    embedding too), config, tokenizer (a causal LM's label rows found again in it)."""
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
    causal = getattr(model, "kind", None) == "causal_lm"
    if causal:
        _new_output_embeddings(model.encoder, index, new)
    model.encoder.set_input_embeddings(new)
    model.config.vocab_size = plan.size
    if causal:
        _remap_special_ids(model.config, old2new)
        _remap_special_ids(getattr(model.encoder, "generation_config", None), old2new)
    elif pad_old is not None:
        model.config.pad_token_id = pad_new
    model.tokenizer = tok
    dropped = _relabel_prompts(model) if causal else []
    model._fingerprint = None
    model.pruning = dict(model.pruning or {})
    if "ffn_keep" not in model.pruning:  # a dense structure: record the identity plan, as a pruned model would
        shape = model.unit_shape()
        model.pruning.update({"ffn_keep": [list(range(n)) for n in shape.ffn],
                              "heads_keep": [list(range(n)) for n in shape.heads],
                              "original_ffn": list(shape.ffn), "original_heads": list(shape.heads)})
    model.pruning["vocab"] = {"kept_tokens": plan.size, "original_tokens": plan.original_size,
                              "min_count": plan.min_count, "char_fallback_tokens": plan.n_char_fallback,
                              "general_tokens": plan.general_tokens, "general_added": plan.n_general,
                              "merge_parts": plan.n_merge_parts, **({"dropped_tasks": dropped} if dropped else {})}
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
    (`GENERAL_TOKENS` by default); for a causal LM over the task's prompts as it renders them, its label words kept."""
    from .data import get_task, load_split

    spec = get_task(task)
    data = load_split(spec, spec.scoring_split)
    if getattr(model, "kind", None) != "causal_lm":
        return task_vocab(model.tokenizer, data.texts, data.pairs, min_count, extra_texts, char_fallback,
                          general_tokens)
    from .decoder import label_rows, resolve

    prompt = model.prompts[resolve(model, task)]
    rendered = [prompt.render(t, None if data.pairs is None else data.pairs[i]) for i, t in enumerate(data.texts)]
    return task_vocab(model.tokenizer, rendered, None, min_count, extra_texts, char_fallback, general_tokens,
                      must_keep=label_rows(model.tokenizer, prompt)[0])


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
    n_unk, n_kept = unk_full, tokens
    if kept_ids is not None:
        kept = Tokenizer.from_str(json.dumps(_pruned_doc(tokenizer, kept_ids)[0]))
        kept.no_truncation()
        kept.no_padding()
        n_kept, n_unk = _unk_counts(kept, texts, unk)
    share = n_unk / tokens if tokens else 0.0
    return {"texts": len(texts), "tokens": tokens, "unk": n_unk, "unk_share": share,
            "unk_share_full": unk_full / tokens if tokens else 0.0, "vocab": "full" if kept_ids is None else "task",
            "warn": share > UNK_WARN_SHARE, "tokens_kept_vocab": n_kept}


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
