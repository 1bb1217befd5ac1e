"""Link sessions: the state machine of SPEC §3.

CREDENTIALS_REQUIRED -> (MFA_REQUIRED) -> CONNECTED -> JOBS_RUNNING -> COMPLETED, or FAILED.
Every call that changes a session runs in one transaction holding the session row lock
(SELECT ... FOR UPDATE), across the platform call too: concurrent calls on one session are
serialized, so one login creates one account and one set of jobs. A bound (On Demand Updates)
session re-accesses its account with the stored grant first and keeps the same account id even
when the user has to type credentials again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import asyncpg
from paylink.v1 import common_pb2, event_pb2, link_pb2, link_token_pb2

from service import accounts, db, errors, ids, jobs, link_tokens, outbox, timeutil, validation
from service.deps import Deps
from service.drivers import base
from service.job_outcomes import publish_settled

STATES = {name: value for name, value in link_pb2.LinkSessionState.items()}

_SESSION = """
SELECT s.*, t.required_jobs, t.allocation_sealed, t.api_version, t.end_user_id, t.options
FROM (SELECT * FROM link_sessions WHERE id = $1 AND workspace_id = $2 {lock}) s
JOIN link_tokens t ON t.id = s.link_token_id
"""


def _state(name: str) -> int:
    return STATES["LINK_SESSION_STATE_" + name]


def mfa_aad(session_id: uuid.UUID) -> bytes:
    return b"session-mfa:" + str(session_id).encode()


def choice_aad(session_id: uuid.UUID) -> bytes:
    return b"session-allocation:" + str(session_id).encode()


async def _load(
    conn: db.Executor, workspace_id: uuid.UUID, session_id: str, *, lock: bool = False
) -> asyncpg.Record:
    parsed = ids.parse_uuid(session_id)
    row = None
    if parsed is not None:
        row = await conn.fetchrow(_SESSION.format(lock="FOR UPDATE" if lock else ""), parsed, workspace_id)
    if row is None:
        raise errors.not_found("link_session", session_id)
    return row


def _token(row: asyncpg.Record) -> link_token_pb2.LinkToken:
    return link_token_pb2.LinkToken.FromString(bytes(row["options"]))


def _choice_required(row: asyncpg.Record) -> bool:
    token = _token(row)
    return (
        common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH in token.required_jobs
        and len(token.allocation.targets) > 1
        and row["chosen_allocation_sealed"] is None
    )


async def to_proto(conn: db.Executor, row: asyncpg.Record) -> link_pb2.LinkSession:
    fields: dict[str, Any] = dict(
        id=str(row["id"]),
        link_token_id=str(row["link_token_id"]),
        state=_state(row["state"]),
        required_jobs=list(row["required_jobs"]),
        account_id=str(row["account_id"]) if row["account_id"] else "",
        platform_id=row["platform_id"],
        last_error=row["last_error"],
        failed_attempts=row["failed_attempts"],
        failure_reason=row["failure_reason"],
        on_demand_update=row["on_demand"],
        allocation_choice_required=_choice_required(row)
        and row["state"] in ("CREDENTIALS_REQUIRED", "MFA_REQUIRED", "CONNECTED"),
    )
    session = link_pb2.LinkSession(**fields)
    if row["state"] == "MFA_REQUIRED":
        session.mfa.CopyFrom(link_pb2.MfaChallenge(type=row["mfa_type"], prompt=row["mfa_prompt"]))
    timeutil.set_ts(session.created_at, row["created_at"])
    timeutil.set_ts(session.updated_at, row["updated_at"])
    for job in await conn.fetch(
        "SELECT id, name, status, outcome FROM jobs WHERE link_session_id = $1 ORDER BY created_at, id",
        row["id"],
    ):
        session.jobs.append(
            link_pb2.SessionJob(
                **{
                    "job_id": str(job["id"]),
                    "name": job["name"],
                    "status": jobs.STATUS[job["status"]],
                    "outcome": job["outcome"],
                }
            )
        )
    return session


async def get(deps: Deps, workspace_id: uuid.UUID, session_id: str) -> link_pb2.LinkSession:
    async with deps.pool.acquire() as conn:
        return await to_proto(conn, await _load(conn, workspace_id, session_id))


async def start(deps: Deps, workspace_id: uuid.UUID, token: str) -> link_pb2.LinkSession:
    if not token:
        raise errors.invalid_field("token", "is required")
    if len(token) > 200:
        raise errors.not_found("link_token", "(token)")
    async with deps.pool.acquire() as conn:
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT id, expires_at, used_at, bound_account_id, platform_id FROM link_tokens"
                " WHERE token_hash = $1 AND workspace_id = $2 FOR UPDATE",
                ids.sha256(token),
                workspace_id,
            )
            if row is None:
                raise errors.not_found("link_token", "(token)")
            if row["used_at"] is not None:
                raise errors.failed_precondition(
                    "LINK_TOKEN_USED", "this link token already started a session"
                )
            if row["expires_at"] <= timeutil.now():
                raise errors.failed_precondition("LINK_TOKEN_EXPIRED", "this link token has expired")
            session_id = ids.new_id()
            platform_id = row["platform_id"]
            bound = row["bound_account_id"]
            if bound is not None:
                platform_id = await conn.fetchval("SELECT platform_id FROM accounts WHERE id = $1", bound)
            await conn.execute("UPDATE link_tokens SET used_at = now() WHERE id = $1", row["id"])
            await conn.execute(
                "INSERT INTO link_sessions (id, workspace_id, link_token_id, state, platform_id, account_id,"
                " on_demand) VALUES ($1, $2, $3, 'CREDENTIALS_REQUIRED', $4, $5, $6)",
                session_id,
                workspace_id,
                row["id"],
                platform_id,
                bound,
                bound is not None,
            )
        if bound is not None:
            async with conn.transaction():  # reply read before commit: see submit_credentials
                await _reaccess(deps, conn, workspace_id, session_id)
                return await to_proto(conn, await _load(conn, workspace_id, str(session_id)))
        return await to_proto(conn, await _load(conn, workspace_id, str(session_id)))


async def _reaccess(deps: Deps, conn: db.Conn, workspace_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Bound session: log in with the stored grant. No grant, or a dead one: ask for credentials."""
    async with conn.transaction():
        row = await _load(conn, workspace_id, str(session_id), lock=True)
        grant = await accounts.load_grant(deps, conn, row["account_id"])
        if grant is None:
            return
        driver = deps.drivers.driver_for(row["platform_id"])
        try:
            result = await driver.reaccess(
                str(row["account_id"]), row["platform_id"], base.AccessGrant(grant)
            )
        except base.PlatformError as exc:
            if exc.code == common_pb2.JOB_ERROR_CODE_INVALID_CREDENTIALS:
                account = await accounts.fetch(conn, workspace_id, str(row["account_id"]), lock=True)
                await accounts.set_monitoring(
                    conn,
                    account,
                    "user_action_required",
                    "credentials_expired",
                    topic_prefix=deps.settings.topic_prefix,
                    api_version=row["api_version"],
                )
            await _login_failed(deps, conn, row, exc, count_attempt=False)
            return
        await _login_result(deps, conn, row, result, reaccess=True)


