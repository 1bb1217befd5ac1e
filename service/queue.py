"""The job queue: the only code that writes `jobs` rows.

Every statement that changes a job is named here: enqueue (with its wake-up NOTIFY; CreateJob's
refreshes many to a statement, woken after their commit by `wakeups.wake_soon`), claim (FOR
UPDATE SKIP LOCKED, with a lease), heartbeat, rescue of expired leases, release at shutdown,
completion (retry later / pending / success / error), release of held jobs, and an operator's
retry of a failed job. `worker.py` decides *when* to call them, `job_outcomes.py` *what* an outcome
means; neither writes SQL on `jobs`.

Two tables, both owned here. `jobs` is every job's truth (status, outcome, attempts, lease, run_at;
what GetJob and ListJobs read). `job_queue` (migration 0173) holds one narrow row per job not final
yet (queued, running or pending): what claims, rescue and the one-refresh-in-flight rule need
(run_at, lease, platform, account, job type), with the partial indexes for them. So a claim or a
completion changes no indexed column of `jobs` and its row's new version can be HOT (fillfactor 70),
instead of a new entry in each of its indexes per change; the index churn stays in the small table,
whose row goes at completion. Every statement below that changes both writes them together, and
locks a job's `job_queue` row before its `jobs` row (no deadlock between claims, heartbeats,
rescues and outcomes).

A completion takes a list: one statement for all its jobs of every kind (`complete`; a batch of
outcomes writes it with the batch's locks, `lock_for_outcomes`), so a completer that buffers outcomes
can write a whole batch in one transaction and wake the workers once. A rule on what may be claimed (e.g. one job per account and job name) belongs in `CLAIM`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
from paylink.v1 import common_pb2

from service import db, ids

# Re-exported: callers name them queue.JobStatus, queue.ClaimedJob, ... (`X as X` for mypy --strict).
from service.job_types import BatchJob as BatchJob  # noqa: PLC0414
from service.job_types import ClaimedJob as ClaimedJob  # noqa: PLC0414
from service.job_types import Completion as Completion  # noqa: PLC0414
from service.job_types import Created as Created  # noqa: PLC0414
from service.job_types import JobStatus as JobStatus  # noqa: PLC0414
from service.job_types import LockedJob as LockedJob  # noqa: PLC0414
from service.job_types import NewRefresh as NewRefresh  # noqa: PLC0414

NOTIFY_CHANNEL = "paylink_jobs"
_ERROR = ("error_type", "error_code", "error_message")


Q, R, P, S, E = (f"'{s.value}'" for s in JobStatus)  # SQL literals, for the statements below
IN_FLIGHT = f"({Q}, {R}, {P})"  # not final yet

# Columns of a job resource (GetJob, ListJobs, the row `enqueue` returns).
COLUMNS = (
    "id, workspace_id, account_id, link_token_id, link_session_id, batch_id, name, origin, platform_id,"
    " status, outcome, error_type, error_code, error_message, params, attempts, created_at, completed_at,"
    " api_version, tags, scheduled"
)

# Inserts a job, wakes the workers (at commit) and returns the row: one round trip. A held job
# waits (run_at = infinity) until `release_held`.
_ENQUEUE = f"""
WITH job AS (
  INSERT INTO jobs (id, workspace_id, account_id, link_token_id, link_session_id, batch_id, name, origin,
    platform_id, params, params_sealed, api_version, run_at, tags, traceparent, request_id)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
          CASE WHEN $13 THEN 'infinity'::timestamptz ELSE now() END,
          (SELECT tags FROM accounts WHERE id = $3), $14, $15)
  RETURNING {COLUMNS}, run_at),
queued AS (
  INSERT INTO job_queue (id, run_at, platform_id, account_id, name, refresh)
  SELECT id, run_at, platform_id, account_id, name, origin = {common_pb2.JOB_ORIGIN_REFRESH} FROM job)
