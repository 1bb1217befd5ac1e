"""Erasing one end user of a workspace, step by step, resumable after a crash.

An erasure is a persisted plan (`erasures` row). Its steps run one transaction each, and each
transaction also moves the row to the next step, so a process that dies halfway leaves a row that
says exactly what is left; the next `EraseEndUser` call for that user, or the background sweep
(`Sweeper`, in every process that runs the relay), resumes it. Every step is idempotent.

1. fence: the end user's accounts get the erasure's id (the database then refuses to store data,
   credentials or a reconnection for them: migrations/0017_privacy.sql), are disconnected, and
   their credentials are deleted; unused link tokens expire and open Link sessions fail.
2. wait_for_jobs: while a job of those accounts is queued, running or pending the erasure waits
   (state waiting_for_jobs; a disconnected account's jobs end quickly). Nothing that a job could
   still write is erased before the job is over.
3. data: stored results, paystubs and every other table of personal data (`PERSONAL_TABLES`).
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
from paylink.v1 import event_pb2, link_token_pb2, privacy_pb2

from service import accounts, audit, db, errors, ids, queue, session_store, timeutil, uow
from service.deps import Deps

log = logging.getLogger("paylink.erasure")

END_USER_ERASED = "end_user.erased"
MAX_END_USER_ID = 255

STATES = {
    "in_progress": privacy_pb2.ERASURE_STATE_IN_PROGRESS,
    "waiting_for_jobs": privacy_pb2.ERASURE_STATE_WAITING_FOR_JOBS,
    "completed": privacy_pb2.ERASURE_STATE_COMPLETED,
}

# Tables that hold nothing but an account's personal data: erased whole, by account_id. Deleting a
# `documents` row deletes its bytes in `document_contents` too (ON DELETE CASCADE); a DocumentStore
# outside PostgreSQL would have to delete its objects here as well.
PERSONAL_TABLES: list[str] = ["job_results", "paystubs", "shifts", "tax_forms", "documents"]

# Fault-injection hook for tests (off unless set): the process dies like a SIGKILL right after the
# named step committed.
_FAULT_EXIT_AFTER = os.environ.get("PAYLINK_FAULT_ERASURE_EXIT_AFTER_STEP", "")

_WAIT = object()  # a step's answer: not now, the erasure waits
Counts = dict[str, int]
Step = Callable[[Deps, db.Conn, asyncpg.Record], Awaitable[Counts | object]]


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


# --- Steps ------------------------------------------------------------------------------------


async def _fence(deps: Deps, conn: db.Conn, plan: asyncpg.Record) -> Counts:
    fenced = await conn.fetch(
        "UPDATE accounts SET erasure_id = $3, connected = false, login_fingerprint = NULL"
        " WHERE workspace_id = $1 AND end_user_id = $2 AND (erasure_id IS NULL OR erasure_id = $3)"
        " RETURNING id",
        plan["workspace_id"],
        plan["end_user_id"],
        plan["id"],
    )
    account_ids = sorted({r["id"] for r in fenced} | set(plan["account_ids"]))
    await conn.execute("UPDATE erasures SET account_ids = $2 WHERE id = $1", plan["id"], account_ids)
    credentials = await conn.execute(
        "DELETE FROM account_credentials WHERE account_id = ANY($1::uuid[])", account_ids
    )
    tokens = await conn.execute(
        "UPDATE link_tokens SET expires_at = now() WHERE workspace_id = $1"
        " AND (end_user_id = $2 OR bound_account_id = ANY($3::uuid[])) AND expires_at > now()",
        plan["workspace_id"],
        plan["end_user_id"],
        account_ids,
    )
    sessions = await session_store.fail_for_erasure(
        conn, plan["workspace_id"], plan["end_user_id"], account_ids
    )
    return {
        "accounts": len(account_ids),
        "account_credentials": _count(credentials),
        "link_tokens_expired": _count(tokens),
        "link_sessions_failed": _count(sessions),
    }


async def _wait_for_jobs(deps: Deps, conn: db.Conn, plan: asyncpg.Record) -> Counts | object:
    busy = await queue.in_flight(conn, plan["account_ids"])
    return _WAIT if busy else {}


async def _data(deps: Deps, conn: db.Conn, plan: asyncpg.Record) -> Counts:
    counts = {}
    for table in PERSONAL_TABLES:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE account_id = ANY($1::uuid[])", plan["account_ids"]
        )
        counts[table] = _count(status)
    return counts


async def _history(deps: Deps, conn: db.Conn, plan: asyncpg.Record) -> Counts:
    tokens = await conn.fetch(
        "SELECT id, options FROM link_tokens WHERE workspace_id = $1"
        " AND (end_user_id = $2 OR bound_account_id = ANY($3::uuid[]))",
        plan["workspace_id"],
        plan["end_user_id"],
        plan["account_ids"],
    )
    scrubbed = 0
    for token in tokens:  # the masked deposit target (name, routing, last four) of the options too
        options = link_token_pb2.LinkToken.FromString(bytes(token["options"]))
        options.ClearField("allocation")
        status = await conn.execute(
            "UPDATE link_tokens SET allocation = NULL, allocation_sealed = NULL, options = $2"
            " WHERE id = $1 AND (allocation IS NOT NULL OR allocation_sealed IS NOT NULL OR options <> $2)",
            token["id"],
            options.SerializeToString(deterministic=True),
        )
        scrubbed += _count(status)
    token_ids = [t["id"] for t in tokens]
    sessions = await session_store.scrub(conn, token_ids, plan["account_ids"])
    jobs = await queue.scrub_params(conn, plan["account_ids"])
    return {"link_tokens": scrubbed, "link_sessions": _count(sessions), "jobs": _count(jobs)}


def _mentions(response: bytes, end_user_id: str, account_ids: list[str]) -> bool:
    """True when a serialized response holds the end user's id as a string field, or an account id."""
    if any(a.encode() in response for a in account_ids):
        return True
    value = end_user_id.encode()
    return _varint(len(value)) + value in response


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def _idempotency(deps: Deps, conn: db.Conn, plan: asyncpg.Record) -> Counts:
    """Stored responses are sealed and name no owner: open each of the workspace's (7 days at most)
    and delete those that mention the end user or one of the accounts."""
    account_ids = [str(a) for a in plan["account_ids"]]
    doomed = []
    rows = await conn.fetch(
        "SELECT method, request_id, response FROM idempotency_keys WHERE workspace_id = $1"
        " AND length(response) > 0",
        plan["workspace_id"],
    )
    for row in rows:
        aad = f"idempotency:{plan['workspace_id']}:{row['method']}:{row['request_id']}".encode()
        try:
            response = deps.vault.open(bytes(row["response"]), aad=aad)
        except Exception:  # a key no longer in the ring: nobody can read it; erase to be safe
            response = None
        if response is None or _mentions(response, plan["end_user_id"], account_ids):
            doomed.append((row["method"], row["request_id"]))
    status = await conn.execute(
        "DELETE FROM idempotency_keys WHERE workspace_id = $1 AND (method, request_id) IN"
        " (SELECT * FROM unnest($2::text[], $3::text[]))",
        plan["workspace_id"],
        [m for m, _ in doomed],
        [r for _, r in doomed],
    )
    return {"idempotency_keys": _count(status)}