async def submit_credentials(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.SubmitCredentialsRequest
) -> link_pb2.LinkSession:
    v = errors.Violations()
    if not request.session_id:
        v.add("session_id", "is required")
    if not 1 <= len(request.username) <= 255:
        v.add("username", "must be 1 to 255 characters")
    if not 1 <= len(request.password) <= 255:
        v.add("password", "must be 1 to 255 characters")
    v.raise_if_any()
    async with deps.pool.acquire() as conn:
        async with conn.transaction():
            row = await _load(conn, workspace_id, request.session_id, lock=True)
            _expect(row, "CREDENTIALS_REQUIRED")
            platform_id = (
                row["platform_id"] if row["on_demand"] else (request.platform_id or row["platform_id"])
            )
            if row["on_demand"] and request.platform_id and request.platform_id != row["platform_id"]:
                raise errors.invalid_field("platform_id", "a bound session logs in to its account's platform")
            platform = deps.drivers.platform(platform_id) if platform_id else None
            if platform is None:
                raise errors.invalid_field("platform_id", "is required and must be a known platform")
            if not set(row["required_jobs"]) <= platform.supported_jobs:
                raise errors.invalid_field("platform_id", "does not support every required job")
            if platform_id != row["platform_id"]:
                await conn.execute(
                    "UPDATE link_sessions SET platform_id = $2 WHERE id = $1", row["id"], platform_id
                )
                row = await _load(conn, workspace_id, request.session_id, lock=True)
            fingerprint = login_fingerprint(platform_id, request.username)
            if row["on_demand"]:
                await _check_same_login(conn, row, fingerprint)
            await conn.execute(
                "UPDATE link_sessions SET login_fingerprint = $2 WHERE id = $1", row["id"], fingerprint
            )
            row = await _load(conn, workspace_id, request.session_id, lock=True)
            driver = deps.drivers.driver_for(platform_id)
            try:
                result = await driver.login(platform_id, base.Credentials(request.username, request.password))
            except base.PlatformError as exc:
                await _login_failed(deps, conn, row, exc)
            else:
                await _login_result(deps, conn, row, result, reaccess=False)
            # Read before commit: the reply shows the state this call produced (JOBS_RUNNING), not a
            # later one that a fast worker already moved the session to.
            reply = await to_proto(conn, await _load(conn, workspace_id, request.session_id))
        return reply


