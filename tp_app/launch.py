"""`python -m tp_app.launch run app.py ...` = `streamlit run`, with the app's heavy imports (torch, transformers,
the pages' helpers) and the default model loaded in a background thread of the server process as it starts, so the
first visitor's first page does not wait for them; then the validation and scoring splits of the model's tasks are
read into memory. Prints "TaskPrune Studio: model preloaded" and "TaskPrune Studio: task data read" when done.
`tp_core serve` (`make run`) starts the app this way."""
from __future__ import annotations

import sys
import threading
import time


def _preload() -> None:
    t0 = time.time()
    try:
        from tp_app import common  # noqa: F401 - the pages' helpers and their imports
        from tp_app import models

        model = models._load_model_cached(models.default_model_spec(), False)
        print(f"TaskPrune Studio: model preloaded in {time.time() - t0:.1f} s", flush=True)
        _read_splits(model)
        print(f"TaskPrune Studio: task data read in {time.time() - t0:.1f} s", flush=True)
        _warm_charts()
        print(f"TaskPrune Studio: charts warmed in {time.time() - t0:.1f} s", flush=True)
    except Exception as exc:  # noqa: BLE001 - the page loads it (and reports a problem) as before
        print(f"TaskPrune Studio: preload skipped ({type(exc).__name__}: {exc})", flush=True)


def _read_splits(model) -> None:
    """Read the validation and scoring splits of the model's bundle tasks into tp_core.data's in-process cache, so
    the first Model page run does not read them (and import `datasets`) itself."""
    from tp_core.data import list_tasks, load_split

    for spec in list_tasks():
        if spec.name not in model.tasks:
            continue
        for split in dict.fromkeys(("validation", spec.scoring_split)):
            if split in spec.splits:
                try:
                    load_split(spec, split)
                except Exception:  # noqa: BLE001 - the page that needs it reports the problem
                    pass


def _warm_charts() -> None:
    """Build and serialise one chart of each kind the pages draw (heatmap with text and customdata, scatter with a
    filled band and dashes, scattergl, patterned bars, reference lines, a pandas groupby), so that plotly's lazily
    imported validators are loaded before a page needs them, not during a server's first Heatmaps page run."""
    try:
        import numpy as np
        import pandas as pd
        import plotly.express as px
        import plotly.graph_objects as go

        z = np.arange(6.0).reshape(2, 3)
        fig = go.Figure(go.Heatmap(z=z, customdata=z, text=z.astype(str), hovertemplate="%{text}<extra></extra>",
                                   colorscale="Viridis", colorbar=dict(title="score")))
        fig.add_scatter(x=[0, 1, 1, 0], y=[0, 0, 1, 1], mode="lines", fill="toself", fillcolor="rgba(0,0,0,0.1)",
                        line=dict(width=0), hoverinfo="skip", showlegend=False)
        fig.add_scatter(x=[0, 1], y=[1, 0], mode="lines+markers", customdata=[[0], [1]],
                        line=dict(color="#1f77b4", width=2, dash="dash"), marker=dict(symbol="circle-open", size=8))
        fig.add_scattergl(x=[0, 1], y=[0, 1], mode="markers", marker=dict(size=6, opacity=0.0), customdata=z)
        fig.add_hline(y=0.5, line_dash="dot", line_color="#d62728", annotation_text="chance",
                      annotation_position="top left")
        fig.update_layout(height=300, xaxis=dict(autorange="reversed", dtick=1), yaxis_tickformat=".0%",
                          legend=dict(orientation="h", y=1.08), margin=dict(l=10, r=10, t=40, b=10),
                          clickmode="event+select", barmode="group")
        fig.to_json()
        df = pd.DataFrame({"g": ["a", "a", "b"], "u": ["x", "y", "x"], "v": [1.0, 2.0, 3.0]})
        bars = go.Figure()
        for (g, u), part in df.groupby(["g", "u"], sort=False):
            bars.add_bar(x=part["v"], y=part["v"], name=f"{g} {u}", marker_pattern_shape="/",
                         hovertemplate="%{y}<extra></extra>")
        bars.to_json()
        px.bar(df, x="g", y="v", color="u").to_json()
    except Exception:  # noqa: BLE001 - only a warm-up: the pages draw (and report problems) as before
        pass


def main() -> None:
    try:
        from tp_app import runlog

        runlog.install()  # TP_APP_RUN_LOG: before the first session, so its first page run is timed too
    except Exception as exc:  # noqa: BLE001 - a bad setting: every page says so (tp_app.page)
        print(f"TaskPrune Studio: no run log ({type(exc).__name__}: {exc})", flush=True)
    threading.Thread(target=_preload, name="tp-preload", daemon=True).start()
    from streamlit.web import cli

    sys.argv[0] = "streamlit"
    cli.main()


if __name__ == "__main__":
    main()
