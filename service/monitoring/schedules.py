"""Monitoring schedules in PostgreSQL: creating, pausing, reading and claiming due refreshes.

Owns `refresh_schedules`, `monitoring_settings`, `platform_refresh_budget` and the monitoring
columns of `accounts` (`monitoring_enabled`, `refresh_failures`). A schedule row is `active` when
paylink may refresh the account without anyone asking (see `rules.schedule_active`); the due query
reads the partial index on `next_refresh_at WHERE active`, so its cost follows what is due, not how
many accounts exist.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import uuid
from collections.abc import Iterable, Sequence

import asyncpg
from paylink.v1 import account_pb2

from service import db, ids, queue, timeutil
from service.monitoring import rules

_rng = random.SystemRandom()


# `active` recomputed from the account, its switch and its workspace's switch (one statement).
_SYNC = """
UPDATE refresh_schedules s
SET active = a.connected AND a.monitoring_enabled AND coalesce(m.enabled, true)
             AND a.monitoring_status NOT IN ('user_action_required', 'customer_disabled')
FROM accounts a LEFT JOIN monitoring_settings m ON m.workspace_id = a.workspace_id
WHERE s.account_id = a.id AND a.id = ANY($1::uuid[])
"""
_SYNC_WORKSPACE = """
UPDATE refresh_schedules s
SET active = a.connected AND a.monitoring_enabled AND $2
             AND a.monitoring_status NOT IN ('user_action_required', 'customer_disabled')
FROM accounts a
WHERE s.workspace_id = $1 AND s.account_id = a.id
"""

# Due rows, oldest first, locked so that concurrent schedulers take disjoint sets. The account row
# is key-share locked too (the jobs' foreign key needs that lock anyway), skipping accounts that
# another transaction is changing: everything else that touches schedules locks the account first
# and its schedule rows second, so a claim never waits in the opposite order (no deadlock).
_DUE = """
SELECT s.account_id, s.name, s.platform_id, s.workspace_id, s.cadence, a.tags
FROM refresh_schedules s JOIN accounts a ON a.id = s.account_id
WHERE s.active AND s.next_refresh_at <= now() AND s.platform_id <> ALL($2::text[]) {account}
ORDER BY s.next_refresh_at LIMIT $1
FOR UPDATE OF s SKIP LOCKED FOR KEY SHARE OF a SKIP LOCKED
"""
# One budget row per platform and day, locked (in platform order: no deadlock between schedulers).
_BUDGET = """
INSERT INTO platform_refresh_budget (platform_id, day)
SELECT p, $2 FROM unnest($1::text[]) AS p ORDER BY p
ON CONFLICT (platform_id, day) DO UPDATE SET used = platform_refresh_budget.used
RETURNING platform_id, used
"""
# Refreshes in flight, per platform (the concurrency bound) and for these due rows (one in flight):
# both read only the queue's small partial indexes of unfinished refreshes.
_REFRESHES_PER_PLATFORM = (
    f"SELECT platform_id, count(*) AS n FROM {queue.REFRESHES_IN_FLIGHT} AS j GROUP BY platform_id"
)
_REFRESHES_OF = f"""
SELECT DISTINCT j.account_id, j.name FROM {queue.REFRESHES_IN_FLIGHT} AS j
JOIN unnest($1::uuid[], $2::smallint[], $3::text[]) AS d(account_id, name, platform_id)
  ON j.platform_id = d.platform_id AND j.account_id = d.account_id AND j.name = d.name
"""
_SPEND = """
UPDATE platform_refresh_budget b SET used = used + u.n
FROM unnest($1::text[], $2::integer[]) AS u(platform_id, n)
WHERE b.platform_id = u.platform_id AND b.day = $3
"""
_MOVE = """
UPDATE refresh_schedules s SET next_refresh_at = u.at, last_job_id = coalesce(u.job, s.last_job_id)
FROM unnest($1::uuid[], $2::smallint[], $3::timestamptz[], $4::uuid[]) AS u(account_id, name, at, job)
WHERE s.account_id = u.account_id AND s.name = u.name
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The scheduler's bounds, from Settings."""

    batch: int  # due rows per claim
    platform_concurrency: int  # refresh jobs in flight per platform
    daily_budget: int  # scheduled refreshes started per platform and UTC day; 0: none


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim did."""

    job_ids: list[uuid.UUID]
    due: int  # due rows it locked
    busy: int  # held back by a platform's concurrency bound
    over_budget: int  # held back by a platform's daily budget
    covered: int  # already had a refresh in flight


# The account's schedule, for `accounts` reads that build an Account message (one array per column).
READ_COLUMNS = "".join(
    f", array(SELECT {column} FROM refresh_schedules s WHERE s.account_id = accounts.id ORDER BY name) AS {alias}"
    for column, alias in (
        ("name", "s_names"),
        ("cadence", "s_cadences"),
        ("next_refresh_at", "s_next"),
        ("active", "s_active"),
    )
)

# The same columns for a read of one account: the schedule read once, by a lateral aggregate
# (`FROM accounts` + LATERAL, then the columns of LATERAL_COLUMNS).
LATERAL = (
    " CROSS JOIN LATERAL (SELECT coalesce(array_agg(name ORDER BY name), '{}') AS s_names,"
    " coalesce(array_agg(cadence ORDER BY name), '{}') AS s_cadences,"
    " coalesce(array_agg(next_refresh_at ORDER BY name), '{}') AS s_next,"
    " coalesce(array_agg(active ORDER BY name), '{}') AS s_active"
    " FROM refresh_schedules s WHERE s.account_id = accounts.id) s"
)
LATERAL_COLUMNS = ", s_names, s_cadences, s_next, s_active"


def to_proto(account: account_pb2.Account, row: asyncpg.Record) -> None:
    """Fills Account.schedules from a row read with READ_COLUMNS (or LATERAL)."""
    for name, cadence, next_at, active in zip(
        row["s_names"], row["s_cadences"], row["s_next"], row["s_active"], strict=True
    ):
        entry = account.schedules.add(name=name, active=active)
        timeutil.set_duration(entry.cadence, cadence)
        timeutil.set_ts(entry.next_refresh_at, next_at)


async def settings_of(conn: db.Executor, workspace_id: uuid.UUID) -> tuple[bool, dict[int, dt.timedelta]]:
    """A workspace's monitoring switch and effective cadences."""
    row = await conn.fetchrow(
        "SELECT enabled, cadences FROM monitoring_settings WHERE workspace_id = $1", workspace_id
    )
    if row is None:
        return True, rules.cadences({})
    return row["enabled"], rules.cadences(json.loads(row["cadences"]))


