"""What a completion writes (service/queue.py `_completions`): every kind in one statement, with the
locks of a batch of outcomes (`lock_for_outcomes`) or alone (`complete`), each kind changing the columns
its own statement changed before (claims session 30: one statement per kind then) and keeping the rest;
a completion of a job the worker does not hold is dropped."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from service import queue
from service.queue import Completion, JobStatus
from tests.harness import insert_account, insert_jobs

AT = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
RUN_AT = AT + dt.timedelta(minutes=5)
BEFORE = {
    "outcome": 9,
    "error_type": 1,
    "error_code": 2,
    "error_message": "before",
    "completed_at": None,
}
COLUMNS = (
    "status, outcome, error_type, error_code, error_message, run_at, completed_at, pending_since, locked_by"
)


async def _running(
    db: asyncpg.Connection, pending_since: dt.datetime | None
) -> tuple[uuid.UUID, dict[str, object]]:
    workspace, account = await insert_account(db, name="completions")
    [job] = await insert_jobs(db, workspace, account, status=JobStatus.RUNNING, locked_by="w")
    await db.execute(
        "UPDATE jobs SET outcome = $2, error_type = $3, error_code = $4, error_message = $5, pending_since = $6"
        " WHERE id = $1",
        job,
        BEFORE["outcome"],
        BEFORE["error_type"],
        BEFORE["error_code"],
        BEFORE["error_message"],
        pending_since,
    )
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM jobs WHERE id = $1", job)
    assert row is not None
    return job, dict(row)


RETRY = Completion(uuid.UUID(int=0), JobStatus.QUEUED, AT, RUN_AT, 0, 3, 13, "retry later")
PENDING = Completion(uuid.UUID(int=0), JobStatus.PENDING, AT, RUN_AT, 2)
SUCCESS = Completion(uuid.UUID(int=0), JobStatus.SUCCESS, AT, outcome=1)
ERROR = Completion(uuid.UUID(int=0), JobStatus.ERROR, AT, None, 3, 4, 5, "failed")


def _expected(c: Completion, before: dict[str, object]) -> dict[str, object]:
    """What each kind's own statement wrote before claims session 30 (service/queue.py `_COMPLETE` then)."""
    after = {**before, "status": c.status.value, "locked_by": None}
    if c.status == JobStatus.QUEUED:
        after |= {"run_at": c.run_at, "error_code": c.error_code, "error_type": c.error_type}
        after["error_message"] = c.error_message
    elif c.status == JobStatus.PENDING:
        after |= {"outcome": c.outcome, "run_at": c.run_at, "pending_since": before["pending_since"] or c.at}
    elif c.status == JobStatus.SUCCESS:
        after |= {"outcome": c.outcome, "error_type": 0, "error_code": 0, "error_message": ""}
        after["completed_at"] = c.at
    else:
        after |= {"outcome": c.outcome, "error_type": c.error_type, "error_code": c.error_code}
        after |= {"error_message": c.error_message, "completed_at": c.at}
    return after


@pytest.mark.parametrize("with_locks", [True, False], ids=["lock_for_outcomes", "complete"])
@pytest.mark.parametrize("pending_since", [None, AT - dt.timedelta(hours=1)], ids=["new", "pending"])
@pytest.mark.parametrize("kind", [RETRY, PENDING, SUCCESS, ERROR], ids=lambda c: c.status.value)
async def test_each_kind_of_completion_changes_its_own_columns(
    db: asyncpg.Connection, kind: Completion, pending_since: dt.datetime | None, with_locks: bool
) -> None:
    job, before = await _running(db, pending_since)
    completion = Completion(job, kind.status, kind.at, kind.run_at, kind.outcome, kind.error_type,
                            kind.error_code, kind.error_message)  # fmt: skip
    async with db.transaction():
        if with_locks:
            assert set(await queue.lock_for_outcomes(db, [job], "w", [completion])) == {job}
        else:
            await queue.complete(db, [completion])
    after = await db.fetchrow(f"SELECT {COLUMNS} FROM jobs WHERE id = $1", job)
    assert after is not None and dict(after) == _expected(completion, before)
    queued = await db.fetchrow("SELECT run_at, locked_by, lease_expires_at FROM job_queue WHERE id = $1", job)
    if kind.status.final:
        assert queued is None
    else:
        assert queued is not None and dict(queued) == {
            "run_at": RUN_AT,
            "locked_by": None,
            "lease_expires_at": None,
        }


async def test_a_batch_writes_each_kind_and_drops_the_jobs_it_does_not_hold(db: asyncpg.Connection) -> None:
    jobs, befores = [], []
    for _ in range(5):
        job, before = await _running(db, None)
        jobs.append(job)
        befores.append(before)
    await db.execute("UPDATE job_queue SET locked_by = 'other' WHERE id = $1", jobs[4])  # rescued, reclaimed
    await db.execute("UPDATE jobs SET locked_by = 'other' WHERE id = $1", jobs[4])
    kinds = [RETRY, PENDING, SUCCESS, ERROR, SUCCESS]
    completions = [
        Completion(j, k.status, k.at, k.run_at, k.outcome, k.error_type, k.error_code, k.error_message)
        for j, k in zip(jobs, kinds, strict=True)
    ]
    async with db.transaction():
        locked = await queue.lock_for_outcomes(db, jobs, "w", completions)
    assert set(locked) == set(jobs[:4])
    for job, before, c in zip(jobs[:4], befores[:4], completions[:4], strict=True):
        after = await db.fetchrow(f"SELECT {COLUMNS} FROM jobs WHERE id = $1", job)
        assert after is not None and dict(after) == _expected(c, before)
    other = await db.fetchrow(f"SELECT {COLUMNS} FROM jobs WHERE id = $1", jobs[4])
    assert other is not None and dict(other) == {**befores[4], "locked_by": "other"}
    assert await db.fetchval("SELECT locked_by FROM job_queue WHERE id = $1", jobs[4]) == "other"