SELECT {COLUMNS}, pg_notify('{NOTIFY_CHANNEL}', '') FROM job
"""
# Refreshes in flight (platform_id, account_id, name): one per account and job type at most (unique
# partial index job_queue_one_refresh, migration 0173; 0120's rule, on the jobs not final yet). Read
# through that index (the one of the refreshes in flight since 0184 dropped job_queue_refreshes).
REFRESHES_IN_FLIGHT = "(SELECT platform_id, account_id, name FROM job_queue WHERE refresh)"
_ONE_REFRESH = "ON CONFLICT (account_id, name) WHERE refresh DO NOTHING"
_IN_FLIGHT_REFRESH = f"""
SELECT {COLUMNS} FROM jobs
WHERE id = (SELECT id FROM job_queue WHERE account_id = $1 AND name = $2 AND refresh)
"""
# The backlog (service/sampler.py): jobs waiting (queued or pending) and running.
WAITING = "(SELECT run_at FROM job_queue WHERE locked_by IS NULL)"
LEASED = "(SELECT id FROM job_queue WHERE locked_by IS NOT NULL)"
# Refreshes of many CreateJobs in one statement (in the given order, with their accounts' tags). No
# NOTIFY inside: it would make every such commit wait for the one before it (see `wakeups.wake_soon`). A
# refresh of the account and job type in flight, or earlier in the list, is skipped. The statement is
# jobs_enqueue_refreshes (migration 0179): one cached generic plan per connection, by primary key and
# the unique refresh index whatever the statistics say (as one INSERT of arrays it was planned again
# on every call: its custom plans see the arrays' lengths).
_ENQUEUE_REFRESHES = f"""
SELECT {COLUMNS} FROM jobs_enqueue_refreshes($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
  $6::smallint[], $7::bytea[], $8::text[], $9::text[], $10::text[], {common_pb2.JOB_ORIGIN_REFRESH}::smallint)
"""
# CreateJob's refreshes with their accounts' checks in one statement (jobs_create_refreshes, migration
# 0186: the account read by key in the workspace asked, refused unless connected and its platform
# supports the job, $10 'platform_id:name'; then queued as `_ENQUEUE_REFRESHES`): per refresh, in order.
_CREATE_REFRESHES = f"""
SELECT r.refused, r.account_platform_id, {", ".join(f"(r.job).{c}" for c in COLUMNS.split(", "))}
FROM jobs_create_refreshes($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::smallint[], $6::bytea[],
  $7::text[], $8::text[], $9::text[], $10::text[], {common_pb2.JOB_ORIGIN_REFRESH}::smallint) AS r
ORDER BY r.ordinal
"""
# Scheduled refreshes in one statement, with their accounts' tags; wakes the workers at commit.
_ENQUEUE_SCHEDULED = f"""
WITH u AS MATERIALIZED (
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::smallint[], $5::text[], $6::jsonb[])
                WITH ORDINALITY AS u(i, w, a, n, p, t, o)),
queued AS (
  INSERT INTO job_queue (id, run_at, platform_id, account_id, name, refresh)
  SELECT i, now(), p, a, n, true FROM u ORDER BY o
  {_ONE_REFRESH}
  RETURNING id),
job AS (
  INSERT INTO jobs (id, workspace_id, account_id, batch_id, name, origin, platform_id, params, tags, scheduled)
  SELECT i, w, a, i, n, {common_pb2.JOB_ORIGIN_REFRESH}, p, ''::bytea, t, true
  FROM u JOIN queued ON queued.id = u.i ORDER BY o
  RETURNING id)
