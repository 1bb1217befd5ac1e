"""Monitoring schedules against real PostgreSQL (service/monitoring/schedules.py): the due query's
index, claims by concurrent schedulers, the one-in-flight rule, per-platform bounds, pausing.

The module has a database of its own (no worker or scheduler runs on it), and each test rolls back
what it wrote."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from paylink.v1 import common_pb2 as c

from service import accounts as paylink_accounts
from service import db
from service.monitoring import rules, schedules
from tests.harness import insert_accounts, new_database

LIMITS = schedules.Limits(batch=1000, platform_concurrency=1000, daily_budget=0)


@pytest.fixture(scope="module")
async def own_db() -> AsyncIterator[str]:
    async with new_database() as url:
        yield url


@pytest.fixture
async def conn(own_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(own_db)
    try:
        yield connection
    finally:
        await connection.close()


async def _seed(
    conn: asyncpg.Connection, n: int, *, platform: str = "plat_a", due_in: str = "-1 minute", tags: str = "{}"
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A workspace with `n` accounts, each with a paystubs schedule due `due_in` from now."""
    workspace, accounts = await insert_accounts(conn, n, platform_id=platform, name="monitoring", tags=tags)
    await conn.execute(
        "INSERT INTO refresh_schedules (account_id, name, workspace_id, platform_id, cadence, next_refresh_at)"
        " SELECT a, $2, $3, $4, interval '1 day', now() + $5::text::interval FROM unnest($1::uuid[]) AS a",
        accounts,
        c.JOB_NAME_PAYSTUBS,
        workspace,
        platform,
        due_in,
    )
    return workspace, accounts


class _Rollback(Exception):
    pass


async def _in_rollback(conn: asyncpg.Connection, body: object) -> None:
    try:
        async with conn.transaction():
            await body  # type: ignore[misc]
            raise _Rollback
    except _Rollback:
        pass


async def test_due_query_reads_the_partial_index(conn: asyncpg.Connection) -> None:
    async def body() -> None:
        await _seed(conn, 20_000, due_in="1 day")  # nothing due
        await _seed(conn, 5)
        await conn.execute("ANALYZE refresh_schedules")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + schedules._DUE.format(account=""), 500, [])
        )
        assert "refresh_schedules_due" in plan, plan
        assert "Seq Scan on refresh_schedules" not in plan, plan
        claimed = await schedules.claim(conn, LIMITS)
        assert claimed.due == 5 and len(claimed.job_ids) == 5

    await _in_rollback(conn, body())


async def test_claim_queues_jobs_with_tags_and_moves_the_schedule(conn: asyncpg.Connection) -> None:
    async def body() -> None:
        _, accounts = await _seed(conn, 3, tags='{"team": "risk"}')
        claimed = await schedules.claim(conn, LIMITS)
        assert (claimed.due, len(claimed.job_ids), claimed.busy, claimed.covered) == (3, 3, 0, 0)
        jobs = await conn.fetch(
            "SELECT account_id, name, origin, status, scheduled, tags, batch_id, id FROM jobs WHERE id = ANY($1)",
            claimed.job_ids,
        )
        assert {j["account_id"] for j in jobs} == set(accounts)
        for job in jobs:
            assert (job["name"], job["origin"], job["status"], job["scheduled"]) == (
                c.JOB_NAME_PAYSTUBS,
                c.JOB_ORIGIN_REFRESH,
                "queued",
                True,
            )
            assert json.loads(job["tags"]) == {"team": "risk"} and job["batch_id"] == job["id"]
        rows = await conn.fetch(
            "SELECT next_refresh_at - now() AS wait, last_job_id FROM refresh_schedules WHERE account_id = ANY($1)",
            accounts,
        )
        assert all(dt.timedelta(hours=22) < r["wait"] < dt.timedelta(hours=26) for r in rows)
        assert {r["last_job_id"] for r in rows} == set(claimed.job_ids)
        # Nothing is due any more.
        assert (await schedules.claim(conn, LIMITS)).due == 0

    await _in_rollback(conn, body())


async def test_a_refresh_in_flight_covers_the_due_one(conn: asyncpg.Connection) -> None:
    async def body() -> None:
        _, accounts = await _seed(conn, 2)
        first = await schedules.claim(conn, LIMITS)
        assert len(first.job_ids) == 2
        await schedules.make_due(conn, accounts[0], [])
        again = await schedules.claim(conn, LIMITS)
        # The first refresh of that account is still queued: no second one.
        assert (again.due, again.covered, again.job_ids) == (1, 1, [])
        count = await conn.fetchval("SELECT count(*) FROM jobs WHERE account_id = $1", accounts[0])
        assert count == 1

    await _in_rollback(conn, body())


async def test_platform_concurrency_and_daily_budget(conn: asyncpg.Connection) -> None:
    async def body() -> None:
        await _seed(conn, 10, platform="plat_busy")
        await _seed(conn, 4, platform="plat_free")
        claimed = await schedules.claim(
            conn, schedules.Limits(batch=100, platform_concurrency=6, daily_budget=0)
        )
        assert (len(claimed.job_ids), claimed.busy) == (10, 4)
        held = await conn.fetchval(
            "SELECT count(*) FROM refresh_schedules WHERE platform_id = 'plat_busy' AND next_refresh_at <= now()"
        )
        assert held == 4  # still due, untouched
        # The platform is at its bound now: the next claim leaves its rows alone.
        again = await schedules.claim(
            conn, schedules.Limits(batch=100, platform_concurrency=6, daily_budget=0)
        )
        assert (again.due, again.job_ids) == (0, [])
        # The budget: 3 a day for a fresh platform.
        await _seed(conn, 5, platform="plat_budget")
        budget = await schedules.claim(
            conn, schedules.Limits(batch=100, platform_concurrency=100, daily_budget=3)
        )
        # plat_budget: 3 run, 2 wait for tomorrow; plat_busy's 4 still-due rows are over 3 as well.
        assert (len(budget.job_ids), budget.over_budget) == (3, 6)
        tomorrow = await conn.fetch(
            "SELECT platform_id, count(*) AS n FROM refresh_schedules WHERE last_job_id IS NULL"
            " AND next_refresh_at > now() AND platform_id IN ('plat_budget', 'plat_busy') GROUP BY 1 ORDER BY 1"
        )
        assert [(r["platform_id"], r["n"]) for r in tomorrow] == [("plat_budget", 2), ("plat_busy", 4)]
        used = await conn.fetchval(
            "SELECT used FROM platform_refresh_budget WHERE platform_id = 'plat_budget' AND day = current_date"
        )
        assert used == 3

    await _in_rollback(conn, body())


