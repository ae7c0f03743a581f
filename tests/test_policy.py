"""tp_core.policy and masks.units_for: which scores a pruning needs, and every job the app submits at a named
priority."""
import ast
import itertools
from pathlib import Path

import numpy as np
import pytest

from tp_core.masks import units_for
from tp_core.policy import PRIORITY

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("ffn,heads,units", itertools.product([0.0, 0.5], [0.0, 0.5], ["ffn", "heads", "both"]))
def test_units_for_widens_to_both_only_when_a_pruned_kind_has_no_scores(ffn, heads, units):
    missing = (ffn > 0 and units == "heads") or (heads > 0 and units == "ffn")
    assert units_for(ffn, heads, units) == ("both" if missing else units)


def test_units_for_without_units_is_the_narrowest_that_covers():
    assert [units_for(f, h) for f, h in ((0, 0), (0.5, 0), (0, 0.5), (0.5, 0.5))] == ["ffn", "ffn", "heads", "both"]


def _submit_priorities(path: Path):
    """The priority argument of every `submit(...)` call in a file (second positional or `priority=`)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "submit":
            args = node.args[1:2] + [k.value for k in node.keywords if k.arg == "priority"]
            yield from args


def test_pages_submit_at_named_priorities():
    files = sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "tp_app").glob("*.py"))
    seen = 0
    for path in files:
        for arg in _submit_priorities(path):
            seen += 1
            for value in (arg.body, arg.orelse) if isinstance(arg, ast.IfExp) else (arg,):
                named = isinstance(value, ast.Subscript) and getattr(value.value, "id", "") == "PRIORITY" \
                    and isinstance(value.slice, ast.Constant) and value.slice.value in PRIORITY
                planned = isinstance(value, ast.Attribute) and value.attr == "priority"  # a Planned's priority
                passed_on = isinstance(value, ast.Name) and value.id == "priority"  # tp_app's submit(job, priority)
                assert named or planned or passed_on, f"{path.name}:{arg.lineno}: {ast.unparse(arg)}"
    assert seen >= 10


def test_a_causal_lms_first_estimate_is_sized_by_what_its_prompts_cost(monkeypatch):
    """The slider's first estimate on a causal LM: as many examples as fit the first pass's cost at the prompts'
    own tokens (the shared demonstrations run once per batch), between FIRST_MIN_EXAMPLES and the default; an
    encoder keeps the default."""
    from tiny import tiny_llama, tiny_multitask
    from tp_core import policy
    from tp_core.data import load_split
    from tp_core.decoder import encode, own_tokens

    model = tiny_llama()
    layers = sum(p.numel() for p in model.adapter.layers(model.base).parameters())
    monkeypatch.setattr(policy, "FIRST_PASS_COST", 20 * 10 * layers)
    assert [policy.first_examples(model, 32, t) for t in (10.0, 20.0, 100.0, 1.0)] == [20, 10, 8, 32]
    assert policy.first_examples(model, 4, 100.0) == 4 and policy.first_examples(model, 0, 1.0) == 0
    assert policy.first_examples(tiny_multitask(), 32, 1e9) == 32
    data = load_split("sst2", "validation", limit=10)
    full = np.mean([len(x) for x in encode(model, "sst2", data.texts, None, 128)["input_ids"]])
    assert 1 <= own_tokens(model, "sst2", data.texts, None) < full - 10  # the two demonstrations are not counted
