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
database or the release guard's refusal (which refuses every row alike) is split: each refresh is
inserted alone, so one bad row fails only its caller. A caller
that went away (its deadline) has its job queued all the same.

The account each of those CreateJobs names is read the same way before (`Intake.account`): the reads
that gather meanwhile go as one `SELECT … WHERE id = ANY(…)` (one round trip for all of them instead
of one each), READS (one) at a time: a read is no durable commit, so the callers that arrive while
one runs wait for it (a fraction of a millisecond) and share the next, where a second read in flight
would take them one by one (CreateJobs arrive one per step of the loop; with two in flight the
pipeline benchmark read 0.46 times per job, bench/NOTES.md "inflight (session 28)"); each caller gets
its own account's row as it is now, or NOT_FOUND as `accounts.fetch` answers it (another workspace's
account included) (tests/unit/test_job_intake_reads.py).

Once committed, the workers are woken (`Intake.wake`): in a process that runs a worker too (`serve`),
that worker directly, by a call, while it has a free slot for the job's platform; it passes the
wake-up on with one NOTIFY when its claim comes back full (more jobs may wait than it has room for),
so the workers of other processes share a burst. In a process without a worker (`api`), or whose
worker has no room, a NOTIFY as before (`wakeups.wake_soon`, coalesced; its payload marks it as this
process's, and this process's worker ignores it: it claims as soon as it has room). The NOTIFY cost a
round trip and a durable commit on the pool, and a notification read back on the worker's LISTEN
connection, for a job the same process had just committed. The wake-up names the job: one for a job
the worker's claim already took (it began after the commit) makes no claim
(tests/integration/test_job_wakeups.py).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Protocol

import asyncpg

from service import accounts, db, errors, ids, queue, release_guard, wakeups
from service.group_commit import GroupCommit

MAX_BATCH = 256
STATEMENTS = 2  # statements in flight at once: while one waits for its commit, the next gathers
READS = 1  # account reads in flight at once: those that arrive while one runs share the next
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclasses.dataclass(slots=True)
class _Item:
    pool: db.Pool
    refresh: queue.NewRefresh


def _split(exc: Exception) -> bool:
    """A statement that failed for another reason than a lost database is tried row by row (not one
    the release guard refused: it refuses each row alone as well)."""
    return not isinstance(exc, _CONNECTION_ERRORS) and not release_guard.refused(exc)


async def _insert(batch: list[_Item]) -> list[asyncpg.Record | None]:
    return await queue.enqueue_refreshes(batch[0].pool, [item.refresh for item in batch])


@dataclasses.dataclass(slots=True)
class _Read:
    pool: db.Pool
    workspace_id: uuid.UUID
    account_id: uuid.UUID


async def _read(batch: list[_Read]) -> list[asyncpg.Record | None]:
    rows = await batch[0].pool.fetch(accounts.FETCH_MANY, list({r.account_id for r in batch}))
    by_id = {row["id"]: row for row in rows}
    found = [by_id.get(r.account_id) for r in batch]
    return [
        row if row is not None and row["workspace_id"] == r.workspace_id else None
        for row, r in zip(found, batch, strict=True)
    ]


class LocalWorker(Protocol):
    def take_wake(self, platform_id: str | None, job_id: uuid.UUID | None = None) -> bool:
        """Wakes the worker for job `job_id` (None: not known) of `platform_id` (None: any) committed
        in its process, when it has room for it; False when it has none (the caller wakes the others)."""
        ...


class Intake:
    """One per process (`Deps.intake`)."""

    def __init__(self, max_batch: int = MAX_BATCH, statements: int = STATEMENTS, reads: int = READS) -> None:
        self._statements = GroupCommit(
            _insert, max_batch=max_batch, in_flight=statements, split=_split, run_abandoned=True
        )
        self._reads = GroupCommit(_read, max_batch=max_batch, in_flight=reads)
        self.worker: LocalWorker | None = None  # the process's worker while it claims (service/worker.py)

    def wake(self, pool: db.Pool, platform_id: str | None, job_id: uuid.UUID | None = None) -> None:
        """A CreateJob's job `job_id` of `platform_id` (None: not known) is committed: wakes this
        process's worker when it has room for it, else the workers by NOTIFY."""
        if self.worker is None or not self.worker.take_wake(platform_id, job_id):
            wakeups.wake_soon(pool)

    @property
    def batches(self) -> int:
        """Statements that inserted (tests)."""
        return self._statements.batches

    @property
    def reads(self) -> int:
        """Statements that read accounts (tests)."""
        return self._reads.batches

    async def enqueue(self, pool: db.Pool, refresh: queue.NewRefresh) -> asyncpg.Record | None:
        """The refresh's row once it is committed, or None when a refresh of its account and job
        type is in flight; raises what inserting it raised. (`pool`: the process's pool.)"""
        return await self._statements.submit(_Item(pool, refresh))

    async def account(self, pool: db.Pool, workspace_id: uuid.UUID, account_id: str) -> asyncpg.Record:
        """The account row as `accounts.fetch` reads it (NOT_FOUND also for a malformed id or
        another workspace's account), read with the other CreateJobs' accounts waiting meanwhile."""
        parsed = ids.parse_uuid(account_id)
        row = None if parsed is None else await self._reads.submit(_Read(pool, workspace_id, parsed))
        if row is None:
            raise errors.not_found("account", account_id)
        return row
