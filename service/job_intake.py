"""CreateJob's group commit: the refreshes of concurrent CreateJobs queued by one statement.

A CreateJob without a request_id hands its refresh to the process's intake and waits. The intake
inserts whatever has gathered with one `queue.enqueue_refreshes` (one autocommit statement: one
durable commit for all of them), up to STATEMENTS statements at once, and more gather while they
run (the batching is service/group_commit.py's; this module is the statement it runs). A caller is
answered only once the statement that inserted its job has returned, so an OK always names a
committed job; a process that dies meanwhile answers nobody, and its callers see the call fail
(tests/faults/test_grouped_create_jobs.py). What a caller sees is what one INSERT per call gave: a
refresh of the same account and job type in flight, or earlier in the same statement, is skipped and
the caller reads the one in flight (issue 11). A statement that fails for another reason than a lost
database is split: each refresh is inserted alone, so one bad row fails only its caller. A caller
that went away (its deadline) has its job queued all the same.
"""

from __future__ import annotations

import dataclasses

import asyncpg

from service import db, queue
from service.group_commit import GroupCommit

MAX_BATCH = 256
STATEMENTS = 2  # statements in flight at once: while one waits for its commit, the next gathers
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclasses.dataclass(slots=True)
class _Item:
    pool: db.Pool
    refresh: queue.NewRefresh


def _split(exc: Exception) -> bool:
    """A statement that failed for another reason than a lost database is tried row by row."""
    return not isinstance(exc, _CONNECTION_ERRORS)


async def _insert(batch: list[_Item]) -> list[asyncpg.Record | None]:
    return await queue.enqueue_refreshes(batch[0].pool, [item.refresh for item in batch])


class Intake:
    """One per process (`Deps.intake`)."""

    def __init__(self, max_batch: int = MAX_BATCH, statements: int = STATEMENTS) -> None:
        self._statements = GroupCommit(
            _insert, max_batch=max_batch, in_flight=statements, split=_split, run_abandoned=True
        )

    @property
    def batches(self) -> int:
        """Statements that inserted (tests)."""
        return self._statements.batches

    async def enqueue(self, pool: db.Pool, refresh: queue.NewRefresh) -> asyncpg.Record | None:
        """The refresh's row once it is committed, or None when a refresh of its account and job
        type is in flight; raises what inserting it raised. (`pool`: the process's pool.)"""
        return await self._statements.submit(_Item(pool, refresh))
