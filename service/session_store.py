"""Persistence of Link sessions: the only code that writes `link_sessions` rows.

`load` reads a session with the terms of its token in one round trip and turns it into the state
machine's `Session`; `save` writes a new snapshot with a compare-and-set on `version` (zero rows
means another writer got there first: `StaleSession`). Sealed parts (the MFA state, the chosen
allocation) are written here, under `sealed.SESSION_MFA` / `sealed.SESSION_ALLOCATION`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import asyncpg
from paylink.v1 import common_pb2, link_token_pb2

from service import db, errors, ids, sealed
from service.session_machine import FailureReason, Login, Mfa, Session, State, Terms
from service.vault import Vault

_LOAD = """
SELECT s.*, t.required_jobs, t.allocation_sealed, t.api_version, t.end_user_id, t.options,
       t.traceparent AS token_traceparent, t.request_id AS token_request_id
FROM (SELECT * FROM link_sessions WHERE id = $1 AND workspace_id = $2 {lock}) s
JOIN link_tokens t ON t.id = s.link_token_id
"""
NOTIFY_CHANNEL = "paylink_sessions"  # payload: the session id, at every saved change

_INSERT = f"""
WITH s AS (
  INSERT INTO link_sessions (id, workspace_id, link_token_id, state, platform_id, account_id, on_demand,
    expires_at, login_kind, login_lease_expires_at, login_owner, reaccess_grant_digest)
  VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::interval, $9,
          CASE WHEN $9::text IS NULL THEN NULL ELSE now() + $10::interval END, $11, $12)
  RETURNING id, created_at, updated_at, expires_at)
SELECT created_at, updated_at, expires_at, pg_notify('{NOTIFY_CHANNEL}', id::text) FROM s
"""
# $14/$16: whether to replace the sealed MFA state / chosen allocation (else they are kept). The
# login lease ($17 login kind, $18 lease, $19 owner) is held only while AUTHENTICATING. $20: the keyed
# digest of the grant a re-access started from (machine.Session.reaccess_grant_digest).
_SAVE = f"""
WITH s AS (
  UPDATE link_sessions SET state = $3, platform_id = $4, account_id = $5, failed_attempts = $6, last_error = $7,
    failure_reason = $8, mfa_type = $9, mfa_prompt = $10, mfa_reaccess = $11, login_fingerprint = $12,
    mfa_state_sealed = CASE WHEN $14 THEN $13 WHEN $3 IN ('MFA_REQUIRED', 'AUTHENTICATING') THEN mfa_state_sealed
                       END,
    chosen_allocation_sealed = CASE WHEN $16 THEN $15 ELSE chosen_allocation_sealed END,
    login_kind = $17,
    login_lease_expires_at = CASE WHEN $17::text IS NULL THEN NULL ELSE now() + $18::interval END,
    login_owner = CASE WHEN $17::text IS NULL THEN NULL ELSE $19 END,
    reaccess_grant_digest = $20,
    completed_at = CASE WHEN $3 IN ('COMPLETED', 'FAILED') THEN coalesce(completed_at, now()) END,
    updated_at = now(), version = version + 1
  WHERE id = $1 AND version = $2
  RETURNING id, updated_at, completed_at)
SELECT updated_at, completed_at, pg_notify('{NOTIFY_CHANNEL}', id::text) FROM s
"""
_COMPLETE = f"""
WITH s AS (
  UPDATE link_sessions SET state = 'COMPLETED', completed_at = $2, updated_at = $2, version = version + 1
  WHERE id = $1 RETURNING id)
SELECT pg_notify('{NOTIFY_CHANNEL}', id::text) FROM s
"""
_RENEW_LEASE = """
UPDATE link_sessions SET login_lease_expires_at = now() + $3::interval
WHERE id = $1 AND version = $2 AND state = 'AUTHENTICATING'
"""
# Sessions to end: logins whose process died (lease ran out), and expired sessions waiting for input.
_STALE = """
SELECT id, workspace_id FROM link_sessions
WHERE (state = 'AUTHENTICATING' AND login_lease_expires_at < now())
   OR (state IN ('CREDENTIALS_REQUIRED', 'MFA_REQUIRED', 'CONNECTED') AND expires_at <= now())
LIMIT $1
"""
_LATEST_OF_LINK = """
SELECT id FROM link_sessions WHERE link_token_id = $1 ORDER BY created_at DESC LIMIT 1
"""


class StaleSession(Exception):
    """The session changed since it was loaded (its version moved on)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """A loaded session, with the sealed parts and token facts that only I/O code needs."""

    session: Session
    token: link_token_pb2.LinkToken  # the token as created (masked allocation, options)
    allocation_sealed: bytes | None  # the token's full allocation
    chosen_sealed: bytes | None
    mfa_state_sealed: bytes | None
    # The CreateLinkToken call's trace context and request id: the session's jobs continue them.
    token_traceparent: str = ""
    token_request_id: str = ""
    lease_expires_at: dt.datetime | None = None  # of the login in flight


