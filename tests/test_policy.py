"""tp_core.policy and masks.units_for: which scores a pruning needs, and every job the app submits at a named
priority."""
import ast
import itertools
from pathlib import Path

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
