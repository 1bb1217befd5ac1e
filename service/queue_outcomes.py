"""The job queue's writes for outcomes (part of service/queue.py, which re-exports them): the locks a
batch of outcomes takes and the completions it writes, and how that batch's statements are planned.

An outcome is written under its job's (queue row, then job row) and account's locks, taken in id
order (no deadlock between batches); only the jobs whose lease the worker holds are locked further.
`complete` takes a list: one statement per kind of completion however many jobs it holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from service import db
from service.job_types import Completion, JobStatus, LockedJob

Q, R, P, S, E = (f"'{s.value}'" for s in JobStatus)  # SQL literals, for the statements below
_UNLEASE = "locked_by = NULL, lease_expires_at = NULL"

# The batch's transaction (service/job_outcomes.py) runs its statements on cached generic plans: they
# take one array element per job, and below ~10 jobs a custom plan (which sees the length) always
# looked cheaper, so each was planned again on every batch (bench/NOTES.md, inflight session 24). And
# those plans reach every table by key whatever the statistics say: a generic plan made while the
# tables were small or never analyzed (a new database) read jobs, accounts and job_queue whole, and
# stays cached until an ANALYZE (bench/NOTES.md, queue session 25). Every statement of the batch joins
# a handful of array elements to tables by their keys: with sequential and bitmap scans, hash and
# merge joins off, index probes in nested loops are what remains. One round trip; all end with it.
BATCH_PLANS = """SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
  set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
  set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"""

_LOCK_LEASES = """
SELECT id FROM job_queue WHERE id = ANY($1::uuid[]) AND locked_by = $2 ORDER BY id FOR UPDATE
"""
_LOCK_JOBS = """
SELECT id, workspace_id, account_id, link_token_id, link_session_id, batch_id, name, origin, platform_id,
       params, api_version, pending_since, status, locked_by, scheduled
FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
"""
_LOCK_ACCOUNTS = """
SELECT id, end_user_id, monitoring_status, connected, event_sequence, tags, refresh_failures
FROM accounts WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
"""
_BY_ID = """FROM unnest($1::uuid[], $2::timestamptz[], $3::smallint[], $4::smallint[], $5::text[],
            $6::timestamptz[], $7::smallint[]) AS c(id, run_at, code, type, message, at, outcome)
WHERE jobs.id = c.id"""
# Retried or pending: the queue row waits for run_at again. Final: the queue row goes.
_REQUEUE = f"""WITH queued AS (
  UPDATE job_queue SET run_at = c.run_at, {_UNLEASE}
  FROM unnest($1::uuid[], $2::timestamptz[]) AS c(id, run_at) WHERE job_queue.id = c.id)
"""
_DEQUEUE = "WITH done AS (DELETE FROM job_queue WHERE id = ANY($1::uuid[]))\n"
_COMPLETE = {
    JobStatus.QUEUED: f"""{_REQUEUE}
UPDATE jobs SET status = {Q}, run_at = c.run_at, {_UNLEASE},
                error_code = c.code, error_type = c.type, error_message = c.message
{_BY_ID}""",
    JobStatus.PENDING: f"""{_REQUEUE}
UPDATE jobs SET status = {P}, outcome = c.outcome, pending_since = coalesce(pending_since, c.at),
                run_at = c.run_at, {_UNLEASE}
{_BY_ID}""",
    JobStatus.SUCCESS: f"""{_DEQUEUE}
UPDATE jobs SET status = {S}, outcome = c.outcome, error_type = 0, error_code = 0, error_message = '',
                completed_at = c.at, {_UNLEASE}
{_BY_ID}""",
    JobStatus.ERROR: f"""{_DEQUEUE}
UPDATE jobs SET status = {E}, outcome = c.outcome, error_type = c.type, error_code = c.code,
                error_message = c.message, completed_at = c.at, {_UNLEASE}
{_BY_ID}""",
}


async def lock_for_outcomes(
    conn: db.Conn, job_ids: Sequence[uuid.UUID], worker_id: str
) -> dict[uuid.UUID, LockedJob]:
    """Locks the jobs whose lease `worker_id` holds, and their accounts (three round trips); returns them."""
    held = [row["id"] for row in await conn.fetch(_LOCK_LEASES, list(job_ids), worker_id)]
    jobs = [
        row
        for row in (await conn.fetch(_LOCK_JOBS, held) if held else [])
        if row["status"] == JobStatus.RUNNING and row["locked_by"] == worker_id
    ]
    accounts = {
        row["id"]: row for row in await conn.fetch(_LOCK_ACCOUNTS, list({j["account_id"] for j in jobs}))
    }
    return {
        job["id"]: LockedJob.from_rows(job, accounts[job["account_id"]])
        for job in jobs
        if job["account_id"] in accounts
    }


async def complete(conn: db.Conn, completions: Sequence[Completion]) -> None:
    """Writes the new status of each job: one statement per kind of completion in the list."""
    for status, sql in _COMPLETE.items():
        group = [c for c in completions if c.status == status]
        if group:
            await conn.execute(
                sql,
                [c.job_id for c in group],
                [c.run_at for c in group],
                [c.error_code for c in group],
                [c.error_type for c in group],
                [c.error_message for c in group],
                [c.at for c in group],
                [c.outcome for c in group],
            )