SELECT array_agg(id) AS ids, pg_notify('{NOTIFY_CHANNEL}', '') FROM job
"""
# A refresh is the only job of its batch (CreateJob gives it a batch of its own, the scheduler its own
# id), so the reads of a batch's jobs leave refreshes out: `jobs_batch` holds only the jobs that are
# not refreshes (migration 0184), and a read by batch says so to use it. For a refresh's batch they
# answer what they did: no held job, no switch before an allocation, no Link session's job.
_NOT_REFRESH = f"origin <> {common_pb2.JOB_ORIGIN_REFRESH}"
_RELEASE_HELD = f"""
WITH released AS (
  UPDATE job_queue SET run_at = now()
  WHERE id IN (SELECT id FROM jobs WHERE batch_id = $1 AND {_NOT_REFRESH} AND status = {Q} AND run_at = 'infinity')
    AND run_at = 'infinity' AND locked_by IS NULL
  RETURNING id),
job AS (UPDATE jobs SET run_at = now() FROM released WHERE jobs.id = released.id RETURNING 1)
SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM (SELECT count(*) FROM job) AS done
"""
# $1 worker id, $2 lease, $3 how many, $4 platforms not to claim from (at their concurrency limit).
# With each job, what its run needs: the account's sealed grant (NULL: disconnected; see grants.open_grant).
# jobs_claim (migration 0181) leases the picked queue rows, then marks their jobs running: one cached
# generic plan per connection, by key whatever the statistics say. The pick (the oldest runnable rows,
# run_at order, FOR UPDATE SKIP LOCKED) is job_queue_pick (0177): an ordered walk of job_queue_runnable.
CLAIM = "SELECT * FROM jobs_claim($1, $2::interval, $3, $4::text[])"
# Skips the rows a batch of outcomes holds locked (lock_for_outcomes): that batch is completing them,
# and the next beat renews any it rolled back. Waiting for it instead would hold every held job's
# renewal behind one slow commit (and hold the locks taken so far meanwhile).
_HEARTBEAT = """
WITH held AS (
  UPDATE job_queue SET lease_expires_at = now() + $3::interval
  FROM (SELECT id FROM job_queue WHERE id = ANY($1) AND locked_by = $2 ORDER BY id FOR UPDATE SKIP LOCKED) AS mine
  WHERE job_queue.id = mine.id
  RETURNING job_queue.id, lease_expires_at)
UPDATE jobs SET lease_expires_at = held.lease_expires_at FROM held WHERE jobs.id = held.id
"""
_BACK_TO_QUEUE = f"status = CASE WHEN pending_since IS NULL THEN {Q} ELSE {P} END"
_UNLEASE = "locked_by = NULL, lease_expires_at = NULL"
# In id order; a job whose row is locked (its outcome being written, a heartbeat) is left for the next rescue.
_RESCUE = f"""
WITH rescued AS (
  UPDATE job_queue SET {_UNLEASE}, run_at = now()
  WHERE id IN (SELECT id FROM job_queue WHERE locked_by IS NOT NULL AND lease_expires_at < now()
               ORDER BY id FOR UPDATE SKIP LOCKED)
  RETURNING id)
UPDATE jobs SET {_BACK_TO_QUEUE}, {_UNLEASE}, run_at = now() FROM rescued WHERE jobs.id = rescued.id
RETURNING jobs.id
"""
_RELEASE_WORKER = f"""
WITH released AS (
  UPDATE job_queue SET {_UNLEASE}, run_at = now()
  WHERE id IN (SELECT id FROM job_queue WHERE locked_by = $1 ORDER BY id FOR UPDATE)
  RETURNING id)
