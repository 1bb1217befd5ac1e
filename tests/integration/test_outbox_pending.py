"""The narrow `outbox_pending` table (migration 0175): every unpublished event has one pending row,
written in the same statement (so the same transaction) as the event; the relay reads the pending
rows in id order and marks a batch by deleting them and setting `published_at`, a HOT update of the
outbox row. The migration carries the unpublished events of a database at 0174 over, and a process
of the previous release running beside this one (simulated by a connection marked `0174` running that
release's statements, copied verbatim from service/outbox.py, service/relay.py and service/sampler.py
at b9475a1) keeps the pending rows in step through the migration's trigger."""

from __future__ import annotations

import asyncio
import json
import pathlib
import uuid
from typing import Any

import asyncpg
import pytest
from paylink.v1 import event_pb2

from service import db, migrate, outbox, relay
from tests.harness import (
    database_migrated_to,
    insert_account,
    migrations_up_to,
)

# The previous release's statements (b9475a1), literals spelled out.
OLD_INSERT = """
WITH rows AS (
  INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload, traceparent,
                      request_id)
  SELECT e, t, n, $4, $5, q, p, tp, r
  FROM unnest($1::uuid[], $2::text[], $3::text[], $6::bigint[], $7::bytea[], $8::text[], $9::text[])
       WITH ORDINALITY AS u(e, t, n, q, p, tp, r, i)
  ORDER BY i
  RETURNING 1)
SELECT pg_notify('paylink_outbox', '') FROM (SELECT count(*) FROM rows) AS written
"""
OLD_SELECT = (
    "SELECT id, event_id, topic, event_type, workspace_id, account_id, payload, traceparent, request_id"
    " FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"
)
OLD_MARK = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
OLD_BACKLOG = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


async def _old_events(
    conn: asyncpg.Connection, workspace: uuid.UUID, account: uuid.UUID, first: int, n: int
) -> None:
    sequences = list(range(first, first + n))
    await conn.execute(
        OLD_INSERT,
        [uuid.uuid4() for _ in sequences],
        ["t.identity.added"] * n,
        ["identity.added"] * n,
        workspace,
        account,
        sequences,
        [b"\x00"] * n,
        [""] * n,
        [""] * n,
    )


async def _pending(conn: asyncpg.Connection) -> list[int]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM outbox_pending ORDER BY id")]


async def _unpublished(conn: asyncpg.Connection) -> list[int]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id")]


def _events(
    workspace: uuid.UUID, account: uuid.UUID, n: int, locked_sequence: int | None = None
) -> outbox.Events:
    events = outbox.Events(
        topic_prefix="t.", workspace_id=workspace, account_id=account, locked_sequence=locked_sequence
    )
    for _ in range(n):
        events.add(outbox.LINK_SESSION_COMPLETED, "2024-01-01", event_pb2.Event())
    return events


async def test_events_are_written_with_their_pending_rows_and_marked_by_deleting_them(
    fresh_database: str,
) -> None:
    conn = await db.connect(fresh_database)
    try:
        workspace, account = await insert_account(conn)
        # Every way the outbox writes events: the sequence reserved by the flush, already locked, and
        # many accounts' events in one statement (the completer's batches).
        async with conn.transaction():
            await _events(workspace, account, 2).flush(conn)
        async with conn.transaction():
            await conn.fetchrow(
                "SELECT sequence FROM account_event_sequences WHERE account_id = $1 FOR UPDATE", account
            )
            await _events(workspace, account, 1, locked_sequence=2).flush(conn)
        async with conn.transaction():
            await outbox.flush_locked(conn, [_events(workspace, account, 2, locked_sequence=3)])
        written = await _unpublished(conn)
        assert len(written) == 5 and await _pending(conn) == written
        # Each row's event_id is its event's own (given to asyncpg in its text form).
        for row in await conn.fetch("SELECT event_id, payload FROM outbox"):
            assert event_pb2.Event.FromString(row["payload"]).event_id == str(row["event_id"])
        # No event for a rolled-back change, and no pending row either.
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await _events(workspace, account, 1).flush(conn)
                raise RuntimeError("rolled back")
        assert await _unpublished(conn) == written and await _pending(conn) == written
        # This release's connections write the pending rows themselves: the trigger for the previous
        # release's writes does not fire for them (a bare INSERT here gets no pending row).
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload)"
            " VALUES (gen_random_uuid(), 't.x', 'x', $1, $2, 100, '')",
            workspace,
            account,
        )
        assert len(await _unpublished(conn)) == 6 and await _pending(conn) == written
        await conn.execute("DELETE FROM outbox WHERE sequence = 100")

        assert [r["id"] for r in await conn.fetch(relay._SELECT, 10)] == written
        assert [r["id"] for r in await conn.fetch(relay._SELECT_EXCLUDING, 2, written[:2])] == written[2:4]
        backlog = await conn.fetchrow(outbox.BACKLOG)
        assert backlog is not None and backlog["unpublished"] == 5

        # The mark: pending rows deleted, published_at set, every outbox row updated HOT (no index
        # names published_at any more; fillfactor 50 leaves the room on the page).
        async with conn.transaction():
            await outbox.mark_published(conn, written[:3])
            hot = await conn.fetchval("SELECT pg_stat_get_xact_tuples_hot_updated('outbox'::regclass)")
            updated = await conn.fetchval("SELECT pg_stat_get_xact_tuples_updated('outbox'::regclass)")
        assert (updated, hot) == (3, 3)
        assert await _pending(conn) == written[3:] and await _unpublished(conn) == written[3:]
        assert [r["id"] for r in await conn.fetch(relay._SELECT, 10)] == written[3:]
        backlog = await conn.fetchrow(outbox.BACKLOG)
        assert backlog is not None and backlog["unpublished"] == 2
    finally:
        await conn.close()


