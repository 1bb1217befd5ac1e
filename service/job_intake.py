"""CreateJob's group commit: the refreshes of concurrent CreateJobs queued by one statement.

A CreateJob without a request_id hands its refresh to the process's intake and waits. The intake
inserts whatever has gathered with one `queue.enqueue_refreshes` (one autocommit statement: one
durable commit for all of them), up to STATEMENTS statements at once, and more gather while they
run. A caller is answered only once the statement that inserted its job has returned, so an OK
always names a committed job; a process that dies meanwhile answers nobody, and its callers see the
call fail (tests/faults/test_grouped_create_jobs.py). What a caller sees is what one INSERT per call
gave: a refresh of the same account and job type in flight, or earlier in the same statement, is
skipped and the caller reads the one in flight (issue 11). A statement that fails for another reason
than a lost database is split: each refresh is inserted alone, so one bad row fails only its caller.
"""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg

from service import db, queue

MAX_BATCH = 256
STATEMENTS = 2  # statements in flight at once: while one waits for its commit, the next gathers
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclasses.dataclass(slots=True)
class _Item:
    pool: db.Pool
    refresh: queue.NewRefresh
    answer: asyncio.Future[asyncpg.Record | None]


class Intake:
    """One per process (`Deps.intake`)."""

    def __init__(self, max_batch: int = MAX_BATCH, statements: int = STATEMENTS) -> None:
        self.max_batch = max_batch
        self.statements = statements
        self._queue: list[_Item] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self.batches = 0  # statements that inserted (for tests)

    async def enqueue(self, pool: db.Pool, refresh: queue.NewRefresh) -> asyncpg.Record | None:
        """The refresh's row once it is committed, or None when a refresh of its account and job
        type is in flight; raises what inserting it raised. (`pool`: the process's pool.)"""
        item = _Item(pool, refresh, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._start()
        return await item.answer

    def _start(self) -> None:
        while self._queue and len(self._flushing) < self.statements:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            task = asyncio.create_task(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        self._start()

    async def _flush(self, batch: list[_Item]) -> None:
        try:
            rows = await queue.enqueue_refreshes(batch[0].pool, [item.refresh for item in batch])
        except _CONNECTION_ERRORS as exc:
            for item in batch:
                _answer(item, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _answer(batch[0], exc)
                return
            for item in batch:  # one bad row must not fail the others: each alone
                await self._flush([item])
            return
        self.batches += 1
        for item, row in zip(batch, rows, strict=True):
            _answer(item, row)


def _answer(item: _Item, result: asyncpg.Record | BaseException | None) -> None:
    if item.answer.done():  # the caller went away (its deadline): its job is queued all the same
        return
    if isinstance(result, BaseException):
        item.answer.set_exception(result)
    else:
        item.answer.set_result(result)
