"""Shareable views: the session's choices that make a view (model, task, method, baselines, sparsities, allocation,
recovery, attribution settings, validation examples) as a link's query parameters, both ways, in one place.

`view_params` and `parse_view` are pure functions (tested without Streamlit). `open_link` applies a link's
parameters on the run that opens it (every page calls it through `page.page`); the page then computes what is
missing as jobs, as it does for any setting. `share_control` is the sidebar's copy-link box. A link names only
models this server already offers (`offered_models`): never a path or hub id it has not loaded itself, so opening
a link never makes the server read or download a model."""
from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import streamlit as st

from tp_core.attribution import METHODS
from tp_core.masks import ALLOCATIONS
from tp_core.recovery import LEVELS

from .state import LABEL_CHOICES, UNIT_CHOICES, default_choices, ranges, set_value

# URL parameter -> the session choice it carries ("recovery" is "off" or a level: recover_on and recover_level)
PARAMS = {
    "model": "model_spec", "task": "task", "method": "attr_method", "baselines": "baselines",
    "ffn": "ffn_sparsity", "heads": "head_sparsity", "alloc": "allocation", "recovery": "recover_level",
    "samples": "attr_samples", "steps": "attr_steps", "labels": "attr_labels", "units": "attr_units",
    "examples": "eval_limit",
}
KEYS = tuple(PARAMS.values()) + ("recover_on",)  # the session choices a link sets
OFF, NO_BASELINES = "off", "none"
RECOVERY = (OFF, *(x for x in LEVELS if x != "none"))
CHOICES = {"attr_method": METHODS, "allocation": ALLOCATIONS, "attr_labels": LABEL_CHOICES, "attr_units": UNIT_CHOICES}
PASSIVE = ("sid", "embed", "embed_options")  # query parameters that are no part of a view (session id, Streamlit's)


@dataclass(frozen=True)
class Offer:
    """What a link may name on this server: its models, the tasks of one of them, each numeric choice's
    (lowest, highest, step), and the defaults that stand in for what a link leaves out or gets wrong."""
    models: Sequence[str]
    tasks: Callable[[str], Sequence[str]]
    ranges: Mapping[str, tuple]
    defaults: Mapping[str, object]


@dataclass
class Opened:
    """A link read against an Offer: every shared choice (the link's where usable, else the default), the
    parameters taken from the link (canonical text) and a line per value that was not, saying why."""
    choices: dict
    applied: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)


