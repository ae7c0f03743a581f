"""Taking the results away: the HTML report builder (tp_app.report) and the one chart helper every page draws with
(tp_app.charts). Pure functions and a source scan: no model, no server, no browser."""
import ast
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import plotly.graph_objects as go

from tp_app.charts import file_stem
from tp_app.report import APP_COLORWAY, chosen_rows, export_sections, report_html, standalone

ROOT = Path(__file__).resolve().parent.parent


class _Parsed(HTMLParser):
    """Every start tag with its attributes, the text, and whether the tags nest correctly."""

    VOID = {"meta", "br", "img", "link", "input", "hr"}

    def __init__(self):
        super().__init__()
        self.tags, self.text, self.stack, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _curves():
    fig = go.Figure()
    fig.add_scatter(x=[100, 80, 60, 60, 80, 100], y=[0.93, 0.91, 0.85, 0.79, 0.88, 0.90], fill="toself",
                    name="ig 95% interval")
    fig.add_scatter(x=[100, 80, 60], y=[0.915, 0.895, 0.8172], name="integrated gradients")
    return fig


POINT = {"task": "sst2", "method": "ig", "n": 200, "low": 0.78, "high": 0.86, "ffn_sparsity": 0.6,
         "head_sparsity": 0.0, "kept_params": 9_000_000, "total_params": 11_000_000, "kept_pct": 81.8,
         "metric_name": "accuracy", "metric": 0.8172, "delta": -0.0978}
EXPORT = {"out_dir": "/x/sst2-ig-ffn60", "task": "sst2", "method": "ig", "ffn_sparsity": 0.6, "head_sparsity": 0.0,
          "allocation": "global", "vocab_mode": "full", "metric_name": "accuracy", "eval_examples": 200,
          "metric_dense": 0.915, "metric_dense_interval": [0.88, 0.94], "metric_pruned": 0.8172,
          "metric_pruned_interval": [0.78, 0.86], "reloaded_metric": 0.8172,
          "params_dense": {"embeddings": 4_000_000, "attention": 3_000_000, "ffn": 3_500_000, "other": 400_000,
                           "heads": 100_000, "total": 11_000_000},
          "params_pruned": {"embeddings": 4_000_000, "attention": 3_000_000, "ffn": 1_500_000, "other": 400_000,
                            "heads": 100_000, "total": 9_000_000},
          "bytes_dense": 44_000_000, "vocab": None,
          "latency": {"threads": 2, "seq_len": 64, "load_avg_before": 0.5, "load_avg_after": 0.7,
                      "torch_dense": {"1": {"median_ms": 4.0, "repeats": 20}},
                      "onnx-int8": {"1": {"median_ms": 1.0, "repeats": 20}}},
          "formats": [{"format": "onnx-int8", "path": "/x/sst2-ig-ffn60/onnx", "params": 9_000_000,
                       "bytes_on_disk": 9_400_000, "metric": 0.81, "metric_interval": [0.77, 0.85],
                       "check_max_abs_diff": 0.02, "check_examples": 32}]}


def test_report_is_one_offline_html_file_with_the_settings_curves_and_chosen_ratio():
    fig = _curves()
    settings = {"model": "demo-quick", "task": "sst2", "FFN sparsity": "60%", "allocation": "global <per-layer>"}
    html = report_html("TaskPrune report: sst2", "Model demo-quick", settings, chosen_rows(POINT),
                       [("Metric against kept parameters", fig, "bands: 95% bootstrap")])
    parsed = _Parsed()
    parsed.feed(html)
    assert html.startswith("<!DOCTYPE html>") and not parsed.errors and not parsed.stack
    text = " ".join(parsed.text)
    for k, v in settings.items():  # the settings table, escaped (a value with '<' stays text)
        assert k in text and v in text
    assert "&lt;per-layer&gt;" in html
    assert "9,000,000 of 11,000,000 (81.8 %)" in text and "0.8172" in text and "0.7800 to 0.8600" in text
    # the curve traces' data, band included, in the embedded figure
    for trace in fig.data:
        assert json.dumps(list(trace.y))[1:-1].replace(" ", "") in html.replace(" ", "")
    assert "ig 95% interval" in html and '"fill":"toself"' in html
    # self-contained: plotly.js inline once, no tag loads anything from anywhere
    scripts = [a for t, a in parsed.tags if t == "script"]
    assert scripts and all("src" not in a for a in scripts)
    assert html.count("plotly.js v") >= 1 and len(html) > 1_000_000
    assert not [a for _, attrs in parsed.tags for n, a in attrs.items() if n in ("src", "href") and a]


def test_report_adds_the_sessions_export_and_its_model_card():
    card = "# sst2-ig-ffn60\n\nPruned with <TaskPrune>: 60% of the FFN neurons."
    section = export_sections(EXPORT, card)
    html = report_html("r", "s", {"task": "sst2"}, chosen_rows(None), [("c", _curves(), "")], section)
    parsed = _Parsed()
    parsed.feed(html)
    text = " ".join(parsed.text)
    assert not parsed.errors
    assert "9,000,000 parameters, 81.8% of dense" in text and "ONNX int8" in text and "9.4 MB" in text
    assert "Latency before and after" in text and "4.0x" in text
    assert "Pruned with <TaskPrune>" in text  # the model card, as text
    assert "not evaluated yet" in text
    assert "<h2>Export</h2>" in html and "&lt;TaskPrune&gt;" in html
    assert export_sections(None) == "" and export_sections({"out_dir": "/x"}) == ""  # no export, or an old result


def test_a_chart_on_its_own_gets_real_colours_and_room_for_its_axes():
    """Streamlit's chart theme leaves placeholder colours (#000001 ...) in a figure, plotly express copies them into
    the traces; a file (image, report) must not show them as black."""
    import plotly.express as px
    import streamlit  # noqa: F401 - sets Streamlit's Plotly theme as the default template, as in the app

    fig = px.bar(x=[1, 2], y=["a", "b"], color=["a", "b"])
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10))
    assert fig.data[0].marker.color == "#000001"
    out = standalone(fig)
    assert [t.marker.color for t in out.data] == list(APP_COLORWAY[:2])
    assert "#0000" not in out.to_json() and out.layout.margin.l >= 60 and out.layout.xaxis.automargin
    assert fig.data[0].marker.color == "#000001"  # the page's figure is left as it was


def test_file_stem_keeps_chart_file_names_plain():
    assert file_stem("curves-sst2-ig") == "curves-sst2-ig"
    assert file_stem("../../etc/passwd") == "etc-passwd"
    assert file_stem("heads · sst2 / ig") == "heads-sst2-ig"
    assert file_stem("...") == "chart"


def test_every_chart_of_every_page_goes_through_the_chart_helper():
    """No st.plotly_chart outside tp_app/charts.py (so every chart gets its PNG and SVG downloads), and every page
    that builds a figure draws it with C.chart."""
    sources = sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "tp_app").glob("*.py")) + [ROOT / "app.py"]
    direct = []
    for path in sources:
        if path.name == "charts.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("plotly_chart", "pyplot", "altair_chart",
                                                                 "vega_lite_chart", "bokeh_chart"):
                direct.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not direct, f"charts drawn without tp_app.charts.chart: {direct}"
    for path in sorted((ROOT / "pages").glob("*.py")):
        src = path.read_text()
        if re.search(r"go\.Figure\(|px\.\w+\(", src):
            assert "C.chart(" in src, path.name
