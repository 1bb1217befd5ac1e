"""Erasing one end user of a workspace, step by step, resumable after a crash.

An erasure is a persisted plan (`erasures` row). Its steps run one transaction each, and each
transaction also moves the row to the next step, so a process that dies halfway leaves a row that
says exactly what is left; the next `EraseEndUser` call for that user, or the background sweep
(`Sweeper`, in every process that runs the relay), resumes it. Every step is idempotent.

1. fence: the end user's accounts get the erasure's id (the database then refuses to store data,
   credentials or a reconnection for them: migrations/0017_privacy.sql), are disconnected, and
   their credentials are deleted; unused link tokens expire and open Link sessions fail, each with
   its link_session.failed (END_USER_ERASED).
2. wait_for_jobs: while a job of those accounts is queued, running or pending the erasure waits
   (state waiting_for_jobs; a disconnected account's jobs end quickly). Nothing that a job could
   still write is erased before the job is over.
3. data: stored results and paystubs (results.py), shifts and tax forms (records_store.py), documents (documents.py).
4. history: what sessions, link tokens and jobs kept about the person (deposit targets, MFA
   prompts, sealed session state, login fingerprints, job parameters).
5. idempotency: stored responses that name the end user or one of the accounts.
6. finish: accounts marked erased, monitoring status customer_disabled, `end_user.erased` per
   account, state completed.

What stays is the non-personal skeleton: account, job, session and token ids, timestamps, job
outcomes, the outbox (which never carries personal data) and the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from paylink.v1 import event_pb2, privacy_pb2

from service import (
    accounts,
    audit,
    db,
    documents,
    errors,
    idempotency,
    ids,
    link_tokens,
    outbox,
    queue,
    records_store,
    results,
    session_effects,
    session_store,
    timeutil,
    uow,
)
from service.deps import Deps

log = logging.getLogger("paylink.erasure")

MAX_END_USER_ID = 255

STATES = {
    "in_progress": privacy_pb2.ERASURE_STATE_IN_PROGRESS,
    "waiting_for_jobs": privacy_pb2.ERASURE_STATE_WAITING_FOR_JOBS,
    "completed": privacy_pb2.ERASURE_STATE_COMPLETED,
}

# Fault-injection hook for tests (off unless set): the process dies like a SIGKILL right after the
# named step committed.
_FAULT_EXIT_AFTER = os.environ.get("PAYLINK_FAULT_ERASURE_EXIT_AFTER_STEP", "")

_WAIT = object()  # a step's answer: not now, the erasure waits
Counts = dict[str, int]
Step = Callable[[uow.UnitOfWork, asyncpg.Record], Awaitable[Counts | object]]


# --- Steps (each calls the module that owns the table) ----------------------------------------


async def _fence(work: uow.UnitOfWork, plan: asyncpg.Record) -> Counts:
    fenced, credentials = await accounts.fence(
        work.conn, plan["workspace_id"], plan["end_user_id"], plan["id"]
    )
    account_ids = sorted(set(fenced) | set(plan["account_ids"]))
    await work.conn.execute("UPDATE erasures SET account_ids = $2 WHERE id = $1", plan["id"], account_ids)
    tokens = await link_tokens.expire_for_end_user(
        work.conn, plan["workspace_id"], plan["end_user_id"], account_ids
    )
    sessions = await session_store.fail_open(work.conn, tokens)
    for session_id, workspace_id in sessions:  # each announces its end, like every failed session
        stored = await session_store.load(work.conn, workspace_id, str(session_id))
        session_effects.publish_failed(work, stored.session)
    return {
        "accounts": len(account_ids),
        "account_credentials": credentials,
        "link_sessions_failed": len(sessions),
    }


async def _wait_for_jobs(work: uow.UnitOfWork, plan: asyncpg.Record) -> Counts | object:
    return _WAIT if await queue.in_flight(work.conn, plan["account_ids"]) else {}


async def _data(work: uow.UnitOfWork, plan: asyncpg.Record) -> Counts:
    erased = await results.erase(work.conn, plan["account_ids"])
    erased |= await records_store.erase(work.conn, plan["account_ids"])
    return erased | {"documents": await documents.erase(work.conn, plan["account_ids"])}


async def _history(work: uow.UnitOfWork, plan: asyncpg.Record) -> Counts:
    workspace, end_user, account_ids = plan["workspace_id"], plan["end_user_id"], plan["account_ids"]
    token_ids = await link_tokens.expire_for_end_user(work.conn, workspace, end_user, account_ids)
    return {
        "link_tokens": await link_tokens.scrub_for_end_user(work.conn, workspace, end_user, account_ids),
        "link_sessions": await session_store.scrub(work.conn, token_ids, account_ids),
        "jobs": await queue.scrub_params(work.conn, account_ids),
    }


async def _idempotency(work: uow.UnitOfWork, plan: asyncpg.Record) -> Counts:
    erased = await idempotency.erase_mentioning(
        work.conn, work.deps.vault, plan["workspace_id"], plan["end_user_id"], plan["account_ids"]
    )
    return {"idempotency_keys": erased}


async def _finish(work: uow.UnitOfWork, plan: asyncpg.Record) -> Counts:
    at = timeutil.now()
    rows = await accounts.mark_erased(work, plan["account_ids"], at)
    all_ids = [str(a) for a in plan["account_ids"]]
    for account in rows:
        payload = event_pb2.Event(
            end_user_erased=event_pb2.EndUserErasedPayload(
                erasure_id=str(plan["id"]),
                end_user_id=plan["end_user_id"],
                account_id=str(account["id"]),
                account_ids=all_ids,
            )
        )
        timeutil.set_ts(payload.end_user_erased.timestamp, at)
        work.emit(account["workspace_id"], account["id"], outbox.END_USER_ERASED, "", payload, at)
    return {"end_user_erased_events": len(rows)}


STEPS: list[tuple[str, Step]] = [
    ("fence", _fence),
    ("wait_for_jobs", _wait_for_jobs),
    ("data", _data),
    ("history", _history),
    ("idempotency", _idempotency),
    ("finish", _finish),
]


# --- Driving an erasure -----------------------------------------------------------------------


async def advance(deps: Deps, erasure_id: uuid.UUID, *, skip_locked: bool = False) -> None:
    """Runs the erasure's remaining steps, one transaction each, until it completes or must wait."""
    while True:
        async with uow.begin(deps) as work:
            conn = work.conn
            plan = await conn.fetchrow(
                "SELECT * FROM erasures WHERE id = $1 FOR UPDATE" + (" SKIP LOCKED" if skip_locked else ""),
                erasure_id,
            )
            if plan is None or plan["state"] == "completed":
                return
            name, step = STEPS[plan["step"]]
            result = await step(work, plan)
            if result is _WAIT:
                await conn.execute(
                    "UPDATE erasures SET state = 'waiting_for_jobs', updated_at = now() WHERE id = $1",
                    erasure_id,
                )
                return
            assert isinstance(result, dict)
            last = plan["step"] + 1 == len(STEPS)
            await conn.execute(
                "UPDATE erasures SET step = step + 1, state = $2, erased = erased || $3::jsonb,"
                " updated_at = now(), completed_at = CASE WHEN $4 THEN now() END WHERE id = $1",
                erasure_id,
                "completed" if last else "in_progress",
                _json(result),
                last,
            )
        log.info("erasure step done", extra={"erasure_id": str(erasure_id), "step": name, **result})
        if name == _FAULT_EXIT_AFTER:
            os._exit(137)