async def submit_mfa(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.SubmitMfaRequest
) -> link_pb2.LinkSession:
    v = errors.Violations()
    if not request.session_id:
        v.add("session_id", "is required")
    if not 1 <= len(request.answer) <= 255:
        v.add("answer", "must be 1 to 255 characters")
    v.raise_if_any()
    async with deps.pool.acquire() as conn:
        async with conn.transaction():
            row = await _load(conn, workspace_id, request.session_id, lock=True)
            _expect(row, "MFA_REQUIRED")
            state = deps.vault.open(bytes(row["mfa_state_sealed"]), aad=mfa_aad(row["id"]))
            driver = deps.drivers.driver_for(row["platform_id"])
            try:
                result = await driver.answer_mfa(row["platform_id"], state, request.answer)
            except base.PlatformError as exc:
                await _login_failed(deps, conn, row, exc)
            else:
                await _login_result(deps, conn, row, result, reaccess=row["mfa_reaccess"])
            # Before commit: see submit_credentials.
            reply = await to_proto(conn, await _load(conn, workspace_id, request.session_id))
        return reply


async def choose_allocation(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.ChooseAllocationRequest
) -> link_pb2.LinkSession:
    async with deps.pool.acquire() as conn:
        async with conn.transaction():
            row = await _load(conn, workspace_id, request.session_id, lock=True)
            token = _token(row)
            if row["allocation_sealed"] is None or not token.allocation.targets:
                raise errors.failed_precondition(
                    "NO_ALLOCATION", "the link token offers no allocation to choose"
                )
            if row["state"] not in ("CREDENTIALS_REQUIRED", "MFA_REQUIRED", "CONNECTED"):
                raise errors.failed_precondition(
                    "SESSION_STATE",
                    f"allocation can no longer be chosen in state {row['state']}",
                    state=row["state"],
                )
            alloc = common_pb2.Allocation.FromString(
                deps.vault.open(
                    bytes(row["allocation_sealed"]), aad=link_tokens.allocation_aad(row["link_token_id"])
                )
            )
            v = errors.Violations()
            if not 0 <= request.target_index < len(alloc.targets):
                v.add("target_index", f"must be between 0 and {len(alloc.targets) - 1}")
            kind = request.type or alloc.type
            if kind not in (common_pb2.ALLOCATION_TYPE_AMOUNT, common_pb2.ALLOCATION_TYPE_PERCENTAGE):
                v.add("type", "must be AMOUNT or PERCENTAGE")
            if (
                request.type
                and request.type != alloc.type
                and (alloc.HasField("min_value") or alloc.HasField("max_value"))
            ):
                v.add("type", "must match the token's allocation type when it sets min/max")
            value = request.value or alloc.value
            low = alloc.min_value if alloc.HasField("min_value") else None
            high = alloc.max_value if alloc.HasField("max_value") else None
            if value <= 0 or (kind == common_pb2.ALLOCATION_TYPE_PERCENTAGE and value > 100):
                v.add("value", "is out of range for the type")
            if request.value and request.value != alloc.value and low is None and high is None:
                v.add("value", "the token does not allow another value")
            if (low is not None and value < low) or (high is not None and value > high):
                v.add(
                    "value",
                    f"must be between {low if low is not None else 1} and {high if high is not None else value}",
                )
            v.raise_if_any()
            choice = common_pb2.Allocation(
                type=kind, value=value, targets=[alloc.targets[request.target_index]]
            )
            await conn.execute(
                "UPDATE link_sessions SET chosen_allocation_sealed = $2, updated_at = now() WHERE id = $1",
                row["id"],
                deps.vault.seal(choice.SerializeToString(), aad=choice_aad(row["id"])),
            )
            row = await _load(conn, workspace_id, request.session_id, lock=True)
            if row["state"] == "CONNECTED":
                await _create_jobs(deps, conn, row)
            # Before commit: see submit_credentials.
            reply = await to_proto(conn, await _load(conn, workspace_id, request.session_id))
        return reply


def _expect(row: asyncpg.Record, state: str) -> None:
    if row["state"] != state:
        raise errors.failed_precondition(
            "SESSION_STATE", f"the session is {row['state']}, not {state}", state=row["state"]
        )


