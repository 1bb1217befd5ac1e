"""The job queue's types: the `jobs.status` values and the rows `service.queue` hands out and takes
(re-exported there: callers name them `queue.ClaimedJob`, `queue.Completion`, ...)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid

import asyncpg
from paylink.v1 import common_pb2


@dataclasses.dataclass(frozen=True, slots=True)
class NewRefresh:
    """A refresh to queue (CreateJob), one of many that `queue.create_refreshes` (the account read
    with it: `platform_id` unused) or `queue.enqueue_refreshes` inserts with one statement."""

    job_id: uuid.UUID
    batch_id: uuid.UUID
    workspace_id: uuid.UUID
    account_id: uuid.UUID
    platform_id: str
    name: int
    params: bytes  # paylink.v1.JobParams
    api_version: str
    traceparent: str
    request_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Created:
    """What `queue.create_refreshes` did with one refresh."""

    refused: str | None  # 'not_found' (not in that workspace), 'disconnected', 'not_supported'
    platform_id: str | None  # the account's (None: not found)
    row: asyncpg.Record | None  # the job queued (COLUMNS); None: refused, or one is in flight


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
    grant_sealed: bytes | None = None  # the account's sealed grant; None when it is disconnected
    trace: tuple[str, str] = ("", "")  # (traceparent to continue, request id its events carry)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ClaimedJob:
        sealed, grant = row["params_sealed"], row["grant_sealed"]
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
            grant_sealed=bytes(grant) if grant is not None else None,
            trace=(row["traceparent"], row["request_id"]),
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
    def from_rows(cls, job: asyncpg.Record, account: asyncpg.Record) -> LockedJob:
        fields = {f.name: job[f.name] for f in dataclasses.fields(cls) if f.name in job}
        for name in ("end_user_id", "monitoring_status", "connected", "event_sequence", "refresh_failures"):
            fields[name] = account[name]
        fields["tags"] = json.loads(account["tags"])
        fields["params"] = bytes(job["params"])
        fields["status"] = JobStatus(job["status"])
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