def _number(value) -> str:
    """A choice's value as link text: whole numbers without a decimal point, fractions to 4 places."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return str(value) if isinstance(value, int) else f"{round(value, 4):g}"


def view_params(choices: Mapping) -> dict[str, str]:
    """The link parameters of a view (session key -> value, as the session holds them), in PARAMS order; a task
    not chosen yet is left out (the link then opens the server's default task, as the view does)."""
    out = {}
    for name, key in PARAMS.items():
        value = choices.get(key)
        if name == "recovery":
            value = value if choices.get("recover_on") else OFF
        elif name == "baselines":
            value = ",".join(value) if value else NO_BASELINES
        if value is None or value == "":
            continue
        out[name] = _number(value)
    return out


def link(base: str | None, params: Mapping[str, str]) -> str:
    """The full link: the page's address with the view's parameters (commas kept readable), or a relative `?...`
    link when the address is unknown."""
    query = urlencode(dict(params), safe=",", quote_via=quote)
    return f"{(base or '').rstrip('?')}?{query}"


def _shown(text) -> str:
    """A link's text as it may be shown in a note: printable, no backticks, at most 40 characters, as code."""
    text = re.sub(r"[^\x20-\x7e]", "?", str(text)).replace("`", "'")
    return f"`{text[:40]}{'...' if len(text) > 40 else ''}`"


def _on_grid(text: str, lo, hi, step):
    """`text` as a number on the grid lo, lo + step, ... hi (an int when the grid is whole), or None."""
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    k = round((x - lo) / step) if math.isfinite(x) else -1
    snapped = lo + k * step
    if not lo - 1e-9 <= x <= hi + 1e-9 or abs(snapped - x) > 1e-6:
        return None
    whole = all(float(v).is_integer() for v in (lo, step))
    return int(round(snapped)) if whole else round(snapped, 4)


def _range_text(lo, hi, step) -> str:
    return f"outside {_number(lo)} to {_number(hi)}" + (f" in steps of {_number(step)}" if step != 1 else "")


def parse_view(params: Mapping[str, str], offer: Offer) -> Opened:
    """Read a link's parameters: each usable value replaces the default; a model this server does not offer, an
    unknown task or name, a number out of range or off its widget's steps, and an unknown parameter are left out
    (the default stands) with a line in `ignored`."""
    out = Opened({k: (list(v) if isinstance(v, list) else v) for k, v in offer.defaults.items() if k in KEYS})
    unknown = [n for n in params if n not in PARAMS and n not in PASSIVE]
    if unknown:
        out.ignored.append("unknown parameter" + "s" * (len(unknown) > 1) + " " +
                           ", ".join(_shown(n) for n in unknown[:5]) + (" ..." if len(unknown) > 5 else ""))

    def take(name: str, key: str, value, text: str) -> None:
        out.choices[key] = value
        out.applied[name] = text

    def skip(name: str, why: str) -> None:
        out.ignored.append(f"{name} {_shown(params[name])}: {why}")

    for name, key in PARAMS.items():
        if name not in params:
            continue
        text = str(params[name]).strip()
        if name == "model":
            if text in offer.models:
                take(name, key, text, text)
            else:
                skip(name, "not a model this server offers (a link opens a demo or a model loaded here)")
        elif name == "task":
            if text in offer.tasks(out.choices["model_spec"]):
                take(name, key, text, text)
            else:
                skip(name, f"not a task of {out.choices['model_spec']}")
        elif name == "baselines":
            _baselines(params[name], out, skip)
        elif name == "recovery":
            if text in RECOVERY:
                out.choices["recover_on"] = text != OFF
                take(name, key, text if text != OFF else out.choices[key], text)
            else:
                skip(name, "not one of " + ", ".join(RECOVERY))
        elif key in CHOICES:
            if text in CHOICES[key]:
                take(name, key, text, text)
            else:
                skip(name, "not one of " + ", ".join(CHOICES[key]))
        else:
            value = _on_grid(text, *offer.ranges[key])
            if value is None:
                skip(name, _range_text(*offer.ranges[key]))
            else:
                take(name, key, value, _number(value))
    return out


def _baselines(text: str, out: Opened, skip: Callable[[str, str], None]) -> None:
    """The link's comma-separated baselines: the known methods other than the chosen one, each once."""
    names = [n.strip() for n in str(text).split(",") if n.strip() and n.strip() != NO_BASELINES]
    method = out.choices["attr_method"]
    good = [n for n in dict.fromkeys(names) if n in METHODS and n != method]
    if len(good) < len(names):
        skip("baselines", "unknown methods or the chosen method itself left out")
    out.choices["baselines"] = good
    out.applied["baselines"] = ",".join(good) if good else NO_BASELINES


# ----- the app's side: what this server offers, opening a link, the copy-link box ---------------------------------
def offered_models() -> list[str]:
    """The models a link may name here: the app's default model, the built demos, the embedded LLMs whose package
    is installed and the models this process has loaded (by the spec the Model page took)."""
    from tp_core.demo import demo_path
    from tp_core.errors import TPError
    from tp_core.llm_source import EMBEDDED, embedded_gguf
    from tp_core.model import MANIFEST

    from .models import default_model_spec, loaded_specs

    out = [default_model_spec()] + [d for d in ("demo", "demo-quick") if (demo_path(d == "demo-quick") / MANIFEST)
                                    .is_file()]
    for name in EMBEDDED:
        try:
            embedded_gguf(name)
            out.append(name)
        except TPError:
            pass
    return list(dict.fromkeys(out + loaded_specs()))


def task_options(spec: str) -> list[str]:
    """The tasks a link may name on the model `spec`: its tasks when it is in memory (or loads from the cache at
    once), else the data bundle's (the page then falls back to a task the model has); never uploaded data."""
    from .models import UPLOAD_PREFIX, bundle_tasks, load_model, loading_in_background, model_tasks, needs_conversion

    tasks = None
    try:
        if not needs_conversion(spec) and loading_in_background(spec) is None:
            tasks = model_tasks(load_model(spec, False))
    except Exception:  # noqa: BLE001 - a model that cannot load here: the page says so
        tasks = None
    if tasks is None:
        try:
            tasks = list(bundle_tasks())
        except Exception:  # noqa: BLE001 - no data bundle: no task can be named
            tasks = []
    return [t for t in tasks if not t.startswith(UPLOAD_PREFIX)]


def current_choices() -> dict:
    """The session's shared choices now (a widget moved in this run has its new value in w_<key> already)."""
    ss = st.session_state
    return {k: ss.get(f"w_{k}", ss.get(k)) for k in KEYS}


def open_link(page_title: str) -> None:
    """When the address carries view parameters: make them the session's choices (defaults for what the link
    leaves out or gets wrong), note it on the page, and take them off the address (a reload then keeps the
    session's later changes, which its cookie restores)."""
    ss = st.session_state
    params = {k: v for k, v in st.query_params.to_dict().items() if k not in PASSIVE}
    if not params:
        return
    opened = parse_view(params, Offer(offered_models(), task_options, ranges(), default_choices()))
    if opened.choices["model_spec"] != ss.get("model_spec"):
        for k in ("model_source", "w_model_source", "_preparing"):
            ss.pop(k, None)
        ss["model_trust_code"] = False
    if opened.choices["task"] != ss.get("task"):
        for k in ("attr_tasks", "w_attr_tasks", "hm_task_a", "w_hm_task_a", "hm_task_b", "w_hm_task_b"):
            ss.pop(k, None)
    for key, value in opened.choices.items():
        set_value(key, value)
    ss["_link_opened"] = {"page": page_title, "applied": opened.applied, "ignored": opened.ignored}
    for name in params:
        del st.query_params[name]


def link_note(page_title: str) -> None:
    """On the page a link opened, while its settings still hold: say the view came from a link, and list what
    was ignored."""
    note = st.session_state.get("_link_opened")
    if not note:
        return
    now = view_params(current_choices())
    if note["page"] != page_title or any(now.get(k) != v for k, v in note["applied"].items()):
        st.session_state.pop("_link_opened", None)
        return
    if note["ignored"]:
        st.warning("Opened from a shared link; not taken from it (the defaults stand instead): " +
                   "; ".join(note["ignored"]) + ".", icon=":material/link_off:")
    else:
        st.info("Opened from a shared link: these are its settings. Anything not computed yet runs as jobs.",
                icon=":material/link:")


def page_address() -> str | None:
    """This page's address in the user's browser (Streamlit's st.context.url, without query), or None."""
    try:
        url = st.context.url
    except Exception:  # noqa: BLE001 - no browser request (AppTest)
        return None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


# One click handler for the page's copy-link buttons (installed once; Streamlit keeps no onclick attribute): it
# copies the button's data-link with the Clipboard API where the page is a secure context (https, localhost), else
# with the older copy command, which also works on a classroom server reached over plain http (where Streamlit's own
# copy button of a code block does nothing).
COPY_JS = """<script>
if (!window.tpCopyLink) {
  window.tpCopyLink = true;
  document.addEventListener("click", (event) => {
    const b = event.target.closest && event.target.closest(".tp-copy-link");
    if (!b) return;
    const text = b.dataset.link;
    const done = () => { b.textContent = "Copied"; setTimeout(() => { b.textContent = "Copy link"; }, 1500); };
    const old = () => {
      const a = document.createElement("textarea");
      a.value = text; a.style.position = "fixed"; a.style.opacity = "0";
      b.parentNode.appendChild(a); a.select(); document.execCommand("copy"); a.remove(); done();
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, old);
    else old();
  });
}
</script>"""


def share_control() -> None:
    """The sidebar's "Share this view" box: the full link to this page with the session's settings, a button
    that copies it, and the link itself in a code block (selectable)."""
    choices = current_choices()
    url = link(page_address(), view_params(choices))
    with st.popover("Share this view", icon=":material/link:", width="stretch",
                    help="A link that opens this page with the current model, task, method, baselines, sparsities, "
                         "allocation, recovery and attribution settings."):
        st.caption("Whoever opens this link on this server sees this view; anything not computed yet runs as jobs.")
        st.html(f'<button class="tp-copy-link" type="button" data-link="{html.escape(url, quote=True)}">Copy link'
                f'</button>{COPY_JS}', unsafe_allow_javascript=True)
        st.code(url, language=None, wrap_lines=True)
        if choices["model_spec"] not in offered_models():
            st.caption(f"`{choices['model_spec']}` is not offered to links (only the demos and models loaded on "
                       "this server are): the link opens the default model.")
