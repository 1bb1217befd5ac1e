"""Retention: deletes what paylink no longer needs, in small batches.

- Published outbox rows older than PAYLINK_OUTBOX_RETENTION_DAYS (0 keeps them forever): they
  only serve `events replay`. Unpublished rows are never touched.
- Idempotency records older than 7 days (AIP-155's window: after it a request_id may be reused).

The relay leader runs it when idle, at most every PAYLINK_JANITOR_INTERVAL_SECONDS.
"""

from __future__ import annotations

import dataclasses

from service import db

_OUTBOX = """
DELETE FROM outbox WHERE id IN (
  SELECT id FROM outbox WHERE published_at < now() - make_interval(days => $1) LIMIT $2)
"""
_IDEMPOTENCY = """
DELETE FROM idempotency_keys WHERE ctid IN (
  SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '7 days' LIMIT $1)
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Pruned:
    outbox: int
    idempotency_keys: int


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def prune(executor: db.Executor, outbox_retention_days: int, batch: int = 5000) -> Pruned:
    """Deletes expired rows until none are left; returns how many."""
    outbox = keys = 0
    if outbox_retention_days > 0:
        while n := _count(await executor.execute(_OUTBOX, outbox_retention_days, batch)):
            outbox += n
    while n := _count(await executor.execute(_IDEMPOTENCY, batch)):
        keys += n
    return Pruned(outbox, keys)
