"""An api process SIGKILLed while a statement of grouped CreateJobs (service/job_intake.py) waits to
commit: no caller was answered OK for a job that was not committed. The one OK names a committed
job; the callers whose statement was still waiting, and those queued behind it, get an error."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2

from service import db, job_intake
from tests.faults.cluster import Deployment, connect_many, wait_until
from tests.harness import insert_jobs

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

ACCOUNTS = 10
NAMES = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]
# Grouped statements waiting on a lock (an uncommitted refresh of the same account and job type).
_BLOCKED = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%jobs_create_refreshes(%'
"""
_REFRESHES = "SELECT id FROM jobs WHERE origin = $1"


async def test_killed_with_grouped_create_jobs_pending(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    assert job_intake.STATEMENTS == 2  # the steps below fill both statement slots
    dep = deployment
    victim = await dep.spawn("api")  # no worker: nothing leaves the queue
    client = await dep.new_client()
    await connect_many(client, ACCOUNTS, [c.JOB_NAME_IDENTITY])
    accounts = await dep.fetch("SELECT id, workspace_id, platform_id FROM accounts ORDER BY id")

    # An uncommitted refresh of accounts 0, 1 and 2's identity each: a statement that queues the same
    # refresh waits on it (the one-refresh-in-flight unique index, on job_queue) until that row is rolled back.
    blockers: list[asyncpg.Connection] = []
    for account in accounts[:3]:
        conn = await db.connect(dep.database_url)
        await conn.execute("BEGIN")
        await insert_jobs(
            conn,
            account["workspace_id"],
            account["id"],
            name=c.JOB_NAME_IDENTITY,
            origin=c.JOB_ORIGIN_REFRESH,
            platform_id=account["platform_id"],
        )
        blockers.append(conn)

    answered: dict[int, str] = {}
    failed: dict[int, grpc.StatusCode] = {}

    async def create(i: int, account_id: uuid.UUID, name: c.JobName.ValueType) -> None:
        try:
            job = await client.jobs.CreateJob(
                job_pb2.CreateJobRequest(account_id=str(account_id), name=name), metadata=client.md()
            )
            answered[i] = job.id
        except grpc.aio.AioRpcError as exc:
            failed[i] = exc.code()

    def blocked(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return int(await dep.fetchval(_BLOCKED)) == n

        return check

    calls = [(a["id"], c.JOB_NAME_IDENTITY) for a in accounts[:2]]
    calls += [(a["id"], name) for a in accounts[2:] for name in NAMES]  # account 2's identity first
    tasks: list[asyncio.Task[None]] = []
    try:
        # Both statement slots taken: accounts 0 and 1's identity, each alone, each waiting.
        for i in (0, 1):
            tasks.append(asyncio.create_task(create(i, *calls[i])))
            await wait_until(blocked(i + 1), 60, f"grouped statement {i + 1} waits on its lock")
        # The rest gather in the intake; once account 1's statement commits, they go as one statement,
        # which waits on account 2's identity: uncommitted, with all their callers waiting.
        tasks += [asyncio.create_task(create(i, *call)) for i, call in enumerate(calls) if i > 1]
        await asyncio.sleep(0.5)  # let every call reach the server (none can be answered yet)
        assert not answered and not failed
        await blockers.pop(1).close()  # rolls account 1's row back: its statement commits

        async def next_statement_waits() -> bool:
            return 1 in answered and int(await dep.fetchval(_BLOCKED)) == 2

        await wait_until(next_statement_waits, 60, "account 1 answered, the grouped statement waiting")
        victim.send(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
        # Still under our locks: what is visible now is what was committed when the process died.
        committed = {str(r["id"]) for r in await dep.fetch(_REFRESHES, c.JOB_ORIGIN_REFRESH)}
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        for task in tasks:
            task.cancel()
        for conn in blockers:
            await conn.close()  # uncommitted: rolled back

    # The one OK names a committed job; nobody else was answered OK, and every other caller got an error.
    assert set(answered) == {1} and answered[1] in committed
    assert committed == {answered[1]}
    assert set(failed) == set(range(len(calls))) - {1}
    assert grpc.StatusCode.OK not in failed.values()
    figures(calls=len(calls), answered_ok=len(answered), failed_at_the_kill=len(failed))
