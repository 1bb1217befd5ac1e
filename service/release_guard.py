"""This release against a database whose release guard refuses it (migration 0174's mechanism).

The guard (docs/operations.md, "The release guard") refuses a write to `jobs` from a connection whose
`paylink.schema` is below the database's floor, with SQLSTATE PL001. This release's own connections
say its newest migration (service/db.py), so they are refused once a later release's migration has
raised the floor above it while this process kept running: the fix is to stop this process and run
the release that migrated the database. Until then the process neither crashes nor spins:

- its worker backs off, bounded and with jitter, and logs the refusal once per back-off at ERROR with
  the fix (service/worker.py); a claim that goes through again ends it;
- its completer keeps the refused outcomes and writes them again after the same back-off, once per
  back-off for all of them, with one WARNING (service/completer.py): no outcome is lost or written
  twice, and no job task fails;
- every loop that writes to `jobs` or queues jobs (the monitoring scheduler, the login task) says the
  refusal once per back-off, without a stack trace, naming the fix (`BackOff` for a loop, `Guard.say`
  for the login tasks, `FIX`);
- `Guard` holds whether the database refuses this process: set by the worker's refused claims and by
  the health check's probe (`queue.probe_release_guard`: a write to `jobs` that touches no row, every
  PAYLINK_HEALTH_CHECK_SECONDS, in every process), cleared
  when either goes through again. While it is set the process reports not ready: every gRPC health
  service NOT_SERVING (service/health_monitor.py) and `paylink_release_refused` 1.

tests/integration/test_release_refused.py proves it on a database whose floor is raised above this
release and lowered again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import asyncpg

from service import db, metrics, queue, timeutil

log = logging.getLogger("paylink.release_guard")

SQLSTATE = db.STALE_RELEASE  # PL001
FIX = (
    "a newer paylink release has migrated this database and its release guard refuses this release's"
    " code: stop this process and run the newer release (docs/operations.md, The release guard)"
)
# The back-off of whatever the guard refuses (the worker's claims, the completer's outcomes, the
# monitoring scheduler): after the n-th refusal in a row, timeutil.backoff(n, BASE, CAP), jittered,
# ended early once the guard accepts this code again (a probe or another write went through).
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0


def backoff(refusals: int) -> float:
    """Seconds to wait after the `refusals`-th refusal in a row (jittered, between half and all of
    min(CAP, BASE * 2 ** (refusals - 1)))."""
    return timeutil.backoff(refusals, BACKOFF_BASE, BACKOFF_CAP).total_seconds()


def refused(exc: BaseException) -> bool:
    """Whether `exc` is the release guard refusing this connection's code (SQLSTATE PL001)."""
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) == SQLSTATE


class Guard:
    """Whether the database's release guard refuses this process's code (one per process, `Deps`)."""

    def __init__(self) -> None:
        self.refusal: str | None = None  # the guard's message while refused
        self._accepted = asyncio.Event()
        self._accepted.set()
        self._said: dict[str, tuple[int, float]] = {}  # source -> (times said, quiet until: monotonic)
        metrics.RELEASE_REFUSED.set(0)

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    def refuse(self, exc: BaseException) -> bool:
        """Records a refusal; True when the process was not refused before."""
        first = self.refusal is None
        self.refusal = str(exc)
        self._accepted.clear()
        metrics.RELEASE_REFUSED.set(1)
        return first

    def accept(self) -> bool:
        """Records that a write went through; True when the process was refused before."""
        was = self.refusal is not None
        self.refusal = None
        self._accepted.set()
        self._said.clear()
        if was:  # a guard never refused leaves the process's gauge alone (another guard's, in tests)
            metrics.RELEASE_REFUSED.set(0)
            log.info("the database's release guard accepts this release again")
        return was

    def say(self, source: str) -> float | None:
        """For what meets the refusal once per call, not in a loop (a login task): whether `source`
        should log it now. None while it already did within its current back-off; else the length of
        its next back-off (seconds: `backoff` of how many times it said so), after which it says so
        again. The count starts over once the guard accepts this code."""
        now = time.monotonic()
        said, quiet_until = self._said.get(source, (0, 0.0))
        if now < quiet_until:
            return None
        delay = backoff(said + 1)
        self._said[source] = (said + 1, now + delay)
        return delay

    async def accepted(self) -> None:
        """Returns once nothing refuses this process (at once when nothing does)."""
        await self._accepted.wait()

    async def wait(self, seconds: float, stopping: asyncio.Event | None = None) -> None:
        """Sleeps `seconds`, less when the guard accepts this code again or `stopping` is set."""
        waits = [asyncio.ensure_future(self._accepted.wait())]
        if stopping is not None:
            waits.append(asyncio.ensure_future(stopping.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def probe(self, pool: db.Pool) -> bool | None:
        """Probes the guard: True when it accepts this code, False when it refuses it, None when the
        database did not answer (the state is left as it was)."""
        try:
            await queue.probe_release_guard(pool)
        except Exception as exc:
            if refused(exc):
                if self.refuse(exc):
                    log.error(FIX, extra={"error": self.refusal})
                return False
            return None
        self.accept()
        return True


class BackOff:
    """One loop's refusals in a row (the worker's claims, the completer's outcomes, the monitoring
    scheduler's claims): each marks the guard, logs one line with the fix (`level`, `message`, the
    guard's message, the count and the delay) and waits the guard's back-off for that count, ended
    early once the guard accepts this code again (or `stopping` is set)."""

    def __init__(self, guard: Guard, logger: logging.Logger, level: int, message: str) -> None:
        self.guard = guard
        self._log, self._level, self._message = logger, level, message
        self.refusals = 0  # in a row (0: not refused)
        self.delays: collections.deque[float] = collections.deque(maxlen=32)  # the back-offs' lengths

    async def wait(self, exc: BaseException, stopping: asyncio.Event | None = None, **extra: object) -> None:
        self.refusals += 1
        self.guard.refuse(exc)
        delay = backoff(self.refusals)
        self.delays.append(delay)
        fields = {"error": str(exc), "refusals": self.refusals, "retry_in_seconds": round(delay, 1)}
        self._log.log(self._level, self._message, extra=fields | extra)
        await self.guard.wait(delay, stopping)

    def accepted(self) -> None:
        """A write went through: the count starts over, and the guard accepts this code."""
        if self.refusals:
            self.refusals = 0
            self.guard.accept()
