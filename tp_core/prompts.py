"""Tasks as prompts for a causal LM: the default template, label words and demonstrations of each task of the
bundle (decoder.py renders and scores them; importing this module registers `default_prompt` as the provider that
a causal LM asks for a task it has no prompt for yet).

Defaults: the template kind (DEFAULT_TEMPLATE) and the demonstrations per label (DEFAULT_SHOTS) are chosen by
benchmarks/llm_prompts.py, measured on a held-out slice of the train split (never validation) by the rule in its
docstring; docs/RESULTS.md section 11 has the table. The label words and the hand-written templates are not chosen by
measurement.
* template: DEFAULT_TEMPLATE "task": the hand-written one of TEMPLATES where the task has one, else GENERIC
  (GENERIC_PAIR for pairs); "generic": GENERIC (GENERIC_PAIR) for every task;
* label words: per known task below, else the task's `label_names` ("_" read as a space);
* demonstrations: `shots` per label (default DEFAULT_SHOTS), drawn seeded from the train split among texts of at
  most DEMO_MAX_TOKENS tokens, in a seeded shuffled order (`demo_rows` names them). They may include examples that
  attribution also scores (both sample the train split); validation is never used.
"""
from __future__ import annotations

import random

from .data import get_task, load_split
from .decoder import PROVIDERS, PromptTask
from .errors import TPError
from .model import MultiTaskModel, TaskHeadInfo

SENTIMENT = ("Review: {text}\nSentiment:", (("negative",), ("positive",)))
YES_NO = (("no",), ("yes",))
TEMPLATES: dict[str, tuple[str, tuple[tuple[str, ...], ...] | None]] = {
    "sst2": SENTIMENT, "mr": SENTIMENT, "cr": SENTIMENT, "sentiment_sentences": SENTIMENT,
    "ag_news": ("Article: {text}\nTopic:", (("world",), ("sports",), ("business",), ("technology",))),
    "trec": ("Question: {text}\nAnswer type:", (("abbreviation",), ("entity",), ("description",), ("person",),
                                                ("location",), ("number",))),
    "cola": ("Sentence: {text}\nIs it grammatical?", YES_NO),
    "boolq": ("Passage: {pair}\nQuestion: {text}?\nAnswer:", YES_NO),
    "mrpc": ("Sentence 1: {text}\nSentence 2: {pair}\nSame meaning?", YES_NO),
    "rte": ("Premise: {text}\nHypothesis: {pair}\nDoes the premise entail the hypothesis?", (("yes",), ("no",))),
    "qnli": ("Question: {text}\nSentence: {pair}\nDoes the sentence answer the question?", (("yes",), ("no",))),
    "wnli": ("Sentence 1: {text}\nSentence 2: {pair}\nDoes sentence 1 entail sentence 2?", YES_NO),
}
GENERIC = "Text: {text}\nLabel:"
GENERIC_PAIR = "Text: {text}\nText 2: {pair}\nLabel:"
DEFAULT_TEMPLATE = "task"  # "task": TEMPLATES' hand-written template where the task has one; "generic": GENERIC always
DEFAULT_SHOTS = 2  # demonstrations per label
DEMO_MAX_TOKENS = 48  # a demonstration's text (and pair) at most this long; longer texts are never drawn


def default_prompt(model: MultiTaskModel, task: str, shots: int = DEFAULT_SHOTS, seed: int = 0,
                   template: str | None = None,
                   label_words: tuple[tuple[str, ...], ...] | None = None) -> tuple[TaskHeadInfo, PromptTask]:
    """The task info and prompt asking `task` of a causal LM (see the module docstring for the defaults)."""
    spec = get_task(task)
    if spec.problem != "classification":
        raise TPError(f"{task} is a {spec.problem} task: a causal LM scores classification tasks only.")
    known_template, known_words = TEMPLATES.get(task, (None, None))
    generic = generic_template(task)
    if DEFAULT_TEMPLATE == "generic":
        known_template = None
    words = label_words or known_words or tuple((n.replace("_", " "),) for n in spec.label_names)
    prompt = PromptTask(template or known_template or generic, tuple(tuple(w) for w in words)).validate()
    demos = draw_demos(model, task, shots, seed) if shots > 0 else ()
    info = TaskHeadInfo(name=task, label_names=spec.label_names, metric=spec.metric)
    return info, PromptTask(prompt.template, prompt.label_words, demos, prompt.separator)


def generic_template(task: str) -> str:
    """The template of a task without a hand-written one (GENERIC, or GENERIC_PAIR for a pair task)."""
    return GENERIC_PAIR if get_task(task).kind == "pair" else GENERIC


def draw_demos(model: MultiTaskModel, task: str, shots: int, seed: int) -> tuple[tuple[str, str | None, int], ...]:
    """`shots` demonstrations per label from the train split (seeded), short texts only, in a seeded order."""
    data = load_split(get_task(task), "train")
    return tuple((data.texts[i], None if data.pairs is None else data.pairs[i], int(data.labels[i]))
                 for i in demo_rows(model, task, shots, seed))


def demo_rows(model: MultiTaskModel, task: str, shots: int, seed: int) -> list[int]:
    """Indices into the train split of the demonstrations `draw_demos` renders, in their order (a benchmark keeps
    its held-out examples apart from them)."""
    spec = get_task(task)
    if not spec.trainable:
        raise TPError(f"{task} has no train split to draw demonstrations from: use shots=0.")
    data = load_split(spec, "train")
    tok = model.tokenizer
    rng = random.Random(seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    picked: dict[int, list[int]] = {y: [] for y in range(spec.num_labels)}
    for i in order:
        y = int(data.labels[i])
        if len(picked[y]) >= shots or len(tok(data.texts[i], add_special_tokens=False)["input_ids"]) > DEMO_MAX_TOKENS:
            continue
        if data.pairs is not None and len(tok(data.pairs[i], add_special_tokens=False)["input_ids"]) > DEMO_MAX_TOKENS:
            continue
        picked[y].append(i)
        if all(len(v) >= shots for v in picked.values()):
            break
    chosen = [i for v in picked.values() for i in v]
    rng.shuffle(chosen)
    return chosen


def _provide(model: MultiTaskModel, task: str):
    return default_prompt(model, task)


if _provide not in PROVIDERS:
    PROVIDERS.append(_provide)