def _json(counts: Counts) -> str:
    return json.dumps({k: int(v) for k, v in counts.items()})


async def request(deps: Deps, who: audit.Who, end_user_id: str) -> asyncpg.Record:
    """Starts (or resumes, or returns the finished) erasure of an end user, runs it as far as it
    goes now, and returns its row. The request is audited when it starts a new erasure."""
    if not end_user_id.strip() or len(end_user_id) > MAX_END_USER_ID:
        raise errors.invalid_field("end_user_id", f"must be 1 to {MAX_END_USER_ID} characters")
    workspace = who.workspace_id
    async with deps.pool.acquire() as conn, conn.transaction():
        erasure_id = await _current(conn, workspace, end_user_id)
        if erasure_id is None:
            erasure_id = ids.new_id()
            inserted = await conn.fetchval(
                "INSERT INTO erasures (id, workspace_id, end_user_id, state, caller, request_id)"
                " VALUES ($1, $2, $3, 'in_progress', $4, $5) ON CONFLICT DO NOTHING RETURNING id",
                erasure_id,
                workspace,
                end_user_id,
                who.caller,
                who.request_id,
            )
            if inserted is None:  # a concurrent request started it first
                erasure_id = await _current(conn, workspace, end_user_id)
            else:
                await audit.write(
                    conn,
                    audit.Record(
                        who,
                        audit.ERASE,
                        privacy_pb2.AUDIT_RESOURCE_END_USER,
                        end_user_id=end_user_id,
                        erasure_id=erasure_id,
                    ),
                )
    assert erasure_id is not None
    await advance(deps, erasure_id)
    row = await deps.pool.fetchrow("SELECT * FROM erasures WHERE id = $1", erasure_id)
    assert row is not None
    return row


