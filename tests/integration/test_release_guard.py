"""The release guard (migration 0174): a connection that does not say it knows schema 0173 or later
(`paylink.schema`, sent by every connection service/db.py opens) cannot queue a job or set a job's
status, lease or run_at (even where no row matches); it gets SQLSTATE PL001 and nothing changes.
The release before 0173 is simulated by a plain asyncpg connection running that release's
statements, copied verbatim from service/queue.py at cbd2dc1~1 (the commit before 0173)."""

from __future__ import annotations

import datetime as dt
import pathlib
import uuid

import asyncpg
import pytest
from paylink.v1 import common_pb2 as c

from service import db, migrate, queue
from service.config import Settings
from service.queue import JobStatus
from tests.harness import (
    database_migrated_to,
    insert_account,
    migrations_up_to,
)

LEASE = dt.timedelta(seconds=30)

# The previous release's statements on `jobs` (service/queue.py at cbd2dc1~1), literals spelled out.
OLD_ENQUEUE = """
WITH job AS (
  INSERT INTO jobs (id, workspace_id, account_id, link_token_id, link_session_id, batch_id, name, origin,
    platform_id, params, params_sealed, api_version, run_at, tags, traceparent, request_id)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
          CASE WHEN $13 THEN 'infinity'::timestamptz ELSE now() END,
          (SELECT tags FROM accounts WHERE id = $3), $14, $15)
  RETURNING id)
SELECT job.*, pg_notify('paylink_jobs', '') FROM job
"""
OLD_CLAIM = """
WITH claimed AS (
  UPDATE jobs SET status = 'running', locked_by = $1, lease_expires_at = now() + $2::interval,
                  attempts = attempts + 1
  WHERE id IN (
    SELECT id FROM jobs WHERE status IN ('queued', 'pending') AND run_at <= now()
      AND platform_id <> ALL($4::text[])
    ORDER BY run_at LIMIT $3 FOR UPDATE SKIP LOCKED)
  RETURNING id, account_id, batch_id, name, origin, platform_id, params, params_sealed, attempts, pending_since,
            traceparent, request_id)
SELECT claimed.*, c.sealed AS grant_sealed
FROM claimed LEFT JOIN accounts a ON a.id = claimed.account_id AND a.connected
     LEFT JOIN account_credentials c ON c.account_id = a.id
"""
OLD_HEARTBEAT = """
UPDATE jobs SET lease_expires_at = now() + $3::interval
FROM (SELECT id FROM jobs WHERE id = ANY($1) AND locked_by = $2 ORDER BY id FOR UPDATE) AS held
WHERE jobs.id = held.id
"""
OLD_RESCUE = """
UPDATE jobs SET status = CASE WHEN pending_since IS NULL THEN 'queued' ELSE 'pending' END,
                locked_by = NULL, lease_expires_at = NULL, run_at = now()
WHERE status = 'running' AND lease_expires_at < now() RETURNING id
"""
OLD_RELEASE_HELD = """
WITH released AS (
  UPDATE jobs SET run_at = now() WHERE batch_id = $1 AND status = 'queued' AND run_at = 'infinity' RETURNING 1)
SELECT pg_notify('paylink_jobs', '') FROM (SELECT count(*) FROM released) AS done
"""
OLD_COMPLETE_SUCCESS = """
UPDATE jobs SET status = 'success', outcome = c.outcome, error_type = 0, error_code = 0, error_message = '',
                completed_at = c.at, locked_by = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::timestamptz[], $3::smallint[], $4::smallint[], $5::text[],
            $6::timestamptz[], $7::smallint[]) AS c(id, run_at, code, type, message, at, outcome)
WHERE jobs.id = c.id
"""


async def _enqueue(conn: db.Executor, workspace: uuid.UUID, account: uuid.UUID, **kw: object) -> uuid.UUID:
    row = await queue.enqueue(
        conn,  # type: ignore[arg-type]
        workspace_id=workspace,
        account_id=account,
        platform_id="sandbox_adp",
        name=c.JOB_NAME_IDENTITY,
        origin=c.JOB_ORIGIN_LINK,
        batch_id=kw.pop("batch_id", uuid.uuid4()),  # type: ignore[arg-type]
        api_version="",
        params=c.JobParams(),
        **kw,  # type: ignore[arg-type]
    )
    assert row is not None
    return uuid.UUID(str(row["id"]))


async def _snapshot(conn: db.Executor) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    return (
        await conn.fetch("SELECT * FROM jobs ORDER BY id"),
        await conn.fetch("SELECT * FROM job_queue ORDER BY id"),
    )


async def _refused(conn: asyncpg.Connection, sql: str, *args: object) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.execute(sql, *args)
    assert caught.value.sqlstate == db.STALE_RELEASE, caught.value
    return caught.value


