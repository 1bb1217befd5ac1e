"""A worker frees a job's slot when it hands the outcome to its completer (service/worker.py), not
when the outcome commits: while outcomes cannot be written, it keeps calling the platform for new
jobs, but holds at most `worker_concurrency` + the completer's backlog bound, and the jobs whose
outcomes wait keep their leases (nothing is rescued, nothing runs twice) until they are written."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest
from paylink.v1 import common_pb2 as c

from tests.faults.cluster import (
    Deployment,
    assert_contiguous_sequences,
    assert_one_outcome_per_job,
    hold_next_event_sequences,
    queued_sessions,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

SESSIONS = 30
CONCURRENCY = 4  # the backlog bound is min(concurrency, 1000): this worker holds at most 8 jobs
LEASE = 3  # seconds (PROCESS_DEFAULTS); the outcomes are held back for three times as long
_HELD = "SELECT count(*) FROM jobs WHERE status = 'running'"


async def test_outcomes_waiting_bound_claims_and_keep_their_leases(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    sessions = await queued_sessions(dep, SESSIONS, [c.JOB_NAME_IDENTITY])

    # Each account's next event sequence is taken by an uncommitted row of ours: every batch of
    # outcomes stops at its outbox INSERT (holding its jobs locked) until we roll back.
    blockers = await hold_next_event_sequences(dep)
    try:
        await dep.spawn(
            "worker",
            worker_concurrency=CONCURRENCY,
            platform_concurrency=CONCURRENCY,
            sandbox_latency_seconds=0.2,
        )

        # Its first jobs' outcomes cannot be written, yet it claims more: their slots were freed.
        async def beyond_concurrency() -> bool:
            return int(await dep.fetchval(_HELD)) > CONCURRENCY

        await wait_until(beyond_concurrency, 60, "the worker holds more jobs than its concurrency")
        # ...but no more than concurrency + the backlog bound, for several leases.
        held: list[int] = []
        for _ in range(int(3 * LEASE / 0.25)):
            held.append(int(await dep.fetchval(_HELD)))
            await asyncio.sleep(0.25)
        assert max(held) <= 2 * CONCURRENCY, held
        assert (await dep.job_statuses())["queued"] >= SESSIONS - 2 * CONCURRENCY
        # Every held job is still on its first attempt: none was rescued while its outcome waited.
        attempts = await dep.fetch("SELECT attempts FROM jobs WHERE status = 'running'")
        assert {r["attempts"] for r in attempts} == {1}
    finally:
        for conn in blockers.values():
            await conn.close()  # uncommitted: rolled back

    await dep.wait_all_jobs_final(SESSIONS, within=90)
    jobs = await dep.jobs()
    assert collections.Counter(j["status"] for j in jobs) == {"success": SESSIONS}
    assert {j["attempts"] for j in jobs} == {1}  # each ran once: no lease ran out while it waited
    assert await dep.fetchval("SELECT count(*) FROM job_results") == SESSIONS
    await dep.wait_outbox_published(within=30)
    outbox = await dep.outbox()
    assert_one_outcome_per_job(jobs, outbox)
    assert_contiguous_sequences(outbox)
    settled = collections.Counter(
        e.link_session_completed.link_session_id for e in outbox if e.event == "link_session.completed"
    )
    assert settled == {s: 1 for s in sessions}
    figures(jobs=SESSIONS, concurrency=CONCURRENCY, held_peak=max(held), held_low=min(held))