UPDATE jobs SET {_BACK_TO_QUEUE}, {_UNLEASE}, run_at = now(), attempts = greatest(attempts - 1, 0)
FROM released WHERE jobs.id = released.id
"""
# The batch's transaction (service/job_outcomes.py) runs its statements on cached generic plans: they
# take one array element per job, and below ~10 jobs a custom plan (which sees the length) always
# looked cheaper, so each was planned again on every batch (bench/NOTES.md, inflight session 24). And
# those plans reach every table by key whatever the statistics say: a generic plan made while the
# tables were small or never analyzed (a new database) read jobs, accounts and job_queue whole, and
# stays cached until an ANALYZE (bench/NOTES.md, queue session 25). Every statement of the batch joins
# a handful of array elements to tables by their keys: with sequential and bitmap scans, hash and
# merge joins off, index probes in nested loops remain. Sent with the BEGIN (uow.begin); all end with it.
BATCH_PLANS = """SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"""


def _completions(first: int, where: str = "") -> str:
    """The new status of jobs, all kinds in one statement, from 9 arrays of parameters from $`first`
    (`Completion`s, as `_completion_args` lays them out; `where`: which of them): the queue row waits
    for run_at again (retried or pending) or goes (final), and the `jobs` row changes (`_COMPLETED`,
    after these CTEs). A NULL keeps the job's column: the outcome (a retry keeps it), the error (a
    pending job keeps it), run_at (final) and completed_at (not final); the pending time is the first
    report's unless the job has one."""
    types = [
        "uuid",
        "text",
        "timestamptz",
        "smallint",
        "smallint",
        "smallint",
        "text",
        "timestamptz",
        "timestamptz",
    ]
    arrays = ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(types))
    return f"""c AS MATERIALIZED (
  SELECT * FROM unnest({arrays}) AS u(id, status, run_at, outcome, type, code, message, completed_at, pending_at)
  {where}),
dequeued AS (DELETE FROM job_queue WHERE id = ANY(ARRAY(SELECT id FROM c WHERE completed_at IS NOT NULL))),
requeued AS (
  UPDATE job_queue SET run_at = c.run_at, {_UNLEASE} FROM c WHERE job_queue.id = c.id AND c.completed_at IS NULL)"""


_COMPLETED = f"""UPDATE jobs SET status = c.status, outcome = coalesce(c.outcome, jobs.outcome),
  error_type = coalesce(c.type, jobs.error_type), error_code = coalesce(c.code, jobs.error_code),
  error_message = coalesce(c.message, jobs.error_message), run_at = coalesce(c.run_at, jobs.run_at),
  completed_at = coalesce(c.completed_at, jobs.completed_at), pending_since = coalesce(jobs.pending_since, c.pending_at),
  {_UNLEASE}
FROM c WHERE jobs.id = c.id"""
_COMPLETE = f"WITH {_completions(1)}\n{_COMPLETED}"

