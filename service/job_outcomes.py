"""Writing a job's outcome: job row, stored data, monitoring status, events and settlement.

Every function runs in one transaction that first locks the account row. That lock orders the
account's events (see outbox) and serializes the jobs of one batch, so exactly one transaction
sees the batch settled and publishes link_session.completed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import asyncpg
from google.protobuf.message import Message
from paylink.v1 import common_pb2, event_pb2

from service import accounts, db, jobs, outbox, results, timeutil
from service.deps import Deps
from service.drivers.base import FetchedPaystub

ERROR_TYPES: dict[int, int] = {
    common_pb2.JOB_ERROR_CODE_INVALID_CREDENTIALS: common_pb2.JOB_ERROR_TYPE_USER_ACTION,
    common_pb2.JOB_ERROR_CODE_MFA_FAILED: common_pb2.JOB_ERROR_TYPE_USER_ACTION,
    common_pb2.JOB_ERROR_CODE_USER_ACTION_REQUIRED: common_pb2.JOB_ERROR_TYPE_USER_ACTION,
    common_pb2.JOB_ERROR_CODE_ACCOUNT_LOCKED: common_pb2.JOB_ERROR_TYPE_USER_ACTION,
    common_pb2.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE: common_pb2.JOB_ERROR_TYPE_PLATFORM,
    common_pb2.JOB_ERROR_CODE_JOB_NOT_SUPPORTED: common_pb2.JOB_ERROR_TYPE_PLATFORM,
    common_pb2.JOB_ERROR_CODE_ALLOCATION_REJECTED: common_pb2.JOB_ERROR_TYPE_PLATFORM,
    common_pb2.JOB_ERROR_CODE_TIMEOUT: common_pb2.JOB_ERROR_TYPE_PLATFORM,
    common_pb2.JOB_ERROR_CODE_NO_DATA: common_pb2.JOB_ERROR_TYPE_NO_DATA,
}

# Monitoring status and reason after a final error, by error code.
_MONITORING_AFTER_ERROR: dict[int, tuple[str, str]] = {
    common_pb2.JOB_ERROR_CODE_USER_ACTION_REQUIRED: ("user_action_required", "mfa_required"),
    common_pb2.JOB_ERROR_CODE_INVALID_CREDENTIALS: ("user_action_required", "credentials_expired"),
    common_pb2.JOB_ERROR_CODE_ACCOUNT_LOCKED: ("user_action_required", "account_locked"),
    common_pb2.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE: ("degraded", "platform_unavailable"),
    common_pb2.JOB_ERROR_CODE_TIMEOUT: ("degraded", "platform_timeout"),
}


@dataclasses.dataclass(slots=True)
class Success:
    data: Message | None = None  # identity/employment/income/allocations
    paystubs: list[FetchedPaystub] | None = None
    new_grant: bytes | None = None  # a refresh re-accessed the account: store what it returned


@dataclasses.dataclass(slots=True)
class Pending:
    retry_after: dt.timedelta
    new_grant: bytes | None = None


@dataclasses.dataclass(slots=True)
class Retry:
    delay: dt.timedelta
    error_code: int
    message: str


@dataclasses.dataclass(slots=True)
class Failure:
    error_code: int
    message: str
    error_type: int = 0


Outcome = Success | Pending | Retry | Failure

# The job and its account, both locked, in one round trip.
_CLAIMED = """
SELECT j.id, j.workspace_id, j.account_id, j.link_token_id, j.link_session_id, j.batch_id, j.name,
       j.origin, j.platform_id, j.params, j.api_version, j.pending_since, j.status, j.locked_by,
       a.end_user_id, a.monitoring_status, a.connected, a.event_sequence
FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.id = $1 FOR UPDATE OF j, a
"""


async def apply(deps: Deps, job_id: uuid.UUID, worker_id: str, outcome: Outcome) -> bool:
    """Writes the outcome if this worker still holds the job; False when its lease was lost."""
    async with deps.pool.acquire() as conn, conn.transaction():
        job = await conn.fetchrow(_CLAIMED, job_id)
        if job is None or job["status"] != "running" or job["locked_by"] != worker_id:
            return False
        account = {
            "id": job["account_id"],
            "workspace_id": job["workspace_id"],
            "end_user_id": job["end_user_id"],
            "platform_id": job["platform_id"],
            "monitoring_status": job["monitoring_status"],
            "connected": job["connected"],
        }
        events = outbox.Events(
            topic_prefix=deps.settings.topic_prefix,
            workspace_id=job["workspace_id"],
            account_id=job["account_id"],
            locked_sequence=job["event_sequence"],  # the account row is locked above
        )
        await _apply(deps, conn, account, job, outcome, events)
        await events.flush(conn)
    return True


async def _apply(
    deps: Deps,
    conn: db.Conn,
    account: db.Row,
    job: asyncpg.Record,
    outcome: Outcome,
    events: outbox.Events,
) -> None:
    at = timeutil.now()
    if isinstance(outcome, Retry):
        await conn.execute(
            "UPDATE jobs SET status = 'queued', run_at = $2, locked_by = NULL, lease_expires_at = NULL,"
            " error_code = $3, error_type = $4, error_message = $5 WHERE id = $1",
            job["id"],
            at + outcome.delay,
            outcome.error_code,
            ERROR_TYPES.get(outcome.error_code, common_pb2.JOB_ERROR_TYPE_SYSTEM),
            outcome.message,
        )
        return
    if getattr(outcome, "new_grant", None):
        await accounts.store_grant(deps, conn, account["id"], outcome.new_grant)  # type: ignore[union-attr,arg-type]
    if isinstance(outcome, Pending):
        first = job["pending_since"] is None
        await conn.execute(
            "UPDATE jobs SET status = 'pending', outcome = $2, pending_since = coalesce(pending_since, $3),"
            " run_at = $4, locked_by = NULL, lease_expires_at = NULL WHERE id = $1",
            job["id"],
            common_pb2.JOB_OUTCOME_PENDING,
            at,
            at + outcome.retry_after,
        )
        if first:
            _job_event(events, account, job, at, common_pb2.JOB_OUTCOME_PENDING)
        return
    if isinstance(outcome, Success):
        await _store_data(conn, account, job, outcome, at, events)
        await conn.execute(
            "UPDATE jobs SET status = 'success', outcome = $2, error_type = 0, error_code = 0,"
            " error_message = '', completed_at = $3, locked_by = NULL, lease_expires_at = NULL WHERE id = $1",
            job["id"],
            common_pb2.JOB_OUTCOME_SUCCESS,
            at,
        )
        _job_event(events, account, job, at, common_pb2.JOB_OUTCOME_SUCCESS)
        if account["monitoring_status"] in ("degraded", "user_action_required") and (
            outcome.new_grant or account["monitoring_status"] == "degraded"
        ):
            await accounts.set_monitoring(
                conn,
                account,
                "active",
                "reaccess_succeeded",
                topic_prefix=deps.settings.topic_prefix,
                api_version=job["api_version"],
                at=at,
                events=events,
            )
    else:
        error_type = outcome.error_type or ERROR_TYPES.get(
            outcome.error_code, common_pb2.JOB_ERROR_TYPE_SYSTEM
        )
        await conn.execute(
            "UPDATE jobs SET status = 'error', outcome = $2, error_type = $3, error_code = $4,"
            " error_message = $5, completed_at = $6, locked_by = NULL, lease_expires_at = NULL WHERE id = $1",
            job["id"],
            common_pb2.JOB_OUTCOME_ERROR,
            error_type,
            outcome.error_code,
            outcome.message[:500],
            at,
        )
        _job_event(
            events,
            account,
            job,
            at,
            common_pb2.JOB_OUTCOME_ERROR,
            error_type=error_type,
            error_code=outcome.error_code,
            error_message=outcome.message[:500],
        )
        follow = _MONITORING_AFTER_ERROR.get(outcome.error_code)
        if (
            follow
            and account["connected"]
            and (job["origin"] == common_pb2.JOB_ORIGIN_REFRESH or follow[0] == "degraded")
        ):
            await accounts.set_monitoring(
                conn,
                account,
                follow[0],
                follow[1],
                topic_prefix=deps.settings.topic_prefix,
                api_version=job["api_version"],
                at=at,
                events=events,
            )
    if job["name"] == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
        await jobs.release_held(conn, job["batch_id"])
    if isinstance(outcome, Success):
        final = (common_pb2.JOB_OUTCOME_SUCCESS, 0, 0)
    else:
        final = (common_pb2.JOB_OUTCOME_ERROR, error_type, outcome.error_code)
    await _settle(deps, conn, account, job, at, events, final)


async def _store_data(
    conn: db.Conn,
    account: db.Row,
    job: asyncpg.Record,
    outcome: Success,
    at: dt.datetime,
    events: outbox.Events,
) -> None:
    if job["name"] == common_pb2.JOB_NAME_PAYSTUBS:
        await results.store_paystubs(conn, account["id"], outcome.paystubs or [], at)
        return
    if outcome.data is None:
        return
    name = job["name"]
    if name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
        # The switch changes the allocations: store them and publish them too.
        name = common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS
        await results.store(conn, account["id"], name, outcome.data, at)
        _job_event(
            events,
            account,
            job,
            at,
            common_pb2.JOB_OUTCOME_SUCCESS,
            name=common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS,
        )
        return
    await results.store(conn, account["id"], name, outcome.data, at)


def _job_event(
    events: outbox.Events,
    account: db.Row,
    job: asyncpg.Record,
    at: dt.datetime,
    outcome: int,
    *,
    error_type: int = 0,
    error_code: int = 0,
    error_message: str = "",
    name: int | None = None,
) -> None:
    job_name: int = name or job["name"]
    fields: dict[str, Any] = dict(
        job_id=str(job["id"]),
        account_id=str(account["id"]),
        end_user_id=account["end_user_id"],
        link_token_id=str(job["link_token_id"]) if job["link_token_id"] else "",
        platform_id=job["platform_id"],
        name=job_name,
        outcome=outcome,
        error_type=error_type,
        error_code=error_code,
        error_message=error_message,
        params=common_pb2.JobParams.FromString(bytes(job["params"])),
        origin=job["origin"],
        link_session_id=str(job["link_session_id"]) if job["link_session_id"] else "",
    )
    payload = event_pb2.JobEventPayload(**fields)
    timeutil.set_ts(payload.timestamp, at)
    events.add(outbox.JOB_EVENTS[job_name], job["api_version"], event_pb2.Event(job=payload), at)


async def _settle(
    deps: Deps,
    conn: db.Conn,
    account: db.Row,
    job: asyncpg.Record,
    at: dt.datetime,
    events: outbox.Events,
    final: tuple[int, int, int],
) -> None:
    batch: list[db.Row]
    if job["origin"] == common_pb2.JOB_ORIGIN_REFRESH:
        # A server-side refresh is a batch of one: this job, just finished.
        outcome, error_type, error_code = final
        batch = [
            {
                "id": job["id"],
                "name": job["name"],
                "status": "done",
                "outcome": outcome,
                "error_type": error_type,
                "error_code": error_code,
            }
        ]
    else:
        batch = list(
            await conn.fetch(
                "SELECT id, name, status, outcome, error_type, error_code, created_at FROM jobs WHERE batch_id = $1"
                " ORDER BY created_at, id",
                job["batch_id"],
            )
        )
        if any(row["status"] not in ("success", "error") for row in batch):
            return
    await publish_settled(
        deps,
        conn,
        account,
        job["batch_id"],
        job["link_session_id"],
        job["link_token_id"],
        job["origin"],
        job["api_version"],
        batch,
        at,
        events,
    )


async def publish_settled(
    deps: Deps,
    conn: db.Conn,
    account: db.Row,
    batch_id: uuid.UUID,
    session_id: uuid.UUID | None,
    link_token_id: uuid.UUID | None,
    origin: int,
    api_version: str,
    batch: list[db.Row],
    at: dt.datetime,
    events: outbox.Events | None = None,
) -> None:
    """Publishes link_session.completed for a batch and completes its session (if any)."""
    fields: dict[str, Any] = dict(
        link_session_id=str(session_id) if session_id else "",
        link_token_id=str(link_token_id) if link_token_id else "",
        account_id=str(account["id"]),
        end_user_id=account["end_user_id"],
        origin=origin,
        jobs=[
            event_pb2.SettledJob(
                **{
                    "job_id": str(row["id"]),
                    "name": row["name"],
                    "outcome": row["outcome"],
                    "error_type": row["error_type"],
                    "error_code": row["error_code"],
                }
            )
            for row in batch
        ],
    )
    payload = event_pb2.LinkSessionCompletedPayload(**fields)
    timeutil.set_ts(payload.timestamp, at)
    if session_id is not None:
        await conn.execute(
            "UPDATE link_sessions SET state = 'COMPLETED', completed_at = $2, updated_at = $2 WHERE id = $1",
            session_id,
            at,
        )
    event = event_pb2.Event(link_session_completed=payload)
    if events is not None:
        events.add(outbox.LINK_SESSION_COMPLETED, api_version, event, at)
        return
    await outbox.append(
        conn,
        topic_prefix=deps.settings.topic_prefix,
        workspace_id=account["workspace_id"],
        account_id=account["id"],
        name=outbox.LINK_SESSION_COMPLETED,
        api_version=api_version,
        payload=event,
        at=at,
    )