async def test_the_migration_carries_unpublished_events_over_and_the_previous_release_keeps_working(
    tmp_path: pathlib.Path,
) -> None:
    async with database_migrated_to(tmp_path, 174) as url:
        old = await asyncpg.connect(url, server_settings={db.SCHEMA_SETTING: "0174"})
        writing = await asyncpg.connect(url, server_settings={db.SCHEMA_SETTING: "0174"})
        new = await db.connect(url)
        try:
            workspace, account = await insert_account(new)
            await _old_events(old, workspace, account, 1, 4)
            published = [r["id"] for r in await old.fetch(OLD_SELECT, 2)]
            await old.execute(OLD_MARK, published)
            # A unit of work of the previous release is writing an event when the migration starts:
            # the migration waits for it, and its event is carried over too.
            in_flight = writing.transaction()
            await in_flight.start()
            await _old_events(writing, workspace, account, 5, 1)
            up_to_0175 = migrations_up_to(tmp_path, 175)
            migrating = asyncio.create_task(migrate.migrate(url, up_to_0175))
            while not await new.fetchval(
                "SELECT exists(SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%outbox%')"
            ):
                await asyncio.sleep(0.05)
            await in_flight.commit()
            assert await migrating == ["0175_outbox_pending.sql"]

            unpublished = await _unpublished(new)
            assert len(unpublished) == 3 and not set(published) & set(unpublished)
            assert await _pending(new) == unpublished
            assert [r["id"] for r in await new.fetch(relay._SELECT, 10)] == unpublished
            assert not await new.fetchval(
                "SELECT exists(SELECT 1 FROM pg_indexes WHERE indexname = 'outbox_unpublished')"
            )

            # The previous release beside this one: its events get their pending rows, what its relay
            # marks loses them; its statements (without their index) still answer right.
            await _old_events(old, workspace, account, 6, 2)
            unpublished = await _unpublished(new)
            assert len(unpublished) == 5 and await _pending(new) == unpublished
            assert [r["id"] for r in await old.fetch(OLD_SELECT, 10)] == unpublished
            await old.execute(OLD_MARK, unpublished[:2])
            assert await _pending(new) == unpublished[2:]
            assert [r["id"] for r in await new.fetch(relay._SELECT, 10)] == unpublished[2:]
            assert await old.fetchval(OLD_BACKLOG) == 3
            backlog = await new.fetchrow(outbox.BACKLOG)
            assert backlog is not None and backlog["unpublished"] == 3
            # This release's events and marks, read by the previous release's relay: the same rows.
            # (This release's INSERT of events; its sequences are migration 0178's, later.)
            event = _events(workspace, account, 1).pending[0]
            await new.execute(
                outbox._INSERT, [event.event_id], ["t.x"], ["x"], workspace, account, [8], [b""], [""], [""]
            )  # old events: sequences 1-7
            await outbox.mark_published(new, unpublished[2:3])
            assert [r["id"] for r in await old.fetch(OLD_SELECT, 10)] == await _pending(new)
            # An operator who sets an event back to unpublished (to send it again) gets it sent again.
            await old.execute("UPDATE outbox SET published_at = NULL WHERE id = $1", published[0])
            assert published[0] in await _pending(new)

            # Forward-only: the runner skips it once applied.
            assert await migrate.migrate(url, up_to_0175) == []
            up_to_0176 = migrations_up_to(tmp_path, 176)  # later migrations are others' tests
            assert await migrate.migrate(url, up_to_0176) == ["0176_outbox_pending_follows_any_mark.sql"]
        finally:
            await old.close()
            await writing.close()
            await new.close()


