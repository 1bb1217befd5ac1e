"""Who a CreateJob wakes once its job is committed (service/job_intake.py, `Intake.wake`): the worker
of its own process directly while that worker has room, without a NOTIFY; the workers of other
processes by NOTIFY when there is no worker in the process (`api`) or when the process's worker came
back full from the claim it was woken for. Each process here is api + worker on a database of its
own, polling every 10 minutes: only a wake-up makes its worker claim."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2

from service import auth, queue, runtime, wakeups
from service.config import Settings
from service.worker import Worker
from tests.harness import Client, insert_accounts, listening, new_database

MARKER = "test-marker"


@contextlib.asynccontextmanager
async def _own(
    settings: Settings, *, worker: bool = True, **update: object
) -> AsyncIterator[runtime.Running]:
    async with new_database() as url:
        running = await runtime.start(
            settings.model_copy(
                update={
                    "database_url": url,
                    "topic_prefix": f"test{uuid.uuid4().hex[:8]}.",
                    "monitoring_scheduler": False,
                    "worker_poll_seconds": 600.0,
                    **update,
                }
            ),
            worker=worker,
            relay=False,
        )
        try:
            deadline = time.monotonic() + 30
            while worker and running.deps.intake.worker is not running.worker:  # its claim loop started
                assert time.monotonic() < deadline, "the worker did not start claiming"
                await asyncio.sleep(0.01)
            yield running
        finally:
            await running.stop()


async def _create_jobs(app: runtime.Running, n: int) -> list[str]:
    """`n` CreateJobs (no request_id: the grouped path) on accounts of a new workspace; their job ids."""
    assert app.api is not None
    workspace, secret = await auth.create_workspace(app.deps.pool, f"wake-{uuid.uuid4().hex[:6]}")
    _, accounts = await insert_accounts(app.deps.pool, n)  # connected, no grant: each job fails at once
    await app.deps.pool.execute(
        "UPDATE accounts SET workspace_id = $1 WHERE id = ANY($2::uuid[])", workspace.id, accounts
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.api.port}") as channel:
        client = Client(channel, secret)
        jobs = await asyncio.gather(
            *(
                client.jobs.CreateJob(
                    job_pb2.CreateJobRequest(account_id=str(a), name=c.JOB_NAME_IDENTITY),
                    metadata=client.md(),
                )
                for a in accounts
            )
        )
    return [job.id for job in jobs]


async def _claimed(app: runtime.Running, job_ids: list[str], within: float = 30) -> None:
    """Waits until every job left the queue's `queued` status (a worker claimed it)."""
    deadline = time.monotonic() + within
    sql = "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND status = 'queued'"
    while await app.deps.pool.fetchval(sql, job_ids):
        assert time.monotonic() < deadline, "no worker claimed the jobs"
        await asyncio.sleep(0.05)


async def _heard_before_marker(app: runtime.Running, heard: asyncio.Queue[str]) -> list[str]:
    """What the channel carried before a NOTIFY the test sends now (notifications arrive in commit
    order): the wake-ups committed so far, once the process has none left to send."""
    loop = asyncio.get_running_loop()
    sending = [t for t in wakeups._wakers.values() if t.get_loop() is loop and not t.done()]
    await asyncio.gather(*sending, return_exceptions=True)
    await app.deps.pool.execute(f"NOTIFY {queue.NOTIFY_CHANNEL}, '{MARKER}'")
    before: list[str] = []
    while (payload := await asyncio.wait_for(heard.get(), 30)) != MARKER:
        before.append(payload)
    return before


async def test_a_create_job_wakes_its_own_process_worker_without_a_notify(settings: Settings) -> None:
    """Fails on the code before: every CreateJob sent `NOTIFY paylink_jobs` on the pool (a round trip
    and a durable commit) to wake the worker beside it."""
    async with (
        _own(settings) as app,
        listening(app.deps.settings.database_url, queue.NOTIFY_CHANNEL) as heard,
    ):
        jobs = await _create_jobs(app, 3)
        await _claimed(app, jobs)  # woken though it polls every 10 minutes
        assert await _heard_before_marker(app, heard) == []


async def test_a_create_job_in_a_process_without_a_worker_notifies_the_workers(settings: Settings) -> None:
    async with (
        _own(settings, worker=False) as app,
        listening(app.deps.settings.database_url, queue.NOTIFY_CHANNEL) as heard,
    ):
        await _create_jobs(app, 1)
        assert wakeups.wake_payload(app.deps.pool) in await _heard_before_marker(app, heard)


