"""What a job's outcome means: its new status (written by the queue), stored data, monitoring
status, events and settlement.

Outcomes are applied many to a unit of work (`apply_many`, fed by service/completer.py), which
first locks the jobs and their account rows, at most one job per account, and writes the jobs' new
statuses in the same statement (each known from its outcome alone: `completion`). That lock orders the
account's events (see outbox) and serializes the jobs of one batch, so exactly one transaction sees
the batch settled and publishes link_session.completed. Each outcome is applied in its job's own
context (trace, request id, log fields), so its events and log lines carry them as when one job
was one transaction.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import types
import uuid
from collections.abc import Coroutine, Generator, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message
from paylink.v1 import common_pb2, event_pb2

from service import (
    accounts,
    grants,
    outbox,
    queue,
    record_jobs,
    results,
    session_store,
    settlement,
    timeutil,
    uow,
)
from service.deps import Deps
from service.drivers.base import FetchedPaystub
from service.monitoring import outcomes as monitoring
from service.queue import JobStatus, LockedJob

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

_ALLOCATIONS = common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS

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
    records: record_jobs.Records | None = None  # shifts, tax_forms, documents
    new_grant: grants.NewGrant | None = None  # a refresh re-accessed the account (grants.replace)


@dataclasses.dataclass(slots=True)
class Pending:
    retry_after: dt.timedelta
    new_grant: grants.NewGrant | None = None


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
    transient: bool = False  # a passing failure that ran out of retries (monitoring counts these)


Outcome = Success | Pending | Retry | Failure


@dataclasses.dataclass(slots=True)
class _Writes:
    """What a batch of outcomes writes with one statement each, after every outcome was applied."""

    new_grants: list[grants.NewGrant] = dataclasses.field(default_factory=list)
    stored: dict[uuid.UUID, results.Stored] = dataclasses.field(default_factory=dict)  # by job id

    async def store_results(
        self, work: uow.UnitOfWork, applied: list[tuple[LockedJob, Outcome, dt.datetime]]
    ) -> None:
        """The data the batch's successes return, sealed and compared in one statement before the
        outcomes are applied (each needs to know what changed: its event says so)."""
        items: dict[uuid.UUID, tuple[uuid.UUID, int, Message, dt.datetime]] = {}
        for job, outcome, at in applied:
            if not isinstance(outcome, Success) or outcome.data is None or outcome.records is not None:
                continue
            if job.name == common_pb2.JOB_NAME_PAYSTUBS:
                continue
            # The switch changes the allocations: they are what it stores.
            name = _ALLOCATIONS if job.name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH else job.name
            items[job.id] = (job.account_id, name, outcome.data, at)
        stored = await results.store_many(work.conn, work.deps.vault, list(items.values()))
        self.stored = dict(zip(items, stored, strict=True))

    async def write(self, work: uow.UnitOfWork) -> None:
        # Each only if the stored grant is still the one its job was claimed with: a newer one
        # (re-link, sandbox control) is kept, and the job stays a success with the data it fetched.
        await grants.replace(work.deps, work.conn, self.new_grants)


# The batch's transaction runs its statements on cached generic plans that reach every table by key
# (one array element per job: custom plans were made again on every batch; service/queue.py BATCH_PLANS).
GENERIC_PLANS = queue.BATCH_PLANS


async def apply(deps: Deps, job_id: uuid.UUID, worker_id: str, outcome: Outcome) -> bool:
    """Writes the outcome if this worker still holds the job; False when its lease was lost."""
    return (await apply_many(deps, worker_id, [(job_id, outcome, contextvars.copy_context())]))[0]


async def apply_many(
    deps: Deps, worker_id: str, outcomes: Sequence[tuple[uuid.UUID, Outcome, contextvars.Context]]
) -> list[bool]:
    """Writes the outcomes of many jobs in one transaction: one commit, and one wake-up for the relay
    and the workers. Each job's events are written with its change, under its account's row lock;
    each outcome is applied in the context given with it (the job's: trace, request id, log fields).

    At most one job per account: the caller (service.completer) keeps an account's later outcomes for
    the next batch, so each outcome sees its account as the one before left it, in order. Returns,
    per outcome, whether it was written (False: the lease was lost). A crash before COMMIT writes
    none of them: the jobs stay `running` and are rescued when their leases run out.
    """
    assert len({job_id for job_id, _, _ in outcomes}) == len(outcomes)
    written: list[bool] = []
    async with uow.begin(deps, settings=GENERIC_PLANS) as work:
        # Each job's new status is known from its outcome: written with the locks, for the jobs held.
        at = {job_id: timeutil.now() for job_id, _, _ in outcomes}
        completions = [completion(job_id, outcome, at[job_id]) for job_id, outcome, _ in outcomes]
        locked = await queue.lock_for_outcomes(
            work.conn, [job_id for job_id, _, _ in outcomes], worker_id, completions
        )
        assert len({job.account_id for job in locked.values()}) == len(locked), "one job per account"
        writes = _Writes()
        await writes.store_results(work, [(locked[j], o, at[j]) for j, o, _ in outcomes if j in locked])
        for job_id, outcome, context in outcomes:
            job = locked.get(job_id)
            written.append(job is not None)
            if job is not None:
                work.account_locked(job.workspace_id, job.account_id, job.event_sequence, job.tags)
                await in_context(_apply(work, job, outcome, writes, at[job_id]), context)
        await writes.write(work)
    return written


_T = TypeVar("_T")


@types.coroutine
def _suspend(yielded: Any) -> Generator[Any, Any, Any]:
    """Passes what a coroutine yields (a future it waits for) up to the running task, and the
    task's answer back down."""
    return (yield yielded)


async def in_context(coro: Coroutine[Any, Any, _T], context: contextvars.Context) -> _T:
    """Runs `coro` to its end with each of its steps in `context`, as a task created with that
    context would, without one: an outcome applied without waiting for the database (most of them)
    costs one call, not a task and a loop iteration. Exceptions and cancellation reach `coro` as
    they would reach a task's coroutine (tests/unit/test_in_context.py)."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = context.run(coro.send, value) if error is None else context.run(coro.throw, error)
            except StopIteration as stop:
                result: _T = stop.value
                return result
            value, error = None, None
            try:
                value = await _suspend(step)
            except BaseException as exc:  # every exception goes to coro, as a task's would
                error = exc
    finally:
        coro.close()  # a no-op once it returned or raised; frees it if this coroutine was closed


def completion(job_id: uuid.UUID, outcome: Outcome, at: dt.datetime) -> queue.Completion:
    """The job's new status after `outcome` at `at` (queue.lock_for_outcomes writes it)."""
    if isinstance(outcome, Retry):
        error_type = ERROR_TYPES.get(outcome.error_code, common_pb2.JOB_ERROR_TYPE_SYSTEM)
        run_at = at + outcome.delay
        return queue.Completion(
            job_id, JobStatus.QUEUED, at, run_at, 0, error_type, outcome.error_code, outcome.message
        )
    if isinstance(outcome, Pending):
        run_at = at + outcome.retry_after
        return queue.Completion(job_id, JobStatus.PENDING, at, run_at, common_pb2.JOB_OUTCOME_PENDING)
    if isinstance(outcome, Success):
        return queue.Completion(job_id, JobStatus.SUCCESS, at, outcome=common_pb2.JOB_OUTCOME_SUCCESS)
    code, message = outcome.error_code, outcome.message[:500]
    error_type = outcome.error_type or ERROR_TYPES.get(code, common_pb2.JOB_ERROR_TYPE_SYSTEM)
    return queue.Completion(
        job_id, JobStatus.ERROR, at, None, common_pb2.JOB_OUTCOME_ERROR, error_type, code, message
    )


def _account(job: LockedJob) -> dict[str, object]:
    """The account fields that monitoring changes need (read under the job's lock)."""
    return {"id": job.account_id, "workspace_id": job.workspace_id, "end_user_id": job.end_user_id}


async def _apply(
    work: uow.UnitOfWork, job: LockedJob, outcome: Outcome, writes: _Writes, at: dt.datetime
) -> None:
    """Applies one outcome (its job's status is written already: `completion`); its grant goes to
    `writes` (written for the whole batch)."""
    if isinstance(outcome, Retry):
        return
    if isinstance(outcome, (Success, Pending)) and outcome.new_grant:
        writes.new_grants.append(outcome.new_grant)
    if isinstance(outcome, Pending):
        if job.pending_since is None:  # the first report only
            _job_event(work, job, at, common_pb2.JOB_OUTCOME_PENDING)
        return
    if isinstance(outcome, Success):
        await _succeeded(work, job, outcome, at, writes)
        final = queue.BatchJob(job.id, job.name, JobStatus.SUCCESS, common_pb2.JOB_OUTCOME_SUCCESS)
    else:
        final = await _failed(work, job, outcome, at)
    if job.name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
        await queue.release_held(work.conn, job.batch_id)
    await _settle(work, job, at, final)


async def _succeeded(
    work: uow.UnitOfWork, job: LockedJob, outcome: Success, at: dt.datetime, writes: _Writes
) -> None:
    stored = await _store_data(work, job, outcome, at, writes)
    if job.origin == common_pb2.JOB_ORIGIN_REFRESH:
        # A refresh says what changed; a scheduled one whose data did not change publishes nothing
        # (only refreshed_at moved). The status machine takes the outcome.
        change = monitoring.change(job, stored, outcome.data, at) if stored else None
        if change is not None or not job.scheduled:
            _job_event(work, job, at, common_pb2.JOB_OUTCOME_SUCCESS, change=change)
        await monitoring.after_refresh(work, job, at, ok=True)
        return
    _job_event(work, job, at, common_pb2.JOB_OUTCOME_SUCCESS)
    # The platform answered. (Only a refresh re-accesses, above: a grant another job's call renewed,
    # like the sandbox's switch, says nothing about a login the user must redo.)
    if job.monitoring_status == "degraded":
        await accounts.set_monitoring(
            work, _account(job), "active", "reaccess_succeeded", api_version=job.api_version, at=at
        )


async def _failed(work: uow.UnitOfWork, job: LockedJob, outcome: Failure, at: dt.datetime) -> queue.BatchJob:
    error_type = outcome.error_type or ERROR_TYPES.get(outcome.error_code, common_pb2.JOB_ERROR_TYPE_SYSTEM)
    message = outcome.message[:500]
    _job_event(
        work,
        job,
        at,
        common_pb2.JOB_OUTCOME_ERROR,
        error_type=error_type,
        error_code=outcome.error_code,
        error_message=message,
    )
    follow = _MONITORING_AFTER_ERROR.get(outcome.error_code)
    if job.origin == common_pb2.JOB_ORIGIN_REFRESH:
        ok = outcome.error_code == common_pb2.JOB_ERROR_CODE_NO_DATA  # reached the platform fine
        await monitoring.after_refresh(
            work, job, at, ok=ok, error_code=outcome.error_code, transient=outcome.transient
        )
    elif follow and job.connected and follow[0] == "degraded":
        await accounts.set_monitoring(
            work, _account(job), follow[0], follow[1], api_version=job.api_version, at=at
        )
    return queue.BatchJob(
        job.id, job.name, JobStatus.ERROR, common_pb2.JOB_OUTCOME_ERROR, error_type, outcome.error_code
    )


async def _store_data(
    work: uow.UnitOfWork, job: LockedJob, outcome: Success, at: dt.datetime, writes: _Writes
) -> results.Stored | None:
    if job.name == common_pb2.JOB_NAME_PAYSTUBS:
        return await results.store_paystubs(
            work.conn, work.deps.vault, job.account_id, outcome.paystubs or [], at
        )
    if outcome.records is not None:
        await record_jobs.store(
            work.conn, work.deps.vault, work.deps.documents, job.account_id, outcome.records, at
        )
        return None
    if outcome.data is None:
        return None
    stored = writes.stored[job.id]  # stored with the batch's other data (`_Writes.store_results`)
    if job.name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
        # The switch changed the allocations (stored as such): publish them too.
        _job_event(work, job, at, common_pb2.JOB_OUTCOME_SUCCESS, name=_ALLOCATIONS)
        return None
    return stored


def _job_event(
    work: uow.UnitOfWork,
    job: LockedJob,
    at: dt.datetime,
    outcome: int,
    *,
    error_type: int = 0,
    error_code: int = 0,
    error_message: str = "",
    name: int | None = None,
    change: event_pb2.DataChange | None = None,
) -> None:
    job_name: int = name or job.name
    # Built in place in its Event (a payload passed to Event(job=...) would be copied into it).
    event = event_pb2.Event()
    payload = event.job
    payload.job_id = str(job.id)
    payload.account_id = str(job.account_id)
    payload.end_user_id = job.end_user_id
    if job.link_token_id:
        payload.link_token_id = str(job.link_token_id)
    payload.platform_id = job.platform_id
    payload.name = job_name  # type: ignore[assignment]
    payload.outcome = outcome  # type: ignore[assignment]
    payload.error_type = error_type  # type: ignore[assignment]
    payload.error_code = error_code  # type: ignore[assignment]
    payload.error_message = error_message
    payload.params.SetInParent()  # present even when empty, as before
    payload.params.MergeFromString(job.params)  # parsed in place
    payload.origin = job.origin  # type: ignore[assignment]
    if job.link_session_id:
        payload.link_session_id = str(job.link_session_id)
    if change is not None:
        payload.change.CopyFrom(change)
    timeutil.set_ts(payload.timestamp, at)
    work.emit(job.workspace_id, job.account_id, outbox.JOB_EVENTS[job_name], job.api_version, event, at)


async def _settle(work: uow.UnitOfWork, job: LockedJob, at: dt.datetime, final: queue.BatchJob) -> None:
    """When this was the batch's last job: link_session.completed, and the session completes.

    A scheduled refresh has no caller waiting for "everything is in": it publishes none."""
    if job.scheduled:
        return
    if job.origin == common_pb2.JOB_ORIGIN_REFRESH:
        batch = [final]  # a server-side refresh is a batch of one: this job, just finished
    else:
        # This job's new status is written with the batch's completions, after this: use `final`.
        batch = [final if j.id == job.id else j for j in await queue.batch(work.conn, job.batch_id)]
        if not all(j.status.final for j in batch):
            return
    if job.link_session_id is not None:
        await session_store.mark_completed(work.conn, job.link_session_id, at)
    settlement.publish(
        work,
        settlement.Settlement(
            workspace_id=job.workspace_id,
            account_id=job.account_id,
            end_user_id=job.end_user_id,
            session_id=job.link_session_id,
            link_token_id=job.link_token_id,
            origin=job.origin,
            api_version=job.api_version,
            jobs=batch,
            at=at,
        ),
    )
