"""The per-account event sequence is the outbox's own narrow table, `account_event_sequences`
(migration 0178): every account has its row from the statement that creates it, every way the outbox
writes events bumps that row (a HOT update) and never writes `accounts`; concurrent writers of one
account's events (the flush's own reservation, a batch of outcomes that locked the row with the
account's) get each sequence once, in commit order, with outbox ids in sequence order. The migration
carries the sequences of a database at 0177 over, and a process of the previous release running beside
this one (a connection marked `0177` running that release's statements, copied verbatim from
service/outbox.py and service/queue.py at f02e49d) keeps writing in step, or is refused (PL001) for an
account this release has written events for since, never handing a sequence out twice."""

from __future__ import annotations

import asyncio
import json
import pathlib
import random
import uuid
from typing import Any

import asyncpg
import pytest
from paylink.v1 import event_pb2

from service import db, migrate, outbox, queue, release_guard
from tests.harness import database_migrated_to, insert_account, insert_accounts, migrations_up_to

# The previous release's statements (f02e49d), literals spelled out.
OLD_RESERVE = """
UPDATE accounts SET event_sequence = event_sequence + $2 WHERE id = $1 RETURNING event_sequence - $2, tags
"""
OLD_LOCK_ACCOUNTS = """
SELECT id, end_user_id, monitoring_status, connected, event_sequence, tags, refresh_failures
FROM accounts WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
"""
OLD_WRITE_LOCKED = """WITH seq AS (UPDATE accounts SET event_sequence = $10 WHERE id = $5 RETURNING 1),
rows AS (
  INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload, traceparent,
                      request_id)
  SELECT e, t, n, $4, $5, q, p, tp, r
  FROM unnest($1::uuid[], $2::text[], $3::text[], $6::bigint[], $7::bytea[], $8::text[], $9::text[])
       WITH ORDINALITY AS u(e, t, n, q, p, tp, r, i)
  ORDER BY i
  RETURNING id, created_at),
pending AS (INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM rows)
SELECT pg_notify('paylink_outbox', '') FROM (SELECT count(*) FROM rows, seq) AS written"""
OLD_INSERT = """WITH rows AS (
  INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload, traceparent,
                      request_id)
  SELECT e, t, n, $4, $5, q, p, tp, r
  FROM unnest($1::uuid[], $2::text[], $3::text[], $6::bigint[], $7::bytea[], $8::text[], $9::text[])
       WITH ORDINALITY AS u(e, t, n, q, p, tp, r, i)
  ORDER BY i
  RETURNING id, created_at),
pending AS (INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM rows)
SELECT pg_notify('paylink_outbox', '') FROM (SELECT count(*) FROM rows) AS written"""


def _old_args(workspace: uuid.UUID, account: uuid.UUID, sequences: list[int]) -> tuple[object, ...]:
    n = len(sequences)
    payloads = [event_pb2.Event(sequence=q).SerializeToString() for q in sequences]
    return (
        [uuid.uuid4() for _ in sequences],
        ["t.identity.added"] * n,
        ["identity.added"] * n,
        workspace,
        account,
        sequences,
        payloads,
        [""] * n,
        [""] * n,
    )


async def _old_reserved_events(
    conn: asyncpg.Connection, workspace: uuid.UUID, account: uuid.UUID, n: int
) -> None:
    """The previous release's `Events.flush` without a locked sequence: reserve, then insert."""
    async with conn.transaction():
        reserved = await conn.fetchrow(OLD_RESERVE, account, n)
        assert reserved is not None
        await conn.execute(
            OLD_INSERT, *_old_args(workspace, account, [reserved[0] + i for i in range(1, n + 1)])
        )


