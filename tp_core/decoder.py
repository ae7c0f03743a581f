"""A decoder LLM as a task model: a task is a prompt plus a verbalizer, its logits are the label words' next-token
logits (below `model`: `MultiTaskModel` calls these for `kind="causal_lm"`; `prompts.py` builds the default prompts
from the task bundle, `llm_load.py` loads the weights).

* `PromptTask`: a template with a `{text}` slot (and `{pair}` for pair tasks), one or more label words per label and
  k demonstrations, each rendered with the template followed by its label's first word.
* The scoring position is the last real token of the prompt. Batches are right-padded (`MultiTaskModel.batches`), so
  under the causal mask a real token never sees padding: every prompt is computed exactly as if it were alone, and
  its last real token is at `attention_mask.sum(1) - 1`.
* A label word is scored by its token: " " + word must be exactly one token (the answer follows the template's cue
  after a space; a word of several tokens, or two labels with the same token, is refused); a label with several
  words scores the logsumexp of their logits. Only the label words' rows of the output embedding are used: softmax
  over the labels of these logits equals the label words' next-token probabilities renormalised over the labels
  (the full-vocabulary normaliser cancels), so nothing else is needed.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .errors import TPError

SLOTS = ("text", "pair")


@dataclass(frozen=True)
class PromptTask:
    """How one classification task is asked of a causal LM."""

    template: str
    label_words: tuple[tuple[str, ...], ...]  # per label, in label order
    demos: tuple[tuple[str, str | None, int], ...] = ()  # (text, pair, label) demonstrations, rendered in order
    separator: str = "\n\n"  # between demonstrations and before the query

    def validate(self) -> PromptTask:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        except ValueError as exc:
            raise TPError(f"The prompt template is not valid ({exc}): write {{text}} where the text goes and "
                          "double other braces ({{ }}).") from None
        if "text" not in fields:
            raise TPError("The prompt template has no {text} slot: write {text} where the example's text goes.")
        bad = sorted(set(fields) - set(SLOTS))
        if bad:
            raise TPError(f"The prompt template has unknown slots {', '.join('{' + b + '}' for b in bad)}: "
                          "only {text} and {pair} are filled in.")
        if not self.label_words or any(not ws or any(not w.strip() for w in ws) for ws in self.label_words):
            raise TPError("Every label needs at least one non-empty label word.")
        return self

    def query(self, text: str, pair: str | None = None) -> str:
        """The template filled with one example (no answer)."""
        return self.template.format(text=text, pair=pair or "")

    def render(self, text: str, pair: str | None = None) -> str:
        """The full prompt: the demonstrations, each followed by its first label word, then the query."""
        shots = [f"{self.query(t, p)} {self.label_words[y][0]}" for t, p, y in self.demos]
        return self.separator.join(shots + [self.query(text, pair)])

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> PromptTask:
        try:
            return PromptTask(template=str(d["template"]),
                              label_words=tuple(tuple(str(w) for w in ws) for ws in d["label_words"]),
                              demos=tuple((str(t), None if p is None else str(p), int(y)) for t, p, y in d["demos"]),
                              separator=str(d.get("separator", "\n\n"))).validate()
        except (KeyError, TypeError, ValueError):
            raise TPError("A prompt in the model's manifest is malformed (template, label_words, demos).") from None


def label_rows(tokenizer: Any, prompt: PromptTask) -> tuple[list[int], list[int]]:
    """(token id, label) for every label word: the single token of " " + word. A word of several tokens is refused
    (its first token alone would score another word: " sci" for " sci-fi"), and so are two labels sharing a token."""
    ids, labels, owner = [], [], {}
    for y, words in enumerate(prompt.label_words):
        for w in words:
            toks = tokenizer(" " + w.strip(), add_special_tokens=False)["input_ids"]
            if len(toks) != 1:
                pieces = ", ".join(repr(x) for x in tokenizer.convert_ids_to_tokens([int(t) for t in toks]))
                raise TPError(f"The label word {w!r} (label {y}) is {len(toks)} tokens [{pieces}], not one: choose "
                              "a label word that is a single token after a space.")
            t = int(toks[0])
            if owner.get(t, y) != y:
                raise TPError(f"The label words {prompt.label_words[owner[t]][0]!r} (label {owner[t]}) and {w!r} "
                              f"(label {y}) are the same token ({tokenizer.convert_ids_to_tokens(t)!r}): choose "
                              "different words.")
            owner[t] = y
            if t not in ids:
                ids.append(t)
                labels.append(y)
    return ids, labels


def _clip(tokenizer: Any, text: str, max_tokens: int) -> str:
    """`text` cut after its first `max_tokens` tokens (the encoder path truncates its input the same way)."""
    if not text or not getattr(tokenizer, "is_fast", False):
        return text
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    return text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]


def encode_prompts(tokenizer: Any, prompt: PromptTask, texts: Sequence[str], pairs: Sequence[str] | None,
                   max_length: int, context: int) -> dict:
    """Token ids of the rendered prompts (no padding). Each example's text (and pair) is clipped to `max_length`
    tokens, the template and demonstrations never are; a prompt longer than the model's `context` is an error."""
    rendered = [prompt.render(_clip(tokenizer, t, max_length),
                              None if pairs is None else _clip(tokenizer, pairs[i], max_length))
                for i, t in enumerate(texts)]
    enc = tokenizer(rendered, padding=False, truncation=False)
    longest = max((len(x) for x in enc["input_ids"]), default=0)
    if longest > context:
        raise TPError(f"A prompt has {longest} tokens, more than the model's context of {context}: use fewer "
                      "demonstrations or a shorter template.")
    return enc


