"""TaskPrune Studio - the app's entry point and navigation. Run with `make run` (or `streamlit run app.py`).

Each page is a thin view in `pages/`; heavy work goes through `tp_core.jobs` (a Dask cluster)."""
import streamlit as st

from tp_app.common import ASSETS

st.logo(str(ASSETS / "logo.svg"), icon_image=str(ASSETS / "icon.svg"))
nav = st.navigation([
    st.Page("pages/0_Home.py", title="TaskPrune Studio", icon="✂️", default=True),
    st.Page("pages/1_Model.py", title="Model", icon="🧠", url_path="Model"),
    st.Page("pages/2_Attribution.py", title="Attribution", icon="🎯", url_path="Attribution"),
    st.Page("pages/3_Heatmaps.py", title="Heatmaps", icon="🔥", url_path="Heatmaps"),
    st.Page("pages/4_Prune.py", title="Prune", icon="✂️", url_path="Prune"),
    st.Page("pages/5_Export.py", title="Export", icon="📦", url_path="Export"),
])
nav.run()
