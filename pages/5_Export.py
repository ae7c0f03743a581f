"""Export page: write the pruned model for the current settings, verify it by reloading, download it."""
import io
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from tp_app import common as C
from tp_core.errors import TPError
from tp_core.export import folder_bytes, safe_export_dir
from tp_core.masks import PruneConfig
from tp_core.work import export_job

C.page("Export", caption="Write a genuinely smaller model for the task, check it by reloading it, and download it.")
ss = st.session_state
model, task = C.require_model_and_task()
head = C.head_for(task)
pcfg = PruneConfig(ss["ffn_sparsity"], ss["head_sparsity"], ss["allocation"])
cfg = C.scores_for_units(C.attribution_config(), pcfg.head_sparsity)
root = C.exports_root()

st.markdown(f"Task `{task}` · method `{cfg.method}` · FFN sparsity **{pcfg.ffn_sparsity:.0%}** · head sparsity "
            f"**{pcfg.head_sparsity:.0%}** · {pcfg.allocation} allocation (set them on the Prune page).")
default_name = f"{head}-{cfg.method}-ffn{round(pcfg.ffn_sparsity * 100)}-heads{round(pcfg.head_sparsity * 100)}"
if ss.get("_export_default") != default_name:  # follow the settings until the user types a name
    ss["_export_default"] = default_name
    ss["export_name"] = default_name
name = st.text_input("Export name", key="export_name",
                     help=f"Folder name under the exports directory {root}. Letters, digits, '.', '_' and '-' only.")
overwrite = st.checkbox("Replace an existing export with this name", key="export_overwrite",
                        help="Without this, an existing folder is never touched.")
st.caption(f"Exports directory: `{root}`")

if st.button("Export and verify", type="primary",
             help="Prune physically (slice the weights), write the folder atomically, reload it and re-evaluate - "
                  "as a background job."):
    with C.friendly("exporting"):
        out = safe_export_dir(root, name.strip())
        if out.exists() and not overwrite:
            raise TPError(f"{out} already exists; choose another name or tick 'Replace an existing export'.")
        sjob = C.scores_job(model, task, cfg)
        known = C.known_scores(model, task, cfg)
        job = export_job(C.ref(model), head, known if known is not None else sjob, pcfg, str(out), C.data_ref(task),
                         overwrite, f"TaskPrune Studio web app; CLI equivalent: python -m tp_core export --model "
                                    f"{ss['model_spec']} --task {head} --method {cfg.method} --ffn-sparsity "
                                    f"{pcfg.ffn_sparsity} --head-sparsity {pcfg.head_sparsity} --out {out}",
                         C.eval_size(task))
        ss["_export_job"] = C.submit(job, priority=70, retry=True)

pending = ss.get("_export_job")
if pending:
    info = C.job_info(pending)
    if info is None or info.state == "cancelled":
        ss.pop("_export_job", None)
    elif info.state == "error":
        ss.pop("_export_job", None)
        st.error(f"The export failed: {info.error}")
    elif info.state == "done":
        ss.pop("_export_job", None)
        ss["last_export"] = info.result
    else:
        C.show_progress([pending], "Exporting (you can leave this page; the result stays here when it lands)")

last = ss.get("last_export")
if last:
    st.success(f"Exported to `{last['path']}` and reloaded it: {last['metric_name']} {last['reloaded_metric']:.4f} "
               f"on {last['n']} validation examples.")
    src = Path(str(model.source))
    if model.source in ("demo", "demo-quick"):
        from tp_core.demo import demo_path

        src = demo_path(model.source == "demo-quick")
    before_bytes = folder_bytes(src) if src.is_dir() else None
    df = pd.DataFrame([
        {"": "parameters", "before": f"{last['params_before']:,}", "after": f"{last['params_after']:,}",
         "change": f"{last['params_after'] / last['params_before'] - 1:+.1%}"},
        {"": "size on disk", "before": "n/a" if before_bytes is None else f"{before_bytes / 1e6:.1f} MB (all heads)",
         "after": f"{last['bytes_on_disk'] / 1e6:.1f} MB",
         "change": "" if before_bytes is None else f"{last['bytes_on_disk'] / before_bytes - 1:+.1%}"},
        {"": last["metric_name"], "before": f"{last['metric_dense']:.4f}", "after": f"{last['metric_pruned']:.4f}",
         "change": f"{last['metric_pruned'] - last['metric_dense']:+.4f}"},
        {"": f"{last['metric_name']} after reloading", "before": "", "after": f"{last['reloaded_metric']:.4f}",
         "change": "matches" if abs(last["reloaded_metric"] - last["metric_pruned"]) < 1e-6 else "differs"},
    ])
    st.table(df.set_index(""))
    path = Path(last["path"])
    if path.is_dir():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    zf.write(f, arcname=f"{path.name}/{f.relative_to(path)}")
        c1, c2 = st.columns(2)
        c1.download_button("Download the model (zip)", buf.getvalue(), file_name=f"{path.name}.zip",
                           mime="application/zip", help="The export folder: weights, config, tokenizer, model card.")
        mask = Path(last["mask_file"])
        if mask.is_file():
            c2.download_button("Download the task mask file", mask.read_bytes(), file_name=mask.name,
                               mime="application/json",
                               help="A compact mask of the kept units that applies to the unchanged base model.")
        with st.expander("Model card (README.md of the export)"):
            st.markdown((path / "README.md").read_text())