async def _old_locked_events(
    conn: asyncpg.Connection, workspace: uuid.UUID, account: uuid.UUID, n: int
) -> None:
    """The previous release's batch of outcomes: the account locked with its sequence, events written
    with the sequence in one statement."""
    async with conn.transaction():
        [row] = await conn.fetch(OLD_LOCK_ACCOUNTS, [account])
        base = row["event_sequence"]
        await conn.execute(
            OLD_WRITE_LOCKED, *_old_args(workspace, account, list(range(base + 1, base + n + 1))), base + n
        )


def _events(
    workspace: uuid.UUID, account: uuid.UUID, n: int, locked_sequence: int | None = None
) -> outbox.Events:
    events = outbox.Events(
        topic_prefix="t.", workspace_id=workspace, account_id=account, locked_sequence=locked_sequence
    )
    for _ in range(n):
        events.add(outbox.LINK_SESSION_COMPLETED, "2024-01-01", event_pb2.Event())
    return events


async def _locked(conn: db.Conn, accounts: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """What a batch of outcomes does first: the accounts locked with their sequence rows."""
    return {r["id"]: r["event_sequence"] for r in await conn.fetch(queue._LOCK_ACCOUNTS, accounts)}


async def _sequences(conn: asyncpg.Connection, account: uuid.UUID) -> list[int]:
    """The account's events' sequences in outbox id order, each checked against its payload's."""
    rows = await conn.fetch("SELECT sequence, payload FROM outbox WHERE account_id = $1 ORDER BY id", account)
    for row in rows:
        assert event_pb2.Event.FromString(row["payload"]).sequence == row["sequence"]
    return [r["sequence"] for r in rows]


async def _handed_out(conn: asyncpg.Connection, account: uuid.UUID) -> int:
    value: int = await conn.fetchval(
        "SELECT sequence FROM account_event_sequences WHERE account_id = $1", account
    )
    return value


async def _updates(conn: asyncpg.Connection) -> list[int]:
    """Rows of `accounts` updated, and of `account_event_sequences` updated and HOT-updated, so far by
    this backend (counts not yet reported, read twice in one transaction for what it did)."""
    row = await conn.fetchrow(
        "SELECT pg_stat_get_xact_tuples_updated('accounts'::regclass),"
        " pg_stat_get_xact_tuples_updated('account_event_sequences'::regclass),"
        " pg_stat_get_xact_tuples_hot_updated('account_event_sequences'::regclass)"
    )
    assert row is not None
    return list(row)


async def test_every_way_of_writing_events_bumps_the_outboxs_row_hot_and_never_writes_accounts(
    fresh_database: str,
) -> None:
    conn = await db.connect(fresh_database)
    try:
        workspace, accounts = await insert_accounts(conn, 2)
        first, second = sorted(accounts)
        # Created with its account, in the same statement.
        assert [await _handed_out(conn, a) for a in (first, second)] == [0, 0]
        async with conn.transaction():
            before = await _updates(conn)
            await _events(workspace, first, 2).flush(conn)  # reserved by the flush
            await _events(workspace, second, 1).flush(conn)
            stats = [after - before for before, after in zip(before, await _updates(conn), strict=True)]
        assert stats == [0, 2, 2]  # accounts updated, sequence rows updated, of which HOT
        async with conn.transaction():  # one account locked (a batch of one outcome)
            locked = await _locked(conn, [first])
            assert locked == {first: 2}
            await _events(workspace, first, 1, locked_sequence=locked[first]).flush(conn)
        async with conn.transaction():  # many accounts locked (a batch of outcomes)
            before = await _updates(conn)
            locked = await _locked(conn, [first, second])
            assert locked == {first: 3, second: 1}
            await outbox.flush_locked(
                conn, [_events(workspace, a, 2, locked_sequence=locked[a]) for a in (first, second)]
            )
            stats = [after - before for before, after in zip(before, await _updates(conn), strict=True)]
        assert stats == [0, 2, 2]  # accounts updated, sequence rows updated, of which HOT
        assert await _sequences(conn, first) == [1, 2, 3, 4, 5]
        assert await _sequences(conn, second) == [1, 2, 3]
        assert [await _handed_out(conn, a) for a in (first, second)] == [5, 3]
        # The column of the release before 0178 is left as it was.
        assert await conn.fetchval("SELECT max(event_sequence) FROM accounts") == 0
    finally:
        await conn.close()


async def _writer(url: str, workspace: uuid.UUID, accounts: list[uuid.UUID], seed: int, rounds: int) -> int:
    """One process's units of work, each account's events written one of the three ways at random."""
    rng = random.Random(seed)
    written = 0
    conn = await db.connect(url)
    try:
        for _ in range(rounds):
            how = rng.choice(("reserve", "locked", "many"))
            picked = sorted(rng.sample(accounts, 2 if how == "many" else 1))
            n = rng.randint(1, 3)
            async with conn.transaction():
                if how == "reserve":
                    await _events(workspace, picked[0], n).flush(conn)
                else:
                    locked = await _locked(conn, picked)
                    batches = [_events(workspace, a, n, locked_sequence=locked[a]) for a in picked]
                    if how == "locked":
                        await batches[0].flush(conn)
                    else:
                        await outbox.flush_locked(conn, batches)
                await asyncio.sleep(0)  # let another writer's statement in before COMMIT
            written += n * len(picked)
        return written
    finally:
        await conn.close()


async def test_concurrent_writers_get_each_sequence_once_in_commit_order(fresh_database: str) -> None:
    """Six connections write events for the same three accounts at once, each unit of work one of the
    outbox's three ways: every account's sequences are 1..n with no gap and no repeat, in outbox id
    order (what the relay publishes by), and the sequence row says n. (Reading the sequence for a
    batch of outcomes without locking its row gives repeats here.)"""
    conn = await db.connect(fresh_database)
    try:
        workspace, accounts = await insert_accounts(conn, 3)
        written = await asyncio.gather(
            *(_writer(fresh_database, workspace, accounts, s, 40) for s in range(6))
        )
        total = 0
        for account in accounts:
            sequences = await _sequences(conn, account)
            assert sequences == list(range(1, len(sequences) + 1))
            assert await _handed_out(conn, account) == len(sequences)
            total += len(sequences)
        assert total == sum(written)
    finally:
        await conn.close()


async def test_the_migration_carries_the_sequences_over_and_the_previous_release_keeps_step_or_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    async with database_migrated_to(tmp_path, 177) as url:
        old = await asyncpg.connect(url, server_settings={db.SCHEMA_SETTING: "0177"})
        writing = await asyncpg.connect(url, server_settings={db.SCHEMA_SETTING: "0177"})
        try:
            workspace, accounts = await insert_accounts(old, 3)
            first, second, third = accounts
            await _old_reserved_events(old, workspace, first, 3)
            await _old_locked_events(old, workspace, second, 2)
            # A unit of work of the previous release is writing events when the migration starts: the
            # migration waits for it, and its sequences are carried over too.
            in_flight = writing.transaction()
            await in_flight.start()
            reserved = await writing.fetchrow(OLD_RESERVE, first, 2)
            assert reserved is not None and reserved[0] == 3
            await writing.execute(OLD_INSERT, *_old_args(workspace, first, [4, 5]))
            up_to_0178 = migrations_up_to(tmp_path, 178)
            migrating = asyncio.create_task(migrate.migrate(url, up_to_0178))
            while not await old.fetchval(
                "SELECT exists(SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%accounts%')"
            ):
                await asyncio.sleep(0.05)
            await in_flight.commit()
            assert await migrating == ["0178_account_event_sequences.sql"]
            assert await migrate.migrate(url, up_to_0178) == []  # forward-only: skipped once applied
        finally:
            await writing.close()
        new = await db.connect(url)
        try:
            assert [await _handed_out(new, a) for a in accounts] == [5, 2, 0]

            # This release goes on from there, each way.
            async with new.transaction():
                await _events(workspace, first, 1).flush(new)
            async with new.transaction():
                locked = await _locked(new, [second])
                await _events(workspace, second, 2, locked_sequence=locked[second]).flush(new)

            # The previous release beside it: in step for an account this release has not written
            # events for (both of its ways), and an account it creates gets its sequence row.
            await _old_reserved_events(old, workspace, third, 2)
            await _old_locked_events(old, workspace, third, 1)
            _, created = await insert_account(old, name="created by the previous release")
            assert await _handed_out(new, created) == 0
            await _old_locked_events(old, workspace, created, 1)
            # This release after it: the sequences it handed out are the ones it goes on from.
            async with new.transaction():
                locked = await _locked(new, [third, created])
                await outbox.flush_locked(
                    new, [_events(workspace, a, 1, locked_sequence=locked[a]) for a in (third, created)]
                )

            # Refused, whole, for an account this release has written events for since: its
            # `accounts.event_sequence` is behind, so its sequences would repeat.
            before = await new.fetchval("SELECT count(*) FROM outbox")
            for account, write in (
                (first, _old_reserved_events),
                (second, _old_locked_events),
                (third, _old_locked_events),
            ):
                with pytest.raises(asyncpg.PostgresError) as refused:
                    await write(old, workspace, account, 1)
                assert release_guard.refused(refused.value), refused.value
                assert "a newer release has written its events since" in str(refused.value)
            assert await new.fetchval("SELECT count(*) FROM outbox") == before

            assert await _sequences(new, first) == [1, 2, 3, 4, 5, 6]
            assert await _sequences(new, second) == [1, 2, 3, 4]
            assert await _sequences(new, third) == [1, 2, 3, 4]
            assert await _sequences(new, created) == [1, 2]
            assert [await _handed_out(new, a) for a in (*accounts, created)] == [6, 4, 4, 2]
        finally:
            await old.close()
            await new.close()


def _scans(plan: dict[str, Any], table: str) -> list[str]:
    """The node types that read `table` in a plan (EXPLAIN's JSON)."""
    nodes = [str(plan["Node Type"])] if plan.get("Relation Name") == table else []
    for child in plan.get("Plans", []):
        nodes += _scans(child, table)
    return nodes


async def test_a_batch_reads_and_writes_its_sequence_rows_by_key_on_generic_plans(
    fresh_database: str,
) -> None:
    """The completer's batch runs on cached generic plans (service/job_outcomes.py, GENERIC_PLANS): its
    lock of the accounts with their sequence rows, and its bump of those rows, read both tables by key
    on an analyzed database of 2,000 accounts, never the whole table (the plan of the join on the key
    alone, and of `UPDATE ... FROM unnest(...)`, hashed the whole narrow table: both fail here)."""
    conn = await db.connect(fresh_database)
    try:
        workspace, accounts = await insert_accounts(conn, 2000)
        await conn.execute("ANALYZE")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        picked = accounts[:8]
        lock = await conn.prepare(f"EXPLAIN (FORMAT JSON) {queue._LOCK_ACCOUNTS}")
        many = await conn.prepare(f"EXPLAIN (FORMAT JSON) {outbox._WRITE_LOCKED_MANY}")
        events = _events(workspace, picked[0], 1).pending
        plans = {
            "lock": await lock.fetchval(picked),
            "bump": await many.fetchval(
                [events[0].event_id],
                ["t.x"],
                ["x"],
                [workspace],
                [picked[0]],
                [1],
                [b""],
                [""],
                [""],
                picked,
                [1] * len(picked),
            ),
        }
        for name, explained in plans.items():
            plan = json.loads(explained)[0]["Plan"]
            for table in (
                ("account_event_sequences", "accounts") if name == "lock" else ("account_event_sequences",)
            ):
                scans = _scans(plan, table)
                assert scans and "Seq Scan" not in scans, (name, table, scans)  # by key: index or bitmap
    finally:
        await conn.close()
