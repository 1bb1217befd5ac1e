"""The queue's two tables (migration 0173, issue 14): `job_queue` holds a row exactly while its job is
not final, agreeing with `jobs` (the truth GetJob reads); claims and completions change no indexed
column of `jobs`, so they update its rows HOT; the migration moves the jobs in flight of an existing
database into the queue."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import pathlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from paylink.v1 import common_pb2 as c

from service import ids, migrate, queue
from service.db import connect as db_connect
from service.queue import Completion, JobStatus
from tests.harness import (
    database_migrated_to,
    insert_account,
    insert_jobs,
    migrations_up_to,
    new_refresh,
)

LEASE = dt.timedelta(seconds=30)
# What a claim or a completion writes on `jobs`: no index may name one of them (else no HOT update).
CHANGED_BY_THE_QUEUE = {
    "status", "locked_by", "lease_expires_at", "run_at", "attempts", "pending_since", "outcome",
    "error_type", "error_code", "error_message", "completed_at",
}  # fmt: skip


async def _account(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    return await insert_account(conn, name="queue")


async def _enqueue(
    conn: asyncpg.Connection, workspace: uuid.UUID, account: uuid.UUID, **kw: object
) -> uuid.UUID:
    row = await queue.enqueue(
        conn,
        workspace_id=workspace,
        account_id=account,
        platform_id="sandbox_adp",
        name=kw.pop("name", c.JOB_NAME_IDENTITY),  # type: ignore[arg-type]
        origin=kw.pop("origin", c.JOB_ORIGIN_LINK),  # type: ignore[arg-type]
        batch_id=kw.pop("batch_id", uuid.uuid4()),  # type: ignore[arg-type]
        api_version="",
        params=c.JobParams(),
        **kw,  # type: ignore[arg-type]
    )
    assert row is not None
    return uuid.UUID(str(row["id"]))


async def _queue_row(conn: asyncpg.Connection, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT q.locked_by, q.lease_expires_at, q.run_at, j.status, j.locked_by AS job_locked_by,"
        " j.lease_expires_at AS job_lease, j.run_at AS job_run_at"
        " FROM job_queue q JOIN jobs j USING (id) WHERE q.id = $1",
        job_id,
    )


async def test_the_queue_row_follows_its_job_until_it_is_final(db: asyncpg.Connection) -> None:
    workspace, account = await _account(db)
    job = await _enqueue(db, workspace, account)
    row = await _queue_row(db, job)
    assert row is not None and row["locked_by"] is None and row["status"] == JobStatus.QUEUED

    [claimed] = await queue.claim(db, "w1", LEASE, 10, [])
    assert claimed.id == job and claimed.attempts == 1
    row = await _queue_row(db, job)
    assert row is not None and (row["locked_by"], row["job_locked_by"], row["status"]) == (
        "w1",
        "w1",
        "running",
    )
    assert row["lease_expires_at"] == row["job_lease"]
    assert await queue.claim(db, "w2", LEASE, 10, []) == []  # leased: not claimable

    await queue.heartbeat(db, [job], "w1", dt.timedelta(minutes=5))
    row = await _queue_row(db, job)
    assert row is not None and row["lease_expires_at"] == row["job_lease"] > dt.datetime.now(dt.UTC)

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    async with db.transaction():
        assert set(await queue.lock_for_outcomes(db, [job], "w1")) == {job}
        assert await queue.lock_for_outcomes(db, [job], "w2") == {}  # not its lease
        await queue.complete(db, [Completion(job, JobStatus.PENDING, later, run_at=later)])
    row = await _queue_row(db, job)
    assert row is not None and row["locked_by"] is None and row["status"] == JobStatus.PENDING
    assert row["run_at"] == row["job_run_at"] == later
    assert await queue.claim(db, "w2", LEASE, 10, []) == []  # not before run_at

    await db.execute("UPDATE job_queue SET run_at = now() WHERE id = $1", job)
    [again] = await queue.claim(db, "w2", LEASE, 10, [])
    assert again.attempts == 2
    now = dt.datetime.now(dt.UTC)
    await queue.complete(db, [Completion(job, JobStatus.ERROR, now, error_code=3, error_message="no")])
    assert await _queue_row(db, job) is None
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job) == JobStatus.ERROR

    assert await queue.retry_failed(db, job) == JobStatus.ERROR  # an operator's retry queues it again
    row = await _queue_row(db, job)
    assert row is not None and row["locked_by"] is None and row["status"] == JobStatus.QUEUED
    [third] = await queue.claim(db, "w3", LEASE, 10, [])
    await queue.complete(db, [Completion(third.id, JobStatus.SUCCESS, dt.datetime.now(dt.UTC))])
    assert await _queue_row(db, job) is None
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job) == JobStatus.SUCCESS


async def test_a_claim_walks_the_runnable_index_in_order_without_statistics(
    db: asyncpg.Connection,
) -> None:
    """A backlog of 3,064 in a queue never analyzed (a new database, or one whose queue was empty at
    every analyze, before a burst; autovacuum off here so that it stays so): the planner's defaults
    expect a handful of runnable rows, and a bitmap scan of all of them and a sort would cost less on
    paper. A claim of 64 still reads about the 64 index entries it takes, oldest run_at first
    (migration 0177, job_queue_pick)."""
    await db.execute("ALTER TABLE job_queue SET (autovacuum_enabled = false)")
    workspace, account = await _account(db)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    oldest = set(await insert_jobs(db, workspace, account, count=64, run_at=old))
    await insert_jobs(db, workspace, account, count=3000, run_at=old + dt.timedelta(minutes=1))
    assert await db.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'job_queue'") == 0
    # Counted in this transaction alone: the index entries the claim's scans returned.
    read = "SELECT pg_stat_get_xact_tuples_returned('job_queue_runnable'::regclass)"
    async with db.transaction():
        before = await db.fetchval(read)
        claimed = await queue.claim(db, "w1", LEASE, 64, [])
        entries = await db.fetchval(read) - before
    assert {job.id for job in claimed} == oldest
    assert entries < 200  # 3,064 with the bitmap scan and sort the defaults alone would choose


async def test_rescue_release_and_held_jobs_move_both_rows(db: asyncpg.Connection) -> None:
    workspace, account = await _account(db)
    dead, leaving = await _enqueue(db, workspace, account), await _enqueue(db, workspace, account)
    batch = uuid.uuid4()
    held = await _enqueue(db, workspace, account, batch_id=batch, held=True)
    assert {j.id for j in await queue.claim(db, "dead", dt.timedelta(seconds=-1), 1, [])} == {dead}
    assert {j.id for j in await queue.claim(db, "leaving", LEASE, 10, [])} == {leaving}  # not the held one

    assert await queue.rescue(db) == 1
    await queue.release_worker(db, "leaving")
    for job, attempts in ((dead, 1), (leaving, 0)):
        row = await _queue_row(db, job)
        assert row is not None and row["locked_by"] is None and row["job_locked_by"] is None
        assert row["status"] == JobStatus.QUEUED and row["run_at"] == row["job_run_at"]
        assert await db.fetchval("SELECT attempts FROM jobs WHERE id = $1", job) == attempts

    await queue.release_held(db, batch)
    assert {j.id for j in await queue.claim(db, "w", LEASE, 10, [])} == {dead, leaving, held}


async def test_one_refresh_in_flight_per_account_and_job_type(db: asyncpg.Connection) -> None:
    workspace, account = await _account(db)
    first = await _enqueue(db, workspace, account, origin=c.JOB_ORIGIN_REFRESH)
    with pytest.raises(asyncpg.UniqueViolationError):
        await _enqueue(db, workspace, account, origin=c.JOB_ORIGIN_REFRESH)
    found = await queue.refresh_in_flight(db, account, c.JOB_NAME_IDENTITY)
    assert found is not None and found["id"] == first
    [job] = await queue.claim(db, "w", LEASE, 1, [])
    await queue.complete(db, [Completion(job.id, JobStatus.SUCCESS, dt.datetime.now(dt.UTC))])
    assert await queue.refresh_in_flight(db, account, c.JOB_NAME_IDENTITY) is None
    await _enqueue(db, workspace, account, origin=c.JOB_ORIGIN_REFRESH)  # the next one may come


async def test_no_index_on_jobs_names_a_column_the_queue_changes(db: asyncpg.Connection) -> None:
    indexed = {
        (r["index"], r["column"])
        for r in await db.fetch(
            "SELECT i.indexrelid::regclass::text AS index, a.attname AS column"
            " FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0"
            " WHERE i.indrelid = 'jobs'::regclass AND (a.attnum = ANY(i.indkey)"
            "   OR pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M')"
            "   OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\\m' || a.attname || '\\M'))"
        )
    }
    assert ("jobs_pkey", "id") in indexed  # the query sees index columns
    assert not {(i, col) for i, col in indexed if col in CHANGED_BY_THE_QUEUE}
    assert "fillfactor=70" in (
        await db.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")
    )


async def test_claims_and_completions_update_jobs_hot(db: asyncpg.Connection) -> None:
    workspace, account = await _account(db)
    async with db.transaction():  # pg_stat_xact_*: this transaction's own counts
        ids = [await _enqueue(db, workspace, account) for _ in range(5)]
        claimed = await queue.claim(db, "w", LEASE, 10, [])
        assert {j.id for j in claimed} == set(ids)
        now = dt.datetime.now(dt.UTC)
        await queue.complete(db, [Completion(j, JobStatus.SUCCESS, now) for j in ids])
        row = await db.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
        )
        assert row is not None  # the jobs table's row: this transaction updated it
        updated, hot = row
    assert updated == 10
    assert hot == 10


@contextlib.asynccontextmanager
async def _before_0173(tmp_path: pathlib.Path) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """An existing database: migrated up to 0172, and a connection of that release (unmarked)."""
    async with database_migrated_to(tmp_path, 172) as url:
        conn = await asyncpg.connect(url)
        try:
            yield url, conn
        finally:
            await conn.close()


_OLD_JOB = (
    "INSERT INTO jobs (id, workspace_id, account_id, batch_id, name, origin, platform_id, params, status,"
    " locked_by, lease_expires_at) VALUES (gen_random_uuid(), $1, $2, gen_random_uuid(), $3, 2, 'sandbox_adp',"
    " '', $4, CASE WHEN $4 = 'running' THEN 'w' END, CASE WHEN $4 = 'running' THEN now() + $5::interval END)"
    " RETURNING id"
)


async def test_the_migration_moves_the_jobs_in_flight_into_the_queue(tmp_path: pathlib.Path) -> None:
    async with _before_0173(tmp_path) as (url, conn):
        workspace, account = await _account(conn)
        jobs = {}
        for name, status in enumerate(("queued", "running", "pending", "success", "error"), start=1):
            lease = dt.timedelta(seconds=-1)  # its worker is gone
            jobs[status] = await conn.fetchval(_OLD_JOB, workspace, account, name, status, lease)
        up_to_0173 = migrations_up_to(tmp_path, 173)  # not 0174: it refuses this unmarked connection
        assert await migrate.migrate(url, up_to_0173) == ["0173_job_queue.sql"]
        rows = {r["id"]: r for r in await conn.fetch("SELECT id, locked_by, refresh FROM job_queue")}
        assert set(rows) == {jobs["queued"], jobs["running"], jobs["pending"]}
        assert rows[jobs["running"]]["locked_by"] == "w" and rows[jobs["queued"]]["locked_by"] is None
        assert all(r["refresh"] for r in rows.values())
        assert await queue.rescue(conn) == 1  # the dead worker's job, from the queue now
        with pytest.raises(asyncpg.UniqueViolationError):  # 0120's rule holds on the moved rows
            await conn.execute(
                "INSERT INTO job_queue (id, run_at, platform_id, account_id, name, refresh)"
                " SELECT gen_random_uuid(), now(), 'sandbox_adp', $1, 2, true",
                account,
            )
        assert await migrate.migrate(url, up_to_0173) == []


async def test_the_migration_refuses_while_a_worker_of_the_previous_release_holds_a_job(
    tmp_path: pathlib.Path,
) -> None:
    async with _before_0173(tmp_path) as (url, conn):
        workspace, account = await _account(conn)
        await conn.fetchval(_OLD_JOB, workspace, account, 1, "running", dt.timedelta(minutes=1))
        with pytest.raises(asyncpg.RaiseError, match="still hold jobs"):
            await migrate.migrate(url)
        assert await conn.fetchval("SELECT to_regclass('job_queue')") is None  # nothing applied


async def test_a_batch_of_outcomes_locks_the_queue_rows_not_the_job_rows(
    db: asyncpg.Connection, fresh_database: str
) -> None:
    """Every writer of a running job's `jobs` row locks its `job_queue` row first (claim, heartbeat,
    rescue, release, completion), so a batch of outcomes holding the queue rows needs no lock of its
    own on the job rows: one row lock (and its WAL record) fewer per job. The job rows it reads agree
    with the queue rows it holds."""
    workspace, account = await _account(db)
    job = await _enqueue(db, workspace, account)
    await queue.claim(db, "w1", LEASE, 1, [])
    other = await db_connect(fresh_database)
    try:
        async with db.transaction():
            locked = await queue.lock_for_outcomes(db, [job], "w1")
            assert set(locked) == {job} and locked[job].account_id == account
            async with other.transaction():  # the job row is free, the queue row is not
                assert await other.fetchval("SELECT id FROM jobs WHERE id = $1 FOR UPDATE NOWAIT", job) == job
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.fetchval("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE NOWAIT", job)
            await queue.complete(db, [Completion(job, JobStatus.SUCCESS, dt.datetime.now(dt.UTC))])
    finally:
        await other.close()
    assert await _queue_row(db, job) is None
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job) == JobStatus.SUCCESS


async def test_a_batch_waiting_for_a_release_leaves_the_job_it_took(
    db: asyncpg.Connection, fresh_database: str
) -> None:
    """A batch of outcomes that waits for the queue row of a job its worker is releasing (shutdown)
    finds the job no longer its own once the release committed: it locks nothing and writes nothing,
    and the job stays queued as the release left it (kept behaviour with the job rows unlocked)."""
    workspace, account = await _account(db)
    job = await _enqueue(db, workspace, account)
    await queue.claim(db, "w1", LEASE, 1, [])
    releasing = await db_connect(fresh_database)
    try:
        release = releasing.transaction()
        await release.start()
        await queue.release_worker(releasing, "w1")  # holds the queue row until it commits
        async with db.transaction():
            batch = asyncio.ensure_future(queue.lock_for_outcomes(db, [job], "w1"))
            await _wait_for_lock_wait(releasing, db)
            assert not batch.done()
            await release.commit()
            assert await batch == {}
    finally:
        await releasing.close()
    row = await _queue_row(db, job)
    assert row is not None and row["locked_by"] is None and row["job_locked_by"] is None
    assert row["status"] == JobStatus.QUEUED
    assert await db.fetchval("SELECT attempts FROM jobs WHERE id = $1", job) == 0


async def _wait_for_lock_wait(observer: asyncpg.Connection, waiting: asyncpg.Connection) -> None:
    """Returns once `waiting`'s backend waits for a lock (pg_stat_activity), not by time."""
    pid = waiting.get_server_pid()
    while (
        await observer.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) != "Lock"
    ):
        await asyncio.sleep(0.01)