async def _finish(deps: Deps, conn: db.Conn, plan: asyncpg.Record) -> Counts:
    at = timeutil.now()
    rows = await conn.fetch(
        "UPDATE accounts SET erased_at = coalesce(erased_at, $2) WHERE id = ANY($1::uuid[])"
        " RETURNING id, workspace_id, end_user_id, platform_id, monitoring_status",
        plan["account_ids"],
        at,
    )
    all_ids = [str(a) for a in plan["account_ids"]]
    work = uow.UnitOfWork(deps, conn)  # in the step's transaction: its events go in with it
    for account in rows:
        await accounts.set_monitoring(
            work, account, "customer_disabled", "end_user_erased", api_version="", at=at
        )
        payload = event_pb2.Event(
            end_user_erased=event_pb2.EndUserErasedPayload(
                erasure_id=str(plan["id"]),
                end_user_id=plan["end_user_id"],
                account_id=str(account["id"]),
                account_ids=all_ids,
            )
        )
        timeutil.set_ts(payload.end_user_erased.timestamp, at)
        work.emit(account["workspace_id"], account["id"], END_USER_ERASED, "", payload, at)
    await work.flush()
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
        async with deps.pool.acquire() as conn, conn.transaction():
            plan = await conn.fetchrow(
                "SELECT * FROM erasures WHERE id = $1 FOR UPDATE" + (" SKIP LOCKED" if skip_locked else ""),
                erasure_id,
            )
            if plan is None or plan["state"] == "completed":
                return
            name, step = STEPS[plan["step"]]
            result = await step(deps, conn, plan)
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
    fresh = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE workspace_id = $1 AND end_user_id = $2"
        "  AND erasure_id IS NULL)"
        " OR EXISTS (SELECT 1 FROM link_tokens WHERE workspace_id = $1 AND end_user_id = $2"
        "  AND expires_at > now())",
        workspace_id,
        end_user_id,
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
