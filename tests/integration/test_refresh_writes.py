"""What a refresh's INSERT writes (migration 0184, issue 14): no entry in `jobs_batch` (a refresh is
the only job of its batch; the reads of a batch leave refreshes out and use the index), none in a
per-platform index of `job_queue`, and no lock on its account's row: the foreign key from a job to
its account (0182) became triggers that refuse the same rows without locking. The WAL records this
saves are counted by bench/create_job_wal.py (bench/NOTES.md, queue session 29), not here."""

from __future__ import annotations

import datetime as dt
import pathlib
import uuid

import asyncpg
import pytest
from paylink.v1 import common_pb2 as c

from service import ids, migrate, queue
from service.db import connect as db_connect
from tests.harness import database_migrated_to, insert_account, insert_jobs, migrations_up_to, new_refresh

_INFINITY = dt.datetime.max.replace(tzinfo=dt.UTC)  # asyncpg's 'infinity': a held job
# Whether this transaction holds a lock on the row (its xmax is this transaction's id, lock only).
LOCKED_BY_US = "SELECT xmax::text = txid_current()::text FROM {} WHERE id = $1"


async def _indexes(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", table)
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_the_batch_index_leaves_refreshes_out_and_the_batch_reads_use_it(
    db: asyncpg.Connection,
) -> None:
    jobs, queued = await _indexes(db, "jobs"), await _indexes(db, "job_queue")
    assert jobs["jobs_batch"].endswith(f"(batch_id) WHERE (origin <> {c.JOB_ORIGIN_REFRESH})")
    assert set(queued) == {
        "job_queue_pkey",
        "job_queue_runnable",
        "job_queue_leased",
        "job_queue_one_refresh",
    }
    await db.execute("SET enable_seqscan = off")  # a new database's statistics: only whether it can
    for sql in (queue._BATCH, queue._SUCCEEDED, queue._RELEASE_HELD):
        plan = "\n".join(
            r[0] for r in await db.fetch(f"EXPLAIN {sql}", uuid.uuid4(), *([2] if "$2" in sql else []))
        )
        assert "jobs_batch" in plan, plan


async def test_no_before_update_row_trigger_on_jobs(db: asyncpg.Connection) -> None:
    """A BEFORE UPDATE row trigger, whatever its column list or WHEN, has every row an UPDATE changes
    locked first (a WAL record per job at each claim and completion): 0184's check of a job's account
    is an AFTER trigger since 0185."""
    # pg_trigger.tgtype bits: 1 row, 2 before, 16 update.
    sql = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs'::regclass AND tgtype & 19 = 19"
    assert [r["tgname"] for r in await db.fetch(sql)] == []


async def test_the_reads_of_a_batch_answer_as_before(db: asyncpg.Connection) -> None:
    workspace, account = await insert_account(db)
    batch = ids.new_id()
    held = await insert_jobs(db, workspace, account, batch_id=batch, count=2, run_at=_INFINITY)
    [done] = await insert_jobs(
        db,
        workspace,
        account,
        batch_id=batch,
        name=c.JOB_NAME_DIRECT_DEPOSIT_SWITCH,
        status=queue.JobStatus.SUCCESS,
    )
    assert {j.id for j in await queue.batch(db, batch)} == {*held, done}
    assert await queue.has_succeeded(db, batch, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH)
    await queue.release_held(db, batch)
    assert (
        await db.fetchval("SELECT count(*) FROM job_queue WHERE id = ANY($1) AND run_at < 'infinity'", held)
        == 2
    )
    # A refresh is its batch's only job: no held job, no switch that succeeded before it.
    refresh = new_refresh(workspace, account, c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS)
    [row] = await queue.enqueue_refreshes(db, [refresh])
    assert row is not None
    assert not await queue.has_succeeded(db, refresh.batch_id, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH)
    await queue.release_held(db, refresh.batch_id)
    assert await db.fetchval("SELECT run_at < 'infinity' FROM job_queue WHERE id = $1", refresh.job_id)


async def test_queuing_a_job_locks_no_account_row(db: asyncpg.Connection) -> None:
    """The foreign key's check locked the account's row (FOR KEY SHARE: a WAL record per job, and a
    MultiXact when CreateJobs of one account overlapped); its triggers read it."""
    workspace, account = await insert_account(db)
    async with db.transaction():
        [row] = await queue.enqueue_refreshes(db, [new_refresh(workspace, account, c.JOB_NAME_IDENTITY)])
        assert row is not None
        await insert_jobs(db, workspace, account)
        assert await db.fetchval(LOCKED_BY_US.format("accounts"), account) is False  # before: True
        assert await db.fetchval(LOCKED_BY_US.format("workspaces"), workspace) is False


async def test_a_job_must_name_an_account_of_its_workspace(db: asyncpg.Connection) -> None:
    workspace, account = await insert_account(db)
    other, stranger = await insert_account(db, name="other")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="jobs_account_in_workspace"):
        await queue.enqueue_refreshes(db, [new_refresh(other, account, c.JOB_NAME_IDENTITY)])
    for bad_workspace, bad_account in ((other, account), (workspace, uuid.uuid4())):
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="jobs_account_in_workspace"):
            await insert_jobs(db, bad_workspace, bad_account)
    # One bad row among good ones refuses the statement: nothing of it is queued.
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="jobs_account_in_workspace"):
        await queue.enqueue_refreshes(
            db,
            [
                new_refresh(workspace, account, c.JOB_NAME_IDENTITY),
                new_refresh(workspace, stranger, c.JOB_NAME_INCOME),
            ],
        )
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    [job] = await insert_jobs(db, workspace, account)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="jobs_account_in_workspace"):
        await db.execute(
            "UPDATE jobs SET account_id = $2, workspace_id = $3 WHERE id = $1", job, stranger, other
        )


