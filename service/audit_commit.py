"""Group commit of the reads of personal data: the statements of the reads waiting at one moment —
each reads data and writes its audit record (`audit.attach`) — run in one transaction, one durable
commit for all of them, and every caller gets its rows only after that commit.

A read must not release data before its audit record is durable (docs/privacy.md). On a durable
cluster each read alone costs a WAL flush; reads that arrive together share one here. The batching
(no timer, at most `in_flight` batches at once, each on its own pool connection, taking up to
`max_batch` reads) is service/group_commit.py's; this module is the transaction it runs.

A batch whose reads all run the same statement built by `audit.attach` (GetIdentity under load: the
common case) is one round trip: asyncpg's `fetchmany` pipelines one Bind/Execute per read and one
Sync, so the reads run in one implicit transaction, committed (durably) at the Sync, and the rows
come back only after that commit; each row carries its read's position (`audit.tagged`). Any other
batch is BEGIN, one statement per read, COMMIT. (A batch's reads one after the other each waited
for a round trip and for the event loop to come back to the connection: under load the batch, and
the reads queued behind it, waited for each of them.)

Failures never lose a record and never release data without one:
- the connection is lost, or the commit fails: every read of the batch fails with that error (the
  API answers UNAVAILABLE for a lost database); none of their data is released;
- one read's own statement fails: that read fails with its own error, the transaction rolls back
  (nothing of the batch was written), and the other reads go again in the next batch; in a
  pipelined batch, which read failed is not known: the transaction rolls back and each read goes
  again alone, so only the failing one fails.

tests/integration/test_audit_group_commit.py proves it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Coroutine

import asyncpg

from service import audit, db
from service.group_commit import GroupCommit as _Batches
from service.group_commit import ItemFailed

MAX_BATCH = 64
IN_FLIGHT = 2


@dataclasses.dataclass(slots=True)
class _Read:
    query: str
    args: tuple[object, ...]


class _Pipelined(Exception):
    """A pipelined batch failed on a statement of one of its reads, not known which: nothing was
    committed, and each read goes again alone."""


def _pipelined_failed(exc: Exception) -> bool:
    return isinstance(exc, _Pipelined)


class GroupCommit:
    """Runs audited reads (`fetch`, `fetchrow`, like a pool's) many to a transaction."""

    def __init__(self, pool: db.Pool, *, max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT) -> None:
        self._pool = pool
        # A read whose caller went away before its batch started is not run: no data, no record.
        self._batches = _Batches(
            self._transaction, max_batch=max_batch, in_flight=in_flight, split=_pipelined_failed
        )
        self._tagged: dict[tuple[str, int], str | None] = {}  # (statement, its arity) -> audit.tagged

    @property
    def batches(self) -> int:
        """Committed batches (tests)."""
        return self._batches.batches

    def fetch(self, query: str, *args: object) -> Coroutine[None, None, list[asyncpg.Record]]:
        """The rows of one audited statement, once the transaction holding its record committed.
        (The group commit's own coroutine, not one more around it: this is every read's path.)"""
        return self._batches.submit(_Read(query, args))

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    async def _transaction(self, batch: list[_Read]) -> list[list[asyncpg.Record]]:
        """The rows of each read, committed; `ItemFailed` when one read's own statement failed
        (rolled back), any other error (a lost connection, a failed commit) fails the batch."""
        results: list[list[asyncpg.Record]] = []
        async with self._pool.acquire() as conn:
            if len(batch) == 1:  # alone: one statement, its own commit (no BEGIN and COMMIT trips)
                return [await conn.fetch(batch[0].query, *batch[0].args)]
            tagged = self._pipelinable(batch)
            if tagged is not None:
                return await _pipelined(conn, tagged, batch)
            transaction = conn.transaction()
            await transaction.start()
            try:
                for read in batch:
                    results.append(await conn.fetch(read.query, *read.args))
            except asyncpg.PostgresError as exc:
                if isinstance(exc, db.UNAVAILABLE):  # the connection is gone: nothing to roll back
                    raise
                await transaction.rollback()
                raise ItemFailed(len(results), exc) from exc
            except BaseException:
                await transaction.rollback()
                raise
            await transaction.commit()
        return results

    def _pipelinable(self, batch: list[_Read]) -> str | None:
        """The tagged statement of a batch whose reads all run one statement `audit.attach` built."""
        first = batch[0]
        if any(read.query is not first.query and read.query != first.query for read in batch):
            return None
        key = (first.query, len(first.args))
        if key not in self._tagged:
            self._tagged[key] = audit.tagged(first.query, len(first.args) + 1)
        return self._tagged[key]


async def _pipelined(conn: db.Conn, tagged: str, batch: list[_Read]) -> list[list[asyncpg.Record]]:
    """The batch's reads in one round trip and one implicit transaction, committed at its end."""
    try:
        rows = await conn.fetchmany(tagged, [(*read.args, i) for i, read in enumerate(batch)])
    except asyncpg.PostgresError as exc:
        if isinstance(exc, db.UNAVAILABLE):  # the connection is gone: every read fails
            raise
        raise _Pipelined() from exc
    results: list[list[asyncpg.Record]] = [[] for _ in batch]
    for row in rows:
        results[row[audit.TAG]].append(row)
    return results