async def create(
    conn: db.Conn,
    *,
    account_id: uuid.UUID,
    workspace_id: uuid.UUID,
    platform_id: str,
    supported_jobs: Iterable[int],
    now: dt.datetime,
) -> None:
    """The schedule of a newly connected account: each supported data job type, first due after
    a jittered part of its cadence. Re-linking the same account keeps its existing schedule."""
    enabled, cadences = await settings_of(conn, workspace_id)
    names = [n for n in rules.SCHEDULED_JOBS if n in set(supported_jobs)]
    await conn.execute(
        "INSERT INTO refresh_schedules (account_id, name, workspace_id, platform_id, cadence, next_refresh_at,"
        " active) SELECT $1, n, $2, $3, c, d, $7 FROM unnest($4::smallint[], $5::interval[], $6::timestamptz[])"
        " AS u(n, c, d) ON CONFLICT (account_id, name) DO NOTHING",
        account_id,
        workspace_id,
        platform_id,
        names,
        [cadences[n] for n in names],
        [rules.first_due(now, cadences[n], _rng) for n in names],
        enabled,
    )


async def sync(conn: db.Executor, account_ids: Sequence[uuid.UUID]) -> None:
    """Recomputes whether the accounts' refreshes run (after a status, switch or connection change)."""
    await conn.execute(_SYNC, list(account_ids))


async def update_settings(
    conn: db.Conn, workspace_id: uuid.UUID, enabled: bool | None, cadences: dict[int, dt.timedelta]
) -> tuple[bool, dict[str, int]]:
    """Stores the workspace's switch and cadence overrides (timedelta(0) removes one); applies them to
    its schedules. Returns the stored switch and overrides."""
    row = await conn.fetchrow(
        "INSERT INTO monitoring_settings (workspace_id) VALUES ($1) ON CONFLICT (workspace_id)"
        " DO UPDATE SET updated_at = now() RETURNING enabled, cadences",
        workspace_id,
    )
    assert row is not None
    overrides: dict[str, int] = json.loads(row["cadences"])
    for name, cadence in cadences.items():
        if cadence:
            overrides[str(name)] = int(cadence.total_seconds())
        else:
            overrides.pop(str(name), None)
    switch = row["enabled"] if enabled is None else enabled
    await conn.execute(
        "UPDATE monitoring_settings SET enabled = $2, cadences = $3 WHERE workspace_id = $1",
        workspace_id,
        switch,
        json.dumps(overrides, sort_keys=True),
    )
    if cadences:
        effective = rules.cadences(overrides)
        # A changed cadence applies from the next refresh on; a due date further away than the new
        # cadence is pulled in.
        await conn.execute(
            "UPDATE refresh_schedules s SET cadence = u.c,"
            " next_refresh_at = least(s.next_refresh_at, now() + u.c)"
            " FROM unnest($2::smallint[], $3::interval[]) AS u(n, c)"
            " WHERE s.workspace_id = $1 AND s.name = u.n AND s.cadence <> u.c",
            workspace_id,
            list(cadences),
            [effective[n] for n in cadences],
        )
    if enabled is not None and enabled != row["enabled"]:
        await conn.execute(_SYNC_WORKSPACE, workspace_id, enabled)
    return switch, overrides


async def read(conn: db.Executor, account_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[asyncpg.Record]]:
    """Schedule rows per account, in job type order."""
    rows = await conn.fetch(
        "SELECT account_id, name, cadence, next_refresh_at, active FROM refresh_schedules"
        " WHERE account_id = ANY($1::uuid[]) ORDER BY account_id, name",
        list(account_ids),
    )
    out: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for row in rows:
        out.setdefault(row["account_id"], []).append(row)
    return out


