"""Export page: write the pruned model in the chosen formats (TaskPrune folder, ONNX, ONNX int8, plain Hugging
Face folder), optionally with the task's vocabulary only; check and measure every format; download one zip. It opens
on the "deploy" preset (tp_app.export_preset: the budget helper's split, lstsq recovery, the task vocabulary, ONNX
int8 and the Hugging Face folder); "custom" opens every choice. The work is two background jobs
(tp_core.work_export): the files (the export is ready to download when they are written), then their checks, which
fill the tables in; the tables come from tp_app.export_tables.summary_tables."""
from dataclasses import replace
from pathlib import Path

import pandas as pd
import streamlit as st

from tp_app import common as C
from tp_app.task_flags import near_majority_tasks, warn_near_majority
from tp_app import export_preset as P
from tp_app.export_tables import FORMAT_HELP, FORMAT_LABELS, summary_tables, vocab_texts_check
from tp_core.errors import TPError
from tp_core.export import FORMATS, planned_counts, related_tasks, safe_export_dir
from tp_core.masks import PruneConfig, units_for
from tp_core.policy import PRIORITY
from tp_core.vocab import vocab_kind
from tp_core.work import vocab_estimate_job
from tp_core.work_export import export_check_job, export_formats_job


def custom_choices(llm: bool, cuttable: bool) -> tuple[list[str], str, int, bool]:
    """The custom preset's formats, vocabulary (offered when the tokenizer's can be cut), minimum token count and
    latency choice."""
    left, right = st.columns(2)
    with left:
        formats = C.persisted(st.multiselect, "Formats", "export_formats", options=list(FORMATS),
                              format_func=lambda f: FORMAT_LABELS[f],
                              help="\n".join(f"- **{FORMAT_LABELS[f]}**: {FORMAT_HELP[f]}" for f in FORMATS))
    if not cuttable:  # the task vocabulary rewrites a WordPiece or byte-level BPE vocabulary only
        ss["export_vocab"] = "full"
        ss.pop("w_export_vocab", None)
    with right:
        vocab = C.persisted(st.radio, "Vocabulary", "export_vocab", options=["full", "task"], horizontal=True,
                            disabled=not cuttable, format_func=lambda v: {"full": "full (all tokens)",
                                                                 "task": "task (the task's tokens + a general set)"}[v],
                            help="task: keep the tokens seen in the task's train texts, the most frequent tokens of "
                                 "the bundle's train texts (a general set, so new domains lose fewer words) and "
                                 "every special token and single character, rewriting the embedding matrix and the "
                                 "tokenizer. Text made of kept tokens gets exactly the same logits; other words "
                                 "split into kept pieces, else become [UNK]. Related tasks are read with it too (the "
                                 "off-domain table).")
        min_count = C.persisted(st.number_input, "Minimum count of a kept token", "export_min_count", min_value=1,
                                max_value=10_000, step=1, disabled=vocab != "task",
                                help="With the task vocabulary: keep tokens seen at least this many times.")
        latency = C.persisted(st.checkbox, "Measure latency (dense torch vs each format; adds about a minute)",
                              "export_latency",
                              help="Batch 1 and 32 of 64-token inputs, on the server that runs the jobs. Other work "
                                   "on that machine slows torch more than onnxruntime, so busy-server ratios "
                                   "overstate.")
    if not cuttable:
        st.caption("This model's tokenizer is neither WordPiece nor byte-level BPE: the task vocabulary is not "
                   "offered.")
    elif llm:
        st.caption("A causal LM's task vocabulary keeps the tokens of the task's prompts (template, demonstrations, "
                   "label words, its train texts), every byte piece and what kept tokens are merged from: the input "
                   "and output embeddings lose those rows, and a word it no longer knows splits into smaller kept "
                   "pieces (never an unknown token). A format that cannot write this model yet ends with a message "
                   "saying why.")
    return formats, vocab, int(min_count), bool(latency)


def check_texts_upload(cuttable: bool, vocab: str, min_count: int) -> None:
    """The user's own texts against the chosen vocabulary: the share of their tokens that become [UNK] (a warning
    above 1%), and how many more pieces they split into."""
    texts_up = st.file_uploader("Check your texts against this vocabulary", type=["txt"], key="export_texts_up",
                                disabled=not cuttable,
                                help="A UTF-8 text file, one text per line, like the texts the exported model will "
                                     "see: the page counts how many of their tokens become [UNK] with the chosen "
                                     "vocabulary, and warns above 1%.")
    if texts_up is None or not cuttable:
        return
    with C.friendly("checking your texts"):
        chk = vocab_texts_check(model, head, vocab, int(min_count), texts_up.getvalue(), texts_up.name)
        if chk["message"]:
            st.warning(chk["message"])
        elif vocab_cut == "bpe":
            st.caption(f"Your texts: {chk['tokens']:,} tokens with the full vocabulary, {chk['tokens_kept_vocab']:,} "
                       f"with the {vocab} one (words it no longer knows split into smaller kept pieces; none becomes "
                       "an unknown token).")
        else:
            st.caption(f"Your texts: {chk['unk_share']:.2%} of their {chk['tokens']:,} tokens become [UNK] with the "
                       f"{vocab} vocabulary ({chk['unk_share_full']:.2%} with the full one).")