def label_logits(lm: torch.nn.Module, seq: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                 labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(B, num_labels) task logits from the final (normed) hidden states `seq` (B, T, H) of right-padded prompts:
    the output embedding's `rows` (the label words' tokens) applied at each prompt's last real token, and per label
    the logsumexp over its words (the logit itself for a one-word label)."""
    last = attention_mask.sum(1).long() - 1
    h = seq[torch.arange(seq.shape[0], device=seq.device), last]
    out = lm.get_output_embeddings()
    words = h @ out.weight.index_select(0, rows).T
    if getattr(out, "bias", None) is not None:
        words = words + out.bias.index_select(0, rows)
    if len(rows) == num_labels:  # one word per label, in label order
        return words
    return torch.stack([words[:, labels == y].logsumexp(-1) for y in range(num_labels)], -1)


# Fewest shared first tokens for which `shared_prefix_logits` computes them once (below it the plain forward runs).
MIN_SHARED_PREFIX = 8


def shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many first tokens every row of a right-padded batch has in common (real tokens, the same ids), leaving
    each row at least one token of its own: the demonstrations and the template's opening that every prompt of a
    task starts with."""
    lengths = attention_mask.sum(1)
    limit = int(lengths.min()) - 1
    if input_ids.shape[0] < 2 or limit <= 0:
        return 0
    same = (input_ids[:, :limit] == input_ids[:1, :limit]).all(0)
    differ = (~same).nonzero()
    return int(differ[0, 0]) if len(differ) else limit


