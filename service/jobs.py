"""Jobs as resources: creation (for a session or a server-side refresh), reading and listing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from paylink.v1 import common_pb2, job_pb2

from service import (
    accounts,
    db,
    errors,
    idempotency,
    ids,
    pagination,
    queue,
    record_jobs,
    sealed,
    timeutil,
    tracing,
    validation,
)
from service.context import CallContext
from service.deps import Deps
from service.drivers.registry import DriverRegistry

log = logging.getLogger("paylink.jobs")


async def enqueue(
    deps: Deps,
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
    secret_params: bytes | None = None,
    link_token_id: uuid.UUID | None = None,
    link_session_id: uuid.UUID | None = None,
    held: bool = False,
    traceparent: str | None = None,
    request_id: str | None = None,
) -> asyncpg.Record:
    """Queues one job (caller's transaction), sealing its secret parameters; returns the new row.

    A `held` job waits until `queue.release_held` lets it run. The job carries a trace context and
    a request id (by default the current ones): the worker runs it as a child span of that context,
    and its events carry both.
    """
    job_id = ids.new_id()
    params_sealed = (
        deps.vault.seal(secret_params, aad=sealed.JOB_PARAMS.aad(job_id)) if secret_params else None
    )
    row = await queue.enqueue(
        conn,
        job_id=job_id,
        workspace_id=workspace_id,
        account_id=account_id,
        platform_id=platform_id,
        name=name,
        origin=origin,
        batch_id=batch_id,
        api_version=api_version,
        params=params,
        params_sealed=params_sealed,
        link_token_id=link_token_id,
        link_session_id=link_session_id,
        held=held,
        trace=(
            tracing.traceparent() if traceparent is None else traceparent,
            tracing.request_id() if request_id is None else request_id,
        ),
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    # With the RPC's request_id (logs.py adds it): the line that ties a request to its jobs.
    log.info(
        "job created",
        extra={
            "job_id": str(job_id),
            "account_id": str(account_id),
            "job": common_pb2.JobName.Name(common_pb2.JobName.ValueType(name)),
        },
    )
    return row


def to_proto(row: asyncpg.Record, job: job_pb2.Job | None = None) -> job_pb2.Job:
    """The Job of a `jobs` row (`queue.COLUMNS`), set field by field into `job` (a new one by
    default; a list passes its `jobs.add()`, so the message is built where it is sent). Half the
    CPU of building it with keyword arguments and copying it into the list (a 25-job page: ~440 ->
    ~220 µs in-process; bench/NOTES.md, "rpc (session 26)")."""
    if job is None:
        job = job_pb2.Job()
    job.id = str(row["id"])
    job.account_id = str(row["account_id"])
    if row["link_token_id"]:
        job.link_token_id = str(row["link_token_id"])
    if row["link_session_id"]:
        job.link_session_id = str(row["link_session_id"])
    job.name = row["name"]
    job.status = _STATUS[row["status"]]
    job.outcome = row["outcome"]
    job.error_type = row["error_type"]
    job.error_code = row["error_code"]
    job.error_message = row["error_message"]
    job.params.ParseFromString(row["params"])
    job.attempts = row["attempts"]
    job.origin = row["origin"]
    if row["tags"] != "{}":  # jsonb, NOT NULL DEFAULT '{}' (most jobs carry no tags)
        job.tags.update(json.loads(row["tags"]))
    job.scheduled = row["scheduled"]
    timeutil.set_ts(job.created_at, row["created_at"])
    timeutil.set_ts(job.completed_at, row["completed_at"])
    return job


_STATUS = {status.value: status.to_proto() for status in queue.JobStatus}


async def get(deps: Deps, workspace_id: uuid.UUID, job_id: str) -> job_pb2.Job:
    parsed = ids.parse_uuid(job_id)
    row = None
    if parsed is not None:
        row = await deps.pool.fetchrow(
            f"SELECT {queue.COLUMNS} FROM jobs WHERE id = $1 AND workspace_id = $2", parsed, workspace_id
        )
    if row is None:
        raise errors.not_found("job", job_id)
    return to_proto(row)


@dataclasses.dataclass(frozen=True, slots=True)
class _ListQuery:
    account_id: uuid.UUID | None
    link_token_id: uuid.UUID | None
    after: dt.datetime | None
    before: dt.datetime | None


def _list_query(request: job_pb2.ListJobsRequest) -> _ListQuery:
    """The parsed filters of a ListJobs request; INVALID_ARGUMENT naming every bad one."""
    v = errors.Violations()
    account_id = link_token_id = None
    if request.account_id:
        account_id = ids.parse_uuid(request.account_id)
        if account_id is None:
            v.add("account_id", "must be a UUID")
    if request.link_token_id:
        link_token_id = ids.parse_uuid(request.link_token_id)
        if link_token_id is None:
            v.add("link_token_id", "must be a UUID")
    for i, name in enumerate(request.names):
        if name not in validation.JOB_NAMES:
            v.add(f"names[{i}]", "is not a known job name")
    if request.outcome not in common_pb2.JobOutcome.values():
        v.add("outcome", "is not a known outcome")
    if request.origin not in common_pb2.JobOrigin.values():
        v.add("origin", "is not a known origin")
    after = validation.timestamp(v, "created_after", request.created_after, request.HasField("created_after"))
    before = validation.timestamp(
        v, "created_before", request.created_before, request.HasField("created_before")
    )
    if after and before and after >= before:
        v.add("created_before", "must be later than created_after")
    v.raise_if_any()
    return _ListQuery(account_id, link_token_id, after, before)


async def list_page(
    deps: Deps, workspace_id: uuid.UUID, request: job_pb2.ListJobsRequest
) -> job_pb2.ListJobsResponse:
    size = pagination.page_size(request.page_size)
    q = _list_query(request)
    filters = {
        "a": request.account_id,
        "l": request.link_token_id,
        "n": sorted(request.names),
        "o": request.outcome,
        "g": request.origin,
        "ca": str(q.after),
        "cb": str(q.before),
    }
    cursor_ts, cursor_id = pagination.timestamp_cursor(pagination.decode(request.page_token, filters))
    # Only the filters in use go into the SQL: each combination is its own prepared statement with a
    # plan that uses the matching index (jobs_account, jobs_link_token or jobs_list).
    where = ["workspace_id = $1"]
    args: list[object] = [workspace_id]

    def when(condition: str, *values: object) -> None:
        numbers = [f"${len(args) + i + 1}" for i in range(len(values))]
        where.append(condition.format(*numbers))
        args.extend(values)

    for present, condition, values in (
        (q.account_id is not None, "account_id = {0}", (q.account_id,)),
        (q.link_token_id is not None, "link_token_id = {0}", (q.link_token_id,)),
        (bool(request.names), "name = ANY({0}::smallint[])", (list(request.names),)),
        (bool(request.outcome), "outcome = {0}", (request.outcome,)),
        (bool(request.origin), "origin = {0}", (request.origin,)),
        (q.after is not None, "created_at >= {0}", (q.after,)),
        (q.before is not None, "created_at < {0}", (q.before,)),
        (cursor_ts is not None, "(created_at, id) < ({0}, {1})", (cursor_ts, cursor_id)),
    ):
        if present:
            when(condition, *values)
    args.append(size + 1)
    rows = await deps.pool.fetch(
        f"SELECT {queue.COLUMNS} FROM jobs WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    response = job_pb2.ListJobsResponse()
    add = response.jobs.add
    for row in rows[:size]:
        to_proto(row, add())
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = pagination.encode(
            pagination.Cursor(last["created_at"].isoformat(), last["id"]), filters
        )
    return response


async def create_refresh(deps: Deps, call: CallContext, request: job_pb2.CreateJobRequest) -> job_pb2.Job:
    """JobService.CreateJob: a server-side refresh of one data job with stored credentials."""
    v = errors.Violations()
    if request.name not in validation.JOB_NAMES:
        v.add("name", "must be a known job name")
    if request.HasField("paystubs"):
        if request.name != common_pb2.JOB_NAME_PAYSTUBS:
            v.add("paystubs", "is only allowed with JOB_NAME_PAYSTUBS")
        if not 0 <= request.paystubs.count <= 100:
            v.add("paystubs.count", "must be between 0 and 100")
        validation.date_range(
            v,
            "paystubs.from_pay_date",
            request.paystubs.from_pay_date,
            "paystubs.to_pay_date",
            request.paystubs.to_pay_date,
        )
    record_jobs.check_params(v, "", request.name, _params(request))
    v.raise_if_any()
    if request.name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
        raise errors.failed_precondition(
            "USER_REQUIRED", "direct_deposit_switch needs the user: create a link token with account_id"
        )
    platform_id: str | None = None  # the job's, when read here (a replayed response does not say)
    job_id: uuid.UUID | None = None
    if request.request_id:
        job = await idempotency.run_once(
            deps,
            call,
            "CreateJob",
            request,
            request.request_id,
            job_pb2.Job,
            lambda work: _insert_refresh(deps, work.conn, call, request, _one_insert(work.conn)),
        )
    else:  # no key to store: grouped with concurrent CreateJobs, one commit for all (service/job_intake.py)
        job, platform_id, job_id = await _create_grouped(deps, call, request)
    # Committed: wake the workers now, this process's directly or the others by a NOTIFY coalesced with
    # other CreateJobs' (not inside the INSERT, where the NOTIFY would make every CreateJob's commit
    # wait for the one before it).
    deps.intake.wake(deps.pool, platform_id, job_id or uuid.UUID(job.id))
    return job


def _params(request: job_pb2.CreateJobRequest) -> common_pb2.JobParams:
    """The job parameters a CreateJob request carries (paystubs, shifts, tax_forms)."""
    params = common_pb2.JobParams()
    for field in ("paystubs", "shifts", "tax_forms"):
        if request.HasField(field):
            getattr(params, field).CopyFrom(getattr(request, field))
    return params


def _one_insert(conn: db.Conn) -> Callable[[queue.NewRefresh], Awaitable[asyncpg.Record | None]]:
    """Inserts one refresh in `conn`'s transaction (with the request_id's key)."""

    async def insert(refresh: queue.NewRefresh) -> asyncpg.Record | None:
        return (await queue.enqueue_refreshes(conn, [refresh]))[0]

    return insert


async def _insert_refresh(
    deps: Deps,
    conn: db.Executor,
    call: CallContext,
    request: job_pb2.CreateJobRequest,
    insert: Callable[[queue.NewRefresh], Awaitable[asyncpg.Record | None]],
    account: asyncpg.Record | None = None,
) -> job_pb2.Job:
    """`account`: the account row read already (CreateJob's grouped reads), else read here."""
    if account is None:
        account = await accounts.fetch(conn, call.workspace.id, request.account_id)
    platform = deps.drivers.platform(account["platform_id"])
    supported = platform is not None and request.name in platform.supported_jobs
    _refuse(request, "disconnected" if not account["connected"] else None if supported else "not_supported",
            account["platform_id"])  # fmt: skip
    params = _params(request).SerializeToString()
    # One refresh per account and job type in flight: one already queued or running is the answer.
    while True:
        row = await insert(_new_refresh(call, request, account["id"], account["platform_id"], params))
        row = row or await queue.refresh_in_flight(conn, account["id"], request.name)
        if row is not None:  # None: the one in flight finished meanwhile; queue a new one
            break
    return _created(request, row)


async def _create_grouped(
    deps: Deps, call: CallContext, request: job_pb2.CreateJobRequest
) -> tuple[job_pb2.Job, str | None, uuid.UUID]:
    """CreateJob's refresh queued with concurrent CreateJobs' by one statement that also reads and
    checks its account (service/job_intake.py); the job, its platform and id."""
    account_id = ids.parse_uuid(request.account_id)
    if account_id is None:
        raise errors.not_found("account", request.account_id)
    params = _params(request).SerializeToString()
    while True:  # as `_insert_refresh`
        refresh = _new_refresh(call, request, account_id, "", params)
        created = await deps.intake.enqueue(deps.pool, refresh, _supported(deps.drivers))
        _refuse(request, created.refused, created.platform_id)
        row = created.row or await queue.refresh_in_flight(deps.pool, account_id, request.name)
        if row is not None:
            return _created(request, row), created.platform_id, row["id"]


def _new_refresh(
    call: CallContext,
    request: job_pb2.CreateJobRequest,
    account_id: uuid.UUID,
    platform_id: str,
    params: bytes,
) -> queue.NewRefresh:
    return queue.NewRefresh(
        job_id=ids.new_id(),
        batch_id=ids.new_id(),
        workspace_id=call.workspace.id,
        account_id=account_id,
        platform_id=platform_id,
        name=request.name,
        params=params,
        api_version=call.version_label,
        traceparent=tracing.traceparent(),  # the refresh continues this call
        request_id=tracing.request_id(),
    )


def _refuse(request: job_pb2.CreateJobRequest, refused: str | None, platform_id: str | None) -> None:
    """CreateJob's answer to an account that cannot take the refresh (`queue.Created.refused`)."""
    if refused == "not_found":
        raise errors.not_found("account", request.account_id)
    if refused == "disconnected":
        raise errors.failed_precondition(
            "ACCOUNT_DISCONNECTED", f"account {request.account_id} is disconnected"
        )
    if refused is not None:
        raise errors.failed_precondition(
            "JOB_NOT_SUPPORTED",
            f"platform {platform_id} does not support {common_pb2.JobName.Name(request.name)}",
        )


@functools.cache
def _supported(drivers: DriverRegistry) -> list[str]:
    """The 'platform_id:name' pairs the drivers support (`queue.create_refreshes`): built once per
    registry (drivers are registered as the process starts)."""
    return [f"{p.id}:{name}" for p in drivers.platforms() for name in sorted(p.supported_jobs)]


def _created(request: job_pb2.CreateJobRequest, row: asyncpg.Record) -> job_pb2.Job:
    log.info(
        "job created",
        extra={
            "job_id": str(row["id"]),
            "account_id": str(row["account_id"]),
            "job": common_pb2.JobName.Name(request.name),
        },
    )
    return to_proto(row)
