"""Shareable views (tp_app/share.py): a view's link parameters both ways, what a link may name, and the defaults
and notes that stand in for what it gets wrong. Pure functions: no Streamlit run, no model."""
from urllib.parse import parse_qsl, urlsplit

from tp_app.share import Offer, link, offered_models, parse_view, view_params

DEFAULTS = {"model_spec": "demo", "task": None, "attr_method": "ig", "attr_samples": 16, "attr_steps": 4,
            "attr_labels": "gold", "attr_units": "both", "ffn_sparsity": 0.5, "head_sparsity": 0.0,
            "allocation": "global", "baselines": ["grad_x_act"], "recover_on": False, "recover_level": "lstsq",
            "eval_limit": 200, "custom_data": None}
RANGES = {"ffn_sparsity": (0.0, 0.95, 0.01), "head_sparsity": (0.0, 0.9, 0.1), "attr_samples": (4, 512, 4),
          "attr_steps": (1, 64, 1), "eval_limit": (20, 10000, 1)}
TASKS = {"demo": ["sst2", "ag_news", "rte"], "demo-quick": ["sst2", "ag_news"]}
OFFER = Offer(("demo", "demo-quick"), lambda spec: TASKS.get(spec, []), RANGES, DEFAULTS)
VIEW = {**DEFAULTS, "model_spec": "demo-quick", "task": "ag_news", "attr_method": "grad_x_act",
        "baselines": ["ig", "random"], "ffn_sparsity": 0.7, "head_sparsity": 0.2, "allocation": "per-layer",
        "recover_on": True, "recover_level": "scale", "attr_samples": 32, "attr_steps": 2, "eval_limit": 150}


def _choices(opened) -> dict:
    return {k: v for k, v in opened.choices.items()}


def test_a_view_survives_its_link_both_ways():
    url = link("http://host:8501/Prune", view_params(VIEW))
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "host:8501", "/Prune")
    assert "baselines=ig,random" in parts.query and "ffn=0.7" in parts.query and "recovery=scale" in parts.query
    opened = parse_view(dict(parse_qsl(parts.query)), OFFER)
    assert opened.ignored == []
    assert _choices(opened) == {k: v for k, v in VIEW.items() if k != "custom_data"}
    assert view_params(opened.choices) == view_params(VIEW)


def test_no_address_gives_a_relative_link_and_recovery_off_and_no_baselines_read_back():
    view = {**VIEW, "recover_on": False, "baselines": [], "task": None}
    params = view_params(view)
    assert "task" not in params and params["recovery"] == "off" and params["baselines"] == "none"
    url = link(None, params)
    assert url.startswith("?model=demo-quick&method=grad_x_act")
    opened = parse_view(dict(parse_qsl(url[1:])), OFFER)
    assert opened.choices["recover_on"] is False and opened.choices["baselines"] == []
    assert opened.choices["task"] is None and opened.ignored == []


def test_paths_hub_ids_and_unknown_models_are_never_taken():
    for bad in ("/etc/passwd", "../models/x", "bert-base-uncased", "textattack/bert-base-uncased-SST-2",
                "DEMO", "demo/../demo"):
        opened = parse_view({"model": bad, "task": "rte"}, OFFER)
        assert opened.choices["model_spec"] == "demo", bad
        assert any(line.startswith("model ") and "not a model this server offers" in line
                   for line in opened.ignored), opened.ignored
    # the task is checked against the model the link ends up on: rte is the full demo's, not the quick one's
    assert parse_view({"model": "/x", "task": "rte"}, OFFER).choices["task"] == "rte"
    opened = parse_view({"model": "demo-quick", "task": "rte"}, OFFER)
    assert opened.choices["task"] is None and "task `rte`: not a task of demo-quick" in opened.ignored


def test_out_of_range_off_step_and_garbage_numbers_fall_back_to_defaults_with_a_note():
    params = {"ffn": "0.96", "heads": "0.25", "samples": "10", "steps": "0", "examples": "nan", "alloc": "random"}
    opened = parse_view(params, OFFER)
    for key in ("ffn_sparsity", "head_sparsity", "attr_samples", "attr_steps", "eval_limit", "allocation"):
        assert opened.choices[key] == DEFAULTS[key], key
    assert len(opened.ignored) == len(params) and opened.applied == {}
    text = " ".join(opened.ignored)
    assert "ffn `0.96`: outside 0 to 0.95 in steps of 0.01" in text and "alloc `random`: not one of global" in text
    # on the grid and at its ends: taken, as the widget's own type
    opened = parse_view({"ffn": "0.95", "heads": "0.30000000001", "samples": "512", "examples": "20"}, OFFER)
    assert opened.ignored == []
    assert (opened.choices["ffn_sparsity"], opened.choices["head_sparsity"]) == (0.95, 0.3)
    assert isinstance(opened.choices["attr_samples"], int) and opened.choices["eval_limit"] == 20


def test_baselines_keep_known_methods_other_than_the_chosen_one_once():
    opened = parse_view({"method": "random", "baselines": "ig,random,ig,nope"}, OFFER)
    assert opened.choices["attr_method"] == "random" and opened.choices["baselines"] == ["ig"]
    assert any(line.startswith("baselines ") for line in opened.ignored)
    assert parse_view({"baselines": "none"}, OFFER).choices["baselines"] == []


def test_missing_parameters_are_the_defaults_and_unknown_ones_are_named_safely():
    opened = parse_view({"task": "sst2", "sid": "0123456789ab", "tsk": "x", "`[a](http://e)`": "1"}, OFFER)
    assert opened.choices == {**{k: v for k, v in DEFAULTS.items() if k != "custom_data"}, "task": "sst2"}
    assert len(opened.ignored) == 1 and opened.ignored[0].startswith("unknown parameters `tsk`")
    assert "`[a](http://e)`" not in opened.ignored[0]  # no backtick of the link's text closes the code span
    long = parse_view({"model": "x" * 5000}, OFFER).ignored[0]
    assert len(long) < 200 and "..." in long


def test_the_server_offers_its_demos_and_loaded_models_never_an_unloaded_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TP_APP_MODEL", "demo-quick")
    from tp_app.models import loaded_specs

    offered = offered_models()
    assert offered[0] == "demo-quick" and str(tmp_path) not in offered
    # a path only when this process loaded it (an earlier test in the same worker may have loaded one)
    assert all("/" not in m or m in loaded_specs() for m in offered), offered
