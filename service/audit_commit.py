"""Group commit of the reads of personal data: the statements of the reads waiting at one moment —
each reads data and writes its audit record (`audit.attach`) — run in one transaction, one durable
commit for all of them, and every caller gets its rows only after that commit.

A read must not release data before its audit record is durable (docs/privacy.md). On a durable
cluster each read alone costs a WAL flush; reads that arrive together share one here. There is no
timer: a read waits only for the batch being committed ahead of it (at most `in_flight` batches run
at once, each on its own pool connection, taking up to `max_batch` reads).

Failures never lose a record and never release data without one:
- the connection is lost, or the commit fails: every read of the batch fails with that error (the
  API answers UNAVAILABLE for a lost database); none of their data is released;
- one read's own statement fails: that read fails with its own error, the transaction rolls back
  (nothing of the batch was written), and the other reads go again in the next batch.

tests/integration/test_audit_group_commit.py proves it.
"""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg

from service import db, errors

MAX_BATCH = 64
IN_FLIGHT = 2


@dataclasses.dataclass(slots=True)
class _Read:
    query: str
    args: tuple[object, ...]
    rows: asyncio.Future[list[asyncpg.Record]]


class GroupCommit:
    """Runs audited reads (`fetch`, `fetchrow`, like a pool's) many to a transaction."""

    def __init__(self, pool: db.Pool, *, max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._waiting: list[_Read] = []
        self._draining = 0  # drain tasks that will still look at `_waiting`
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # committed batches (tests)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """The rows of one audited statement, once the transaction holding its record committed."""
        read = _Read(query, args, asyncio.get_running_loop().create_future())
        self._waiting.append(read)
        if self._draining < self._in_flight:
            self._draining += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await read.rows

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [r for r in self._waiting[: self._max_batch] if not r.rows.done()]
                del self._waiting[: self._max_batch]
                if batch:
                    # Reads whose statement did not fail go again, ahead of those that came since.
                    self._waiting[:0] = await self._commit(batch)
        except asyncio.CancelledError:  # the process is stopping: no read waits forever
            waiting, self._waiting = self._waiting, []
            _fail(waiting, errors.unavailable("the server is stopping; retry"))
            raise
        finally:
            # In the same step as the loop's last look at `_waiting`: a read queued after it starts
            # a drain of its own.
            self._draining -= 1

    async def _commit(self, batch: list[_Read]) -> list[_Read]:
        """Commits the batch and answers its reads; returns the reads to run again."""
        results: list[list[asyncpg.Record]] = []
        try:
            async with self._pool.acquire() as conn:
                if len(batch) == 1:  # alone: one statement, its own commit (no BEGIN and COMMIT trips)
                    results.append(await conn.fetch(batch[0].query, *batch[0].args))
                    return self._answer(batch, results)
                transaction = conn.transaction()
                await transaction.start()
                try:
                    for read in batch:
                        results.append(await conn.fetch(read.query, *read.args))
                except asyncpg.PostgresError as exc:
                    if isinstance(exc, db.UNAVAILABLE):
                        raise
                    await transaction.rollback()
                    failed = batch[len(results)]
                    _fail([failed], exc)
                    return [r for r in batch if r is not failed]
                except BaseException:
                    await transaction.rollback()
                    raise
                await transaction.commit()
        except asyncio.CancelledError:
            _fail(batch, errors.unavailable("the server is stopping; retry"))
            raise
        except Exception as exc:  # a lost connection or a failed commit: the whole batch fails
            _fail(batch, exc)
            return []
        return self._answer(batch, results)

    def _answer(self, batch: list[_Read], results: list[list[asyncpg.Record]]) -> list[_Read]:
        self.batches += 1
        for read, rows in zip(batch, results, strict=True):
            if not read.rows.done():
                read.rows.set_result(rows)
        return []


def _fail(reads: list[_Read], exc: BaseException) -> None:
    for read in reads:
        if not read.rows.done():
            read.rows.set_exception(exc)