async def _current(conn: db.Conn, workspace_id: uuid.UUID, end_user_id: str) -> uuid.UUID | None:
    """The unfinished erasure of the end user; else the last completed one when nothing of the end
    user appeared since (no account it did not fence, no link token still usable); else None."""
    row = await conn.fetchrow(
        "SELECT id, state FROM erasures WHERE workspace_id = $1 AND end_user_id = $2"
        " ORDER BY (state <> 'completed') DESC, created_at DESC LIMIT 1",
        workspace_id,
        end_user_id,
    )
    if row is None:
        return None
    if row["state"] != "completed":
        return row["id"]  # type: ignore[no-any-return]
    fresh = await accounts.has_unerased(conn, workspace_id, end_user_id) or await link_tokens.has_usable(
        conn, workspace_id, end_user_id
    )
    return None if fresh else row["id"]


async def get(deps: Deps, workspace_id: uuid.UUID, erasure_id: str) -> asyncpg.Record:
    parsed = ids.parse_uuid(erasure_id)
    row = None
    if parsed is not None:
        row = await deps.pool.fetchrow(
            "SELECT * FROM erasures WHERE id = $1 AND workspace_id = $2", parsed, workspace_id
        )
    if row is None:
        raise errors.not_found("erasure", erasure_id)
    return row


def to_proto(row: asyncpg.Record) -> privacy_pb2.Erasure:
    out = privacy_pb2.Erasure(
        id=str(row["id"]),
        end_user_id=row["end_user_id"],
        state=STATES[row["state"]],
        account_ids=[str(a) for a in row["account_ids"]],
    )
    erased = row["erased"]
    for table, count in (json.loads(erased) if isinstance(erased, str) else erased).items():
        out.erased[table] = int(count)
    timeutil.set_ts(out.created_at, row["created_at"])
    timeutil.set_ts(out.completed_at, row["completed_at"])
    return out


class Sweeper:
    """Resumes unfinished erasures (interrupted ones, and those waiting for jobs) every few seconds."""

    def __init__(self, deps: Deps, interval: float) -> None:
        self._deps = deps
        self._interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except db.CONNECTION_LOST as exc:
                log.warning("erasure sweep failed, retrying", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def sweep(self) -> int:
        """Advances every unfinished erasure not being advanced elsewhere; returns how many it saw."""
        rows = await self._deps.pool.fetch(
            "SELECT id FROM erasures WHERE state <> 'completed' ORDER BY updated_at LIMIT 100"
        )
        for row in rows:
            await advance(self._deps, row["id"], skip_locked=True)
        return len(rows)
