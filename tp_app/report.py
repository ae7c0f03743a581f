"""The "take the results away" report: one self-contained HTML file of the current choice (the settings, the curves
with their bands, the chosen ratio, and the session's export with its sizes, speed and model card when there is one).

Pure functions of what the page already has (no Streamlit): the page hands over its figure and the session's values,
and offers the returned text as a download. plotly.js is written into the file once, so the charts stay interactive
and the file opens offline, from a disk or an e-mail attachment, with nothing fetched."""
from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping

import plotly.graph_objects as go
import plotly.io as pio

from .export_tables import summary_tables

# Streamlit's chart colours (its light theme's defaults): the charts' colours where a page sets none
APP_COLORWAY = ("#0068c9", "#83c9ff", "#ff2b2b", "#ffabab", "#29b09d", "#7defa1", "#ff8700", "#ffd16a", "#6d3fc0",
                "#d5dae5")
_SEQUENTIAL = ("#e4f5ff", "#c7ebff", "#a6dcff", "#83c9ff", "#60b4ff", "#3d9df3", "#1c83e1", "#0068c9", "#0054a3",
               "#004280")
_DIVERGING = ("#7d353b", "#bd4043", "#ff4b4b", "#ff8c8c", "#ffc7c7", "#a6dcff", "#60b4ff", "#1c83e1", "#0054a3",
              "#004280")
# Streamlit's Plotly theme writes numbered placeholder colours (#000001 ...) that its front end swaps for the theme's;
# plotly express copies them into the traces. A file gets the light theme's colours in their place.
_PLACEHOLDERS = {**{f"#{i + 1:06d}": c for i, c in enumerate(APP_COLORWAY)},
                 **{f"#{i + 11:06d}": c for i, c in enumerate(_SEQUENTIAL)},
                 **{f"#{i + 21:06d}": c for i, c in enumerate(_DIVERGING)},
                 "#000032": "#29b09d", "#000033": "#ff2b2b", "#000034": "#0068c9", "#000036": "#a3a8b8",
                 "#000037": "#31333f", "#000038": "#ffffff", "#000039": "#808495", "#000040": "#f0f2f6"}
_PLACEHOLDER = re.compile(r'"(#0000[0-4]\d)"')
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } pre { background: #f7f7f9; padding: 1rem; overflow-x: auto; white-space: pre-wrap; }
.note { color: #555; font-size: 0.9rem; }
"""


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def table_html(rows: list[Mapping], index: str | None = None) -> str:
    """Rows of equal keys as an HTML table (the first column as row headers when `index` names it)."""
    if not rows:
        return "<p class='note'>(nothing)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<th>{_esc(r.get(c))}</th>" if c == index else f"<td>{_esc(r.get(c))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs_html(pairs: Mapping) -> str:
    """A two-column table: one row per setting."""
    return table_html([{"setting": k, "value": v} for k, v in pairs.items()], index="setting")


def standalone(fig: go.Figure) -> go.Figure:
    """A copy of a page's figure for a file. In the app, Streamlit's chart theme colours it (its template holds
    placeholder colours that only the app's front end replaces) and widens the pages' thin margins to fit the axis
    labels; on its own (an image, the report) it gets a plain white template with the app's colour sequence, and its
    axes widen the margins themselves."""
    spec = _PLACEHOLDER.sub(lambda mt: f'"{_PLACEHOLDERS.get(mt.group(1), "#808495")}"', fig.to_json())
    out = pio.from_json(spec)
    m = out.layout.margin
    out.update_layout(template="plotly_white", colorway=list(APP_COLORWAY),
                      margin=dict(l=max(m.l or 0, 60), r=max(m.r or 0, 30), t=max(m.t or 0, 60), b=max(m.b or 0, 50)))
    out.update_xaxes(automargin=True)
    out.update_yaxes(automargin=True)
    return out


def figure_html(fig: go.Figure, with_plotlyjs: bool) -> str:
    """A figure as an HTML fragment; with plotly.js written inline when `with_plotlyjs` (the report's first one)."""
    return standalone(fig).to_html(full_html=False, include_plotlyjs=with_plotlyjs, include_mathjax=False,
                                   config={"displaylogo": False, "responsive": True})


def chosen_rows(point: Mapping | None) -> dict:
    """The chosen ratio as settings: the slider's evaluated point (the Prune page's `last_point`) or a note."""
    if not point:
        return {"chosen point": "not evaluated yet (the report was made before the point landed)"}
    out = {"FFN sparsity": f"{point['ffn_sparsity']:.0%}", "head sparsity": f"{point['head_sparsity']:.0%}",
           "kept parameters": f"{point['kept_params']:,} of {point['total_params']:,} ({point['kept_pct']:.1f} %)",
           f"{point['metric_name']} (pruned)": f"{point['metric']:.4f}"}
    if point.get("low") is not None and point.get("high") is not None:
        out["95% interval"] = f"{point['low']:.4f} to {point['high']:.4f}"
    if point.get("delta") is not None:
        out["change vs dense"] = f"{point['delta']:+.4f}"
    if point.get("n"):
        out["validation examples"] = str(point["n"])
    return out


def export_sections(last_export: Mapping | None, card: str | None = None) -> str:
    """The session's export as HTML: where it went, parameters by part, each format's size, metric and check, the
    latency table (when measured) and the model card as text. Empty when no export was made."""
    if not last_export or "formats" not in last_export:
        return ""
    t = summary_tables(dict(last_export))
    e = last_export
    made = (f"task {e.get('task')}, method {e.get('method')}, FFN sparsity {e.get('ffn_sparsity', 0):.0%}, head "
            f"sparsity {e.get('head_sparsity', 0):.0%}, {e.get('allocation')} allocation, vocabulary "
            f"{e.get('vocab_mode')}")
    parts = [f"<h2>Export</h2><p>Written to <code>{_esc(e.get('out_dir'))}</code> ({_esc(made)}): "
             f"{e['params_pruned']['total']:,} parameters, {t['params_ratio']:.1%} of dense.</p>",
             "<h3>Parameters by part</h3>", table_html(t["params"], index="part"),
             "<h3>Formats: size, metric, check</h3>", table_html(t["formats"], index="model")]
    if t["latency"]:
        parts += ["<h3>Latency before and after</h3>", table_html(t["latency"], index="runner"),
                  f"<p class='note'>{_esc(t['latency_note'])}</p>"]
    if t["vocab"]:
        parts += ["<h3>Vocabulary</h3>", table_html(t["vocab"], index="")]
    if card:
        parts += ["<h3>Model card (README.md of the export)</h3>", f"<pre>{_esc(card)}</pre>"]
    return "".join(parts)


def report_html(title: str, subtitle: str, settings: Mapping, chosen: Mapping,
                figures: Iterable[tuple[str, go.Figure, str]], export_html: str = "") -> str:
    """The whole report as one HTML document: title, the settings table, the chosen ratio, each figure (heading,
    figure, caption) with plotly.js inline once, then the export's section (`export_sections`)."""
    body = [f"<h1>{_esc(title)}</h1><p class='sub'>{_esc(subtitle)}</p>",
            "<h2>Settings</h2>", pairs_html(settings), "<h2>Chosen ratio</h2>", pairs_html(chosen)]
    for i, (heading, fig, caption) in enumerate(figures):
        body += [f"<h2>{_esc(heading)}</h2>", figure_html(fig, with_plotlyjs=i == 0),
                 f"<p class='note'>{_esc(caption)}</p>" if caption else ""]
    body.append(export_html)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