# An outcome is written under its job's queue row lock and its account's locks, each taken in id order
# (no deadlock between batches); only the jobs whose lease the worker holds are read further. Their
# `jobs` rows are read, not locked: every statement that writes a running job's row (claim, heartbeat,
# rescue, release, completion) locks its queue row first, so the held queue rows keep them as read
# (tests/integration/test_job_queue.py::test_a_batch_of_outcomes_locks_the_queue_rows_not_the_job_rows).
# Two writers lock no queue row and leave the batch's columns alone: an operator's retry changes only
# a job in error (no queue row, never in a batch), and a scrub of parameters (an erasure, after its
# jobs are final; a workspace deletion, at any time) changes `params`, which the completion does not
# set: a batch that read them before the scrub committed is the batch written before it.
# `lock_for_outcomes` is one statement, one round trip (three before: bench/NOTES.md, inflight session
# 29; with the batch's job statuses since claims session 30, one statement per kind of completion
# before), taking the locks in that order: every queue row (`held`: all its rows are read before the first
# account's, as the accounts' key array needs them), then the accounts. Each part is a materialized CTE:
# a FOR UPDATE inside runs once, in its own order. The `jobs` rows are read with the statement's
# snapshot, which may be older than a queue row's lock (taken after waiting for another transaction's
# commit): the writers that could commit meanwhile change no column read here (a heartbeat: the lease)
# or take the queue row from this worker (a rescue, a release), which the lock's recheck of
# `locked_by` sees.
# With each account row, its sequence row (the outbox's, migration 0178) locked with it: the batch's
# events need no reservation of their own (outbox.flush_locked). Both read by key (the second `= ANY`).
_LOCK_ACCOUNTS = """
SELECT a.id, end_user_id, monitoring_status, connected, s.sequence AS event_sequence, tags, refresh_failures
FROM accounts a JOIN account_event_sequences s ON s.account_id = a.id
WHERE a.id = ANY($1::uuid[]) AND s.account_id = ANY($1::uuid[]) ORDER BY a.id FOR UPDATE
"""
_HELD_ACCOUNTS = "(ARRAY(SELECT job.account_id FROM job))"
# ...and, in the same statement, after the accounts' locks (`c` reads them), the new status of each
# job it locked (`_completions`: a completion of a job not held is dropped).
_LOCK_FOR_OUTCOMES = f"""
WITH held AS MATERIALIZED (
  SELECT id FROM job_queue WHERE id = ANY($1::uuid[]) AND locked_by = $2 ORDER BY id FOR UPDATE),
job AS MATERIALIZED (
  SELECT id, workspace_id, account_id, link_token_id, link_session_id, batch_id, name, origin, platform_id,
         params, api_version, pending_since, status, locked_by, scheduled
  FROM jobs WHERE id = ANY(ARRAY(SELECT id FROM held)) AND status = {R} AND locked_by = $2),
account AS MATERIALIZED ({_LOCK_ACCOUNTS.replace("$1::uuid[]", _HELD_ACCOUNTS)}),
{_completions(3, "WHERE id = ANY(ARRAY(SELECT job.id FROM job JOIN account ON account.id = job.account_id))")},
completed AS ({_COMPLETED})
SELECT job.*, end_user_id, monitoring_status, connected, event_sequence, tags, refresh_failures
FROM job JOIN account ON account.id = job.account_id
"""
_RETRY_FAILED = f"""
WITH job AS (
  UPDATE jobs SET status = {Q}, run_at = now(), completed_at = NULL, locked_by = NULL, pending_since = NULL,
                  attempts = 0
  WHERE id = $1
  RETURNING id, run_at, platform_id, account_id, name, origin)
INSERT INTO job_queue (id, run_at, platform_id, account_id, name, refresh)
SELECT id, run_at, platform_id, account_id, name, origin = {common_pb2.JOB_ORIGIN_REFRESH} FROM job
"""
_BATCH = f"SELECT id, name, status, outcome, error_type, error_code FROM jobs WHERE batch_id = $1 AND {_NOT_REFRESH}"
_SUCCEEDED = f"SELECT true FROM jobs WHERE batch_id = $1 AND {_NOT_REFRESH} AND name = $2 AND status = {S}"


async def enqueue(
    conn: db.Conn,
    *,
    workspace_id: uuid.UUID,
    account_id: uuid.UUID,
    platform_id: str,
    name: int,
    origin: int,
    batch_id: uuid.UUID,
    api_version: str,
    params: common_pb2.JobParams,
    params_sealed: bytes | None = None,
    link_token_id: uuid.UUID | None = None,
    link_session_id: uuid.UUID | None = None,
    held: bool = False,
    job_id: uuid.UUID | None = None,
    trace: tuple[str, str] = ("", ""),  # (traceparent, request id) the job carries
) -> asyncpg.Record | None:
    """Queues one job (caller's transaction; workers wake at commit); returns its row (COLUMNS)."""
    return await conn.fetchrow(
        _ENQUEUE,
        job_id or ids.new_id(),
        workspace_id,
        account_id,
        link_token_id,
        link_session_id,
        batch_id,
        name,
        origin,
        platform_id,
        params.SerializeToString(),
        params_sealed,
        api_version,
        held,
        *trace,
    )