async def _login_failed(
    deps: Deps, conn: db.Conn, row: asyncpg.Record, exc: base.PlatformError, *, count_attempt: bool = True
) -> None:
    code = exc.code
    if code == common_pb2.JOB_ERROR_CODE_ACCOUNT_LOCKED:
        await _fail(conn, row, link_pb2.LINK_SESSION_FAILURE_REASON_ACCOUNT_LOCKED, code)
        return
    counts = count_attempt and code in (
        common_pb2.JOB_ERROR_CODE_INVALID_CREDENTIALS,
        common_pb2.JOB_ERROR_CODE_MFA_FAILED,
    )
    attempts = row["failed_attempts"] + (1 if counts else 0)
    if attempts >= deps.settings.max_login_attempts:
        await _fail(conn, row, link_pb2.LINK_SESSION_FAILURE_REASON_TOO_MANY_ATTEMPTS, code, attempts)
        return
    # Wrong MFA answer: stay on the same challenge. Anything else: ask for credentials (again).
    state = "MFA_REQUIRED" if code == common_pb2.JOB_ERROR_CODE_MFA_FAILED else "CREDENTIALS_REQUIRED"
    await conn.execute(
        "UPDATE link_sessions SET state = $2, failed_attempts = $3, last_error = $4, updated_at = now(),"
        " mfa_state_sealed = CASE WHEN $2 = 'MFA_REQUIRED' THEN mfa_state_sealed END WHERE id = $1",
        row["id"],
        state,
        attempts,
        code,
    )


async def _fail(
    conn: db.Conn, row: asyncpg.Record, reason: int, code: int, attempts: int | None = None
) -> None:
    await conn.execute(
        "UPDATE link_sessions SET state = 'FAILED', failure_reason = $2, last_error = $3,"
        " failed_attempts = coalesce($4, failed_attempts), mfa_state_sealed = NULL, updated_at = now(),"
        " completed_at = now() WHERE id = $1",
        row["id"],
        reason,
        code,
        attempts,
    )


async def _login_result(
    deps: Deps, conn: db.Conn, row: asyncpg.Record, result: base.LoginResult, *, reaccess: bool
) -> None:
    if isinstance(result, base.MfaChallenge):
        await conn.execute(
            "UPDATE link_sessions SET state = 'MFA_REQUIRED', mfa_type = $2, mfa_prompt = $3,"
            " mfa_state_sealed = $4, mfa_reaccess = $5, updated_at = now() WHERE id = $1",
            row["id"],
            result.type,
            result.prompt,
            deps.vault.seal(result.state, aad=mfa_aad(row["id"])),
            reaccess,
        )
        return
    await _connect(deps, conn, row, result.grant.secret)


def login_fingerprint(platform_id: str, username: str) -> bytes:
    """Identifies a platform login without storing the username."""
    return hashlib.sha256(f"{platform_id}\0{username}".encode()).digest()


async def _check_same_login(conn: db.Conn, row: asyncpg.Record, fingerprint: bytes) -> None:
    """A bound session re-links its own account only: other credentials are someone else's login."""
    known = await conn.fetchval("SELECT login_fingerprint FROM accounts WHERE id = $1", row["account_id"])
    if known is not None and bytes(known) != fingerprint:
        raise errors.failed_precondition(
            "ACCOUNT_MISMATCH",
            "these credentials belong to another payroll login than the account being updated;"
            " use a standard link token to connect a new account",
        )