async def test_a_job_is_queued_with_its_row_and_without_locking_it(db: asyncpg.Connection) -> None:
    """`job_queue` has no foreign key to `jobs` (migration 0183): the queue is the only writer of both
    and writes both in one statement, so the key's check (a row lock on the job row the same
    statement just inserted: a WAL record and a dirtied page per job) proved nothing. A job row is
    left as inserted, not locked (xmax 0), by every way of queueing a job."""
    workspace, account = await _account(db)
    linked = await _enqueue(db, workspace, account)
    [refresh] = await queue.enqueue_refreshes(db, [new_refresh(workspace, account, c.JOB_NAME_EMPLOYMENT)])
    assert refresh is not None
    rows = await db.fetch(
        "SELECT workspace_id, id AS account_id, $2::smallint AS name, platform_id, tags FROM accounts WHERE id = $1",
        account,
        c.JOB_NAME_INCOME,
    )
    [scheduled] = await queue.enqueue_scheduled(db, [ids.new_id()], rows)
    for job in (linked, refresh["id"], scheduled):
        assert await db.fetchval("SELECT xmax::text FROM jobs WHERE id = $1", job) == "0"
        assert await _queue_row(db, job) is not None


async def test_deleting_jobs_deletes_their_queue_rows(db: asyncpg.Connection) -> None:
    """No code path deletes jobs (erasure scrubs their parameters, workspace deletion too, the janitor
    prunes the outbox and idempotency keys only); an operator's DELETE or TRUNCATE takes the jobs'
    queue rows with them, as the foreign key's ON DELETE CASCADE did (migration 0183's triggers)."""
    workspace, account = await _account(db)
    gone, kept = await _enqueue(db, workspace, account), await _enqueue(db, workspace, account)
    await db.execute("DELETE FROM jobs WHERE id = $1", gone)
    assert await _queue_row(db, gone) is None
    assert await db.fetchval("SELECT count(*) FROM job_queue WHERE id = $1", gone) == 0
    assert await _queue_row(db, kept) is not None
    await db.execute("TRUNCATE jobs")
    assert await db.fetchval("SELECT count(*) FROM job_queue") == 0


async def test_the_migration_keeps_the_queue_and_the_previous_release_queues_and_claims(
    tmp_path: pathlib.Path,
) -> None:
    """0183 on a database with jobs in flight: their queue rows stay; the previous release's statements
    (unchanged here) go on queuing, claiming and completing beside this one's."""
    async with database_migrated_to(tmp_path, 182) as url:
        conn = await db_connect(url)
        try:
            workspace, account = await _account(conn)
            before = await _enqueue(conn, workspace, account)
            assert await migrate.migrate(url, migrations_up_to(tmp_path, 183)) == [
                "0183_job_queue_without_foreign_key.sql"
            ]
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_constraint WHERE conrelid = 'job_queue'::regclass AND contype = 'f'"
                )
                == 0
            )
            after = await _enqueue(conn, workspace, account)
            claimed = await queue.claim(conn, "w", LEASE, 10, [])
            assert {j.id for j in claimed} == {before, after}
            at = dt.datetime.now(dt.UTC)
            await queue.complete(conn, [Completion(j.id, JobStatus.SUCCESS, at) for j in claimed])
            assert await conn.fetchval("SELECT count(*) FROM job_queue") == 0
        finally:
            await conn.close()
