"""Without a backlog, the relay selects batch N+1 once batch N is acknowledged (service/relay.py
`_publish_stream`): an event committed while N was being acknowledged goes in N+1, not in a round of
its own after it (a select made before the acknowledgement could not see it; bench/NOTES.md, latency
session 31). With a backlog (a full batch) N+1 is selected while N is acknowledged, as before."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from service import db, relay
from service.config import Settings

# An event as service/outbox.py writes one: its row and its `outbox_pending` row (what the relay reads).
_INSERT = """
WITH row AS (
  INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload)
  VALUES (gen_random_uuid(), $1, 'job.added', $2, gen_random_uuid(), 1, '\\x0a00') RETURNING id, created_at),
pending AS (INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM row)
SELECT id FROM row
"""


class _Recorded(relay.Relay):
    """The relay, recording its batches; while its first batch is sent (before any select could see
    it) one event commits, and another while that batch is being acknowledged."""

    def __init__(self, settings: Settings, pool: db.Pool, topic: str, workspace: uuid.UUID) -> None:
        super().__init__(settings, pool)
        self.batches: list[list[int]] = []
        self.late: list[int] = []
        self._insert = (topic, workspace)

    async def _commit_one(self) -> None:
        self.late.append(await self._pool.fetchval(_INSERT, *self._insert))

    async def _send(self, producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]) -> list[Any]:
        self.batches.append([row["id"] for row in rows])
        if len(self.batches) == 1:
            await self._commit_one()
        return await super()._send(producer, rows)

    async def _acknowledged(self, acks: list[asyncio.Future[Any]], rows: int) -> None:
        if len(self.batches) == 1 and len(self.late) == 1:
            await self._commit_one()
        await super()._acknowledged(acks, rows)


async def test_an_event_committed_during_the_acknowledgement_goes_in_the_next_batch(
    settings: Settings, fresh_database: str
) -> None:
    own = settings.model_copy(update={"database_url": fresh_database, "relay_poll_seconds": 600.0})
    pool = await db.create_pool(own, size=2)
    topic, workspace = f"{settings.topic_prefix}rounds.job.added", uuid.uuid4()
    first = await pool.fetchval(_INSERT, topic, workspace)
    publisher = _Recorded(own, pool, topic, workspace)
    task = asyncio.create_task(publisher.run())
    try:
        deadline = time.monotonic() + 30
        while publisher.published < 3:
            assert time.monotonic() < deadline, f"published {publisher.published} of 3: {publisher.batches}"
            await asyncio.sleep(0.05)
        # Before: [[first], [late 1], [late 2]] (batch 2 was selected before late 2 committed).
        assert publisher.batches == [[first], publisher.late]
    finally:
        publisher.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await pool.close()
