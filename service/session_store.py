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
from service.session_machine import FailureReason, Mfa, Session, State, Terms
from service.vault import Vault

_LOAD = """
SELECT s.*, t.required_jobs, t.allocation_sealed, t.api_version, t.end_user_id, t.options
FROM (SELECT * FROM link_sessions WHERE id = $1 AND workspace_id = $2 {lock}) s
JOIN link_tokens t ON t.id = s.link_token_id
"""
_INSERT = """
INSERT INTO link_sessions (id, workspace_id, link_token_id, state, platform_id, account_id, on_demand)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at, updated_at
"""
# $14/$15: whether to replace the sealed MFA state / chosen allocation (else they are kept).
_SAVE = """
UPDATE link_sessions SET state = $3, platform_id = $4, account_id = $5, failed_attempts = $6, last_error = $7,
  failure_reason = $8, mfa_type = $9, mfa_prompt = $10, mfa_reaccess = $11, login_fingerprint = $12,
  mfa_state_sealed = CASE WHEN $3 <> 'MFA_REQUIRED' THEN NULL WHEN $14 THEN $13 ELSE mfa_state_sealed END,
  chosen_allocation_sealed = CASE WHEN $16 THEN $15 ELSE chosen_allocation_sealed END,
  completed_at = CASE WHEN $3 IN ('COMPLETED', 'FAILED') THEN coalesce(completed_at, now()) END,
  updated_at = now(), version = version + 1
WHERE id = $1 AND version = $2
RETURNING updated_at, completed_at
"""
_COMPLETE = """
UPDATE link_sessions SET state = 'COMPLETED', completed_at = $2, updated_at = $2, version = version + 1
WHERE id = $1
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


def _session(row: asyncpg.Record, token: link_token_pb2.LinkToken) -> Session:
    mfa = None
    if row["state"] == State.MFA_REQUIRED:
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
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
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
    )


async def insert(conn: db.Conn, session: Session) -> Session:
    row = await conn.fetchrow(
        _INSERT,
        session.id,
        session.workspace_id,
        session.link_token_id,
        session.state.value,
        session.platform_id,
        session.account_id,
        session.on_demand,
    )
    assert row is not None
    return dataclasses.replace(session, created_at=row["created_at"], updated_at=row["updated_at"])


async def save(
    conn: db.Conn,
    vault: Vault,
    session: Session,
    *,
    mfa_state: bytes | None = None,
    chosen: common_pb2.Allocation | None = None,
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
    )
    if row is None:
        raise StaleSession(f"link session {session.id} changed since version {session.version}")
    return dataclasses.replace(
        session, version=session.version + 1, updated_at=row["updated_at"], completed_at=row["completed_at"]
    )


async def mark_completed(conn: db.Conn, session_id: uuid.UUID, at: dt.datetime) -> None:
    """Every job of the session has a final outcome (the state machine's `jobs_settled`)."""
    await conn.execute(_COMPLETE, session_id, at)


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


_FAIL_FOR_ERASURE = """
WITH s AS (
  UPDATE link_sessions SET state = 'FAILED', failure_reason = $4, mfa_state_sealed = NULL, updated_at = now(),
    completed_at = coalesce(completed_at, now()), version = version + 1
  WHERE state IN ('CREDENTIALS_REQUIRED', 'MFA_REQUIRED') AND link_token_id IN
    (SELECT id FROM link_tokens WHERE workspace_id = $1 AND (end_user_id = $2 OR bound_account_id = ANY($3::uuid[])))
  RETURNING id)
SELECT count(*) FROM s
"""


async def fail_for_erasure(
    conn: db.Conn, workspace_id: uuid.UUID, end_user_id: str, account_ids: list[uuid.UUID]
) -> str:
    """The end user is being erased: their open sessions fail (END_USER_ERASED, no event: it would
    name them). Returns a command status ("UPDATE n")."""
    n = await conn.fetchval(
        _FAIL_FOR_ERASURE, workspace_id, end_user_id, account_ids, int(FailureReason.END_USER_ERASED)
    )
    return f"UPDATE {n}"


async def scrub(conn: db.Conn, token_ids: list[uuid.UUID], account_ids: list[uuid.UUID]) -> str:
    """Erases what sessions of these tokens or accounts kept about their person; the status."""
    status: str = await conn.execute(
        "UPDATE link_sessions SET mfa_prompt = '', mfa_state_sealed = NULL, chosen_allocation_sealed = NULL,"
        " login_fingerprint = NULL WHERE (link_token_id = ANY($1::uuid[]) OR account_id = ANY($2::uuid[]))"
        " AND (mfa_prompt <> '' OR mfa_state_sealed IS NOT NULL OR chosen_allocation_sealed IS NOT NULL"
        "      OR login_fingerprint IS NOT NULL)",
        token_ids,
        account_ids,
    )
    return status
