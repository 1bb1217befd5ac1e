"""CreateJob's group commit: the refreshes of concurrent CreateJobs queued by one statement.

A CreateJob without a request_id hands its refresh to the process's intake and waits. The intake
queues whatever has gathered with one `queue.create_refreshes` (one autocommit statement: one
durable commit for all of them), up to STATEMENTS statements at once, and more gather while they
run (the batching is service/group_commit.py's; this module is the statement it runs). The same
statement reads each refresh's account by key and refuses the refresh, as CreateJob answers it, when
the account is not in the caller's workspace (NOT_FOUND), is disconnected, or its platform does not
support the job (`queue.Created.refused`; the caller raises): before migration 0186 the accounts were
read first, with a statement of their own, about 4 callers a read (a third of the pipeline's
statements: bench/NOTES.md, claims session 30). A caller is
answered only once the statement that inserted its job has returned, so an OK always names a
committed job; a process that dies meanwhile answers nobody, and its callers see the call fail
(tests/faults/test_grouped_create_jobs.py). What a caller sees is what one INSERT per call gave: a
refresh of the same account and job type in flight, or earlier in the same statement, is skipped and
the caller reads the one in flight (issue 11). A statement that fails for another reason than a lost
database or the release guard's refusal (which refuses every row alike) is split: each refresh is
inserted alone, so one bad row fails only its caller. A caller
that went away (its deadline) has its job queued all the same.

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

from service import db, queue, release_guard, wakeups
from service.group_commit import GroupCommit

MAX_BATCH = 256
STATEMENTS = 2  # statements in flight at once: while one waits for its commit, the next gathers
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclasses.dataclass(slots=True)
class _Item:
    pool: db.Pool
    refresh: queue.NewRefresh
    supported: list[str]  # 'platform_id:name' pairs the process's drivers support


def _split(exc: Exception) -> bool:
    """A statement that failed for another reason than a lost database is tried row by row (not one
    the release guard refused: it refuses each row alone as well)."""
    return not isinstance(exc, _CONNECTION_ERRORS) and not release_guard.refused(exc)


async def _insert(batch: list[_Item]) -> list[queue.Created]:
    return await queue.create_refreshes(batch[0].pool, [item.refresh for item in batch], batch[0].supported)


class LocalWorker(Protocol):
    def take_wake(self, platform_id: str | None, job_id: uuid.UUID | None = None) -> bool:
        """Wakes the worker for job `job_id` (None: not known) of `platform_id` (None: any) committed
        in its process, when it has room for it; False when it has none (the caller wakes the others)."""
        ...


class Intake:
    """One per process (`Deps.intake`)."""

    def __init__(self, max_batch: int = MAX_BATCH, statements: int = STATEMENTS) -> None:
        self._statements = GroupCommit(
            _insert, max_batch=max_batch, in_flight=statements, split=_split, run_abandoned=True
        )
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

    async def enqueue(self, pool: db.Pool, refresh: queue.NewRefresh, supported: list[str]) -> queue.Created:
        """What the statement did with the refresh once it is committed (`queue.create_refreshes`;
        `supported`: the 'platform_id:name' pairs the process's drivers support); raises what
        inserting it raised. (`pool`: the process's pool.)"""
        return await self._statements.submit(_Item(pool, refresh, supported))