def planned_size(known, pcfg: PruneConfig, formats: list[str], vocab: str, min_count: int) -> None:
    """What the export will hold, before running it (counted, not built): parameters, with the task vocabulary's
    count (a small job of its own) and the padding the Hugging Face folder adds."""
    vocab_est = None
    if vocab == "task":
        vjob = vocab_estimate_job(C.ref(model, task), head, int(min_count))
        C.submit(vjob, PRIORITY["vocab"])
        info = C.job_info(vjob.key)
        if info is not None and info.state == "done":
            vocab_est = info.result
        else:
            C.show_progress([vjob.key])
    counts = None
    if known is not None:
        with C.friendly("counting the export's parameters"):
            counts = planned_counts(model, head, known, pcfg, vocab_est["embedding_params_saved"] if vocab_est else 0)
    if counts is not None:
        line = (f"At these settings the export keeps **{counts['kept']:,}** of {counts['dense']:,} parameters "
                f"({counts['kept'] / counts['dense']:.1%}, word embeddings included: the Prune page's count)")
        if vocab_est:
            line += (f"; with the task vocabulary ({vocab_est['kept_tokens']:,} of {vocab_est['original_tokens']:,} "
                     f"tokens, {vocab_est['embedding_params_saved']:,} fewer embedding parameters) **"
                     f"{counts['kept_task_vocab']:,}** ({counts['kept_task_vocab'] / counts['dense']:.1%})")
        st.markdown(line + ".")
        if "hf" in formats and not counts["hf"]["uniform"]:
            pruned = counts["kept_task_vocab"] if vocab_est else counts["kept"]
            st.caption(f"Hugging Face folder: transformers' config holds one FFN width and one head count for all "
                       f"layers, so this plan is padded with zero units (outputs unchanged) to FFN width "
                       f"{counts['hf']['ffn_width']} and the original head count: "
                       f"**+{counts['hf']['padding_params']:,} parameters** in hf/ "
                       f"({counts['hf']['padding_params'] / pruned:.1%} of the pruned model). Per-layer allocation "
                       "with head sparsity 0 needs no padding.")
    elif vocab_est:
        st.markdown(f"Task vocabulary: {vocab_est['kept_tokens']:,} of {vocab_est['original_tokens']:,} tokens "
                    f"({vocab_est['embedding_params_saved']:,} fewer embedding parameters).")


def follow(slot: str, failed: str, title: str) -> None:
    """The export job in `slot` (writing the files, or checking them): its progress while it runs, its result
    into `last_export` when it lands, its error when it fails."""
    key = ss.get(slot)
    info = C.job_info(key) if key else None
    if key and (info is None or info.state == "cancelled"):
        ss.pop(slot, None)
    elif key and info.state == "error":
        ss.pop(slot, None)
        if slot == "_export_job":
            ss.pop("_export_check", None)  # its checks fail with it: one message
        st.error(f"{failed}: {info.error}")
    elif key and info.state == "done":
        ss.pop(slot, None)
        ss["last_export"] = info.result
    elif key:
        C.show_progress([key], title)


C.page("Export", caption="Write a genuinely smaller model for the task in the formats you deploy, check each one "
                         "against the pruned model, measure it, and download it.")
ss = st.session_state
model, task = C.require_model_and_task()
warn_near_majority(near_majority_tasks(model), task)
head = C.head_for(task)
llm = model.kind == "causal_lm"
vocab_cut = vocab_kind(model)
cuttable = vocab_cut is not None
root = C.exports_root()
for k, v in (("export_formats", ["taskprune"]), ("export_vocab", "full"), ("export_min_count", 1),
             ("export_latency", False), ("export_preset", "custom" if llm else "deploy")):
    ss.setdefault(k, v)  # a causal LM opens on custom: its deploy preset's lstsq fit alone takes minutes

preset = C.persisted(st.radio, "Preset", "export_preset", options=list(P.PRESETS), horizontal=True,
                     format_func=P.PRESETS.get,
                     help="deploy: the choices a deployment takes, each explained below. custom: the split of the "
                          "Prune page's sliders and its '+ recovery' choice, and every format and vocabulary option.")
deploy = preset == "deploy"
base_cfg = C.attribution_config()
if not deploy and not ss.get("_export_job"):  # the deploy preset's split and recovery, unless an export (which
    P.withdraw_deploy_jobs(keep=((ss.get("_budget") or {}).get("key"),))  # takes them) or the Prune page waits
