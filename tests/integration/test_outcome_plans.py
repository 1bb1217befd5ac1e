"""A batch of outcomes (`job_outcomes.apply_many`, the completer's transaction) runs its statements
on their cached generic plans. They take arrays with one element per job; a custom plan sees the
length, so with fewer than about ten jobs a custom plan always looked cheaper than the generic one and
PostgreSQL planned every statement of every batch again (bench/NOTES.md, inflight session 24). The
setting is the transaction's own: the pooled connection is back to `auto` after the batch."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import re
import uuid

import asyncpg
from paylink.v1 import common_pb2, data_pb2

from service import job_outcomes, queue
from service.deps import Deps
from tests import harness
from tests.harness import insert_accounts, insert_jobs

# PostgreSQL plans a prepared statement's first five executions with custom plans before it may
# choose the generic plan: more batches than that.
BATCHES = 7
JOBS_PER_BATCH = 3
STATUSES = "SELECT status FROM jobs WHERE id = ANY($1::uuid[])"
PLANS = "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE statement <> ALL($1::text[])"


async def test_a_batch_of_outcomes_uses_generic_plans_only_in_its_transaction(deps: Deps) -> None:
    workspace, accounts = await insert_accounts(deps.pool, JOBS_PER_BATCH)
    setup = {r["statement"] for r in await deps.pool.fetch("SELECT statement FROM pg_prepared_statements")}
    outcomes: list[job_outcomes.Outcome] = [
        job_outcomes.Success(),
        job_outcomes.Failure(common_pb2.JOB_ERROR_CODE_NO_DATA, "no data"),
        job_outcomes.Retry(dt.timedelta(seconds=30), common_pb2.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, "down"),
    ]
    for _ in range(BATCHES):
        jobs: list[uuid.UUID] = []
        for account in accounts:
            jobs += await insert_jobs(
                deps.pool, workspace, account, status=queue.JobStatus.RUNNING, locked_by="w"
            )
        written = await job_outcomes.apply_many(
            deps, "w", [(j, o, contextvars.copy_context()) for j, o in zip(jobs, outcomes, strict=True)]
        )
        assert written == [True] * JOBS_PER_BATCH
        statuses = await deps.pool.fetch(STATUSES, jobs)
        assert sorted(r["status"] for r in statuses) == ["error", "queued", "success"]

    # What the batches ran: every statement prepared on the connection but the test's own.
    batch = {
        r["statement"]: r for r in await deps.pool.fetch(PLANS, [*setup, harness._INSERT_JOBS, STATUSES])
    }
    ran = {s: (r["generic_plans"], r["custom_plans"]) for s, r in batch.items() if s != PLANS}
    # Every statement the batches ran was planned generically, never custom (before: the first five
    # executions of each, and every one while the custom plan looked cheaper)...
    assert all(custom == 0 for _, custom in ran.values()), [s for s, (_, c) in ran.items() if c]
    # ...among them, once per batch, the locks (job_queue, accounts) with the read of the jobs and the
    # completions of all three kinds (one statement), and the events of the batch's accounts.
    per_batch = [s for s, (generic, _) in ran.items() if generic == BATCHES]
    [locks] = [s for s in per_batch if "FROM jobs WHERE id = ANY" in s]
    assert locks.count("FOR UPDATE") >= 2 and "UPDATE jobs SET status = c.status" in locks
    assert not any(s.lstrip().startswith(("WITH done", "WITH queued", "WITH c AS")) for s in per_batch)
    assert any("INSERT INTO outbox" in s for s in per_batch)
    # The setting was the transaction's: the connection plans as before outside it.
    assert await deps.pool.fetchval("SHOW plan_cache_mode") == "auto"


SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")


async def test_a_batch_of_outcomes_plans_reach_tables_by_key_without_statistics(deps: Deps) -> None:
    # A new database: no table was ever analyzed, and the tables are small when the batch's generic
    # plans are made and cached on the connection (for as long as no ANALYZE invalidates them).
    workspace, accounts = await insert_accounts(deps.pool, JOBS_PER_BATCH)
    setup = {r["statement"] for r in await deps.pool.fetch("SELECT statement FROM pg_prepared_statements")}
    outcomes: list[job_outcomes.Outcome] = [
        job_outcomes.Success(),
        job_outcomes.Failure(common_pb2.JOB_ERROR_CODE_NO_DATA, "no data"),
        job_outcomes.Retry(dt.timedelta(seconds=30), common_pb2.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, "down"),
    ]
    jobs: list[uuid.UUID] = []
    for account in accounts:
        jobs += await insert_jobs(
            deps.pool, workspace, account, status=queue.JobStatus.RUNNING, locked_by="w"
        )
    written = await job_outcomes.apply_many(
        deps, "w", [(j, o, contextvars.copy_context()) for j, o in zip(jobs, outcomes, strict=True)]
    )
    assert written == [True] * JOBS_PER_BATCH
    statements = await deps.pool.fetch(
        "SELECT name, statement, cardinality(parameter_types) AS n FROM pg_prepared_statements"
        " WHERE statement <> ALL($1::text[]) AND generic_plans > 0",
        [*setup, harness._INSERT_JOBS],
    )
    assert any(s["statement"].lstrip().startswith("WITH held") for s in statements)  # locks, completions
    assert any("INSERT INTO outbox" in s["statement"] for s in statements)
    # The plan each cached, as the batch's transaction runs it: no table of the job's read whole.
    read_whole: dict[str, list[str]] = {}
    async with deps.pool.acquire() as conn, conn.transaction():
        await conn.execute(job_outcomes.GENERIC_PLANS)
        for s in statements:
            args = ", ".join(["NULL"] * s["n"])
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE {s['name']}({args})"))
            if tables := SEQ_SCAN.findall(plan):
                read_whole[" ".join(s["statement"].split())[:80]] = tables
    assert read_whole == {}


async def test_a_batch_of_outcomes_sends_its_plan_settings_with_its_begin(deps: Deps) -> None:
    """One round trip opens the batch's transaction with its settings: `SET LOCAL`s in the BEGIN's
    simple-protocol query, which PostgreSQL does not plan. Fails on the code before: BEGIN, then a
    `SELECT set_config(...)` of its own, a second round trip planned on every batch."""
    workspace, accounts = await insert_accounts(deps.pool, 2)
    jobs: list[uuid.UUID] = []
    for account in accounts:
        jobs += await insert_jobs(
            deps.pool, workspace, account, status=queue.JobStatus.RUNNING, locked_by="w"
        )
    sent: list[str] = []

    def logged(query: asyncpg.connection.LoggedQuery) -> None:
        sent.append(query.query)

    async with deps.pool.acquire() as conn:  # the pool's one connection: the batch's
        conn.add_query_logger(logged)
    written = await job_outcomes.apply_many(
        deps, "w", [(j, job_outcomes.Success(), contextvars.copy_context()) for j in jobs]
    )
    await asyncio.sleep(0)  # the loggers are called soon after each query
    async with deps.pool.acquire() as conn:
        conn.remove_query_logger(logged)
    assert written == [True, True]
    assert sent[0].startswith("BEGIN;") and "SET LOCAL plan_cache_mode = force_generic_plan" in sent[0]
    assert [q for q in sent if "plan_cache_mode" in q] == [sent[0]]  # no settings query of its own
    assert sent[-1] == "COMMIT"
    statuses = await deps.pool.fetch(STATUSES, jobs)
    assert [r["status"] for r in statuses] == ["success", "success"]
    assert await deps.pool.fetchval("SHOW plan_cache_mode") == "auto"


async def test_a_batch_of_outcomes_is_five_round_trips(deps: Deps) -> None:
    """A batch of refreshes: BEGIN (with its settings), the locks with every job's new status, the data
    stored, the events, COMMIT, whatever kinds of outcome the batch holds. Fails on the code before: the new statuses were
    one statement per kind of completion after the data (six round trips for a batch of one kind,
    eight for three kinds: bench/NOTES.md, claims session 30)."""
    outcomes: list[job_outcomes.Outcome] = [
        job_outcomes.Success(data_pb2.Identity(full_name="Round Trip")),
        job_outcomes.Failure(common_pb2.JOB_ERROR_CODE_NO_DATA, "no data"),
        job_outcomes.Retry(dt.timedelta(seconds=30), common_pb2.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, "down"),
    ]

    async def running() -> list[uuid.UUID]:
        workspace, accounts = await insert_accounts(deps.pool, 3)
        jobs: list[uuid.UUID] = []
        for account in accounts:
            jobs += await insert_jobs(
                deps.pool,
                workspace,
                account,
                status=queue.JobStatus.RUNNING,
                locked_by="w",
                origin=common_pb2.JOB_ORIGIN_REFRESH,  # a batch of one job each: no read of their batch
            )
        return jobs

    # A first batch: asyncpg reads the statements' types once per connection (queries of its own).
    first = await running()
    await job_outcomes.apply_many(
        deps, "w", [(j, o, contextvars.copy_context()) for j, o in zip(first, outcomes, strict=True)]
    )
    jobs = await running()
    sent: list[str] = []

    def logged(query: asyncpg.connection.LoggedQuery) -> None:
        sent.append(" ".join(query.query.split())[:40])

    async with deps.pool.acquire() as conn:  # the pool's one connection: the batch's
        conn.add_query_logger(logged)
    written = await job_outcomes.apply_many(
        deps, "w", [(j, o, contextvars.copy_context()) for j, o in zip(jobs, outcomes, strict=True)]
    )
    await asyncio.sleep(0)  # the loggers are called soon after each query
    async with deps.pool.acquire() as conn:
        conn.remove_query_logger(logged)
    assert written == [True] * 3
    assert len(sent) == 5, sent
    assert sent[0].startswith("BEGIN;") and sent[-1] == "COMMIT"
    assert sent[1].startswith("WITH held AS MATERIALIZED")
    statuses = {r["id"]: r["status"] for r in await deps.pool.fetch("SELECT id, status FROM jobs")}
    assert [statuses[j] for j in jobs] == ["success", "error", "queued"]