async def test_paused_schedules_are_not_due(conn: asyncpg.Connection) -> None:
    async def body() -> None:
        workspace, accounts = await _seed(conn, 4)
        await conn.execute(
            "UPDATE accounts SET monitoring_status = 'user_action_required' WHERE id = $1", accounts[0]
        )
        await conn.execute("UPDATE accounts SET connected = false WHERE id = $1", accounts[1])
        await paylink_accounts.set_monitoring_enabled(conn, accounts[2], False)
        await schedules.sync(conn, accounts)
        claimed = await schedules.claim(conn, LIMITS)
        assert claimed.due == 1
        assert (
            await conn.fetchval("SELECT account_id FROM jobs WHERE id = $1", claimed.job_ids[0])
            == accounts[3]
        )
        # The workspace switch pauses everything; turning it on again resumes what may run.
        await schedules.update_settings(conn, workspace, False, {})
        await schedules.make_due(conn, accounts[3], [])
        assert not await conn.fetchval(
            "SELECT active FROM refresh_schedules WHERE account_id = $1", accounts[3]
        )
        await schedules.update_settings(conn, workspace, True, {})
        active = await conn.fetch(
            "SELECT account_id FROM refresh_schedules WHERE workspace_id = $1 AND active", workspace
        )
        assert [r["account_id"] for r in active] == [accounts[3]]

    await _in_rollback(conn, body())


async def test_create_spreads_first_refreshes_and_keeps_an_existing_schedule(
    conn: asyncpg.Connection,
) -> None:
    async def body() -> None:
        workspace, accounts = await _seed(conn, 1)
        await conn.execute("DELETE FROM refresh_schedules WHERE account_id = $1", accounts[0])
        await schedules.update_settings(conn, workspace, None, {c.JOB_NAME_IDENTITY: dt.timedelta(hours=2)})
        now = await conn.fetchval("SELECT now()")
        supported = [c.JOB_NAME_IDENTITY, c.JOB_NAME_PAYSTUBS, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH]
        await schedules.create(
            conn,
            account_id=accounts[0],
            workspace_id=workspace,
            platform_id="plat_a",
            supported_jobs=supported,
            now=now,
        )
        rows = {r["name"]: r for r in (await schedules.read(conn, accounts))[accounts[0]]}
        assert set(rows) == {c.JOB_NAME_IDENTITY, c.JOB_NAME_PAYSTUBS}
        assert rows[c.JOB_NAME_IDENTITY]["cadence"] == dt.timedelta(hours=2)
        assert (
            now + dt.timedelta(hours=1)
            <= rows[c.JOB_NAME_IDENTITY]["next_refresh_at"]
            <= now + dt.timedelta(hours=2)
        )
        assert now + dt.timedelta(hours=12) <= rows[c.JOB_NAME_PAYSTUBS]["next_refresh_at"] <= now + rules.DAY
        await schedules.create(
            conn,
            account_id=accounts[0],
            workspace_id=workspace,
            platform_id="plat_a",
            supported_jobs=supported,
            now=now,
        )
        again = {r["name"]: r for r in (await schedules.read(conn, accounts))[accounts[0]]}
        assert again == rows

    await _in_rollback(conn, body())


async def test_two_schedulers_never_claim_the_same_row(own_db: str) -> None:
    """Two claims at once, each in its own transaction: disjoint rows, one job per due row.

    (The second may wait for the first's platform budget row, which serializes the accounting, but
    never for its due rows: those it skips.)"""
    seed = await db.connect(own_db)
    one, two = await db.connect(own_db), await db.connect(own_db)
    platform = f"plat_{uuid.uuid4().hex[:6]}"
    limits = schedules.Limits(batch=150, platform_concurrency=10_000, daily_budget=0)

    async def claim(conn: asyncpg.Connection) -> schedules.Claimed:
        async with conn.transaction():
            return await schedules.claim(conn, limits)

    try:
        _, accounts = await _seed(seed, 200, platform=platform)
        first, second = await asyncio.gather(claim(one), claim(two))
        assert not set(first.job_ids) & set(second.job_ids)
        assert len(first.job_ids) + len(second.job_ids) == 200
        per_account = await seed.fetch(
            "SELECT account_id, count(*) AS n FROM jobs WHERE platform_id = $1 GROUP BY account_id", platform
        )
        assert sorted(r["account_id"] for r in per_account) == sorted(accounts)
        assert {r["n"] for r in per_account} == {1}
    finally:
        await seed.execute("DELETE FROM jobs WHERE platform_id = $1", platform)
        await seed.execute("DELETE FROM refresh_schedules WHERE platform_id = $1", platform)
        await seed.execute("DELETE FROM accounts WHERE platform_id = $1", platform)
        for connection in (seed, one, two):
            await connection.close()