if deploy:
    split = P.deploy_split(model, task, base_cfg, ss["allocation"])
    pcfg, recovery, related = split.pcfg, P.recovery_config(), 0  # no off-domain rows: choose custom for them
    formats, vocab, min_count, latency = P.DEPLOY_FORMATS, P.DEPLOY_VOCAB if cuttable else "full", 1, False
    with st.container(border=True):
        st.markdown("**Deploy preset: what each choice buys**\n\n" +
                    "\n".join(f"- {line}" for line in P.deploy_lines(split, vocab_cut)))
        if split.pending:
            C.show_progress([split.pending], "Finding the deploy split (the Prune page's budget helper)")
else:
    pcfg = PruneConfig(ss["ffn_sparsity"], ss["head_sparsity"], ss["allocation"])
    recovery = ss.get("recover_level") if ss.get("recover_on") else None  # the Prune page's "+ recovery" choice
    st.markdown(f"Task `{task}` · method `{base_cfg.method}` · FFN sparsity **{pcfg.ffn_sparsity:.0%}** · head "
                f"sparsity **{pcfg.head_sparsity:.0%}** · {pcfg.allocation} allocation"
                + (f" · recovery `{recovery}`" if recovery else "") + " (set them on the Prune page).")
    formats, vocab, min_count, latency = custom_choices(llm, cuttable)
    related = len(related_tasks(head)) if vocab == "task" else 0

if pcfg is not None:
    cfg = replace(base_cfg, units=units_for(pcfg.ffn_sparsity, pcfg.head_sparsity, base_cfg.units))  # its scores
    default_name = (f"{head}-{cfg.method}-ffn{round(pcfg.ffn_sparsity * 100)}-heads{round(pcfg.head_sparsity * 100)}"
                    + ("-deploy" if deploy else ""))
    if ss.get("_export_default") != default_name:  # follow the settings until the user types a name
        ss["_export_default"] = default_name
        ss["export_name"] = default_name
    left, right = st.columns(2)
    name = left.text_input("Export name", key="export_name",
                           help=f"Folder name under the exports directory {root}. Letters, digits, '.', '_' and '-' "
                                "only.")
    overwrite = right.checkbox("Replace an existing export with this name", key="export_overwrite",
                               help="Without this, an existing folder is never touched.")
    st.caption(f"Exports directory: `{root}`")
    known = C.known_scores(model, task, cfg)
    if known is None:
        C.submit(C.scores_job(model, task, cfg), PRIORITY["scores"])
    if deploy:  # fitted before the click, so that the export only writes and checks the files
        recovery, rkey = P.deploy_recovery(model, task, base_cfg, pcfg)
        P.remember(rkey)
        if rkey:
            C.show_progress([rkey], "Fitting the lstsq recovery before the click")
    planned_size(known, pcfg, formats, vocab, min_count)
check_texts_upload(cuttable, vocab, min_count)

if st.button("Export and verify", type="primary", disabled=pcfg is None,
             help="Prune physically (slice the weights; with the task vocabulary, the embeddings and tokenizer too), "
                  "write every chosen format atomically (ready to download when written), then check each against "
                  "the pruned model and measure its metric - as background jobs."):
    with C.friendly("exporting"):
        out = safe_export_dir(root, name.strip())
        if out.exists() and not overwrite:
            raise TPError(f"{out} already exists; choose another name or tick 'Replace an existing export'.")
        if not formats:
            raise TPError("Choose at least one format.")
        level = f"{P.DEPLOY_RECOVERY} --recover-samples {P.recovery_config().samples}" if deploy else recovery
        command = (f"TaskPrune Studio web app; CLI equivalent: python -m tp_core export --model {ss['model_spec']} "
                   f"--task {head} --method {cfg.method} --ffn-sparsity {pcfg.ffn_sparsity} --head-sparsity "
                   f"{pcfg.head_sparsity} --allocation {pcfg.allocation} --format {','.join(formats)} --vocab {vocab}"
                   + (f" --vocab-min-count {int(min_count)}" if vocab == "task" else "")
                   + (" --latency" if latency else "") + f" --recover {level or 'none'} --out {out}")
        if isinstance(recovery, str):  # the Prune page's level: one fit for the export and its checks
            recovery, _ = P.deploy_recovery(model, task, base_cfg, pcfg, C.recovery_config(recovery))
        args = (C.ref(model, task), head, known if known is not None else C.scores_job(model, task, cfg), pcfg)
        plan = vocab_estimate_job(C.ref(model, task), head, int(min_count)) if vocab == "task" else None  # counted
        write = export_formats_job(*args, str(out), C.data_ref(task), formats, vocab, min_count, latency,
                                   overwrite, command, C.eval_size(task), related, recovery, checks=False, plan=plan)
        ss["_export_job"] = C.submit(write, PRIORITY["export_files"], retry=True)  # "ready" when it lands
        ss["_export_check"] = C.submit(export_check_job(write, *args, C.data_ref(task), latency, C.eval_size(task),
                                                        related, recovery, plan), PRIORITY["export"], retry=True)
        ss.pop("last_export", None)


