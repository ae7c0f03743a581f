"""The score heatmaps' figures (layer x head, layer x FFN neuron), shared by the Heatmaps page and the guided tour.
Each cell carries (kind, layer, index, score) in an invisible marker's customdata, so a click selects the unit."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from tp_core.attribution import UnitScores
from tp_core.inspector import ffn_matrix, head_matrix


def colour_title(log: bool) -> str:
    return "log10 score" if log else "score"


def colour(z: np.ndarray, log: bool) -> np.ndarray:
    """Values for the colour scale (log10 of |score| when `log`; exact scores are in the hover text)."""
    if not log:
        return z
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.clip(np.abs(z), 1e-12, None))


def head_figure(scores: UnitScores, task: str, log: bool, height: int = 300, clickable: bool = True) -> go.Figure:
    """Layer x head scores of `task`; with `clickable`, clicking a cell selects that head."""
    z = head_matrix(scores)
    L, H = z.shape
    fig = go.Figure(go.Heatmap(z=colour(z, log), x=list(range(H)), y=list(range(L)), colorscale="Viridis",
                               text=np.vectorize(lambda v: f"{v:.4g}")(z),
                               hovertemplate="layer %{y}, head %{x}<br>score %{text}<extra></extra>",
                               colorbar=dict(title=colour_title(log))))
    ys, xs = np.mgrid[0:L, 0:H]
    if clickable:
        fig.add_scatter(x=xs.ravel(), y=ys.ravel(), mode="markers", marker=dict(size=18, opacity=0.0),
                        customdata=np.stack([np.ones(L * H), ys.ravel(), xs.ravel(), z.ravel()], 1),
                        hovertemplate="layer %{customdata[1]}, head %{customdata[2]}<br>score %{customdata[3]:.4g}"
                                      "<extra>click to inspect</extra>", showlegend=False)
    fig.update_layout(title=f"{task}: layer x head", height=height, xaxis_title="head", yaxis_title="layer",
                      xaxis=dict(dtick=1, range=[-0.5, H - 0.5]), yaxis=dict(dtick=1, range=[-0.5, L - 0.5]),
                      margin=dict(l=10, r=10, t=40, b=10), clickmode="event+select")
    return fig


def ffn_figure(scores: UnitScores, task: str, order: str, log: bool, height: int = 300,
               clickable: bool = True) -> go.Figure:
    """Layer x FFN neuron scores of `task` (`order` "sorted": each layer's neurons by score; "index": in place);
    with `clickable`, clicking a cell selects that neuron (an invisible marker per cell: a large payload)."""
    vals, ids = ffn_matrix(scores, order)
    L, W = vals.shape
    fig = go.Figure(go.Heatmap(z=colour(vals, log), y=list(range(L)), customdata=ids, colorscale="Viridis",
                               text=np.vectorize(lambda v: f"{v:.4g}")(vals),
                               hovertemplate="layer %{y}, neuron %{customdata}<br>score %{text}<extra></extra>",
                               colorbar=dict(title=colour_title(log))))
    if clickable:
        ys, xs = np.mgrid[0:L, 0:W]
        ok = ids.ravel() >= 0
        fig.add_scattergl(x=xs.ravel()[ok], y=ys.ravel()[ok], mode="markers", marker=dict(size=6, opacity=0.0),
                          customdata=np.stack([np.zeros(ok.sum()), ys.ravel()[ok], ids.ravel()[ok],
                                               vals.ravel()[ok]], 1),
                          hovertemplate="layer %{customdata[1]}, neuron %{customdata[2]}<br>score "
                                        "%{customdata[3]:.4g}<extra>click to inspect</extra>", showlegend=False)
    fig.update_layout(title=f"{task}: layer x FFN neuron ({'sorted by score' if order == 'sorted' else 'index order'})",
                      height=height, xaxis_title="neuron rank in layer" if order == "sorted" else "neuron index",
                      yaxis_title="layer", yaxis_dtick=1, margin=dict(l=10, r=10, t=40, b=10),
                      clickmode="event+select")
    return fig
