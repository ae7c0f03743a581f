"""Every chart of the app goes through `chart`: it draws a Plotly figure and offers it as PNG and SVG files; and
`report_button` offers the HTML report (tp_app.report) of the Prune page's choice.

The images are rendered on the server, only when a download button is pressed (Streamlit's deferred download data),
by kaleido in a headless Chrome/Chromium: the same figure, in both formats, as a file the user keeps. Both formats
are rendered together on the first press (one browser start) and kept for the second; one render runs at a time, so
a class pressing the buttons together queues instead of starting a browser each. Without kaleido or a Chromium on
the server, the chart says so and the chart's own camera button (top right, in the browser) still saves a PNG."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import threading
from collections import OrderedDict
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from .report import chosen_rows, export_sections, report_html, standalone

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
PNG_SCALE = 2  # twice the on-screen pixels: sharp on a slide or a printed page
_WIDTH = 1000  # the image's width in CSS pixels (a chart's on-screen width depends on the window)
_CACHE_SIZE = 32  # rendered figures kept (both formats each)
_rendered: OrderedDict[str, dict[str, bytes]] = OrderedDict()
_render_lock = threading.Lock()


def file_stem(name: str) -> str:
    """A file name for a chart's title: letters, digits, '-', '_' and '.' only (no path, nothing hidden)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return stem[:80] or "chart"


@functools.cache
def images_available() -> str | None:
    """None when the server can render chart images, otherwise why not (checked once per process)."""
    try:
        import kaleido  # noqa: F401
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return "the kaleido package is not installed on the server"
    try:
        found = Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - a failed search is a missing browser
        found = None
    return None if found else "no Chrome or Chromium found on the server (set BROWSER_PATH to one)"


def _size(fig: go.Figure) -> tuple[int, int]:
    """The image's size: the figure's own height (the page sets one) and a fixed width."""
    height = fig.layout.height or 450
    return _WIDTH, int(height)


def render_images(fig: go.Figure) -> dict[str, bytes]:
    """The figure as {"png": bytes, "svg": bytes}, rendered by kaleido in one headless browser (cached by the
    figure's content: pressing PNG then SVG renders once)."""
    fig = standalone(fig)
    spec = fig.to_plotly_json()
    key = hashlib.sha256(fig.to_json().encode()).hexdigest()
    with _render_lock:
        if key in _rendered:
            _rendered.move_to_end(key)
            return _rendered[key]
        import kaleido

        width, height = _size(fig)

        async def both() -> dict[str, bytes]:
            async with kaleido.Kaleido(n=1) as k:
                return {fmt: await k.calc_fig(spec, opts={"format": fmt, "width": width, "height": height,
                                                          "scale": PNG_SCALE if fmt == "png" else 1})
                        for fmt in FORMATS}

        images = asyncio.run(both())
        _rendered[key] = images
        while len(_rendered) > _CACHE_SIZE:
            _rendered.popitem(last=False)
        return images


def _config(stem: str) -> dict:
    """Plotly's own toolbar: its camera button saves this chart as `<stem>.png` in the browser."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": stem, "scale": PNG_SCALE}}


def chart(fig: go.Figure, name: str, *, key: str | None = None, **kwargs):
    """Draw `fig` (st.plotly_chart with `kwargs`; width "stretch" unless given) and, under it, "PNG" and "SVG"
    download buttons for the same figure named after `name`. Returns what st.plotly_chart returns (a selection when
    `on_select` is given)."""
    stem = file_stem(name)
    kwargs.setdefault("width", "stretch")
    event = st.plotly_chart(fig, key=key, config=_config(stem), **kwargs)
    why_not = images_available()
    if why_not:
        st.caption(f"Image files: {why_not}; the chart's camera button (top right) saves a PNG.")
        return event
    with st.container(horizontal=True, horizontal_alignment="right", gap="small"):
        for fmt, mime in FORMATS.items():
            st.download_button(fmt.upper(), functools.partial(_image, fig, fmt), file_name=f"{stem}.{fmt}", mime=mime,
                               key=f"dl_{fmt}::{key or stem}", on_click="ignore", type="tertiary",
                               icon=":material/download:", help=f"Download this chart as {fmt.upper()}"
                               + (" (vector: scales without blur, edits in Inkscape or Illustrator)"
                                  if fmt == "svg" else f" ({PNG_SCALE}x resolution)"))
    return event


def _image(fig: go.Figure, fmt: str) -> bytes:
    """One format of the figure (the deferred download's data: called when its button is pressed)."""
    return render_images(fig)[fmt]


def report_button(title: str, subtitle: str, settings: dict, point: dict | None,
                  figures: list[tuple[str, go.Figure, str]], name: str) -> None:
    """"Download the report": one self-contained HTML file (tp_app.report) of `settings`, the chosen ratio (`point`:
    the Prune page's evaluated point, None while it is pending), the `figures` (heading, figure, caption) and this
    session's export (its tables and model card) when one was made; built when the button is pressed."""
    last = st.session_state.get("last_export")
    card_path = Path(last["out_dir"]) / "README.md" if last and last.get("out_dir") else None
    card = card_path.read_text() if card_path is not None and card_path.is_file() else None

    def build() -> str:
        return report_html(title, subtitle, settings, chosen_rows(point), figures, export_sections(last, card))

    st.download_button("Download the report (HTML)", build, file_name=f"{file_stem(name)}.html", mime="text/html",
                       key=f"dl_report::{name}", on_click="ignore", icon=":material/description:",
                       help="One HTML file that opens offline: these settings, the curves with their bands, the "
                            "chosen ratio" + (", and this session's export (sizes, speed, model card)" if last else
                                              "; an export made on the Export page is added to it") + ".")
