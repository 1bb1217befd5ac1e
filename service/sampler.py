"""Samples backlog gauges from the database every PAYLINK_METRICS_SAMPLE_SECONDS: job queue depth
and age, outbox lag and the age of the oldest unpublished event.

One cheap statement per interval (the queue's counts use the partial indexes `job_queue_runnable` and
`job_queue_leased`; the outbox's read the narrow `outbox_pending`: `outbox.BACKLOG`), not per RPC.
Runs in every process that runs a worker or the relay; they all report the same values, so aggregate
with max() in Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from service import db, metrics, outbox, queue

log = logging.getLogger("paylink.sampler")

SAMPLE = f"""
SELECT
  (SELECT count(*) FROM {queue.WAITING} AS w WHERE run_at <= now()) AS runnable,
  (SELECT count(*) FROM {queue.WAITING} AS w WHERE run_at > now()) AS scheduled,
  (SELECT count(*) FROM {queue.LEASED} AS l) AS running,
  (SELECT extract(epoch FROM now() - min(run_at)) FROM {queue.WAITING} AS w WHERE run_at <= now()) AS oldest_runnable,
  b.unpublished,
  extract(epoch FROM now() - b.oldest) AS oldest_event
FROM ({outbox.BACKLOG}) AS b
"""


async def read(pool: db.Pool) -> asyncpg.Record:
    """The backlog now (one statement); sets nothing."""
    row = await pool.fetchrow(SAMPLE)
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return row


def publish(row: asyncpg.Record) -> None:
    """Sets the process's backlog gauges from one `read`. Synchronous: the gauges always hold one
    sample's values together, and a reader that publishes and then reads the gauges without
    awaiting in between sees exactly its own sample (the process's Sampler may publish at any await)."""
    metrics.QUEUE_DEPTH.labels("runnable").set(row["runnable"])
    metrics.QUEUE_DEPTH.labels("scheduled").set(row["scheduled"])
    metrics.QUEUE_DEPTH.labels("running").set(row["running"])
    metrics.QUEUE_OLDEST_AGE.set(max(0.0, float(row["oldest_runnable"] or 0)))
    metrics.OUTBOX_LAG.set(row["unpublished"])
    metrics.OUTBOX_OLDEST_AGE.set(max(0.0, float(row["oldest_event"] or 0)))


async def sample_once(pool: db.Pool) -> asyncpg.Record:
    """Reads the backlog and sets the gauges; returns the row."""
    row = await read(pool)
    publish(row)
    return row


class Sampler:
    """Calls `sample_once` every `interval` seconds until stopped; a failed sample is logged and skipped."""

    def __init__(self, pool: db.Pool, interval: float) -> None:
        self._pool = pool
        self._interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(sample_once(self._pool), timeout=max(1.0, self._interval))
                failing = False
            except Exception as exc:  # the database is away: health and the worker report it
                if not failing:
                    log.warning("metrics sample failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