def shared_prefix_logits(model, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Task logits of a right-padded batch of prompts, with the keys and values of the first tokens they all share
    (`shared_prefix`) computed once, for one row, and every row's own tokens run on top of them. Under the causal
    mask a token sees the same keys and values either way, so the logits are the full forward's (float rounding;
    a test holds them equal at 1e-4, with gates and on sliced copies too, since gates act per token); each prompt's
    demonstrations then cost one row per batch instead of one per example. Falls back to the plain forward when
    fewer than MIN_SHARED_PREFIX tokens are shared."""
    P = shared_prefix(input_ids, attention_mask)
    if P < MIN_SHARED_PREFIX:
        return model(input_ids=input_ids, attention_mask=attention_mask, task=task)
    rows, width = input_ids.shape
    head = input_ids[:1, :P]
    name = _cache_argument(model.base)
    out = model.base(input_ids=head, attention_mask=torch.ones_like(head), use_cache=True)
    past = getattr(out, name)
    past.batch_repeat_interleave(rows)
    positions = torch.arange(P, width, device=input_ids.device)[None].expand(rows, -1)
    seq = model.base(input_ids=input_ids[:, P:], attention_mask=attention_mask, position_ids=positions,
                     use_cache=True, **{name: past}).last_hidden_state
    return model.head_logits(task, seq, attention_mask[:, P:])


def _cache_argument(base: torch.nn.Module) -> str:
    """The name a decoder's forward takes its key/value cache by and returns it under: `cache` in recent
    transformers 5 releases, `past_key_values` before."""
    return _cache_argument_of(type(base))


@functools.cache
def _cache_argument_of(cls: type) -> str:  # once per model class, not per batch
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def own_tokens(model, task: str, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int = 128) -> float:
    """Mean tokens per rendered prompt of these examples beyond the first tokens all of them share: what
    `shared_prefix_logits` computes per example (the shared part runs once per batch)."""
    ids = encode(model, task, texts, pairs, max_length)["input_ids"]
    if not ids:
        return 0.0
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return sum(len(x) for x in ids) / len(ids) - shared_prefix(input_ids, mask)


# ----- what `MultiTaskModel` calls for kind="causal_lm" ----------------------------------------------------------
# fn(model, task) -> (TaskHeadInfo, PromptTask) or None: where a task without a prompt gets its default one
# (prompts.py registers the task bundle's; tp_core/__init__ imports it)
PROVIDERS: list = []


def attach_prompt(model, info, prompt: PromptTask) -> None:
    """Ask `model` task `info.name` through `prompt` (replaces an earlier prompt for that task)."""
    prompt.validate()
    if len(prompt.label_words) != len(info.label_names):
        raise TPError(f"The prompt for {info.name} has label words for {len(prompt.label_words)} labels, the task "
                      f"has {len(info.label_names)}.")
    ids, labels = label_rows(model.tokenizer, prompt)
    model.tasks[info.name] = info
    model.prompts[info.name] = prompt
    model.label_rows[info.name] = (torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))


def resolve(model, task: str) -> str:
    """`task` once it has a prompt (the default one from PROVIDERS when it had none)."""
    if task not in model.prompts:
        for provide in PROVIDERS:
            found = provide(model, task)
            if found is not None:
                attach_prompt(model, *found)
                break
    if task not in model.prompts:
        raise TPError(f"The causal LM has no prompt for task {task!r}"
                      f"{'; its prompted tasks are: ' + ', '.join(model.prompts) if model.prompts else ''}.")
    return task


def task_logits(model, task: str, seq: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    rows, labels = model.label_rows[resolve(model, task)]
    return label_logits(model.encoder, seq, attention_mask, rows.to(seq.device), labels.to(seq.device),
                        len(model.tasks[task].label_names))


def encode(model, task: str | None, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> dict:
    if task is None:
        raise TPError("A causal LM needs the task to build its prompts (batches(..., task=...)).")
    context = int(getattr(model.config, "max_position_embeddings", 0) or 10 ** 9)
    return encode_prompts(model.tokenizer, model.prompts[resolve(model, task)], texts, pairs, max_length, context)


# ----- identities for caches and job keys (attribution.cache_key, work.point, refs.ModelRef) -----------------------
def prompt_key(model, task: str) -> str:
    """The identity of how `task` is asked of `model`: the canonical JSON of its prompt (template, label words,
    demonstrations, separator) for a causal LM, "" for any other model (their cache keys stay as they were).
    Every cache of results by model and task adds it, so an edited prompt never reuses another prompt's results."""
    if getattr(model, "kind", None) != "causal_lm":
        return ""
    return json.dumps(model.prompts[resolve(model, task)].to_dict(), sort_keys=True)


def prompts_key(model, tasks: Sequence[str] | None = None) -> str:
    """The prompts a causal LM has now, {task: prompt} as canonical JSON ("" for any other model): `ModelRef`
    carries it, so job keys differ per prompt and a worker's own copy of the model asks the same prompts. With
    `tasks`, only theirs (each resolved first): a job's key then does not change when other tasks get a prompt."""
    if getattr(model, "kind", None) != "causal_lm":
        return ""
    names = sorted(model.prompts) if tasks is None else sorted({resolve(model, t) for t in tasks})
    if not names:
        return ""
    return json.dumps({k: model.prompts[k].to_dict() for k in names}, sort_keys=True)


def prompt_view(model, prompts: dict[str, PromptTask]):
    """`model` asking `prompts` (task -> prompt) without changing `model`: a shallow copy sharing its modules and
    weights, with its own tasks, prompts and label rows. Sessions or jobs that ask different prompts of one loaded
    model each use their own view, so none of them changes the prompt another one is computing with."""
    view = copy.copy(model)
    view.tasks, view.prompts, view.label_rows = dict(model.tasks), dict(model.prompts), dict(model.label_rows)
    for task, prompt in prompts.items():
        if view.prompts.get(task) != prompt:
            attach_prompt(view, view.tasks[resolve(view, task)], prompt)
    return view
