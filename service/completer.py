"""Batched completions: a worker's finished jobs written many to a transaction.

A job task hands its outcome to `enqueue` and waits for the future it returns; a flusher writes whatever has gathered with
`job_outcomes.apply_many` (one transaction, one commit, one NOTIFY), and more gather while it does
(up to FLUSHERS transactions at once). Per-account order is kept: an outcome waits while an earlier
one of the same account is queued before it or being written. Each outcome is applied in the
context of the job task that submitted it (its trace span, request id and log fields). A batch that
fails for a reason other than a lost database is split, so one bad outcome cannot hold the others
back; a lost database is retried, and past that the jobs keep their `running` status until their
leases run out and they are rescued (nothing is lost: the batch rolled back).

A batch the database's release guard refuses (PL001: a newer release migrated the database; see
service/release_guard.py) rolled back whole, and every other batch would be refused alike: its
outcomes go back to the head of the queue (each account's order kept), and the completer writes
nothing for the guard's back-off (ended early once the guard accepts this code again), then one
batch at a time until one goes through. One WARNING per back-off, none per job; the job tasks wait
for their outcomes as for a slow database. At shutdown a batch still refused is given up like a lost
database's (its jobs are rescued when their leases run out).
tests/integration/test_release_refused.py::test_outcomes_refused_by_a_newer_database_are_kept_and_written_once_accepted
proves it.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import uuid

import asyncpg

from service import job_outcomes, release_guard
from service.deps import Deps
from service.job_outcomes import Outcome

log = logging.getLogger("paylink.completer")

MAX_BATCH = 500
FLUSHERS = 4  # transactions in flight at once: while one waits for its commit, others are written
# The worker claims no job while this many of its outcomes wait to be written (service/worker.py;
# at most its concurrency): it frees a job's slot when the outcome is handed over, so without a
# bound a database slower than the platform would let claimed-but-unwritten jobs pile up.
MAX_BACKLOG = 2 * MAX_BATCH
_RETRIES = 5
_KEPT = (
    "job outcomes kept: the database's release guard refuses this release; they are written once it"
    " accepts it again (stop this process and run the newer release)"
)
# The database went away (a restart, a network cut): the same batch can be written again.
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclasses.dataclass(slots=True)
class _Item:
    job_id: uuid.UUID
    account_id: uuid.UUID
    outcome: Outcome
    context: contextvars.Context  # the submitting job task's
    written: asyncio.Future[bool]


class Completer:
    def __init__(
        self,
        deps: Deps,
        worker_id: str,
        max_batch: int = MAX_BATCH,
        flushers: int = FLUSHERS,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.deps = deps
        self.worker_id = worker_id
        self.max_batch = max_batch
        self.flushers = flushers
        self.max_backlog = max_backlog
        self._queue: list[_Item] = []
        self._busy: set[uuid.UUID] = set()  # accounts with an outcome in a transaction now
        self._ready = asyncio.Event()
        self._flushing: set[asyncio.Task[None]] = set()
        self._refusal: BaseException | None = None  # a batch the release guard refused, not backed off yet
        self.batches = 0  # transactions written (for metrics and tests)
        self.refused = release_guard.BackOff(deps.release_guard, log, logging.WARNING, _KEPT)

    def enqueue(self, job_id: uuid.UUID, account_id: uuid.UUID, outcome: Outcome) -> asyncio.Future[bool]:
        """Queues the outcome now, in the caller's context; the future is set once it is committed:
        False when the lease was lost meanwhile. It raises what writing the outcome alone raised (a
        bug), a connection error when the database stayed away, or the release guard's refusal
        (PL001) when it still refused the outcome at shutdown."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(job_id, account_id, outcome, contextvars.copy_context(), future))
        self._ready.set()
        return future

    async def run(self) -> None:
        """Flushes until cancelled, up to `flushers` transactions at a time; on cancel, what is queued
        is flushed first."""
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                if self._refusal is not None:
                    await self._back_off(self._refusal)
                self._start_flushes()
        except asyncio.CancelledError:
            self._refusal = None  # one more try; refused again, the outcomes are given up
            while self._queue or self._flushing:
                if self._refusal is not None:
                    queued, self._queue = self._queue, []
                    for item in queued:
                        _fail(item, self._refusal)
                self._start_flushes()
                if self._flushing:
                    await asyncio.wait(set(self._flushing), return_when=asyncio.FIRST_COMPLETED)
            raise

    async def _back_off(self, refusal: BaseException) -> None:
        """The release guard refused a batch (its outcomes are back in the queue): write nothing for
        the guard's back-off, or until the guard accepts this code again."""
        self._refusal = None
        await self.refused.wait(refusal, outcomes=len(self._queue))
        self._refusal = None  # the batches refused meanwhile were in flight before it: covered by it

    def _start_flushes(self) -> None:
        # While refused, one batch at a time finds out whether the guard accepts this code again.
        while len(self._flushing) < (1 if self.refused.refusals else self.flushers):
            batch = self._next_batch()
            if not batch:
                return
            self._busy.update(item.account_id for item in batch)
            task = asyncio.create_task(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(functools.partial(self._flushed, batch))

    def _flushed(self, batch: list[_Item], task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        self._busy.difference_update(item.account_id for item in batch)
        self._ready.set()  # its accounts' later outcomes may go now

    def _next_batch(self) -> list[_Item]:
        """The oldest outcomes, at most one per account, none of an account whose earlier outcome is
        still being written, `max_batch` in all: each account's outcomes are written in order."""
        batch: list[_Item] = []
        rest: list[_Item] = []
        accounts = set(self._busy)
        for item in self._queue:
            if len(batch) < self.max_batch and item.account_id not in accounts:
                batch.append(item)
            else:
                rest.append(item)
            accounts.add(item.account_id)  # later outcomes of this account wait for the next batch
        self._queue = rest
        return batch

    async def _flush(self, batch: list[_Item]) -> None:
        for attempt in range(_RETRIES):
            try:
                written = await job_outcomes.apply_many(
                    self.deps, self.worker_id, [(i.job_id, i.outcome, i.context) for i in batch]
                )
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                continue  # PostgreSQL rolled one transaction back: write the batch again
            except _CONNECTION_ERRORS as exc:
                if attempt == _RETRIES - 1:
                    for item in batch:
                        _fail(item, exc)
                    return
                await asyncio.sleep(0.5 * (attempt + 1))  # leases still ours for a while
                continue
            except Exception as exc:
                if release_guard.refused(exc):  # rolled back whole: kept, in order, for after the back-off
                    self._queue[:0] = batch
                    self._refusal = exc
                    return
                if len(batch) == 1:
                    _fail(batch[0], exc)
                    return
                log.warning("a batch of outcomes failed, writing them one by one", extra={"error": repr(exc)})
                for item in batch:
                    await self._flush([item])
                return
            self.batches += 1
            self.refused.accepted()
            for item, ok in zip(batch, written, strict=True):
                if not item.written.done():
                    item.written.set_result(ok)
            return
        for item in batch:
            _fail(item, RuntimeError("outcomes kept conflicting with other transactions"))


def _fail(item: _Item, exc: BaseException) -> None:
    if not item.written.done():
        item.written.set_exception(exc)