async def enqueue_refreshes(
    conn: db.Executor, refreshes: Sequence[NewRefresh]
) -> list[asyncpg.Record | None]:
    """Queues refreshes with one statement (one commit when `conn` is the pool); for each, in order,
    its row (COLUMNS), or None when a refresh of its account and job type is in flight (one earlier
    in the list included). No NOTIFY: the caller calls `wake_soon` once it committed."""
    columns = [
        [getattr(r, field) for r in refreshes]
        for field in (
            "job_id",
            "batch_id",
            "workspace_id",
            "account_id",
            "platform_id",
            "name",
            "params",
            "api_version",
            "traceparent",
            "request_id",
        )
    ]
    inserted = {row["id"]: row for row in await conn.fetch(_ENQUEUE_REFRESHES, *columns)}
    return [inserted.get(r.job_id) for r in refreshes]


async def create_refreshes(
    conn: db.Executor, refreshes: Sequence[NewRefresh], supported: Sequence[str]
) -> list[Created]:
    """Checks each refresh's account (in its workspace, connected, its platform in `supported`:
    'platform_id:name' pairs) and queues those that pass, with one statement (one commit when `conn` is
    the pool); for each, in order, what refused it, its account's platform and its row, or no row when
    a refresh of its account and job type is in flight (one earlier in the list included). No NOTIFY:
    the caller calls `wakeups.wake_soon` once it committed."""
    fields = ("job_id", "batch_id", "workspace_id", "account_id", "name", "params", "api_version")
    columns = [[getattr(r, f) for r in refreshes] for f in (*fields, "traceparent", "request_id")]
    rows = await conn.fetch(_CREATE_REFRESHES, *columns, supported)
    return [Created(r["refused"], r["account_platform_id"], r if r["id"] is not None else None) for r in rows]


async def refresh_in_flight(conn: db.Executor, account_id: uuid.UUID, name: int) -> asyncpg.Record | None:
    """The refresh of this account and job type in flight (COLUMNS), if any."""
    return await conn.fetchrow(_IN_FLIGHT_REFRESH, account_id, name)


async def enqueue_scheduled(
    conn: db.Conn, job_ids: list[uuid.UUID], rows: Sequence[asyncpg.Record]
) -> list[uuid.UUID]:
    """Queues scheduled refreshes (`rows`: workspace_id, account_id, name, platform_id, tags) in one
    statement; returns the ids queued (a refresh already in flight keeps its place)."""
    columns = [[r[c] for r in rows] for c in ("workspace_id", "account_id", "name", "platform_id", "tags")]
    return list(await conn.fetchval(_ENQUEUE_SCHEDULED, job_ids, *columns) or [])


async def release_held(conn: db.Conn, batch_id: uuid.UUID) -> None:
    """Lets the held jobs of a batch run now, and wakes the workers."""
    await conn.execute(_RELEASE_HELD, batch_id)


async def claim(
    pool: db.Executor, worker_id: str, lease: dt.timedelta, limit: int, skip_platforms: list[str]
) -> list[ClaimedJob]:
    rows = await pool.fetch(CLAIM, worker_id, lease, limit, skip_platforms)
    return [ClaimedJob.from_row(row) for row in rows]


async def probe_release_guard(pool: db.Executor) -> None:
    """The release guard's probe (service/release_guard.py): a write to `jobs` touching no row, which
    the guard's statement triggers judge like any other: raises PL001 while they refuse this code."""
    await pool.execute("UPDATE jobs SET status = status WHERE false")


async def heartbeat(pool: db.Executor, job_ids: list[uuid.UUID], worker_id: str, lease: dt.timedelta) -> None:
    await pool.execute(_HEARTBEAT, job_ids, worker_id, lease)


async def rescue(pool: db.Executor) -> int:
    """Returns jobs whose lease expired (their worker died) to the queue; how many."""
    return len(await pool.fetch(_RESCUE))


async def release_worker(pool: db.Executor, worker_id: str) -> None:
    """At shutdown: the worker's unfinished jobs go back to the queue (the attempt does not count)."""
    await pool.execute(_RELEASE_WORKER, worker_id)