def _session(row: asyncpg.Record, token: link_token_pb2.LinkToken) -> Session:
    mfa = None
    if row["state"] in (State.MFA_REQUIRED, State.AUTHENTICATING) and row["mfa_type"]:
        mfa = Mfa(row["mfa_type"], row["mfa_prompt"], row["mfa_reaccess"])
    fingerprint = row["login_fingerprint"]
    return Session(
        id=row["id"],
        workspace_id=row["workspace_id"],
        link_token_id=row["link_token_id"],
        terms=Terms(
            required_jobs=tuple(row["required_jobs"]),
            api_version=row["api_version"],
            end_user_id=row["end_user_id"],
            allocation_targets=len(token.allocation.targets),
        ),
        state=State(row["state"]),
        platform_id=row["platform_id"],
        account_id=row["account_id"],
        on_demand=row["on_demand"],
        failed_attempts=row["failed_attempts"],
        last_error=row["last_error"],
        failure_reason=FailureReason(row["failure_reason"]),
        mfa=mfa,
        login_fingerprint=bytes(fingerprint) if fingerprint is not None else None,
        allocation_chosen=row["chosen_allocation_sealed"] is not None,
        login=Login(row["login_kind"]) if row["login_kind"] else None,
        reaccess_grant_digest=_bytes(row["reaccess_grant_digest"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
        expires_at=row["expires_at"],
    )


def _bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


async def load(conn: db.Executor, workspace_id: uuid.UUID, session_id: str, *, lock: bool = False) -> Stored:
    """The session (row-locked with `lock`), or NOT_FOUND (also for another workspace's session)."""
    parsed = ids.parse_uuid(session_id)
    row = None
    if parsed is not None:
        row = await conn.fetchrow(_LOAD.format(lock="FOR UPDATE" if lock else ""), parsed, workspace_id)
    if row is None:
        raise errors.not_found("link_session", session_id)
    token = link_token_pb2.LinkToken.FromString(bytes(row["options"]))
    return Stored(
        session=_session(row, token),
        token=token,
        allocation_sealed=_bytes(row["allocation_sealed"]),
        chosen_sealed=_bytes(row["chosen_allocation_sealed"]),
        mfa_state_sealed=_bytes(row["mfa_state_sealed"]),
        token_traceparent=row["token_traceparent"],
        token_request_id=row["token_request_id"],
        lease_expires_at=row["login_lease_expires_at"],
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """Who runs a login in flight, and for how long before others may end it (renewed meanwhile)."""

    owner: str
    seconds: float

    @property
    def interval(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.seconds)


async def insert(conn: db.Conn, session: Session, ttl: dt.timedelta, lease: Lease) -> Session:
    row = await conn.fetchrow(
        _INSERT,
        session.id,
        session.workspace_id,
        session.link_token_id,
        session.state.value,
        session.platform_id,
        session.account_id,
        session.on_demand,
        ttl,
        session.login.value if session.login else None,
        lease.interval,
        lease.owner,
        session.reaccess_grant_digest,
    )
    assert row is not None
    return dataclasses.replace(
        session, created_at=row["created_at"], updated_at=row["updated_at"], expires_at=row["expires_at"]
    )


async def save(
    conn: db.Conn,
    vault: Vault,
    session: Session,
    *,
    mfa_state: bytes | None = None,
    chosen: common_pb2.Allocation | None = None,
    lease: Lease | None = None,
) -> Session:
    """Writes `session` over the stored version `session.version`; returns it with its new version.

    `mfa_state` (the driver's, while MFA_REQUIRED) and `chosen` are sealed and replace what is kept.
    Raises StaleSession when the stored version moved on.
    """
    mfa = session.mfa or Mfa("", "", False)
    mfa_sealed = vault.seal(mfa_state, aad=sealed.SESSION_MFA.aad(session.id)) if mfa_state else None
    chosen_sealed = (
        vault.seal(chosen.SerializeToString(), aad=sealed.SESSION_ALLOCATION.aad(session.id))
        if chosen
        else None
    )
    row = await conn.fetchrow(
        _SAVE,
        session.id,
        session.version,
        session.state.value,
        session.platform_id,
        session.account_id,
        session.failed_attempts,
        session.last_error,
        int(session.failure_reason),
        mfa.type,
        mfa.prompt,
        mfa.reaccess,
        session.login_fingerprint,
        mfa_sealed,
        mfa_state is not None,
        chosen_sealed,
        chosen is not None,
        session.login.value if session.login else None,
        lease.interval if lease else dt.timedelta(0),
        lease.owner if lease else None,
        session.reaccess_grant_digest,
    )
    if row is None:
        raise StaleSession(f"link session {session.id} changed since version {session.version}")
    return dataclasses.replace(
        session, version=session.version + 1, updated_at=row["updated_at"], completed_at=row["completed_at"]
    )


async def mark_completed(conn: db.Conn, session_id: uuid.UUID, at: dt.datetime) -> None:
    """Every job of the session has a final outcome (the state machine's `jobs_settled`)."""
    await conn.execute(_COMPLETE, session_id, at)


async def renew_lease(conn: db.Executor, session: Session, lease: Lease) -> bool:
    """Extends the login lease of an AUTHENTICATING session still at `session.version`."""
    status: str = await conn.execute(_RENEW_LEASE, session.id, session.version, lease.interval)
    return status.endswith(" 1")


async def stale(conn: db.Executor, limit: int = 100) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(session id, workspace id) of sessions to end: dead logins and expired waits."""
    return [(r["id"], r["workspace_id"]) for r in await conn.fetch(_STALE, limit)]


async def of_token(conn: db.Executor, link_token_id: uuid.UUID) -> uuid.UUID | None:
    """The latest session a token started."""
    found: uuid.UUID | None = await conn.fetchval(_LATEST_OF_LINK, link_token_id)
    return found


def open_mfa_state(vault: Vault, stored: Stored) -> bytes:
    assert stored.mfa_state_sealed is not None  # MFA_REQUIRED always keeps it
    return vault.open(stored.mfa_state_sealed, aad=sealed.SESSION_MFA.aad(stored.session.id))


def offered_allocation(vault: Vault, stored: Stored) -> common_pb2.Allocation | None:
    """The token's full allocation (with account numbers), or None."""
    if stored.allocation_sealed is None:
        return None
    aad = sealed.LINK_TOKEN_ALLOCATION.aad(stored.session.link_token_id)
    return common_pb2.Allocation.FromString(vault.open(stored.allocation_sealed, aad=aad))


def chosen_allocation(vault: Vault, stored: Stored) -> common_pb2.Allocation | None:
    """What the user chose with ChooseAllocation, or None."""
    if stored.chosen_sealed is None:
        return None
    aad = sealed.SESSION_ALLOCATION.aad(stored.session.id)
    return common_pb2.Allocation.FromString(vault.open(stored.chosen_sealed, aad=aad))


async def erase_sealed(conn: db.Conn, workspace_id: uuid.UUID) -> int:
    """Erases the MFA state and chosen allocations of a deleted workspace's sessions."""
    result: str = await conn.execute(
        "UPDATE link_sessions SET mfa_state_sealed = NULL, chosen_allocation_sealed = NULL"
        " WHERE workspace_id = $1 AND (mfa_state_sealed IS NOT NULL OR chosen_allocation_sealed IS NOT NULL)",
        workspace_id,
    )
    return int(result.rsplit(" ", 1)[-1])


# --- Erasure of an end user (service/erasure.py) ---------------------------------------------

_ERASED = f"""
UPDATE link_sessions SET state = '{State.FAILED}', failure_reason = {int(FailureReason.END_USER_ERASED)},
  mfa_state_sealed = NULL, reaccess_grant_digest = NULL, completed_at = coalesce(completed_at, now()),
  updated_at = now(), login_kind = NULL, login_owner = NULL, login_lease_expires_at = NULL, version = version + 1
WHERE state IN ('{State.CREDENTIALS_REQUIRED}', '{State.MFA_REQUIRED}', '{State.CONNECTED}', '{State.AUTHENTICATING}')
  AND link_token_id = ANY($1::uuid[])
RETURNING id, workspace_id
"""
_SCRUB = """
UPDATE link_sessions SET mfa_prompt = '', mfa_state_sealed = NULL, chosen_allocation_sealed = NULL,
  login_fingerprint = NULL, reaccess_grant_digest = NULL, version = version + 1
WHERE (link_token_id = ANY($1::uuid[]) OR account_id = ANY($2::uuid[]))
  AND (mfa_prompt <> '' OR mfa_state_sealed IS NOT NULL OR chosen_allocation_sealed IS NOT NULL
       OR login_fingerprint IS NOT NULL OR reaccess_grant_digest IS NOT NULL)
"""


async def fail_open(conn: db.Executor, token_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Ends the still-open sessions of these tokens, those waiting for the user's allocation choice
    (CONNECTED) too: FAILED, END_USER_ERASED (a concurrent writer's compare-and-set on `version` then
    loses; so does a login in flight, whose late outcome is dropped: it connects nothing). Returns
    the (session id, workspace id) of each; the caller publishes their link_session.failed."""
    return [(r["id"], r["workspace_id"]) for r in await conn.fetch(_ERASED, token_ids)]


async def scrub(conn: db.Executor, token_ids: list[uuid.UUID], account_ids: list[uuid.UUID]) -> int:
    """Erases what sessions kept about the person: MFA prompt and state, chosen allocation, login
    fingerprint. Returns how many sessions changed."""
    status: str = await conn.execute(_SCRUB, token_ids, account_ids)
    return int(status.rsplit(" ", 1)[-1])
