"""CreateJob's statements (service/job_intake.py: the refreshes' INSERT with their accounts' checks,
migration 0186; the INSERT alone, which a CreateJob with a request_id runs after reading its account)
keep one cached generic plan per connection (migrations 0179, 0186). They take one array element per caller;
as plain statements their custom plans saw the arrays' lengths, always looked cheaper than the
generic plan, and PostgreSQL planned every call again (bench/NOTES.md, inflight session 24). And the
plans reach every table by key whatever the statistics say: here the statistics are of tiny tables,
which make reading a table whole look cheapest (a plan cached then would keep reading it whole as
it grows)."""

from __future__ import annotations

import uuid

from paylink.v1 import common_pb2

from service import queue
from service.deps import Deps
from tests.harness import insert_accounts, new_refresh

# PostgreSQL plans a prepared statement's first five executions with custom plans before it may
# choose the generic plan: more calls than that.
CALLS = 7
PER_CALL = 2
SUPPORTED = [f"sandbox_adp:{common_pb2.JOB_NAME_IDENTITY}", f"sandbox_adp:{common_pb2.JOB_NAME_INCOME}"]
PLANS = "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1"
SCANS = """SELECT relname, seq_scan FROM pg_stat_xact_user_tables
           WHERE relname IN ('accounts', 'jobs', 'job_queue') ORDER BY relname"""


async def _create_jobs(deps: Deps, workspace: uuid.UUID, ids: list[uuid.UUID]) -> None:
    """CALLS rounds of what CreateJob's intake runs for PER_CALL callers (the refreshes' INSERT with
    their accounts' checks, and one refresh that is skipped: its account's refresh is in flight), and
    of the INSERT alone (a CreateJob with a request_id)."""
    for call in range(CALLS):
        group = ids[call * PER_CALL : (call + 1) * PER_CALL]
        refreshes = [new_refresh(workspace, a, common_pb2.JOB_NAME_IDENTITY) for a in group]
        created = await queue.create_refreshes(deps.pool, refreshes, SUPPORTED)
        rows = [c.row for c in created]
        assert [r["id"] if r else None for r in rows] == [r.job_id for r in refreshes]
        assert all(r["status"] == "queued" and r["workspace_id"] == workspace for r in rows if r)
        again = new_refresh(workspace, group[0], common_pb2.JOB_NAME_IDENTITY)
        assert [c.row for c in await queue.create_refreshes(deps.pool, [again], SUPPORTED)] == [None]
        alone = new_refresh(workspace, group[0], common_pb2.JOB_NAME_INCOME)
        assert [r["id"] for r in await queue.enqueue_refreshes(deps.pool, [alone]) if r] == [alone.job_id]


async def test_create_jobs_grouped_statements_keep_their_generic_plans(deps: Deps) -> None:
    # Enough accounts that probing a few keys costs less than the ten a generic plan assumes.
    workspace, ids = await insert_accounts(deps.pool, 1000)
    await deps.pool.execute("ANALYZE accounts, jobs, job_queue")
    await _create_jobs(deps, workspace, ids)
    # After the five custom plans PostgreSQL makes first, each keeps the generic plan (before: custom
    # on every call, never generic).
    for sql, calls in ((queue._CREATE_REFRESHES, 2 * CALLS), (queue._ENQUEUE_REFRESHES, CALLS)):
        row = await deps.pool.fetchrow(PLANS, sql)
        assert row is not None
        assert (row["custom_plans"], row["generic_plans"]) == (5, calls - 5), sql


async def test_create_jobs_grouped_statements_reach_tables_by_key_whatever_the_statistics(deps: Deps) -> None:
    workspace, ids = await insert_accounts(deps.pool, CALLS * PER_CALL + 1)
    # Statistics of tiny tables: reading them whole looks cheapest (and a plan cached now would keep
    # reading them whole once they are large).
    await deps.pool.execute("ANALYZE accounts, jobs, job_queue")
    await _create_jobs(deps, workspace, ids)
    # No sequential scan of accounts, jobs or job_queue (counted in this transaction).
    async with deps.pool.acquire() as conn, conn.transaction():
        last = ids[-1]
        [created] = await queue.create_refreshes(
            conn, [new_refresh(workspace, last, common_pb2.JOB_NAME_IDENTITY)], SUPPORTED
        )
        assert created.row is not None
        [row] = await queue.enqueue_refreshes(
            conn, [new_refresh(workspace, last, common_pb2.JOB_NAME_INCOME)]
        )
        assert row is not None
        assert {r["relname"]: r["seq_scan"] for r in await conn.fetch(SCANS)} == {
            "accounts": 0,
            "job_queue": 0,
            "jobs": 0,
        }
