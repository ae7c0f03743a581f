"""The guided tour's figures: one neuron's integrated-gradients path and how its estimate converges, and the metric
of pruned points as bars with their 95% intervals. Plain Plotly figures from what the tour's jobs returned."""
from __future__ import annotations

import plotly.graph_objects as go

from tp_core.inspector import IGPath

from .style import METHOD_COLORS, METHOD_LABELS, rgba

RULE_LABELS = {"gausslegendre": "Gauss-Legendre", "riemann_middle": "Riemann (midpoints)"}


def ig_path_figure(path: IGPath, rule: str, steps: int) -> go.Figure:
    """The integrand along alpha with the area under it shaded (the neuron's signed attribution), and the
    `steps`-step quadrature of `rule`: one bar per node, as high as the integrand at the node (a dot) and as wide as
    its weight, the bars side by side from 0 to 1 (each node lies within its bar), so the bars' total area is the
    estimate the scores use."""
    q = path.rules[rule][steps]
    edges = [0.0]
    for w in q["weights"]:
        edges.append(edges[-1] + w)
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    fig = go.Figure()
    fig.add_scatter(x=path.alphas, y=path.integrand, mode="lines", fill="tozeroy", fillcolor=rgba("#1f77b4", 0.18),
                    line=dict(color="#1f77b4", width=3), name="integrand f(α): its area is the attribution",
                    hovertemplate="α = %{x:.3f}<br>f(α) = %{y:.4g}<extra></extra>")
    fig.add_bar(x=centres, y=q["values"], width=q["weights"], marker=dict(color=rgba("#ff7f0e", 0.35),
                line=dict(color="#ff7f0e", width=1.5)),
                name=f"{steps} {RULE_LABELS.get(rule, rule)} steps: bar areas sum to {q['area']:.4g}",
                customdata=list(zip(q["alphas"], q["weights"])),
                hovertemplate="node α = %{customdata[0]:.3f}, weight %{customdata[1]:.3f}<br>f(α) = %{y:.4g}"
                              "<extra></extra>")
    fig.add_scatter(x=q["alphas"], y=q["values"], mode="markers", marker=dict(color="#ff7f0e", size=9,
                    line=dict(color="black", width=1)), name="where the gradient is taken", hoverinfo="skip")
    fig.update_layout(height=360, bargap=0, xaxis=dict(title="α: the neuron's layer scaled from 0 (removed) to 1 "
                                                             "(as in the model)", range=[0, 1]),
                      yaxis_title="f(α) = Σ tokens  a · ∂F/∂a  at α·a", margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.12))
    return fig


def convergence_figure(path: IGPath, rule: str, steps: int, reference: float) -> go.Figure:
    """The area estimate of each rule against the number of steps (log scale), with the reference area (the
    finest Gauss-Legendre estimate) as a line and the chosen setting starred."""
    fig = go.Figure()
    for r, counts in path.rules.items():
        xs = sorted(counts)
        fig.add_scatter(x=xs, y=[counts[m]["area"] for m in xs], mode="lines+markers", name=RULE_LABELS.get(r, r),
                        hovertemplate="%{x} steps: %{y:.5g}<extra>" + RULE_LABELS.get(r, r) + "</extra>")
    fig.add_hline(y=reference, line_dash="dash", line_color="#444",
                  annotation_text=f"area {reference:.4g}", annotation_position="bottom right")
    fig.add_scatter(x=[steps], y=[path.area(rule, steps)], mode="markers", name="chosen",
                    marker=dict(size=14, symbol="star", color="#ff7f0e", line=dict(width=1, color="black")))
    fig.update_layout(height=300, xaxis=dict(title="steps", type="log", tickvals=sorted(path.rules[rule])),
                      yaxis_title="estimated area", margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.15))
    return fig


def points_figure(bars: list[tuple[str, str, dict]], dense=None, chance: tuple[str, float] | None = None,
                  metric: str = "metric") -> go.Figure:
    """Bars of pruned points with their 95% intervals: `bars` = [(line, x label, {x label: PointResult})], one
    trace per line (a method, or "<method>+<level>" for its recovered points), grouped by x label; the dense
    metric and the majority baseline ("chance") as lines."""
    fig = go.Figure()
    for line, name, points in bars:
        xs = list(points)
        ys = [points[x].record.metric for x in xs]
        base = line.split("+")[0]
        colour = METHOD_COLORS.get(base, "#888")
        fig.add_bar(x=xs, y=ys, name=name, marker=dict(color=colour, pattern_shape="/" if "+" in line else ""),
                    error_y=dict(type="data", symmetric=False, array=[points[x].high - y for x, y in zip(xs, ys)],
                                 arrayminus=[y - points[x].low for x, y in zip(xs, ys)]),
                    customdata=[[points[x].n, points[x].low, points[x].high] for x in xs],
                    hovertemplate="%{x}: %{y:.4f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}] on %{customdata[0]} "
                                  "examples<extra>" + name + "</extra>")
    if dense is not None:
        fig.add_hline(y=dense.record.metric, line_dash="dash", line_color=METHOD_COLORS["dense"],
                      annotation_text=f"dense {dense.record.metric:.4f}", annotation_position="top left",
                      annotation_bgcolor="rgba(255,255,255,0.8)")
    if chance is not None:
        fig.add_hline(y=chance[1], line_dash="dot", line_color="#d62728",
                      annotation_text=f"chance: {chance[0]} {chance[1]:.3f}", annotation_position="bottom left",
                      annotation_bgcolor="rgba(255,255,255,0.8)")
    fig.update_layout(barmode="group", height=380, yaxis_title=metric, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.12))
    return fig


def line_name(line: str) -> str:
    """A bar's legend name: the method's label, with " + <level> recovery" for a recovered line."""
    base, _, level = line.partition("+")
    return METHOD_LABELS.get(base, base) + (f" + {level} recovery" if level else "")
