"""TaskPrune Studio - home page and entry point. Run with `make run` (or `streamlit run app.py`).

`app.py` is a link to this file: Streamlit names the home page in the sidebar after the entry script's real file
name, so the sidebar reads "TaskPrune Studio" (not "app"). The other pages are in pages/."""
import streamlit as st

from tp_app.common import ASSETS, friendly, limits_rows, load_model, loading_in_background, model_tasks, page
from tp_core.errors import TPError

page("TaskPrune Studio", caption="Task-specific pruning of a multi-task language model, without retraining.")

st.markdown(
    """
TaskPrune Studio scores every FFN neuron and attention head of a shared multi-task encoder by how much **one task**
relies on it (integrated gradients on the unit's activation). It then removes the least important units for that task
and shows, live, how the task's metric changes as the model shrinks - no retraining involved.
Finally it exports a genuinely smaller model for that task (plus a compact mask that applies to the unchanged base
model).
"""
)
st.image(str(ASSETS / "method.svg"), caption="The pipeline: model → attribution → masks → curves → export.",
         width="stretch")

ss = st.session_state
c1, c2 = st.columns(2)
with c1:
    st.subheader("Current model")
    with friendly("loading the model"):
        try:
            if loading_in_background(ss["model_spec"]) == "loading":
                raise TPError("loading")
            model = load_model(ss["model_spec"])
        except Exception:
            model = None
            st.info(f"`{ss['model_spec']}` is not loaded yet. Open the **Model** page to build or load it.")
        if model is not None:
            shape = model.unit_shape()
            heads = "key/value groups" if model.kind == "causal_lm" else "heads"
            st.markdown(f"`{ss['model_spec']}` - {model.config.model_type}, {model.num_layers} layers, "
                        f"{shape.heads[0]} {heads}, {shape.ffn[0]} FFN neurons per layer")
            tasks = model_tasks(model)
            st.markdown("Tasks: " + ", ".join(f"`{t}`" for t in tasks))
            if ss.get("task"):
                st.markdown(f"Current task: **{ss['task']}**")
with c2:
    st.subheader("Where to start")
    st.markdown(
        """
0. **Tour** - the method on the loaded model in five steps, for a class: one neuron's score, a heatmap, pruning,
   recovery, export.
1. **Model** - load the demo model (built on first use) or your own; see its architecture and dense metrics.
2. **Attribution** - score every neuron and head for a task (ig or a baseline).
3. **Heatmaps** - where the important units are, how tasks differ, and what one neuron does.
4. **Prune** - move the sparsity sliders and watch the metric against model size, per method.
5. **Export** - write the pruned model folder (and a zip), reload it and check its metric.
"""
    )
    st.page_link("pages/0_Tour.py", label="Take the guided tour", icon=":material/school:")
    st.page_link("pages/1_Model.py", label="Go to the Model page", icon="➡️")

with st.expander("Limits of this installation"):
    st.caption("Caps that keep one user or one file from exhausting the machine. Raise them with the environment "
               "variables (the upload cap is also `server.maxUploadSize` in `.streamlit/config.toml`).")
    st.dataframe(limits_rows(), hide_index=True, width="stretch")