async def advance(conn: db.Conn, account_id: uuid.UUID, by: dt.timedelta) -> None:
    """Moves an account's due dates `by` earlier: what would fall due in that time is due now."""
    await conn.execute(
        "UPDATE refresh_schedules SET next_refresh_at = next_refresh_at - $2::interval WHERE account_id = $1",
        account_id,
        by,
    )


async def make_due(conn: db.Conn, account_id: uuid.UUID, names: Sequence[int]) -> None:
    """Makes an account's active schedules (all, or `names`) due now."""
    await conn.execute(
        "UPDATE refresh_schedules SET next_refresh_at = least(next_refresh_at, now())"
        " WHERE account_id = $1 AND active AND (cardinality($2::smallint[]) = 0 OR name = ANY($2::smallint[]))",
        account_id,
        list(names),
    )


# long: the claim's steps in the order its locks are taken, in one transaction; split, each part
# would need the whole state of the one before.
async def claim(conn: db.Conn, limits: Limits, *, account_id: uuid.UUID | None = None) -> Claimed:
    """Claims due refreshes and queues them, in the caller's transaction.

    Due rows of platforms below their concurrency bound are locked with SKIP LOCKED (concurrent
    schedulers take disjoint rows). Each platform's budget row is locked next, which serializes the
    accounting of concurrent claims per platform; then rows are split by the platform's concurrency
    bound and daily budget (`rules.allot`). Rows run now get a job and their next due date; rows
    over the bound stay due for the next claim; rows over the budget move to the next day, so they
    do not come back to the head of the due query all day. A row whose account and job type already
    has a refresh in flight moves on to its next due date: that refresh covers it.
    """
    now = await conn.fetchval("SELECT now()")
    # Platforms at their bound are left out of the due query: their rows stay due, untouched, and
    # wait for room (moving them would churn; leaving them in would clog the batch).
    flying = {r["platform_id"]: r["n"] for r in await conn.fetch(_REFRESHES_PER_PLATFORM)}
    full = sorted(p for p, n in flying.items() if n >= limits.platform_concurrency)
    where = "AND s.account_id = $3" if account_id is not None else ""
    args: list[object] = [limits.batch, full] + ([account_id] if account_id is not None else [])
    rows = await conn.fetch(_DUE.format(account=where), *args)
    if not rows:
        return Claimed([], 0, 0, 0, 0)
    platforms = sorted({r["platform_id"] for r in rows})
    day = now.astimezone(dt.UTC).date()
    used = {r["platform_id"]: r["used"] for r in await conn.fetch(_BUDGET, platforms, day)}
    keys = [(r["account_id"], r["name"], r["platform_id"]) for r in rows]
    running = {
        (r["account_id"], r["name"]) for r in await conn.fetch(_REFRESHES_OF, *zip(*keys, strict=True))
    }
    by_key = {(r["account_id"], r["name"]): r for r in rows}
    due = [
        rules.Due(r["account_id"], r["name"], r["platform_id"])
        for r in rows
        if (r["account_id"], r["name"]) not in running
    ]
    load = {p: rules.PlatformLoad(flying.get(p, 0), used.get(p, 0)) for p in platforms}
    allotment = rules.allot(
        due, load, concurrency=limits.platform_concurrency, daily_budget=limits.daily_budget
    )
    job_ids: list[uuid.UUID | None] = [ids.new_id() for _ in allotment.run]
    if allotment.run:
        runs = [by_key[(d.account_id, d.name)] for d in allotment.run]
        # A CreateJob refresh that started since the in-flight check keeps its place (one in flight).
        queued = set(await queue.enqueue_scheduled(conn, [i for i in job_ids if i is not None], runs))
        job_ids = [i if i in queued else None for i in job_ids]
        started = rules.started_per_platform(allotment.run)
        await conn.execute(_SPEND, list(started), list(started.values()), day)
    moves: list[tuple[uuid.UUID, int, dt.datetime, uuid.UUID | None]] = []
    for d, job_id in zip(allotment.run, job_ids, strict=True):
        cadence = by_key[(d.account_id, d.name)]["cadence"]
        moves.append((d.account_id, d.name, rules.next_due(now, cadence, _rng), job_id))
    for key in running:
        moves.append((key[0], key[1], rules.next_due(now, by_key[key]["cadence"], _rng), None))
    # Busy rows (over the bound within this batch) stay due: the next claim takes them when there is room.
    moves += [(d.account_id, d.name, rules.next_budget_day(now, _rng), None) for d in allotment.over_budget]
    await conn.execute(
        _MOVE,
        [m[0] for m in moves],
        [m[1] for m in moves],
        [m[2] for m in moves],
        [m[3] for m in moves],
    )
    return Claimed(
        [i for i in job_ids if i is not None],
        len(rows),
        len(allotment.busy),
        len(allotment.over_budget),
        len(running),
    )
