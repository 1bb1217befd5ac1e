"""Retention: deletes what paylink no longer needs, in small batches.

- Published outbox rows older than PAYLINK_OUTBOX_RETENTION_DAYS (0 keeps them forever): they
  only serve `events replay`. Unpublished rows are never touched.
- Idempotency records older than 7 days (AIP-155's window: after it a request_id may be reused).

The relay leader runs it when idle, at most every PAYLINK_JANITOR_INTERVAL_SECONDS.
"""

from __future__ import annotations

import dataclasses

from service import db, idempotency, outbox


@dataclasses.dataclass(frozen=True, slots=True)
class Pruned:
    outbox: int
    idempotency_keys: int


async def prune(executor: db.Executor, outbox_retention_days: int, batch: int = 5000) -> Pruned:
    """Deletes expired rows until none are left, through the owners of the tables; returns how many."""
    events = keys = 0
    if outbox_retention_days > 0:
        while n := await outbox.prune_published(executor, outbox_retention_days, batch):
            events += n
    while n := await idempotency.prune_expired(executor, batch):
        keys += n
    return Pruned(events, keys)