async def lock_for_outcomes(
    conn: db.Conn, job_ids: Sequence[uuid.UUID], worker_id: str, completions: Sequence[Completion] = ()
) -> dict[uuid.UUID, LockedJob]:
    """Locks the queue rows of the jobs whose lease `worker_id` holds, reads those jobs, locks their
    accounts, and writes the `completions` of those jobs (what `complete` writes; those of the other
    jobs are dropped): one round trip. Returns the jobs locked (as they were before the completions)."""
    rows = await conn.fetch(_LOCK_FOR_OUTCOMES, list(job_ids), worker_id, *_completion_args(completions))
    return {row["id"]: LockedJob.from_rows(row, row) for row in rows}


async def complete(conn: db.Conn, completions: Sequence[Completion]) -> None:
    """Writes the new status of each job, whatever their kinds, with one statement."""
    if completions:
        await conn.execute(_COMPLETE, *_completion_args(completions))


def _completion_args(completions: Sequence[Completion]) -> list[list[object]]:
    """`_completions`' 9 arrays."""
    kept = (JobStatus.QUEUED, JobStatus.PENDING)
    return [
        [c.job_id for c in completions],
        [c.status.value for c in completions],
        [c.run_at for c in completions],
        [None if c.status == JobStatus.QUEUED else c.outcome for c in completions],
        *([None if c.status == JobStatus.PENDING else getattr(c, f) for c in completions] for f in _ERROR),
        [None if c.status in kept else c.at for c in completions],
        [c.at if c.status == JobStatus.PENDING else None for c in completions],
    ]


async def retry_failed(conn: db.Conn, job_id: uuid.UUID) -> JobStatus | None:
    """Queues a job that ended in error again from attempt 1; returns its status before (None when
    there is no such job). Only an ERROR job changes."""
    status: str | None = await conn.fetchval("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", job_id)
    if status is None:
        return None
    if status == JobStatus.ERROR:
        await conn.execute(_RETRY_FAILED, job_id)
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return JobStatus(status)


async def batch(conn: db.Executor, batch_id: uuid.UUID, *, session_only: bool = False) -> list[BatchJob]:
    """The jobs of a batch in creation order (`session_only`: those of the Link session `batch_id`)."""
    sql = _BATCH + (" AND link_session_id = $1" if session_only else "") + " ORDER BY created_at, id"
    return [
        BatchJob(r["id"], r["name"], JobStatus(r["status"]), r["outcome"], r["error_type"], r["error_code"])
        for r in await conn.fetch(sql, batch_id)
    ]


async def has_succeeded(conn: db.Executor, batch_id: uuid.UUID, name: int) -> bool:
    """Whether the job `name` of this batch (not a refresh's: see `_NOT_REFRESH`) already succeeded."""
    found = await conn.fetchval(_SUCCEEDED, batch_id, name)
    return bool(found)


async def in_flight(conn: db.Executor, account_ids: Sequence[uuid.UUID]) -> int:
    """How many jobs of these accounts are not final yet (an erasure waits for them)."""
    sql = f"SELECT count(*) FROM jobs WHERE account_id = ANY($1::uuid[]) AND status IN {IN_FLIGHT}"
    return int(await conn.fetchval(sql, list(account_ids)))


async def scrub_params(conn: db.Executor, account_ids: Sequence[uuid.UUID]) -> int:
    """Erases these accounts' job parameters (masked and sealed deposit targets) for an erasure;
    the job, its status and outcome stay. Returns how many jobs changed."""
    status: str = await conn.execute(
        "UPDATE jobs SET params = '', params_sealed = NULL WHERE account_id = ANY($1::uuid[])"
        " AND (params <> '' OR params_sealed IS NOT NULL)",
        list(account_ids),
    )
    return int(status.rsplit(" ", 1)[-1])
