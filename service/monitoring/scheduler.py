"""The scheduler loop: claims due scheduled refreshes and queues them (runs in worker processes).

Every `PAYLINK_MONITORING_TICK_SECONDS` it claims up to `PAYLINK_MONITORING_BATCH_SIZE` due rows in
one transaction (`schedules.claim`) and goes again at once while batches come back full. Several
workers run it at the same time without coordinating: the due rows are locked with SKIP LOCKED.

A claim the database's release guard refuses (PL001: a newer release migrated the database; the
claim's INSERT into `jobs` rolled back, the rows stay due) is not retried every tick: the scheduler
waits the guard's back-off (service/release_guard.py; ended early once the guard accepts this code)
and says so once per back-off, a WARNING naming the fix, no stack trace
(tests/integration/test_release_refused.py::test_the_scheduler_refused_by_a_newer_database_backs_off_and_says_so_once_per_back_off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service import db, metrics, release_guard
from service.deps import Deps
from service.monitoring import schedules

log = logging.getLogger("paylink.monitoring")


def limits(deps: Deps) -> schedules.Limits:
    settings = deps.settings
    return schedules.Limits(
        batch=settings.monitoring_batch_size,
        platform_concurrency=settings.monitoring_platform_concurrency,
        daily_budget=settings.monitoring_daily_budget,
    )


async def claim_once(deps: Deps) -> schedules.Claimed:
    """One claim in its own transaction."""
    async with deps.pool.acquire() as conn, conn.transaction():
        claimed = await schedules.claim(conn, limits(deps))
    if claimed.job_ids:
        metrics.SCHEDULED_REFRESHES.inc(len(claimed.job_ids))
    return claimed


class Scheduler:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._stopping = asyncio.Event()
        # Claims refused by the release guard in a row: one WARNING with the fix per back-off.
        self.refused = release_guard.BackOff(
            deps.release_guard, log, logging.WARNING, f"due refreshes not queued: {release_guard.FIX}"
        )

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        tick = self.deps.settings.monitoring_tick_seconds
        while not self._stopping.is_set():
            try:
                claimed = await claim_once(self.deps)
                self.refused.accepted()
                if claimed.due >= self.deps.settings.monitoring_batch_size:
                    continue  # more is due: no pause
            except db.CONNECTION_LOST as exc:
                if release_guard.refused(exc):
                    await self.refused.wait(exc, self._stopping)
                    continue
                log.warning("scheduler lost the database, retrying", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), tick)
