"""The process's `paylink_release_refused` gauge follows its release guard's refusals
(service/release_guard.py)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from service import release_guard


def _refused() -> float | None:
    return REGISTRY.get_sample_value("paylink_release_refused")


def _refusal() -> Exception:
    return RuntimeError("paylink release guard: UPDATE on jobs refused")  # what the guard keeps: its text


async def test_the_gauge_is_one_from_a_refusal_until_that_guard_accepts_again() -> None:
    guard = release_guard.Guard()
    assert _refused() == 0
    assert guard.refuse(_refusal()) and _refused() == 1
    assert guard.accept() and _refused() == 0


async def test_a_guard_that_was_never_refused_leaves_the_gauge_alone() -> None:
    """A write that goes through on a guard that was not refused says nothing new: it does not reset
    the gauge another guard of the process set (the tests' session-wide server probes its database
    every few seconds beside a test's own server whose database refuses it; before, each of its
    probes set the gauge to 0: tests/integration/test_release_refused.py read 0 where it expected 1)."""
    refused, other = release_guard.Guard(), release_guard.Guard()
    refused.refuse(_refusal())
    assert not other.accept()
    assert _refused() == 1
    assert refused.accept() and _refused() == 0