async def test_a_worker_that_comes_back_full_passes_the_wake_up_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot: the claim the CreateJobs woke it for fills it and leaves one of their jobs, so other
    processes' workers are told (one NOTIFY), and the job it could not take is claimed once its slot
    is free. The claim waits until both CreateJobs woke the worker (else the first job's may run and
    free the slot before the second is committed: nothing left over, nothing to pass on)."""
    created = asyncio.Event()
    claim = queue.claim

    async def after_both(*args: Any) -> list[queue.ClaimedJob]:
        await created.wait()
        return await claim(*args)

    one_slot = settings.model_copy(update={"worker_concurrency": 1, "platform_concurrency": 1})
    async with (
        _own(one_slot) as app,
        listening(app.deps.settings.database_url, queue.NOTIFY_CHANNEL) as heard,
    ):
        monkeypatch.setattr(queue, "claim", after_both)
        jobs = await _create_jobs(app, 2)
        created.set()
        await _claimed(app, jobs)
        assert wakeups.wake_payload(app.deps.pool) in await _heard_before_marker(app, heard)


async def test_a_claim_that_found_fewer_jobs_than_it_asked_for_is_not_repeated(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claims when a job may wait for it, not again at once after a claim that took fewer
    jobs than it had room for (the queue held no more), nor for each job that leaves its slot: one
    CreateJob, one claim. Fails on the code before: a second claim right after the first, and more
    as the job's slot and outcome freed (empty claims, ~17 % of them in the saturated pipeline)."""
    claimed_by: list[tuple[str, int]] = []  # (worker id, jobs): other tests' workers may claim too
    claim = queue.claim

    async def counted(*args: Any) -> list[queue.ClaimedJob]:
        claimed = await claim(*args)
        claimed_by.append((args[1], len(claimed)))
        return claimed

    monkeypatch.setattr(queue, "claim", counted)
    async with _own(settings) as app:
        assert app.worker is not None
        worker = app.worker.id

        def claims() -> list[int]:
            return [n for by, n in claimed_by if by == worker]

        deadline = time.monotonic() + 30
        while not claims():  # the claim it makes as it starts (on an empty queue)
            assert time.monotonic() < deadline, "the worker did not claim"
            await asyncio.sleep(0.01)
        [job] = await _create_jobs(app, 1)
        sql = "SELECT status FROM jobs WHERE id = $1"
        while await app.deps.pool.fetchval(sql, uuid.UUID(job)) != "error" or app.worker.jobs_held:
            assert time.monotonic() < deadline, "the job did not finish"
            await asyncio.sleep(0.05)
        assert claims() == [0, 1]


async def test_a_wake_up_for_a_job_the_claim_took_makes_no_claim(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CreateJob's wake-up names its job: one that comes while a claim that began after the job's
    commit takes it (or once the worker holds it) makes no claim. Fails on the code before: a wake-up
    was a wake-up, and the claim it made found nothing (`[0, 1, 0]`; 29 of 140 empty claims in the
    saturated pipeline, bench/NOTES.md inflight session 29)."""
    claimed_by: list[tuple[str, int]] = []
    claim = queue.claim
    app: runtime.Running | None = None

    async def counted(*args: Any) -> list[queue.ClaimedJob]:
        claimed = await claim(*args)
        claimed_by.append((args[1], len(claimed)))
        if app is not None and app.worker is not None and args[1] == app.worker.id:
            for job in claimed:  # its CreateJob's wake-up, during the claim that takes it
                assert app.worker.take_wake(job.platform_id, job.id)
        return claimed

    monkeypatch.setattr(queue, "claim", counted)
    async with _own(settings) as running:
        app = running
        assert app.worker is not None
        worker = app.worker

        def claims() -> list[int]:
            return [n for by, n in claimed_by if by == worker.id]

        deadline = time.monotonic() + 30
        while not claims():
            assert time.monotonic() < deadline, "the worker did not claim"
            await asyncio.sleep(0.01)
        [job] = await _create_jobs(app, 1)
        sql = "SELECT status FROM jobs WHERE id = $1"
        while await app.deps.pool.fetchval(sql, uuid.UUID(job)) != "error" or worker.jobs_held:
            assert time.monotonic() < deadline, "the job did not finish"
            await asyncio.sleep(0.05)
        # The job's own wake-up after its commit found it held or taken: no claim for it either.
        assert claims() == [0, 1]


async def test_a_worker_is_not_woken_by_its_own_process_notify(settings: Settings) -> None:
    """`wake_soon`'s NOTIFY carries its pool's payload: the same process's worker (which claims those
    jobs once it has room) is not woken by it; any other NOTIFY on the channel wakes it."""
    async with _own(settings) as app:
        assert app.worker is not None
        own = wakeups.wake_payload(app.deps.pool)
        assert own != ""
        worker = Worker(app.deps)  # not running: its wake-ups are only recorded
        worker._notified(None, 0, queue.NOTIFY_CHANNEL, own)
        assert await worker._wake.wait(0.05) is False
        worker._notified(None, 0, queue.NOTIFY_CHANNEL, "")  # an INSERT's pg_notify, another process's
        assert await worker._wake.wait(600) is True


async def test_wake_soon_notifies_with_its_pool_s_payload(settings: Settings) -> None:
    async with (
        _own(settings, worker=False) as app,
        listening(app.deps.settings.database_url, queue.NOTIFY_CHANNEL) as heard,
    ):
        wakeups.wake_soon(app.deps.pool)
        assert await _heard_before_marker(app, heard) == [wakeups.wake_payload(app.deps.pool)]
