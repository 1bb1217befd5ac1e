"""When the worker claims again at once (service/worker.py, `claim_more`): only after a claim that
took all it asked for. One that took fewer found no more runnable jobs it could take, and a job
committed since wakes the worker (tests/integration/test_job_wakeups.py proves the wake-ups)."""

from __future__ import annotations

import pytest

from service.worker import claim_more


@pytest.mark.parametrize(
    ("claimed", "limit", "more"),
    [(0, 64, False), (5, 64, False), (63, 64, False), (64, 64, True), (16, 16, True)],
)
def test_only_a_claim_that_took_all_it_asked_for_is_followed_by_another(
    claimed: int, limit: int, more: bool
) -> None:
    assert claim_more(claimed, limit) is more
