"""Polling on a shared server (tp_app/progress.py): the progress fragments' intervals and the gap between whole-page
redraws grow with the sessions open on the server, so that all of them together stay within a fixed rate; one
session keeps the fast intervals."""
import time

import pytest

from tp_app import progress


@pytest.fixture
def seen(monkeypatch):
    table: dict = {}
    monkeypatch.setattr(progress, "_SEEN", table)
    return table


def test_one_session_keeps_the_fast_intervals(seen):
    seen["me"] = time.time()
    assert progress.poll_every() == progress.POLL_S and progress.poll_every(urgent=True) == progress.URGENT_POLL_S


def test_a_class_of_thirty_polls_within_the_servers_rates(seen):
    now = time.time()
    seen.update({f"s{i}": now for i in range(30)})
    seen["gone"] = now - progress.LIVE_S - 1  # a closed tab stops counting
    assert progress.live_sessions() == 30 and "gone" not in seen
    assert 30 / progress.poll_every() <= progress.POLLS_PER_S
    assert 30 / progress.poll_every(urgent=True) <= progress.URGENT_POLLS_PER_S
    assert progress.poll_every(urgent=True) > progress.URGENT_POLL_S and progress.poll_every() > progress.POLL_S
