"""The Model page's prompt editor for a causal LM: how a task is asked (template, label words, demonstrations per
label), edited for this session only. An edited prompt is checked the way tp_core checks prompts before it is used
(a friendly message, never a traceback); the session's model then asks it (models.session_model), and since every
cache and job key carries the prompt (decoder.prompt_key, ModelRef.prompts), its scores and curves are its own."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from tp_core.decoder import PromptTask, label_rows
from tp_core.errors import TPError

from .models import head_for, load_model, prompt_edits, set_prompt_edit, validation_data
from .page import friendly

MAX_SHOTS = 8  # demonstrations per label the editor offers (each adds a whole example to every prompt)


@dataclass(frozen=True)
class PromptForm:
    """What the editor's fields hold: the template, each label's words (comma-separated) and the demonstrations
    per label."""

    template: str
    label_words: tuple[str, ...]
    shots: int

    @staticmethod
    def of(prompt: PromptTask) -> PromptForm:
        per_label = len(prompt.demos) // max(1, len(prompt.label_words))
        return PromptForm(prompt.template, tuple(", ".join(ws) for ws in prompt.label_words), per_label)

    def words(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(w.strip() for w in line.split(",") if w.strip()) for line in self.label_words)


def prompt_from_form(model, task: str, form: PromptForm) -> PromptTask:
    """The prompt a filled-in form asks for, demonstrations drawn as for the default prompt (seeded, train split).
    Raises TPError for a template without {text} or with unknown slots, a label without words, label words that
    are not single tokens or that two labels share, or a prompt longer than the model's context."""
    from tp_core.prompts import default_prompt

    if not 0 <= int(form.shots) <= MAX_SHOTS:
        raise TPError(f"Demonstrations per label must be between 0 and {MAX_SHOTS}.")
    PromptTask(form.template, form.words()).validate()  # the template and words first: before any demo is drawn
    _, prompt = default_prompt(model, task, shots=int(form.shots), template=form.template, label_words=form.words())
    label_rows(model.tokenizer, prompt)
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    length = len(model.tokenizer(prompt.render("x"))["input_ids"])
    if context and length >= context:
        raise TPError(f"With its demonstrations the prompt has {length} tokens before the example's text, the "
                      f"model's context is {context}: use fewer demonstrations or a shorter template.")
    return prompt


def apply_form(spec: str, task: str, form: PromptForm) -> bool:
    """Check the form's prompt and make it the session's prompt for `task` (the default prompt: no edit kept).
    Returns whether the prompt was accepted; a refused one shows its message."""
    base = load_model(spec)
    with friendly("checking the prompt"):
        prompt = prompt_from_form(base, task, form)
        default = base.prompts[base.resolve_task(task)]
        set_prompt_edit(spec, task, None if prompt == default else prompt.to_dict())
        return True
    return False


def show_prompt_editor(model, spec: str, app_task: str) -> None:
    """The current task's prompt (the session's, else the default), a sample rendered prompt, and the form that
    edits it (uploaded data is asked through the prompt of the task the user picked for it)."""
    task = head_for(app_task)
    prompt = model.prompts[model.resolve_task(task)]
    edited = task in prompt_edits(spec)
    labels = model.task_info(task).label_names
    st.subheader(f"Prompt for {task}")
    st.caption(("Edited in this session: every page uses this prompt for the task, with scores and curves of its "
                "own. " if edited else "The default prompt. ") +
               "A causal LM has no task heads: each label is scored by its label words' next-token logits after the "
               "prompt (only those rows of the output embedding are used); k demonstrations per label, drawn "
               "seeded from the train split, come first.")
    current = PromptForm.of(prompt)
    slot = f"{spec}::{task}::{hash(current)}"  # new fields when the prompt changes (an apply or a reset)
    with st.form(key=f"prompt_form::{task}"):
        template = st.text_area("Template", current.template, key=f"pt_template::{slot}", height=90,
                                help="{text} is replaced by the example's text ({pair} by its second text, for pair "
                                     "tasks). The label word follows the template after a space.")
        cols = st.columns(min(3, len(labels)))
        words = tuple(cols[i % len(cols)].text_input(f"Label words: {name}", current.label_words[i],
                                                     key=f"pt_words::{slot}::{i}",
                                                     help="One or more words, comma-separated; each must be a single "
                                                          "token after a space, and no two labels may share one.")
                      for i, name in enumerate(labels))
        shots = st.number_input("Demonstrations per label", 0, MAX_SHOTS, current.shots, key=f"pt_shots::{slot}",
                                help="Examples with their answers before the query (seeded, from the train split): "
                                     "more is usually more accurate and always slower.")
        applied = st.form_submit_button("Apply this prompt", type="primary")
    if applied and apply_form(spec, task, PromptForm(template, words, int(shots))):
        st.rerun()
    if edited and st.button("Back to the default prompt", key=f"pt_reset::{task}", icon=":material/undo:"):
        set_prompt_edit(spec, task, None)
        st.rerun()
    with st.expander("What the model reads for one validation example"):
        with friendly("rendering the prompt"):
            data = validation_data(app_task, 20)
            st.code(prompt.render(data.texts[0], None if data.pairs is None else data.pairs[0]), language=None)
