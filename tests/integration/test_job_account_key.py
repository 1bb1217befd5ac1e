"""A job's account and workspace are one foreign key, to the account of that workspace (migration
0182): queuing a job no longer locks its workspace's row (which all of the workspace's concurrent
CreateJobs locked together, a MultiXact each), and a job whose workspace is not its account's is
refused. The migration checks the jobs already there. (0184 made the key triggers that lock the
account's row no more either: tests/integration/test_refresh_writes.py.)"""

from __future__ import annotations

import pathlib

import asyncpg
import pytest
from paylink.v1 import common_pb2

from service import migrate, queue
from service.db import connect as db_connect
from tests.harness import database_migrated_to, insert_account, insert_jobs, migrations_up_to, new_refresh

# Whether this transaction holds a lock on the row (its xmax is this transaction's id, lock only).
LOCKED_BY_US = "SELECT xmax::text = txid_current()::text FROM {} WHERE id = $1"


async def test_a_job_locks_neither_its_account_row_nor_its_workspace_row(db: asyncpg.Connection) -> None:
    workspace, account = await insert_account(db)
    async with db.transaction():
        [row] = await queue.enqueue_refreshes(
            db, [new_refresh(workspace, account, common_pb2.JOB_NAME_IDENTITY)]
        )
        assert row is not None
        assert await db.fetchval(LOCKED_BY_US.format("accounts"), account) is False  # 0182 to 0183: True
        assert await db.fetchval(LOCKED_BY_US.format("workspaces"), workspace) is False  # before 0182: True


async def test_a_job_of_another_workspace_s_account_is_refused(db: asyncpg.Connection) -> None:
    _, account = await insert_account(db)
    other, _ = await insert_account(db, name="other")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="jobs_account_in_workspace"):
        await queue.enqueue_refreshes(db, [new_refresh(other, account, common_pb2.JOB_NAME_IDENTITY)])
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_the_migration_checks_the_jobs_there_and_the_previous_release_keeps_queuing(
    tmp_path: pathlib.Path,
) -> None:
    async with database_migrated_to(tmp_path, 181) as url:
        conn = await db_connect(url)
        try:
            workspace, account = await insert_account(conn)
            before = await insert_jobs(conn, workspace, account, count=3)
            assert await migrate.migrate(url, migrations_up_to(tmp_path, 182)) == [
                "0182_jobs_account_workspace_key.sql"
            ]
            # The previous release's statements, unchanged, go on queuing jobs beside this one's.
            [row] = await queue.enqueue_refreshes(
                conn, [new_refresh(workspace, account, common_pb2.JOB_NAME_INCOME)]
            )
            assert row is not None
            assert await conn.fetchval("SELECT count(*) FROM jobs") == len(before) + 1
        finally:
            await conn.close()


async def test_the_migration_refuses_a_job_whose_workspace_is_not_its_account_s(
    tmp_path: pathlib.Path,
) -> None:
    async with database_migrated_to(tmp_path, 181) as url:
        conn = await db_connect(url)
        try:
            _, account = await insert_account(conn)
            other, _ = await insert_account(conn, name="other")
            await insert_jobs(conn, other, account)  # accepted by the two keys of before
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await migrate.migrate(url, migrations_up_to(tmp_path, 182))
        finally:
            await conn.close()
