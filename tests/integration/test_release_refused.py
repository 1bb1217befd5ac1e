"""This release on a database whose release guard refuses it (service/release_guard.py): a later
release's migration raised the guard's floor (migration 0174's mechanism) above this release's newest
migration while this release's processes kept running. Simulated on a database of its own by raising
the floor the way such a migration would (CREATE OR REPLACE TRIGGER), then lowering it again."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paylink.v1 import common_pb2 as c
from paylink.v1 import event_pb2, job_pb2, link_pb2
from prometheus_client import REGISTRY

from service import auth, db, errors, ids, migrate, queue, release_guard, runtime, worker
from service.config import Settings
from service.monitoring.scheduler import Scheduler
from tests.harness import (
    RELEASE_FLOOR_OF_0174,
    Client,
    error_reason,
    insert_account,
    insert_accounts,
    link_account,
    new_database,
    new_refresh,
    rpc_error,
    set_release_floor,
    start_session,
)

JOB_SERVICE = "paylink.v1.JobService"


@contextlib.asynccontextmanager
async def _own(settings: Settings, **update: object) -> AsyncIterator[runtime.Running]:
    """api + worker on a database of their own (the floor is raised there only)."""
    async with new_database() as url:
        running = await runtime.start(
            settings.model_copy(
                update={
                    "database_url": url,
                    "topic_prefix": f"test{uuid.uuid4().hex[:8]}.",
                    "health_check_seconds": 0.5,
                    "monitoring_scheduler": False,
                    **update,
                }
            ),
            relay=False,
        )
        try:
            yield running
        finally:
            await running.stop()


@pytest.fixture
async def own(settings: Settings) -> AsyncIterator[runtime.Running]:
    async with _own(settings) as running:
        yield running


@pytest.fixture
async def own_slow(settings: Settings) -> AsyncIterator[runtime.Running]:
    """As `own`, with `sandbox_slow`'s calls taking 2 s (its jobs are running when the floor is raised)
    and leases long enough that no job is rescued while the floor is up."""
    async with _own(
        settings,
        sandbox_slow_latency_seconds=2.0,
        worker_lease_seconds=120.0,
        worker_concurrency=64,
        platform_concurrency=64,
    ) as running:
        yield running


async def _wait_until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.05)


async def _status(app: runtime.Running, health: health_pb2_grpc.HealthStub) -> int:
    assert app.monitor is not None
    await app.monitor.check()
    answer = await health.Check(health_pb2.HealthCheckRequest(service=JOB_SERVICE))
    return int(answer.status)


async def _events(app: runtime.Running, accounts: list[uuid.UUID]) -> list[event_pb2.Event]:
    rows = await app.deps.pool.fetch(
        "SELECT payload FROM outbox WHERE account_id = ANY($1::uuid[]) ORDER BY id", accounts
    )
    return [event_pb2.Event.FromString(bytes(r["payload"])) for r in rows]


def _refused_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "paylink.worker" and r.levelno == logging.ERROR and release_guard.FIX in r.getMessage()
    ]


async def test_a_worker_refused_by_a_newer_database_backs_off_reports_not_ready_and_recovers(
    own: runtime.Running, caplog: pytest.LogCaptureFixture
) -> None:
    app, url = own, own.deps.settings.database_url
    assert app.api is not None and app.worker is not None
    work = app.worker
    worker_task = next(t for t in app.tasks if t.get_name() == "worker")
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.api.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert await _status(app, health) == health_pb2.HealthCheckResponse.SERVING
        assert REGISTRY.get_sample_value("paylink_release_refused") == 0

        floor = migrate.newest() + 1  # the next release's contract migration
        await set_release_floor(url, floor)
        # A job queued meanwhile by the newer release (a connection that says the newer schema).
        workspace, account = await insert_account(app.deps.pool, name="refused")
        newer = await asyncpg.connect(
            url, server_settings={"application_name": "paylink-next", db.SCHEMA_SETTING: f"{floor:04d}"}
        )
        try:
            job_id = ids.new_id()
            [row] = await queue.enqueue_refreshes(
                newer,
                [
                    new_refresh(
                        workspace, account, c.JOB_NAME_IDENTITY, request_id="refused-test", job_id=job_id
                    )
                ],
            )
            assert row is not None
            await newer.execute("SELECT pg_notify($1, '')", queue.NOTIFY_CHANNEL)
        finally:
            await newer.close()

        async def backed_off_three_times() -> bool:
            return work.refused.refusals >= 3

        await _wait_until(backed_off_three_times, 60, "the worker was not refused three times")
        # Refused, it backs off: jittered exponential delays up to a cap, one ERROR with the fix each.
        delays = list(work.refused.delays)
        for attempt, delay in enumerate(delays, start=1):
            ceiling = min(worker.REFUSED_BACKOFF_CAP, worker.REFUSED_BACKOFF_BASE * 2 ** (attempt - 1))
            assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
        assert len(_refused_logs(caplog)) == work.refused.refusals == len(delays)
        assert "paylink release guard: UPDATE on jobs refused" in (app.deps.release_guard.refusal or "")
        # Not ready, and the gauge says why; nothing crashed; the job was not claimed.
        assert await _status(app, health) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert REGISTRY.get_sample_value("paylink_release_refused") == 1
        assert not worker_task.done()
        assert await app.deps.pool.fetchval("SELECT status::text FROM jobs WHERE id = $1", job_id) == "queued"

        await set_release_floor(url, RELEASE_FLOOR_OF_0174)  # e.g. the newer release rolled back

        async def ran() -> bool:
            status = await app.deps.pool.fetchval("SELECT status::text FROM jobs WHERE id = $1", job_id)
            return status not in ("queued", "running")

        await _wait_until(ran, 30, "the worker did not run the job once the floor was lowered")
        assert await app.deps.pool.fetchval("SELECT attempts FROM jobs WHERE id = $1", job_id) == 1
        assert work.refused.refusals == 0 and app.deps.release_guard.refusal is None
        assert await _status(app, health) == health_pb2.HealthCheckResponse.SERVING
        assert REGISTRY.get_sample_value("paylink_release_refused") == 0
        assert any("accepts this release again" in r.getMessage() for r in caplog.records)
        assert not worker_task.done()


async def test_outcomes_refused_by_a_newer_database_are_kept_and_written_once_accepted(
    own_slow: runtime.Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Jobs in their platform calls when the floor is raised: their outcomes are refused (PL001). The
    completer keeps them and backs off (one WARNING per back-off, no stack trace, no job task
    failing), nothing is written meanwhile; once the floor is lowered every job is completed once,
    with one outcome event, each account's events in order."""
    app, url = own_slow, own_slow.deps.settings.database_url
    assert app.api is not None and app.worker is not None
    work, completer = app.worker, app.worker.completer
    caplog.set_level(logging.INFO)
    workspace, secret = await auth.create_workspace(app.deps.pool, "refused-outcomes")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.api.port}") as channel:
        client = Client(channel, secret)
        linked = await asyncio.gather(
            *(link_account(client, f"user_good+refused{n}", platform_id="sandbox_slow") for n in range(6))
        )
    accounts = [uuid.UUID(session.account_id) for _, session in linked]
    names = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT]  # two outcomes per account, in order
    rows = await queue.enqueue_refreshes(  # a refresh re-accesses, then fetches: two 2 s calls
        app.deps.pool,
        [
            new_refresh(
                workspace.id, account, name, platform_id="sandbox_slow", request_id="refused-outcomes"
            )
            for account in accounts
            for name in names
        ],
    )
    job_ids = [row["id"] for row in rows if row is not None]
    assert len(job_ids) == len(accounts) * len(names)
    await app.deps.pool.execute("SELECT pg_notify($1, '')", queue.NOTIFY_CHANNEL)
    statuses = "SELECT id, status::text AS status, attempts FROM jobs WHERE id = ANY($1::uuid[])"

    async def all_running() -> bool:
        return all(r["status"] == "running" for r in await app.deps.pool.fetch(statuses, job_ids))

    await _wait_until(all_running, 30, "the worker did not claim every job")
    await set_release_floor(url, migrate.newest() + 1)
    # The jobs not finished before the floor went up (all of them, with 2 s platform calls).
    refused = {r["id"] for r in await app.deps.pool.fetch(statuses, job_ids) if r["status"] == "running"}
    assert refused

    async def backed_off_twice() -> bool:
        return len(completer.refused.delays) >= 2

    await _wait_until(backed_off_twice, 60, "the completer did not back off twice")
    # Kept: nothing written, every refused job still held by its task, none failed.
    still = {r["id"]: r["status"] for r in await app.deps.pool.fetch(statuses, list(refused))}
    assert set(still.values()) == {"running"}
    assert not {e.job.job_id for e in await _events(app, accounts)} & {str(j) for j in refused}
    assert work.jobs_held == len(refused)  # held, their tasks waiting: none failed
    for attempt, delay in enumerate(completer.refused.delays, start=1):
        ceiling = min(release_guard.BACKOFF_CAP, release_guard.BACKOFF_BASE * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
    assert REGISTRY.get_sample_value("paylink_release_refused") == 1

    await set_release_floor(url, RELEASE_FLOOR_OF_0174)

    async def all_final() -> bool:
        return all(r["status"] == "success" for r in await app.deps.pool.fetch(statuses, job_ids))

    await _wait_until(all_final, 60, "the kept outcomes were not written once the floor was lowered")
    assert {r["attempts"] for r in await app.deps.pool.fetch(statuses, job_ids)} == {1}  # none rescued
    assert completer.refused.refusals == 0 and app.deps.release_guard.refusal is None
    # One outcome event per job; each account's events contiguous and in order.
    events = await _events(app, accounts)
    refreshes = {str(job_id) for job_id in job_ids}
    outcomes = collections.Counter(
        e.job.job_id for e in events if e.WhichOneof("payload") == "job" and e.job.job_id in refreshes
    )
    assert outcomes == {job_id: 1 for job_id in refreshes}
    by_account: dict[str, list[int]] = collections.defaultdict(list)
    for event in events:
        by_account[event.account_id].append(event.sequence)
    assert all(seq == list(range(1, len(seq) + 1)) for seq in by_account.values()), by_account
    # One WARNING per back-off, without a stack trace; no job task failed or crashed.
    gc.collect()  # a task whose exception nobody retrieved says so when it is collected
    kept = [r for r in caplog.records if r.name == "paylink.completer"]
    assert len(kept) == len(completer.refused.delays)
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in kept)
    assert all("stop this process and run the newer release" in r.getMessage() for r in kept)
    assert not [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
    assert not [r for r in caplog.records if r.getMessage() == "job crashed"]


async def test_the_probe_is_refused_exactly_when_this_release_is(own: runtime.Running) -> None:
    """The health check's probe (`queue.probe_release_guard`) changes nothing and is judged by the guard as
    this release's writes to `jobs` are, so an api process without a worker sees the refusal too."""
    app, url = own, own.deps.settings.database_url
    guard = release_guard.Guard()
    assert await guard.probe(app.deps.pool) is True and guard.refusal is None
    await set_release_floor(url, migrate.newest() + 1)
    try:
        assert await guard.probe(app.deps.pool) is False
        assert guard.refusal is not None and "paylink release guard" in guard.refusal
    finally:
        await set_release_floor(url, RELEASE_FLOOR_OF_0174)
    assert await guard.probe(app.deps.pool) is True and guard.refusal is None


async def test_a_create_job_refused_by_a_newer_database_answers_unavailable_and_writes_nothing(
    own: runtime.Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CreateJob's INSERT into `jobs` refused (PL001): UNAVAILABLE `RELEASE_REFUSED` with the message
    (not INTERNAL), one WARNING line without a stack trace, the process's guard marked, nothing
    written; once the floor is lowered the same request (same request_id) creates its job once."""
    app, url = own, own.deps.settings.database_url
    assert app.api is not None
    marked: list[str] = []
    refuse = app.deps.release_guard.refuse

    def recording(exc: BaseException) -> bool:
        marked.append(str(exc))
        return refuse(exc)

    monkeypatch.setattr(app.deps.release_guard, "refuse", recording)
    _, secret = await auth.create_workspace(app.deps.pool, "refused-rpc")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.api.port}") as channel:
        client = Client(channel, secret)
        _, session = await link_account(client, "user_good+refused-rpc")
        jobs_of_account = "SELECT count(*) FROM jobs WHERE account_id = $1::uuid"
        before = await app.deps.pool.fetchval(jobs_of_account, session.account_id)
        keyed = job_pb2.CreateJobRequest(
            account_id=session.account_id,
            name=c.JOB_NAME_EMPLOYMENT,
            request_id=f"refused-{uuid.uuid4().hex}",
        )
        grouped = job_pb2.CreateJobRequest(account_id=session.account_id, name=c.JOB_NAME_INCOME)

        await set_release_floor(url, migrate.newest() + 1)
        caplog.clear()
        caplog.set_level(logging.INFO)
        for request in (keyed, grouped):  # its own transaction; the grouped INSERT (job_intake.py)
            refused = await rpc_error(client.jobs.CreateJob(request, metadata=client.md()))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
            assert refused.details() == errors.RELEASE_REFUSED
            assert error_reason(refused) == "RELEASE_REFUSED"
        # Nothing written: no job, no stored idempotency key.
        assert await app.deps.pool.fetchval(jobs_of_account, session.account_id) == before
        assert not await app.deps.pool.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE request_id = $1", keyed.request_id
        )
        # One WARNING per refused call, no stack trace, no secret; no "unhandled error".
        rpc_logs = [r for r in caplog.records if r.name == "paylink.rpc"]
        warnings = [r for r in rpc_logs if "release refused" in r.getMessage()]
        assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
        assert all(r.exc_info is None and r.exc_text is None for r in warnings)
        assert all(secret not in str(vars(r)) for r in warnings)
        assert not [r for r in rpc_logs if r.levelno >= logging.ERROR]
        # The process's guard is marked by the refused INSERTs (the probe and the worker only UPDATE).
        assert len([m for m in marked if "paylink release guard: INSERT on jobs refused" in m]) == 2
        assert REGISTRY.get_sample_value("paylink_release_refused") == 1

        await set_release_floor(url, RELEASE_FLOOR_OF_0174)
        first = await client.jobs.CreateJob(keyed, metadata=client.md())
        again = await client.jobs.CreateJob(keyed, metadata=client.md())
        assert again.id == first.id
        assert await app.deps.pool.fetchval(jobs_of_account, session.account_id) == before + 1
        assert await app.deps.pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1::uuid", first.id) == 1


async def test_the_scheduler_refused_by_a_newer_database_backs_off_and_says_so_once_per_back_off(
    own: runtime.Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A due scheduled refresh whose claim the guard refuses (the claim's INSERT into `jobs`): the
    scheduler waits the guard's back-off instead of its tick, one WARNING with the fix per back-off,
    no stack trace; once the floor is lowered it queues the refresh."""
    app, url = own, own.deps.settings.database_url
    caplog.set_level(logging.INFO)
    workspace, [account] = await insert_accounts(app.deps.pool, 1, name="refused-scheduler")
    await app.deps.pool.execute(
        "INSERT INTO refresh_schedules (account_id, name, workspace_id, platform_id, cadence, next_refresh_at)"
        " VALUES ($1, $2, $3, 'sandbox_adp', interval '1 day', now() - interval '1 minute')",
        account,
        c.JOB_NAME_PAYSTUBS,
        workspace,
    )
    assert app.deps.settings.monitoring_tick_seconds == 0.5  # refused every tick, it would say so every 0.5 s
    await set_release_floor(url, migrate.newest() + 1)
    scheduled = Scheduler(app.deps)
    task = asyncio.create_task(scheduled.run())
    jobs_of_account = "SELECT count(*) FROM jobs WHERE account_id = $1"
    try:

        async def refused_three_times() -> bool:
            return scheduled.refused.refusals >= 3

        await _wait_until(refused_three_times, 60, "the scheduler was not refused three times")
        said = [r for r in caplog.records if r.name == "paylink.monitoring"]
        assert len(said) == scheduled.refused.refusals  # one per back-off (0.5-1 s, 1-2 s, ...), not per tick
        assert all(r.levelno == logging.WARNING and r.exc_info is None for r in said)
        assert all(release_guard.FIX in r.getMessage() for r in said)
        assert {getattr(r, "refusals", None) for r in said} == set(range(1, len(said) + 1))
        assert await app.deps.pool.fetchval(jobs_of_account, account) == 0
        assert app.deps.release_guard.refused

        await set_release_floor(url, RELEASE_FLOOR_OF_0174)

        async def queued() -> bool:
            return bool(await app.deps.pool.fetchval(jobs_of_account, account))

        await _wait_until(queued, 60, "the scheduler did not queue the refresh once the floor was lowered")
        assert scheduled.refused.refusals == 0
    finally:
        scheduled.stop()
        await task
    assert not task.exception()


async def test_logins_refused_by_a_newer_database_say_so_once_per_back_off_without_a_stack_trace(
    own: runtime.Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logins whose outcome (the session's jobs) the guard refuses: each SubmitCredentials answers
    UNAVAILABLE `RELEASE_REFUSED`; the login tasks say so once per back-off between them, a WARNING
    naming the fix, never a stack trace."""
    app, url = own, own.deps.settings.database_url
    assert app.api is not None
    monkeypatch.setattr(release_guard, "BACKOFF_BASE", 60.0)  # the first back-off outlasts the test
    _, secret = await auth.create_workspace(app.deps.pool, "refused-logins")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.api.port}") as channel:
        client = Client(channel, secret)
        tokens = [await client.token([c.JOB_NAME_IDENTITY]) for _ in range(3)]
        sessions = [await start_session(client, token.token) for token in tokens]
        await set_release_floor(url, migrate.newest() + 1)
        caplog.clear()
        caplog.set_level(logging.INFO)
        try:
            for n, session in enumerate(sessions):
                refused = await rpc_error(
                    client.link.SubmitCredentials(
                        link_pb2.SubmitCredentialsRequest(
                            session_id=session.id,
                            platform_id="sandbox_adp",
                            username=f"user_good+refused-login{n}",
                            password="pass_good",
                        ),
                        metadata=client.md(),
                    )
                )
                assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
                assert error_reason(refused) == "RELEASE_REFUSED"
        finally:
            await set_release_floor(url, RELEASE_FLOOR_OF_0174)
    said = [r for r in caplog.records if r.name == "paylink.logins"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in said]
    assert release_guard.FIX in said[0].getMessage()
    assert said[0].exc_info is None and said[0].exc_text is None
    assert "pass_good" not in str(vars(said[0]))
