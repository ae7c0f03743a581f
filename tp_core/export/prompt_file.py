"""A causal LM's task, written beside its exported files: `prompt.json` (the prompt of `decoder.PromptTask` plus
the label words' token ids) and `render_prompts`, the stdlib-only function that turns texts into the prompts the
exported model scores (the model card prints its source, so a deployment needs neither torch nor tp_core).

How an exported decoder scores a task (as `tp_core.decoder` does in torch): each example's text (and pair) is cut
after its first `max_text_tokens` tokens, filled into the template after the demonstrations (each followed by its
label's first word), tokenized with the export's tokenizer (special tokens as it adds them) and right-padded; the
task logits are the label words' next-token logits at the last real token (`attention_mask.sum(1) - 1`), a label
with several words scoring the logsumexp of its words' logits.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROMPT_FILE = "prompt.json"
MAX_TEXT_TOKENS = 128  # evaluation's max_length: each example's text is clipped to it, the template never is
SCORING = ("render each example with render_prompts (the model card prints it), tokenize with the export's "
           "tokenizer (special tokens as it adds them), right-pad; task logits = the label words' next-token logits "
           "at the last real token (attention_mask.sum(1) - 1), logsumexp over the words of a label")


def render_prompts(prompt: dict, tokenizer, texts, pairs=None, max_text_tokens: int = 128) -> list:
    """The prompts of `texts` (and `pairs`) for a causal-LM export's `prompt` (prompt.json as a dict), using only
    the Python standard library and `tokenizer` (a `tokenizers.Tokenizer`, for cutting each text after its first
    `max_text_tokens` tokens): the demonstrations, each followed by its label's first word, then the query."""

    def clip(text):
        if not text:
            return text
        offsets = tokenizer.encode(text, add_special_tokens=False).offsets
        return text if len(offsets) <= max_text_tokens else text[: offsets[max_text_tokens - 1][1]]

    def query(text, pair):
        return prompt["template"].format(text=text, pair=pair or "")

    shots = [query(t, p) + " " + prompt["label_words"][y][0] for t, p, y in prompt["demos"]]
    return [prompt["separator"].join(shots + [query(clip(t), None if pairs is None else clip(pairs[i]))])
            for i, t in enumerate(texts)]


def prompt_dict(small, task: str) -> dict:
    """What `prompt.json` holds for `task` of the causal LM `small`: the prompt (template, label words,
    demonstrations, separator), the label names, the label words' token ids with the label of each, and how
    scoring works."""
    name = small.resolve_task(task)
    rows, labels = small.label_rows[name]
    return {"task": name, "labels": list(small.tasks[name].label_names), **small.prompts[name].to_dict(),
            "label_token_ids": [int(i) for i in rows], "label_of_token": [int(y) for y in labels],
            "max_text_tokens": MAX_TEXT_TOKENS, "scoring": SCORING}


def write_prompt_json(small, task: str, folder: Path) -> Path:
    path = Path(folder) / PROMPT_FILE
    path.write_text(json.dumps(prompt_dict(small, task), indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def read_prompt_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def standalone_tokenizer(source) -> object:
    """A `tokenizers.Tokenizer` copy of `source` (a tokenizer.json path or a transformers fast tokenizer) that
    neither truncates nor pads: what `render_prompts` clips texts with."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(source)) if isinstance(source, (str, Path)) else \
        Tokenizer.from_str(source.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def label_scores(word_logits: np.ndarray, prompt: dict) -> np.ndarray:
    """(batch, n_labels) task logits from the label words' logits (batch, k) in `label_token_ids` order: a label's
    logit is the logsumexp of its words' (`decoder.label_logits` in numpy)."""
    of = np.asarray(prompt["label_of_token"])
    if len(of) == len(prompt["labels"]):
        return word_logits
    cols = []
    for y in range(len(prompt["labels"])):
        w = word_logits[:, of == y].astype(np.float64)
        m = w.max(-1, keepdims=True)
        cols.append((m + np.log(np.exp(w - m).sum(-1, keepdims=True)))[:, 0])
    return np.stack(cols, -1).astype(word_logits.dtype)