async def test_an_event_marked_by_hand_keeps_its_pending_row_right_whatever_the_session_says(
    fresh_database: str,
) -> None:
    """An operator's session that marks an event published by hand takes its pending row away, and
    one that sets it back to unpublished gives it one, whether it says this release's schema (as the
    release guard asks) or none (migration 0176). paylink's own connections of this release say they
    keep the pending rows themselves (`paylink.keeps_outbox_pending`): the trigger stays out of their
    way (a bare mark on one leaves the pending row, which the relay's mark deletes in its statement)."""
    conn = await db.connect(fresh_database)
    says_newest = await asyncpg.connect(
        fresh_database, server_settings={db.SCHEMA_SETTING: f"{migrate.newest():04d}"}
    )
    says_nothing = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT current_setting($1, true)", db.KEEPS_OUTBOX_PENDING) == "on"
        workspace, account = await insert_account(conn)
        async with conn.transaction():
            await _events(workspace, account, 4).flush(conn)
        events = await _pending(conn)
        assert len(events) == 4 and await _unpublished(conn) == events
        for operator, event in ((says_newest, events[0]), (says_nothing, events[1])):
            assert (
                await operator.fetchval("SELECT current_setting($1, true)", db.KEEPS_OUTBOX_PENDING) is None
            )
            await operator.execute("UPDATE outbox SET published_at = now() WHERE id = $1", event)
            assert event not in await _pending(conn)
            assert event not in [r["id"] for r in await conn.fetch(relay._SELECT, 10)]  # not sent again
            # Published at another time: still published, no pending row.
            await operator.execute(
                "UPDATE outbox SET published_at = published_at - interval '1 s' WHERE id = $1", event
            )
            assert event not in await _pending(conn)
            # Back to unpublished (to send it again): pending, and the relay takes it.
            await operator.execute("UPDATE outbox SET published_at = NULL WHERE id = $1", event)
            assert event in await _pending(conn)
            await operator.execute("UPDATE outbox SET published_at = now() WHERE id = $1", event)
        assert await _pending(conn) == events[2:]
        # This release's own connection: the trigger does not fire (the relay's mark deletes the row).
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = $1", events[2])
        assert await _pending(conn) == events[2:]
        await outbox.mark_published(conn, events[2:])
        assert await _pending(conn) == [] and await _unpublished(conn) == []
    finally:
        await conn.close()
        await says_newest.close()
        await says_nothing.close()


def _outbox_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan] if plan.get("Relation Name") == "outbox" else []
    for child in plan.get("Plans", []):
        nodes += _outbox_scans(child)
    return nodes


async def _plan(conn: asyncpg.Connection, query: str, *args: object) -> dict[str, Any]:
    """The generic plan the relay's prepared statement gets (asyncpg prepares every statement)."""
    statement = await conn.prepare(f"EXPLAIN (FORMAT JSON) {query}")
    [[explained]] = await statement.fetch(*args)
    return dict(json.loads(explained)[0]["Plan"])


async def test_the_relays_selects_read_the_outbox_by_primary_key_only(fresh_database: str) -> None:
    """However many events are published, and however many pending rows the planner expects, a select
    reads the outbox rows of the pending ids it took, each by primary key (an index scan of the outbox
    with an index condition), never the outbox in id order filtered on `published_at` (the first form
    of 0175's select, which read every published row: 0.64 ms per job in the pipeline; it fails here).
    The selects' LATERAL subquery also rules out the hash join against the whole outbox that the
    form after it got in the pipeline (bench/NOTES.md, inflight session 23)."""
    conn = await db.connect(fresh_database)
    try:
        workspace, account = await insert_account(conn)
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload,"
            " published_at) SELECT gen_random_uuid(), 't.x', 'x', $1, $2, s, '', now()"
            " FROM generate_series(1, 20000) AS s",
            workspace,
            account,
        )
        await conn.execute(
            "UPDATE account_event_sequences SET sequence = 20000 WHERE account_id = $1", account
        )
        await conn.execute("ANALYZE outbox")
        # As in the pipeline: the pending table has seen many events come and go (pages of dead rows,
        # no statistics yet), so the planner guesses many pending rows.
        await conn.execute("ALTER TABLE outbox_pending SET (autovacuum_enabled = false)")
        await conn.execute("INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM outbox")
        await conn.execute("DELETE FROM outbox_pending")
        async with conn.transaction():
            await outbox.flush_locked(conn, [_events(workspace, account, 3, locked_sequence=20000)])
        pending = await _pending(conn)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        for query, args in (
            (relay._SELECT, (100,)),
            (relay._SELECT_EXCLUDING, (100, pending[:1])),
        ):
            scans = _outbox_scans(await _plan(conn, query, *args))
            assert scans and all(s["Node Type"].startswith("Index") and "Index Cond" in s for s in scans), (
                scans
            )
            assert [r["id"] for r in await conn.fetch(query, *args)] == (
                pending if len(args) == 1 else pending[1:]
            )
        assert not _outbox_scans(await _plan(conn, outbox.BACKLOG))
    finally:
        await conn.close()
