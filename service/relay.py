"""The outbox relay: publishes committed outbox rows to Kafka, then marks them published.

One relay holds the leader advisory lock at a time (per-account order needs a single publisher);
others wait as hot standbys. It selects unpublished rows in id order — never "everything after the
last id", because ids become visible at commit, not at insert — sends the whole batch with an
idempotent producer (acks=all), waits for every acknowledgement, and only then marks the rows.
A crash between send and mark re-sends the same rows with the same event_id: at least once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer

from service import db, janitor, kafka, metrics, outbox
from service.config import Settings
from service.outbox import NOTIFY_CHANNEL

log = logging.getLogger("paylink.relay")

_LEADER_LOCK = 0x72656C6179  # "relay"

_SELECT = f"SELECT {kafka.OUTBOX_COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"

# Fault-injection hook for tests/faults (docs/reliability.md), off unless set to 1: the process dies
# like a SIGKILL after the broker acknowledged a batch and before its rows are marked published.
_FAULT_EXIT_AFTER_PUBLISH = os.environ.get("PAYLINK_FAULT_RELAY_EXIT_AFTER_PUBLISH") == "1"


class _ProducerFailed(Exception):
    """A batch was not acknowledged: the relay replaces its producer and sends the batch again."""


class Relay:
    """Publishes the outbox until stopped. `run` returns after `stop()` with the outbox flushed."""

    def __init__(self, settings: Settings, pool: db.Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.published = 0
        self._next_prune = 0.0  # monotonic time of the next retention run

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._lead()
            except db.CONNECTION_LOST as exc:
                log.warning("relay lost its connection, retrying", extra={"error": str(exc)})
                await self._sleep(1.0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _lead(self) -> None:
        conn: db.Conn = await asyncpg.connect(self._settings.database_url)
        try:
            standby = False
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                if not standby:
                    log.info("relay standing by: another relay leads")
                    standby = True
                await self._sleep(self._settings.relay_poll_seconds)
                if self._stopping.is_set():
                    return
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            # A lost connection (database restart) must not wait a whole poll to be noticed.
            conn.add_termination_listener(self._notified)
            metrics.RELAY_LEADER.set(1)
            log.info("relay is the leader: publishing the outbox")
            while True:
                producer = kafka.make_producer(self._settings)
                await self._start_producer(producer)
                try:
                    await self._publish_loop(conn, producer)
                    return
                except _ProducerFailed:
                    # Never retry on the same producer: after a broker restart an idempotent producer
                    # can fail for good (OutOfOrderSequenceNumber), and while it retries, aiokafka
                    # spins on metadata. A new producer (new producer id) resends the unmarked rows.
                    await self._sleep(1.0)
                finally:
                    await producer.stop()
        finally:
            metrics.RELAY_LEADER.set(0)
            with contextlib.suppress(Exception):
                await conn.close()

    async def _start_producer(self, producer: AIOKafkaProducer) -> None:
        while True:
            try:
                await producer.start()
                return
            except Exception as exc:  # broker down: keep events in the outbox and retry
                log.warning("kafka unavailable, retrying", extra={"error": str(exc)})
                if self._stopping.is_set():
                    raise
                await self._sleep(1.0)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _publish_loop(self, conn: db.Conn, producer: AIOKafkaProducer) -> None:
        while True:
            self._wake.clear()
            rows = await conn.fetch(_SELECT, self._settings.relay_batch_size)
            if rows:
                await self._publish(conn, producer, rows)
                continue  # a full batch likely means more is waiting
            if self._stopping.is_set():
                return  # flushed: nothing left unpublished
            await self._prune_when_due(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.relay_poll_seconds)

    async def _prune_when_due(self, conn: db.Conn) -> None:
        """Retention (service/janitor.py), run by the leader while the outbox is empty."""
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self._settings.janitor_interval_seconds
        pruned = await janitor.prune(conn, self._settings.outbox_retention_days)
        if pruned.outbox or pruned.idempotency_keys:
            log.info(
                "pruned expired rows",
                extra={"outbox": pruned.outbox, "idempotency_keys": pruned.idempotency_keys},
            )

    async def _publish(
        self, conn: db.Conn, producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]
    ) -> None:
        started = time.perf_counter()
        try:
            futures = [await kafka.send(producer, row) for row in rows]
            await asyncio.gather(*futures)
        except Exception as exc:  # broker trouble: the same rows (same event_ids) go again, see _lead
            log.warning("publish failed, resending the batch", extra={"error": repr(exc), "rows": len(rows)})
            raise _ProducerFailed from exc
        if _FAULT_EXIT_AFTER_PUBLISH:
            os._exit(137)
        await outbox.mark_published(conn, [row["id"] for row in rows])
        self.published += len(rows)
        metrics.RELAY_BATCH.observe(time.perf_counter() - started)
        for event_type, count in collections.Counter(row["event_type"] for row in rows).items():
            metrics.EVENTS_PUBLISHED.labels(event_type).inc(count)
        log.info(
            "events published",
            extra={"count": len(rows), "event_ids": [str(row["event_id"]) for row in rows]},
        )
