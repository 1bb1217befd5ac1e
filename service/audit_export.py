"""Exports audit records to Kafka (`<prefix>audit.recorded`) for a SIEM, and prunes old ones.

Records reach `audit_unexported` in the transaction that wrote them. One exporter at a time (a
PostgreSQL advisory lock; the others stand by) reads a batch, publishes it with an idempotent
producer (acks=all), waits for every acknowledgement and only then deletes the batch from the
queue: at least once, with the record id as the stable event_id. Audit events are outside the
per-account sequence: sequence 0, no envelope account_id (the record names the account),
keyed by the workspace. The leader also deletes records past
PAYLINK_AUDIT_RETENTION_DAYS (service/audit.py `prune`) when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer
from paylink.v1 import event_pb2

from service import audit, db, timeutil
from service.config import Settings
from service.kafka import CONTENT_TYPE, make_producer

log = logging.getLogger("paylink.audit")

EVENT = "audit.recorded"
_LEADER_LOCK = 0x6175646974  # "audit"

_SELECT = f"""
SELECT {", ".join("a." + c for c in audit.NAMES)}, a.recorded_at FROM audit_unexported u
JOIN audit_records a ON a.id = u.record_id ORDER BY a.recorded_at LIMIT $1
"""


def to_event(row: asyncpg.Record) -> event_pb2.Event:
    """The audit.recorded event of a record: its id is the event_id, sequence 0."""
    record = audit.to_proto(row)
    event = event_pb2.Event(
        event_id=record.id,
        event=EVENT,
        workspace_id=record.workspace_id,
        account_id="",  # not an account's change: outside every account's sequence (the record names it)
        sequence=0,
        audit_recorded=record,
    )
    timeutil.set_ts(event.created_at, row["recorded_at"])
    return event


def message_of(event: event_pb2.Event) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(key, headers) of an audit event: keyed by its workspace (one partition keeps its order)."""
    key = event.workspace_id.encode()
    headers = [
        ("event-id", event.event_id.encode()),
        ("event-type", event.event.encode()),
        ("workspace-id", event.workspace_id.encode()),
        ("content-type", CONTENT_TYPE),
    ]
    return key, headers


class AuditExporter:
    """Publishes audit records until stopped; `run` returns after `stop()` with the queue flushed."""

    def __init__(self, settings: Settings, pool: db.Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._stopping = asyncio.Event()
        self._next_prune = 0.0
        self.exported = 0

    def stop(self) -> None:
        self._stopping.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._lead()
            except db.CONNECTION_LOST as exc:
                log.warning("audit exporter lost its connection, retrying", extra={"error": str(exc)})
                await self._sleep(1.0)

    async def _lead(self) -> None:
        conn: db.Conn = await db.connect(self._settings.database_url)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                await self._sleep(self._settings.relay_poll_seconds)
                if self._stopping.is_set():
                    return
            while not self._stopping.is_set():
                producer = make_producer(self._settings)
                try:
                    await producer.start()
                    await self._loop(conn, producer)
                    return
                except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
                    raise
                except Exception as exc:  # broker trouble: the queue keeps the records; retry
                    log.warning("audit export failed, retrying", extra={"error": repr(exc)})
                    await self._sleep(1.0)
                finally:
                    await producer.stop()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _loop(self, conn: db.Conn, producer: AIOKafkaProducer) -> None:
        while True:
            rows = await conn.fetch(_SELECT, self._settings.relay_batch_size)
            if rows:
                await self._publish(conn, producer, rows)
                continue
            if self._stopping.is_set():
                return
            await self._prune_when_due()
            await self._sleep(self._settings.relay_poll_seconds)

    async def _publish(
        self, conn: db.Conn, producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]
    ) -> None:
        topic = self._settings.topic_prefix + EVENT
        sent = []
        for row in rows:
            event = to_event(row)
            key, headers = message_of(event)
            sent.append(await producer.send(topic, value=event.SerializeToString(), key=key, headers=headers))
        await asyncio.gather(*sent)
        await audit.mark_exported(conn, [row["id"] for row in rows])
        self.exported += len(rows)

    async def _prune_when_due(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self._settings.janitor_interval_seconds
        pruned = await audit.prune(self._pool, self._settings.audit_retention_days)
        if pruned:
            log.info("pruned audit records past retention", extra={"audit_records": pruned})
