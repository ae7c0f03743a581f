"""How the app looks and words things, shared by every page: one colour and one label per attribution method, the
attribution explainer, and small formatters for charts and job lines."""
from __future__ import annotations

# One colour per method, used by every chart.
METHOD_COLORS = {
    "ig": "#1f77b4",
    "grad_x_act": "#ff7f0e",
    "activation": "#2ca02c",
    "magnitude": "#9467bd",
    "random": "#7f7f7f",
    "wanda_sp": "#d62728",
    "flap": "#8c564b",
    "dense": "#111111",
}
METHOD_LABELS = {
    "ig": "integrated gradients (ig)",
    "grad_x_act": "gradient x activation",
    "activation": "mean |activation|",
    "magnitude": "weight magnitude (data-free)",
    "random": "random (seeded)",
    "wanda_sp": "Wanda-sp (|weight| x input norm)",
    "flap": "FLAP (input fluctuation x weight)",
}
ATTRIBUTION_HELP = (
    "The attribution of a neuron for a task says how much the model's confidence in the right answer depends on "
    "that neuron. Integrated gradients (ig) turns the neuron's activation down from its real value to 0 in small "
    "steps and adds up how much the target-class probability changes along the way; the result is averaged over the "
    "N scoring examples. Neurons with low attribution can be removed with little loss - for this task."
)


def rgba(hex_color: str, alpha: float) -> str:
    """A "#rrggbb" colour with transparency, for a chart's interval bands in the method's colour."""
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def fmt_seconds(s: float | None) -> str:
    """A duration as people read it ("<1 s", "42 s", "3.5 min"; "?" when unknown), for job lines."""
    if s is None:
        return "?"
    s = max(0.0, float(s))
    return "<1 s" if s < 1 else f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"
