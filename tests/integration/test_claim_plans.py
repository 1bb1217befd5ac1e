"""The claim (service/queue.py CLAIM, migration 0181's jobs_claim) keeps one cached generic plan per
connection, and that plan reaches jobs, accounts and account_credentials by key whatever the
statistics say: here they are of tiny tables, which make reading a table whole look cheapest (a
plan cached then would keep reading it whole as it grows)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from service import queue
from tests.harness import insert_accounts, insert_jobs

LEASE = dt.timedelta(seconds=30)
ACCOUNTS = 4
CLAIMS = 7  # more than the five custom plans PostgreSQL makes before it may keep the generic one
SCANS = """SELECT relname, seq_scan FROM pg_stat_xact_user_tables
           WHERE relname IN ('accounts', 'account_credentials', 'jobs', 'job_queue') ORDER BY relname"""


async def test_claims_reach_their_tables_by_key_whatever_the_statistics(db: asyncpg.Connection) -> None:
    workspace, accounts = await insert_accounts(db, ACCOUNTS)
    await db.execute(
        "INSERT INTO account_credentials (account_id, key_id, sealed) SELECT a, 'k', '\\x01'::bytea"
        " FROM unnest($1::uuid[]) AS a",
        accounts,
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    jobs: list[uuid.UUID] = []
    for i in range(CLAIMS):
        jobs += await insert_jobs(db, workspace, accounts[i % ACCOUNTS], run_at=old + dt.timedelta(seconds=i))
    # Statistics of tiny tables: reading them whole looks cheapest.
    await db.execute("ANALYZE accounts, account_credentials, jobs, job_queue")
    claimed: list[queue.ClaimedJob] = []
    async with db.transaction():  # the scans of these claims, counted in this transaction alone
        for _ in range(CLAIMS):
            claimed += await queue.claim(db, "w1", LEASE, 1, [])
        scans = {r["relname"]: r["seq_scan"] for r in await db.fetch(SCANS)}
    # The oldest first, one a claim, each with its account's grant and its lease.
    assert [job.id for job in claimed] == jobs
    assert all(job.grant_sealed == b"\x01" and job.attempts == 1 for job in claimed)
    leased = await db.fetch("SELECT locked_by, status FROM jobs JOIN job_queue USING (id, locked_by)")
    assert [(r["locked_by"], r["status"]) for r in leased] == [("w1", "running")] * CLAIMS
    # No table read whole (before: accounts and account_credentials on every claim).
    assert scans == {"account_credentials": 0, "accounts": 0, "job_queue": 0, "jobs": 0}
    # The statement the worker sends is planned as PostgreSQL does any other: five custom plans, then
    # the generic one kept (it has nothing to cost; the claim's own statement is the function's).
    plans = await db.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", queue.CLAIM
    )
    assert plans is not None
    assert (plans["custom_plans"], plans["generic_plans"]) == (5, CLAIMS - 5)
