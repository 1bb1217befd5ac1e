"""The job queue: the only code that writes `jobs` rows.

Every statement that changes a job is named here: enqueue (with its wake-up NOTIFY), claim (FOR
UPDATE SKIP LOCKED, with a lease), heartbeat, rescue of expired leases, release at shutdown,
completion (retry later / pending / success / error), release of held jobs, and an operator's
retry of a failed job. `worker.py` decides *when* to call them, `job_outcomes.py` *what* an outcome
means; neither writes SQL on `jobs`.

`complete` takes a list: one statement per kind of completion however many jobs it holds, so a
completer that buffers outcomes can write a whole batch in one transaction and wake the workers
once. A rule on what may be claimed (e.g. one job per account and job name in flight) belongs in
`CLAIM` alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from collections.abc import Sequence

import asyncpg
from paylink.v1 import common_pb2

from service import db, ids

NOTIFY_CHANNEL = "paylink_jobs"


class JobStatus(enum.StrEnum):
    """The `jobs.status` column."""

    QUEUED = "queued"  # waiting for run_at (a retry waits here too)
    RUNNING = "running"  # claimed: a worker holds the lease
    PENDING = "pending"  # the platform is still working; checked again at run_at
    SUCCESS = "success"
    ERROR = "error"

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCESS, JobStatus.ERROR)

    def to_proto(self) -> common_pb2.JobStatus.ValueType:
        return _PROTO_STATUS[self]


_PROTO_STATUS = {
    JobStatus.QUEUED: common_pb2.JOB_STATUS_QUEUED,
    JobStatus.RUNNING: common_pb2.JOB_STATUS_RUNNING,
    JobStatus.PENDING: common_pb2.JOB_STATUS_PENDING,
    JobStatus.SUCCESS: common_pb2.JOB_STATUS_SUCCESS,
    JobStatus.ERROR: common_pb2.JOB_STATUS_ERROR,
}

Q, R, P, S, E = (f"'{s.value}'" for s in JobStatus)  # SQL literals, for the statements below
RUNNABLE = f"({Q}, {P})"
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
    platform_id, params, params_sealed, api_version, run_at, tags)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
          CASE WHEN $13 THEN 'infinity'::timestamptz ELSE now() END,
          (SELECT tags FROM accounts WHERE id = $3))
  {{conflict}}
  RETURNING {COLUMNS})
SELECT job.*, pg_notify('{NOTIFY_CHANNEL}', '') FROM job
"""
# Refreshes in flight: one per account and job type at most (unique partial index, migration 0120).
REFRESH_IN_FLIGHT = f"origin = {common_pb2.JOB_ORIGIN_REFRESH} AND status IN ({Q}, {R}, {P})"
_ONE_REFRESH = f"ON CONFLICT (account_id, name) WHERE {REFRESH_IN_FLIGHT} DO NOTHING"
_IN_FLIGHT_REFRESH = f"SELECT {COLUMNS} FROM jobs WHERE account_id = $1 AND name = $2 AND {REFRESH_IN_FLIGHT}"
# Scheduled refreshes in one statement, with their accounts' tags; wakes the workers at commit.
_ENQUEUE_SCHEDULED = f"""
WITH job AS (
  INSERT INTO jobs (id, workspace_id, account_id, batch_id, name, origin, platform_id, params, tags, scheduled)
  SELECT i, w, a, i, n, {common_pb2.JOB_ORIGIN_REFRESH}, p, ''::bytea, t, true
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::smallint[], $5::text[], $6::jsonb[]) AS u(i, w, a, n, p, t)
  {_ONE_REFRESH}
  RETURNING id)
SELECT array_agg(id) AS ids, pg_notify('{NOTIFY_CHANNEL}', '') FROM job
"""
_RELEASE_HELD = f"""
WITH released AS (
  UPDATE jobs SET run_at = now() WHERE batch_id = $1 AND status = {Q} AND run_at = 'infinity' RETURNING 1)
SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM (SELECT count(*) FROM released) AS done
"""
# $1 worker id, $2 lease, $3 how many, $4 platforms not to claim from (at their concurrency limit).
CLAIM = f"""
UPDATE jobs SET status = {R}, locked_by = $1, lease_expires_at = now() + $2::interval,
                attempts = attempts + 1
WHERE id IN (
  SELECT id FROM jobs WHERE status IN {RUNNABLE} AND run_at <= now()
    AND platform_id <> ALL($4::text[])
  ORDER BY run_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING id, account_id, batch_id, name, origin, platform_id, params, params_sealed, attempts, pending_since
"""
_HEARTBEAT = "UPDATE jobs SET lease_expires_at = now() + $3::interval WHERE id = ANY($1) AND locked_by = $2"
_BACK_TO_QUEUE = f"status = CASE WHEN pending_since IS NULL THEN {Q} ELSE {P} END"
_RESCUE = f"""
UPDATE jobs SET {_BACK_TO_QUEUE}, locked_by = NULL, lease_expires_at = NULL, run_at = now()
WHERE status = {R} AND lease_expires_at < now() RETURNING id
"""
_RELEASE_WORKER = f"""
UPDATE jobs SET {_BACK_TO_QUEUE}, locked_by = NULL, lease_expires_at = NULL, run_at = now(),
                attempts = greatest(attempts - 1, 0)
WHERE locked_by = $1 AND status = {R}
"""
# The job and its account, both locked, in one round trip: an outcome is written under both locks.
_LOCK_FOR_OUTCOME = """
SELECT j.id, j.workspace_id, j.account_id, j.link_token_id, j.link_session_id, j.batch_id, j.name,
       j.origin, j.platform_id, j.params, j.api_version, j.pending_since, j.status, j.locked_by,
       j.scheduled, a.end_user_id, a.monitoring_status, a.connected, a.event_sequence, a.tags,
       a.refresh_failures
FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.id = $1 FOR UPDATE OF j, a
"""
_UNLEASE = "locked_by = NULL, lease_expires_at = NULL"
_COMPLETE = {
    JobStatus.QUEUED: f"""
UPDATE jobs SET status = {Q}, run_at = c.run_at, {_UNLEASE},
                error_code = c.code, error_type = c.type, error_message = c.message
FROM unnest($1::uuid[], $2::timestamptz[], $3::smallint[], $4::smallint[], $5::text[], $6::timestamptz[],
            $7::smallint[]) AS c(id, run_at, code, type, message, at, outcome)
WHERE jobs.id = c.id""",
    JobStatus.PENDING: f"""
UPDATE jobs SET status = {P}, outcome = c.outcome, pending_since = coalesce(pending_since, c.at),
                run_at = c.run_at, {_UNLEASE}
FROM unnest($1::uuid[], $2::timestamptz[], $3::smallint[], $4::smallint[], $5::text[], $6::timestamptz[],
            $7::smallint[]) AS c(id, run_at, code, type, message, at, outcome)
WHERE jobs.id = c.id""",
    JobStatus.SUCCESS: f"""
UPDATE jobs SET status = {S}, outcome = c.outcome, error_type = 0, error_code = 0, error_message = '',
                completed_at = c.at, {_UNLEASE}
FROM unnest($1::uuid[], $2::timestamptz[], $3::smallint[], $4::smallint[], $5::text[], $6::timestamptz[],
            $7::smallint[]) AS c(id, run_at, code, type, message, at, outcome)
WHERE jobs.id = c.id""",
    JobStatus.ERROR: f"""
UPDATE jobs SET status = {E}, outcome = c.outcome, error_type = c.type, error_code = c.code,
                error_message = c.message, completed_at = c.at, {_UNLEASE}
FROM unnest($1::uuid[], $2::timestamptz[], $3::smallint[], $4::smallint[], $5::text[], $6::timestamptz[],
            $7::smallint[]) AS c(id, run_at, code, type, message, at, outcome)
WHERE jobs.id = c.id""",
}
_RETRY_FAILED = f"""
UPDATE jobs SET status = {Q}, run_at = now(), completed_at = NULL, locked_by = NULL, pending_since = NULL,
                attempts = 0
WHERE id = $1
"""
_BATCH = "SELECT id, name, status, outcome, error_type, error_code FROM jobs WHERE batch_id = $1"


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds the lease of."""

    id: uuid.UUID
    account_id: uuid.UUID
    batch_id: uuid.UUID
    name: int  # common_pb2.JobName
    origin: int  # common_pb2.JobOrigin
    platform_id: str
    params: bytes  # serialized common_pb2.JobParams (masked)
    params_sealed: bytes | None
    attempts: int  # including this one
    pending_since: dt.datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ClaimedJob:
        sealed = row["params_sealed"]
        return cls(
            id=row["id"],
            account_id=row["account_id"],
            batch_id=row["batch_id"],
            name=row["name"],
            origin=row["origin"],
            platform_id=row["platform_id"],
            params=bytes(row["params"]),
            params_sealed=bytes(sealed) if sealed is not None else None,
            attempts=row["attempts"],
            pending_since=row["pending_since"],
        )

    def job_params(self) -> common_pb2.JobParams:
        return common_pb2.JobParams.FromString(self.params)


@dataclasses.dataclass(frozen=True, slots=True)
class LockedJob:
    """A running job and its account, both row-locked by the transaction writing its outcome."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    account_id: uuid.UUID
    link_token_id: uuid.UUID | None
    link_session_id: uuid.UUID | None
    batch_id: uuid.UUID
    name: int
    origin: int
    platform_id: str
    params: bytes
    api_version: str
    pending_since: dt.datetime | None
    status: JobStatus
    locked_by: str | None
    end_user_id: str
    monitoring_status: str
    connected: bool
    event_sequence: int
    scheduled: bool  # queued by the monitoring schedule
    tags: dict[str, str]  # the account's
    refresh_failures: int  # the account's run of failed refreshes (monitoring)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> LockedJob:
        fields = {f.name: row[f.name] for f in dataclasses.fields(cls)}
        fields["params"] = bytes(row["params"])
        fields["tags"] = json.loads(row["tags"])
        fields["status"] = JobStatus(row["status"])
        return cls(**fields)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchJob:
    """One job of a batch (a Link session's jobs, or a refresh), as settlement reads it."""

    id: uuid.UUID
    name: int
    status: JobStatus
    outcome: int
    error_type: int = 0
    error_code: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """What becomes of one running job: QUEUED (retry at run_at), PENDING (check again at run_at),
    SUCCESS or ERROR (final, at `at`)."""

    job_id: uuid.UUID
    status: JobStatus
    at: dt.datetime
    run_at: dt.datetime | None = None
    outcome: int = 0
    error_type: int = 0
    error_code: int = 0
    error_message: str = ""


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
    one_refresh: bool = False,
) -> asyncpg.Record | None:
    """Queues one job (caller's transaction; workers wake at commit); returns its row (COLUMNS).

    `one_refresh`: None instead when a refresh of the account and job type is already in flight."""
    return await conn.fetchrow(
        _ENQUEUE.format(conflict=_ONE_REFRESH if one_refresh else ""),
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
    )


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


async def heartbeat(pool: db.Executor, job_ids: list[uuid.UUID], worker_id: str, lease: dt.timedelta) -> None:
    await pool.execute(_HEARTBEAT, job_ids, worker_id, lease)


async def rescue(pool: db.Executor) -> int:
    """Returns jobs whose lease expired (their worker died) to the queue; how many."""
    return len(await pool.fetch(_RESCUE))


async def release_worker(pool: db.Executor, worker_id: str) -> None:
    """At shutdown: the worker's unfinished jobs go back to the queue (the attempt does not count)."""
    await pool.execute(_RELEASE_WORKER, worker_id)


async def lock_for_outcome(conn: db.Conn, job_id: uuid.UUID, worker_id: str) -> LockedJob | None:
    """Locks a running job and its account; None unless `worker_id` still holds its lease."""
    row = await conn.fetchrow(_LOCK_FOR_OUTCOME, job_id)
    if row is None or row["status"] != JobStatus.RUNNING or row["locked_by"] != worker_id:
        return None
    return LockedJob.from_row(row)


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
    """Whether the job `name` of this batch already succeeded."""
    found = await conn.fetchval(
        f"SELECT true FROM jobs WHERE batch_id = $1 AND name = $2 AND status = {S}", batch_id, name
    )
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