follow("_export_job", "The export failed", "Exporting (you can leave this page; the result stays here when it lands)")
if not ss.get("_export_job"):
    follow("_export_check", "Checking the export failed (its files are written; the checks are not)",
           "Checking the export (the tables fill in when the checks land)")

last = ss.get("last_export")
with C.friendly("showing the export"):  # a result of a newer or older export shows what it can
    if last and "formats" in last:
        tables = summary_tables(last)
        m = tables["metric"]
        done = ", ".join(FORMAT_LABELS[f["format"]] for f in last["formats"])
        if last.get("pending"):
            st.success(f"Exported to `{last['out_dir']}` ({done}): the files are ready to download. Still being "
                       "checked: " + "; ".join(last["pending"]) + ".")
        elif last.get("reloaded_metric") is not None:
            st.success(f"Exported to `{last['out_dir']}` ({done}) and reloaded it: {m['name']} "
                       f"{last['reloaded_metric']:.4f} on {m['examples']} validation examples.")
        else:
            st.success(f"Exported to `{last['out_dir']}` ({done}); every format checked against the pruned model.")
        c1, c2, c3 = st.columns(3)
        c1.metric("Parameters", f"{last['params_pruned']['total']:,}",
                  delta=f"{tables['params_ratio'] - 1:+.1%} vs dense", delta_color="inverse",
                  help=("Decoder (tied word embeddings included)" if llm else
                        f"Encoder (word embeddings included{', task vocabulary' if last['vocab'] else ''}) + this "
                        "task's head") + f"; dense {last['params_dense']['total']:,}.")
        smallest = min(last["formats"], key=lambda f: f["bytes_on_disk"])
        c2.metric("Smallest on disk", f"{smallest['bytes_on_disk'] / 1e6:.1f} MB",
                  delta=f"{smallest['bytes_on_disk'] / last['bytes_dense'] - 1:+.1%} vs dense float32",
                  delta_color="inverse", help=f"{FORMAT_LABELS[smallest['format']]}; dense float32 "
                                              f"{last['bytes_dense'] / 1e6:.1f} MB.")
        if m["pruned"] is not None and m["dense"] is not None:
            c3.metric(f"{m['name']} (pruned)", f"{m['pruned']:.4f}", delta=f"{m['pruned'] - m['dense']:+.4f} vs dense",
                      help=f"Dense {m['dense']:.4f}, on the same {m['examples']} validation examples; 95% bootstrap "
                           "intervals in the formats table.")

        st.subheader("Parameters by part")
        st.table(pd.DataFrame(tables["params"]).set_index("part"))
        if last["vocab"]:
            st.caption("Embeddings counted with the task vocabulary (the pruned embedding matrix).")
        st.subheader("Formats: size, metric, check")
        st.table(pd.DataFrame(tables["formats"]).set_index("model"))
        st.caption(f"{m['name']} on {m['examples']} validation examples with its 95% bootstrap interval; the last "
                   "column is the largest logit difference from the masked (unsliced) model on validation texts made "
                   "of kept tokens (int8 differs by design).")
        pad = tables["hf_padding"]
        if pad is not None:
            st.info("Hugging Face folder: " + "; ".join(pad["notes"]) + ".", icon=":material/info:")
        if tables["latency"]:
            st.subheader("Latency before and after")
            st.table(pd.DataFrame(tables["latency"]).set_index("runner"))
            st.caption(tables["latency_note"])
        if tables["vocab"]:
            st.subheader("Vocabulary")
            st.table(pd.DataFrame(tables["vocab"]).set_index(""))
            if tables["offdomain"]:
                st.markdown("Off-domain: the other tasks of the same kind, read with this task's vocabulary")
                st.table(pd.DataFrame(tables["offdomain"]).set_index("task"))
        zip_path = Path(last["zip"])
        if zip_path.is_file():
            with open(zip_path, "rb") as fh:
                st.download_button(f"Download everything (zip, {zip_path.stat().st_size / 1e6:.1f} MB)", fh,
                                   file_name=zip_path.name, mime="application/zip", type="primary",
                                   help="The export folder: every format, the model card, the report and the task mask "
                                        "file (a compact mask of the kept units for the unchanged base model).")
        card = Path(last["out_dir"]) / "README.md"
        if card.is_file():
            with st.expander("Model card (README.md of the export)"):
                st.markdown(card.read_text())