async def test_the_previous_release_is_refused_and_changes_nothing(fresh_database: str) -> None:
    old = await asyncpg.connect(fresh_database)  # idle since before the jobs below: a worker waiting to claim
    new = await db.connect(fresh_database)
    try:
        await _refused(old, OLD_CLAIM, "old-w", LEASE, 10, [])  # an empty queue: refused all the same
        workspace, account = await insert_account(new)
        queued = await _enqueue(new, workspace, account)
        held_batch = uuid.uuid4()
        await _enqueue(new, workspace, account, batch_id=held_batch, held=True)
        [dead] = await queue.claim(new, "gone", dt.timedelta(seconds=-1), 1, [])  # lease expired
        leased = await _enqueue(new, workspace, account)
        [mine] = await queue.claim(new, "new-w", LEASE, 1, [])
        assert (dead.id, mine.id) == (queued, leased)
        await _enqueue(new, workspace, account)  # one more waiting: what an old claim would take
        before = await _snapshot(new)

        error = await _refused(
            old, OLD_ENQUEUE, uuid.uuid4(), workspace, account, None, None, uuid.uuid4(), c.JOB_NAME_IDENTITY,
            c.JOB_ORIGIN_LINK, "sandbox_adp", b"", None, "", False, "", "",
        )  # fmt: skip
        assert "INSERT on jobs refused" in str(error) and "Upgrading" in str(error)
        assert "SET paylink.schema" in (error.hint or "")
        await _refused(old, OLD_CLAIM, "old-w", LEASE, 10, [])
        await _refused(old, OLD_HEARTBEAT, [mine.id], "new-w", LEASE)
        await _refused(old, OLD_RESCUE)
        await _refused(old, OLD_RELEASE_HELD, held_batch)
        now = dt.datetime.now(dt.UTC)
        await _refused(
            old, OLD_COMPLETE_SUCCESS, [mine.id], [now], [0], [0], [""], [now], [c.JOB_OUTCOME_SUCCESS]
        )
        assert await _snapshot(new) == before  # no job, no status, no lease changed

        # What is not the queue's stays open to it: reads, and an erasure's scrub of parameters.
        assert await old.fetchval("SELECT count(*) FROM jobs") == len(before[0])
        assert await old.execute("UPDATE jobs SET params = '' WHERE id = $1", queued) == "UPDATE 1"

        # The current release goes on: the waiting job is claimed once, the dead worker's rescued.
        [claimed] = await queue.claim(new, "new-w2", LEASE, 10, [])
        assert claimed.id not in {queued, leased}
        assert await queue.rescue(new) == 1
    finally:
        await old.close()
        await new.close()


async def test_an_operator_session_says_which_schema_it_knows(fresh_database: str) -> None:
    new = await db.connect(fresh_database)
    psql = await asyncpg.connect(fresh_database)  # a session as psql opens it: not marked
    try:
        workspace, account = await insert_account(new)
        job = await _enqueue(new, workspace, account)
        give_up = "UPDATE jobs SET status = 'error', completed_at = now() WHERE id = $1"
        await _refused(psql, give_up, job)
        for value in ("0172", "latest", "", "-1"):
            await psql.execute("SELECT set_config('paylink.schema', $1, false)", value)
            await _refused(psql, give_up, job)
        await psql.execute("SET paylink.schema = '0174'")  # docs/operations.md: how a fix session starts
        async with psql.transaction():
            await psql.execute("DELETE FROM job_queue WHERE id = $1", job)
            await psql.execute(give_up, job)
        assert await new.fetchval("SELECT status FROM jobs WHERE id = $1", job) == JobStatus.ERROR
    finally:
        await psql.close()
        await new.close()
    # PGOPTIONS='-c paylink.schema=0173' (the floor) works as well: sent at connection start.
    floor = await asyncpg.connect(fresh_database, server_settings={db.SCHEMA_SETTING: "0173"})
    try:
        assert await queue.retry_failed(floor, job) == JobStatus.ERROR
        assert await floor.fetchval("SELECT status FROM jobs WHERE id = $1", job) == JobStatus.QUEUED
    finally:
        await floor.close()


async def test_every_connection_of_this_release_says_the_newest_migration_it_knows(
    fresh_database: str,
) -> None:
    newest = max(version for version, _, _ in migrate.discover())
    assert newest >= 174  # the guard's own migration, at least
    conn = await db.connect(fresh_database)
    pool = await db.create_pool(Settings(database_url=fresh_database), size=2)
    try:
        for source in (conn, pool):
            assert await source.fetchval("SELECT current_setting('paylink.schema')") == f"{newest:04d}"
            assert await source.fetchval("SELECT paylink_schema()") == newest
    finally:
        await conn.close()
        await pool.close()


async def test_the_guard_on_a_database_at_0173(tmp_path: pathlib.Path) -> None:
    async with database_migrated_to(tmp_path, 173) as url:
        old = await asyncpg.connect(url)  # opened before the migration, idle through it
        try:
            workspace, account = await insert_account(old)
            job = await _enqueue(old, workspace, account)  # 0173 alone: unmarked writes still pass
            # Exactly 0174: the release that brought the guard (later migrations are others' tests).
            up_to_0174 = migrations_up_to(tmp_path, 174)
            assert await migrate.migrate(url, up_to_0174) == ["0174_jobs_release_guard.sql"]

            await _refused(old, OLD_CLAIM, "old-w", LEASE, 10, [])
            with pytest.raises(asyncpg.PostgresError) as caught:
                await _enqueue(old, workspace, account)
            assert caught.value.sqlstate == db.STALE_RELEASE
            new = await db.connect(url)
            try:
                # This code's claim needs the migrations after 0174 too (0177's job_queue_pick).
                await migrate.migrate(url)
                [claimed] = await queue.claim(new, "new-w", LEASE, 10, [])
                assert claimed.id == job
                # Forward-only and idempotent: the runner skips it, and running it again changes nothing.
                assert await migrate.migrate(url, up_to_0174) == []
                [(_, name, sql)] = [m for m in migrate.discover() if m[0] == 174]
                await new.execute(sql)
                triggers = await new.fetch(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs'::regclass AND tgname LIKE"
                    " 'jobs_release_guard%' ORDER BY tgname"
                )
                assert [t["tgname"] for t in triggers] == [
                    "jobs_release_guard_insert",
                    "jobs_release_guard_update",
                ]
                assert name == "0174_jobs_release_guard.sql"
                await _refused(old, OLD_CLAIM, "old-w", LEASE, 10, [])  # the guard still stands
            finally:
                await new.close()
        finally:
            await old.close()
