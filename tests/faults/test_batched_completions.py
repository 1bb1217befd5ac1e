"""A worker SIGKILLed in the middle of a batch of outcomes (service/completer.py): the batch's
transaction has updated its jobs and results and is writing their events when the process dies.
Nothing of it is committed, nothing is lost: its jobs are rescued and finish once, every job has
exactly one outcome event, and every account's events keep contiguous sequences in order."""

from __future__ import annotations

import collections
import signal
from collections.abc import Callable

import asyncpg
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

SESSIONS = 12
JOBS = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT]  # two per account: the second waits for a later batch

# The worker's transaction that is waiting to insert its events behind our uncommitted rows.
_BLOCKED = """
SELECT backend_xid::text AS xid FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO outbox%'
"""
# The running jobs that transaction has locked and updated (their visible version's xmax is its id).
_IN_BATCH = "SELECT id, account_id FROM jobs WHERE status = 'running' AND xmax::text = $1"


async def test_crash_mid_batch_loses_nothing(deployment: Deployment, figures: Callable[..., None]) -> None:
    dep = deployment
    sessions = await queued_sessions(dep, SESSIONS, JOBS)
    total = SESSIONS * len(JOBS)

    # Each account's next event sequence is taken by an uncommitted row of ours: a batch holding one
    # of its jobs stops at the outbox INSERT, after its job and result writes, until we roll back.
    blockers = await hold_next_event_sequences(dep)

    victim = await dep.spawn(
        "worker", worker_concurrency=64, platform_concurrency=64, sandbox_latency_seconds=0.5
    )
    batch: list[asyncpg.Record] = []

    async def blocked_batch() -> bool:
        nonlocal batch
        rows = await dep.fetch(_BLOCKED)
        batch = await dep.fetch(_IN_BATCH, rows[0]["xid"]) if rows else []
        return bool(batch)

    try:
        await wait_until(blocked_batch, 60, "a batch of outcomes waits at its events")
        while len(batch) < 2:  # a batch of one proves little: let it through; the next one gathers more
            await blockers.pop(str(batch[0]["account_id"])).close()  # rolls back that account's row
            await wait_until(blocked_batch, 60, "the next batch waits at its events")
        victim.send(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
    finally:
        for conn in blockers.values():
            await conn.close()  # uncommitted: rolled back

    in_batch = {r["id"] for r in batch}
    # Nothing of the killed batch was committed: still running, no result, no event.
    statuses = {r["id"]: r["status"] for r in await dep.fetch("SELECT id, status FROM jobs")}
    assert all(statuses[job_id] == "running" for job_id in in_batch)
    events_so_far = await dep.outbox()
    assert not {e.job.job_id for e in events_so_far if e.WhichOneof("payload") == "job"} & {
        str(j) for j in in_batch
    }

    # Another worker rescues them once their lease (3 s) runs out and finishes everything.
    await dep.spawn("worker", worker_concurrency=64, platform_concurrency=64)
    await dep.wait_all_jobs_final(total, within=90)
    jobs = await dep.jobs()
    assert collections.Counter(j["status"] for j in jobs) == {"success": total}
    assert all(j["attempts"] == 2 for j in jobs if j["id"] in in_batch)  # run again after the rescue
    assert await dep.fetchval("SELECT count(*) FROM job_results") == total

    outbox = await dep.outbox()
    assert_one_outcome_per_job(jobs, outbox)
    assert_contiguous_sequences(outbox)  # per-account order: no gap, no duplicate
    settled = collections.Counter(
        e.link_session_completed.link_session_id for e in outbox if e.event == "link_session.completed"
    )
    assert settled == {s: 1 for s in sessions}
    figures(jobs=total, jobs_in_killed_batch=len(in_batch), batches_let_through=SESSIONS - len(blockers))
