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
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from service import db, janitor, kafka, metrics, outbox
from service.config import Settings
from service.outbox import NOTIFY_CHANNEL

log = logging.getLogger("paylink.relay")

_LEADER_LOCK = 0x72656C6179  # "relay"

# The first $1 unpublished events (their `outbox_pending` rows, migration 0175) in id order: the ids
# from the pending table's primary key, then each one's outbox row by primary key. The LATERAL
# subquery (OFFSET 0 keeps it one) is read once per pending id, whatever the planner expects: a join
# could read the whole outbox instead (bench/NOTES.md, inflight session 23).
_BY_ID = f"LATERAL (SELECT {kafka.OUTBOX_COLUMNS} FROM outbox WHERE outbox.id = p.id OFFSET 0) AS o"
_SELECT = f"""
SELECT o.* FROM (SELECT id FROM outbox_pending ORDER BY id LIMIT $1) AS p, {_BY_ID}
ORDER BY p.id
"""
# The next batch while rows $2 are in flight (sent but not yet marked): the first $1 pending ids other
# than those, in id order. A hashed anti-join against the array (not `<> ALL`, a scan of the array per
# row); the inner LIMIT bounds the pending index scan to what the batch can need.
_SELECT_EXCLUDING = f"""
SELECT o.* FROM (
  SELECT id FROM (
    (SELECT id FROM outbox_pending ORDER BY id LIMIT $1 + cardinality($2::bigint[]))
    EXCEPT SELECT unnest($2::bigint[])) AS following
  ORDER BY id LIMIT $1) AS p, {_BY_ID}
ORDER BY p.id
"""

# Fault-injection hook for tests/faults (docs/reliability.md), off unless set to a number n ≥ 1: the
# process dies like a SIGKILL once the broker acknowledged its n-th batch, before those rows are
# marked published (with n ≥ 2, while the mark of batch n-1 may still be in flight).
_FAULT = os.environ.get("PAYLINK_FAULT_RELAY_EXIT_AFTER_PUBLISH", "")
_FAULT_EXIT_AFTER_BATCHES = int(_FAULT) if _FAULT.isdigit() else 0


class _ProducerFailed(Exception):
    """A batch was not acknowledged: the relay replaces its producer and sends the batch again."""


class Relay:
    """Publishes the outbox until stopped. `run` returns after `stop()` with the outbox flushed."""

    def __init__(self, settings: Settings, pool: db.Pool, wake: outbox.RelayWake | None = None) -> None:
        """`wake`: the process's (`Deps.relay_wake`): while this relay leads, the process's units of
        work wake it through it, by a call after COMMIT instead of a NOTIFY."""
        self._settings = settings
        self._pool = pool
        self._local = wake
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.published = 0
        self._acknowledged_batches = 0
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
        conn: db.Conn = await db.connect(self._settings.database_url)
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
            # A lost connection (database restart) must not wait a whole poll to be noticed; the
            # leader lock went with it, so this process's events notify again from then on.
            conn.add_termination_listener(self._lost)
            if self._local is not None:
                self._local.leader = self._notified  # set before the first select below
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
            self._unlead()
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

    def _lost(self, *_: object) -> None:
        self._unlead()
        self._wake.set()

    def _unlead(self) -> None:
        if self._local is not None and self._local.leader == self._notified:
            self._local.leader = None

    async def _publish_loop(self, conn: db.Conn, producer: AIOKafkaProducer) -> None:
        while True:
            self._wake.clear()
            rows = await conn.fetch(_SELECT, self._settings.relay_batch_size)
            if rows:
                await self._publish_stream(conn, producer, rows)
                continue  # the outbox ran dry while streaming: look once more before waiting
            if self._stopping.is_set():
                return  # flushed: nothing left unpublished
            await self._prune_when_due(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.relay_poll_seconds)

    async def _publish_stream(
        self, conn: db.Conn, producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]
    ) -> None:
        """Publishes batch after batch while the outbox has rows, the steps overlapped: while batch
        N is marked published (on a pool connection, its own commit), batch N+1 is sent; and after
        a full batch N (a backlog), batch N+1 is selected while N waits for its acknowledgements.

        After a batch that was not full, N+1 is selected once N is acknowledged instead: the rows
        committed while N was in flight go in N+1, not in N+2 (a select made before the
        acknowledgement could not see them; bench/NOTES.md, latency session 31). With a backlog
        the select is overlapped, as the next batch is full either way.

        Batch N+1 is selected before N is marked, so the select leaves out the rows still in
        flight (sent, or being marked) by id — an anti-join, never "after the last id": a row that
        commits late with a lower id is in the next select, ahead of any later row of its account.
        Batch N+1 is sent only after every row of N is acknowledged, so a failure resends N and
        what follows it in order (a new producer, `_lead`), and rows are marked only once acknowledged.
        """
        batch_size = self._settings.relay_batch_size
        marking: asyncio.Task[None] | None = None
        marking_ids: list[int] = []
        try:
            while rows:
                started = time.perf_counter()
                sending = [row["id"] for row in rows]
                acks = await self._send(producer, rows)
                self._wake.clear()
                following = None
                if len(rows) >= batch_size:  # a backlog: the next batch now, while N is acknowledged
                    following = await conn.fetch(_SELECT_EXCLUDING, batch_size, sending + marking_ids)
                await self._acknowledged(acks, len(rows))
                self._acknowledged_batches += 1
                if self._acknowledged_batches == _FAULT_EXIT_AFTER_BATCHES:
                    os._exit(137)
                if marking is not None:
                    await marking  # one mark in flight: its failure stops the stream here
                marking, marking_ids = asyncio.create_task(self._mark(rows, started)), sending
                if following is None:  # N-1 is marked: only N is in flight
                    following = await conn.fetch(_SELECT_EXCLUDING, batch_size, marking_ids)
                rows = following
        finally:
            if marking is not None:
                await marking

    async def _send(
        self, producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]
    ) -> list[asyncio.Future[Any]]:
        try:
            return await kafka.send_many(producer, rows)
        except Exception as exc:  # broker trouble: the same rows (same event_ids) go again, see _lead
            log.warning("publish failed, resending the batch", extra={"error": repr(exc), "rows": len(rows)})
            raise _ProducerFailed from exc

    async def _acknowledged(self, acks: list[asyncio.Future[Any]], rows: int) -> None:
        try:
            await asyncio.gather(*acks)
        except Exception as exc:  # broker trouble: the same rows (same event_ids) go again, see _lead
            log.warning("publish failed, resending the batch", extra={"error": repr(exc), "rows": rows})
            raise _ProducerFailed from exc

    async def _mark(self, rows: Sequence[asyncpg.Record], started: float) -> None:
        """Marks an acknowledged batch published, in its own commit on a pool connection."""
        await outbox.mark_published(self._pool, [row["id"] for row in rows])
        self.published += len(rows)
        metrics.RELAY_BATCH.observe(time.perf_counter() - started)
        for event_type, count in collections.Counter(row["event_type"] for row in rows).items():
            metrics.EVENTS_PUBLISHED.labels(event_type).inc(count)
        log.info(
            "events published",
            extra={"count": len(rows), "event_ids": [str(row["event_id"]) for row in rows]},
        )

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
