"""Retention: published outbox rows past the window and idempotency records past 7 days go;
unpublished events and recent rows stay."""

from __future__ import annotations

import uuid

import asyncpg

from service import janitor


async def test_prune_keeps_unpublished_and_recent_rows(fresh_database: str) -> None:
    # A database of its own: no relay publishes these rows, no other test counts them.
    pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=2)
    try:
        await _check(pool)
    finally:
        await pool.close()


async def _check(pool: asyncpg.Pool) -> None:
    account = uuid.uuid4()
    ws = uuid.uuid4()

    async def event(published: str | None, created: str) -> uuid.UUID:
        event_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload,"
            " created_at, published_at) VALUES ($1, 't', 'identity.added', $2, $3,"
            " (SELECT coalesce(max(sequence), 0) + 1 FROM outbox WHERE account_id = $3), '\\x00',"
            f" now() - interval '{created}', {(published and f'now() - interval {published!r}') or 'NULL'})",
            event_id,
            ws,
            account,
        )
        return event_id

    old_published = await event("40 days", "40 days")
    old_unpublished = await event(None, "40 days")  # never deleted: it has not reached Kafka yet
    recent = await event("1 day", "1 day")
    await pool.execute(
        "INSERT INTO idempotency_keys (workspace_id, method, request_id, request_hash, response, created_at)"
        " VALUES ($1, 'CreateJob', 'old', '\\x00', '\\x00', now() - interval '8 days'),"
        " ($1, 'CreateJob', 'new', '\\x00', '\\x00', now() - interval '6 days')",
        ws,
    )

    pruned = await janitor.prune(pool, outbox_retention_days=30, batch=1)
    assert pruned.outbox >= 1 and pruned.idempotency_keys >= 1
    left = {
        r["event_id"] for r in await pool.fetch("SELECT event_id FROM outbox WHERE account_id = $1", account)
    }
    assert left == {old_unpublished, recent}
    assert old_published not in left
    keys = {
        r["request_id"]
        for r in await pool.fetch("SELECT request_id FROM idempotency_keys WHERE workspace_id = $1", ws)
    }
    assert keys == {"new"}

    # 0 keeps published events forever.
    assert (await janitor.prune(pool, outbox_retention_days=0)).outbox == 0