async def test_an_account_that_jobs_name_keeps_its_row_and_key(db: asyncpg.Connection) -> None:
    workspace, account = await insert_account(db)
    other, unused = await insert_account(db, name="other")
    await insert_jobs(db, workspace, account)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="jobs_account_in_workspace"):
        await db.execute("DELETE FROM accounts WHERE id = $1", account)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="jobs_account_in_workspace"):
        await db.execute("UPDATE accounts SET workspace_id = $2 WHERE id = $1", account, other)
    await db.execute("UPDATE accounts SET workspace_id = workspace_id, tags = '{}' WHERE id = $1", account)
    await db.execute("DELETE FROM accounts WHERE id = $1", unused)  # no job names it
    assert await db.fetchval("SELECT count(*) FROM accounts") == 1


async def test_the_migration_keeps_the_jobs_and_the_previous_release_queues(tmp_path: pathlib.Path) -> None:
    async with database_migrated_to(tmp_path, 183) as url:
        conn = await db_connect(url)
        try:
            workspace, account = await insert_account(conn)
            batch = ids.new_id()
            linked = await insert_jobs(conn, workspace, account, batch_id=batch, count=2)
            [before] = await queue.enqueue_refreshes(
                conn, [new_refresh(workspace, account, c.JOB_NAME_IDENTITY)]
            )
            assert before is not None
            assert await migrate.migrate(url, migrations_up_to(tmp_path, 184)) == ["0184_refresh_writes.sql"]
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_constraint WHERE conrelid = 'jobs'::regclass"
                    " AND confrelid = 'accounts'::regclass"
                )
                == 0
            )
            assert {j.id for j in await queue.batch(conn, batch)} == set(linked)
            # The previous release's statements (unchanged here) go on queuing beside this one's.
            [after] = await queue.enqueue_refreshes(
                conn, [new_refresh(workspace, account, c.JOB_NAME_INCOME)]
            )
            assert after is not None
            assert await conn.fetchval("SELECT count(*) FROM job_queue WHERE refresh") == 2
        finally:
            await conn.close()