async def _connect(deps: Deps, conn: db.Conn, row: asyncpg.Record, grant: bytes) -> None:
    """Creates the account (or re-links the bound one), stores the grant, then starts the jobs."""
    at = timeutil.now()
    topic_prefix = deps.settings.topic_prefix
    account_id = row["account_id"]
    if account_id is None:
        account_id = ids.new_id()
        await conn.execute(
            "INSERT INTO accounts (id, workspace_id, end_user_id, platform_id, link_token_id, created_at,"
            " login_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            account_id,
            row["workspace_id"],
            row["end_user_id"],
            row["platform_id"],
            row["link_token_id"],
            at,
            row["login_fingerprint"],
        )
        platform = deps.drivers.platform(row["platform_id"])
        payload = event_pb2.AccountAddedPayload(
            account_id=str(account_id),
            end_user_id=row["end_user_id"],
            link_token_id=str(row["link_token_id"]),
            platform_id=row["platform_id"],
            platform_name=platform.name if platform else row["platform_id"],
        )
        timeutil.set_ts(payload.timestamp, at)
        await outbox.append(
            conn,
            topic_prefix=topic_prefix,
            workspace_id=row["workspace_id"],
            account_id=account_id,
            name=outbox.ACCOUNT_ADDED,
            api_version=row["api_version"],
            payload=event_pb2.Event(account_added=payload),
            at=at,
        )
    else:
        account = await accounts.fetch(conn, row["workspace_id"], str(account_id), lock=True)
        await conn.execute(
            "UPDATE accounts SET connected = true, login_fingerprint = coalesce(login_fingerprint, $2)"
            " WHERE id = $1",
            account_id,
            row["login_fingerprint"],
        )
        await accounts.set_monitoring(
            conn,
            account,
            "active",
            "reaccess_succeeded",
            topic_prefix=topic_prefix,
            api_version=row["api_version"],
            at=at,
        )
    await accounts.store_grant(deps, conn, account_id, grant)
    await conn.execute(
        "UPDATE link_sessions SET state = 'CONNECTED', account_id = $2, mfa_state_sealed = NULL, last_error = 0,"
        " updated_at = now() WHERE id = $1",
        row["id"],
        account_id,
    )
    row = await _load(conn, row["workspace_id"], str(row["id"]), lock=True)
    if not _choice_required(row):
        await _create_jobs(deps, conn, row)


async def _create_jobs(deps: Deps, conn: db.Conn, row: asyncpg.Record) -> None:
    token = _token(row)
    account_id = row["account_id"]
    # The allocations job reads what the switch is about to change: it waits for the switch, so the
    # stored allocations end as the platform shows them after it.
    switching = common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH in row["required_jobs"]
    for name in row["required_jobs"]:
        params = common_pb2.JobParams()
        secret: bytes | None = None
        if name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
            params.direct_deposit_switch.CopyFrom(_switch_params(deps, row, token))
            secret = _switch_secret(deps, row)
        await jobs.insert(
            deps,
            conn,
            workspace_id=row["workspace_id"],
            account_id=account_id,
            platform_id=row["platform_id"],
            name=name,
            origin=common_pb2.JOB_ORIGIN_LINK,
            batch_id=row["id"],
            api_version=row["api_version"],
            params=params,
            secret_params=secret,
            link_token_id=row["link_token_id"],
            link_session_id=row["id"],
            held=switching and name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS,
        )
    if row["required_jobs"]:
        await conn.execute(
            "UPDATE link_sessions SET state = 'JOBS_RUNNING', updated_at = now() WHERE id = $1", row["id"]
        )
        return
    # A bound token with no jobs: re-access was the whole point; the session is settled now.
    account = await conn.fetchrow(
        "SELECT id, workspace_id, end_user_id FROM accounts WHERE id = $1", account_id
    )
    assert account is not None  # the session's account exists: it was locked above
    await publish_settled(
        deps,
        conn,
        account,
        row["id"],
        row["id"],
        row["link_token_id"],
        common_pb2.JOB_ORIGIN_LINK,
        row["api_version"],
        [],
        timeutil.now(),
    )


def _chosen(deps: Deps, row: asyncpg.Record) -> common_pb2.Allocation:
    if row["chosen_allocation_sealed"] is not None:
        return common_pb2.Allocation.FromString(
            deps.vault.open(bytes(row["chosen_allocation_sealed"]), aad=choice_aad(row["id"]))
        )
    return common_pb2.Allocation.FromString(
        deps.vault.open(bytes(row["allocation_sealed"]), aad=link_tokens.allocation_aad(row["link_token_id"]))
    )


def _switch_params(
    deps: Deps, row: asyncpg.Record, token: link_token_pb2.LinkToken
) -> common_pb2.SwitchParams:
    chosen = _chosen(deps, row)
    full = token.disable_direct_deposit_splitting or (
        chosen.type == common_pb2.ALLOCATION_TYPE_PERCENTAGE and chosen.value == 100
    )
    masked = validation.masked_allocation(
        common_pb2.Allocation(type=chosen.type, value=chosen.value, targets=chosen.targets[:1])
    )
    return common_pb2.SwitchParams(
        action=common_pb2.SWITCH_ACTION_FULL if full else common_pb2.SWITCH_ACTION_PARTIAL, allocation=masked
    )


def _switch_secret(deps: Deps, row: asyncpg.Record) -> bytes:
    target = _chosen(deps, row).targets[0]
    return json.dumps(
        {
            "type": target.type,
            "routing_number": target.routing_number,
            "account_number": target.account_number,
            "name": target.name,
        }
    ).encode()
