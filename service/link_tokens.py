"""Link tokens: validation, creation (with On Demand Updates binding) and reading."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import asyncpg
from paylink.v1 import common_pb2, link_token_pb2

from service import accounts, db, errors, idempotency, ids, sealed, timeutil, tracing, validation, versions
from service.context import CallContext
from service.deps import Deps

_LANGUAGES = frozenset(link_token_pb2.Language.values())

_INSERT = """
INSERT INTO link_tokens (id, workspace_id, token_hash, api_version, org_name, required_jobs, end_user_id,
  bound_account_id, platform_id, employer_id, allocation, allocation_sealed, options, created_at, expires_at,
  traceparent, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
"""


def _employer(
    deps: Deps, v: errors.Violations, request: link_token_pb2.CreateLinkTokenRequest, names: list[int]
) -> None:
    """employer_id names a catalogue employer; its platform is preselected, so it must agree with
    platform_id and support every required job."""
    if not request.employer_id:  # the common case: no employer (nothing to check)
        return
    employer_id = validation.text(v, "employer_id", request.employer_id, max_len=255)
    if not employer_id or any(field == "employer_id" for field, _ in v.items):
        return
    employer = deps.drivers.employer(employer_id)
    if employer is None:
        v.add("employer_id", "is not a known employer (see CatalogService.SearchEmployers)")
        return
    platform = deps.drivers.platform(employer.platform_id)
    if request.platform_id and request.platform_id != employer.platform_id:
        v.add("employer_id", f"runs its payroll on {employer.platform_id}, not on platform_id")
    elif platform is not None and not set(names) <= platform.supported_jobs:
        v.add("employer_id", "runs its payroll on a platform that does not support every required job")


def preselected_platform(deps: Deps, request: link_token_pb2.CreateLinkTokenRequest) -> str:
    """The platform an unbound token preselects: platform_id, else its employer's ("" for none)."""
    if request.platform_id or not request.employer_id:
        return request.platform_id
    employer = deps.drivers.employer(request.employer_id.strip()) if request.employer_id.strip() else None
    return employer.platform_id if employer else ""


def _validate(deps: Deps, request: link_token_pb2.CreateLinkTokenRequest, binds: bool) -> errors.Violations:
    v = errors.Violations()
    validation.text(v, "org_name", request.org_name, min_len=3, max_len=30)
    names = validation.job_names(v, "required_jobs", list(request.required_jobs), allow_empty=binds)
    if not binds or request.end_user_id:
        validation.text(v, "end_user_id", request.end_user_id, min_len=1, max_len=255)
    if binds and ids.parse_uuid(request.account_id) is None:
        v.add("account_id", "must be a UUID")
    if request.platform_id:
        platform = deps.drivers.platform(request.platform_id)
        if platform is None:
            v.add("platform_id", "is not a known platform")
        elif not set(names) <= platform.supported_jobs:
            v.add("platform_id", "does not support every required job")
    _employer(deps, v, request, names)
    if request.HasField("allocation"):
        validation.allocation(v, "allocation", request.allocation)
    if common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH in names and not request.allocation.targets:
        v.add("allocation.targets", "direct_deposit_switch needs at least one allocation target")
    if request.language not in _LANGUAGES:
        v.add("language", "must be EN or ES")
    if request.tags:
        _tags(v, request)
    return v


def _tags(v: errors.Violations, request: link_token_pb2.CreateLinkTokenRequest) -> None:
    if len(request.tags) > 20:
        v.add("tags", "must hold at most 20 entries")
    for key, value in sorted(request.tags.items()):
        if not 1 <= len(key) <= 64:
            v.add(f"tags[{key[:64]}]", "keys must be 1 to 64 characters")
        if len(value) > 255:
            v.add(f"tags[{key[:64]}]", "values must be at most 255 characters")


async def create(
    deps: Deps, call: CallContext, request: link_token_pb2.CreateLinkTokenRequest
) -> link_token_pb2.LinkToken:
    binds = bool(request.account_id) and versions.on_demand_updates(call.api_version)
    _validate(deps, request, binds).raise_if_any()
    token = await idempotency.run_once(
        deps,
        call,
        "CreateLinkToken",
        request,
        request.request_id,
        link_token_pb2.LinkToken,
        lambda work: _insert(deps, work.conn, call, request, binds),
        single_statement=not binds,  # one INSERT; a bound token also reads (and checks) its account
    )
    if request.request_id:
        # A replay answers the token as it is now: once a session has used it, without the token
        # string (a used token is worth nothing, and a stored answer should not hand it out again).
        used_at = await deps.pool.fetchval("SELECT used_at FROM link_tokens WHERE id = $1::uuid", token.id)
        if used_at is not None:
            token.token = ""
            timeutil.set_ts(token.used_at, used_at)
    return token


async def _bound_account(
    deps: Deps, conn: db.Conn, call: CallContext, request: link_token_pb2.CreateLinkTokenRequest
) -> asyncpg.Record:
    """The connected account an On Demand Updates token binds to, checked against the request."""
    end_user_id = request.end_user_id.strip()
    bound = await accounts.fetch(conn, call.workspace.id, request.account_id)
    if not bound["connected"]:
        raise errors.failed_precondition(
            "ACCOUNT_DISCONNECTED", f"account {request.account_id} is disconnected; link a new account"
        )
    if end_user_id and end_user_id != bound["end_user_id"]:
        raise errors.invalid_field("end_user_id", "differs from the end user of account_id")
    if request.platform_id and request.platform_id != bound["platform_id"]:
        raise errors.invalid_field("platform_id", "differs from the platform of account_id")
    platform = deps.drivers.platform(bound["platform_id"])
    unsupported = set(request.required_jobs) - (platform.supported_jobs if platform else set())
    if unsupported:
        names = ", ".join(sorted(common_pb2.JobName.Name(n) for n in unsupported))
        raise errors.failed_precondition(
            "JOB_NOT_SUPPORTED", f"the account's platform does not support {names}"
        )
    return bound


async def _insert(
    deps: Deps,
    conn: db.Conn,
    call: CallContext,
    request: link_token_pb2.CreateLinkTokenRequest,
    binds: bool,
) -> link_token_pb2.LinkToken:
    end_user_id = request.end_user_id.strip()
    bound = await _bound_account(deps, conn, call, request) if binds else None
    if bound is not None:
        end_user_id = bound["end_user_id"]
    token_id = ids.new_id()
    secret = ids.new_link_token()
    created = timeutil.now()
    expires = created + dt.timedelta(seconds=deps.settings.link_token_ttl_seconds)
    token = _token(deps, call, request, bound, end_user_id)
    token.id = str(token_id)
    timeutil.set_ts(token.created_at, created)
    timeutil.set_ts(token.expires_at, expires)
    masked, full = _allocation(deps, token, request, token_id)
    await conn.execute(
        _INSERT,
        token_id,
        call.workspace.id,
        ids.sha256(secret),
        token.api_version,
        token.org_name,
        list(token.required_jobs),
        end_user_id,
        bound["id"] if bound else None,
        token.platform_id,
        token.employer_id,
        masked,
        full,
        token.SerializeToString(),
        created,
        expires,
        # The jobs of this token's Link session continue the caller's trace (docs/spec.md §4).
        tracing.traceparent(),
        call.request_id,
    )
    token.token = secret
    return token


def _token(
    deps: Deps,
    call: CallContext,
    request: link_token_pb2.CreateLinkTokenRequest,
    bound: asyncpg.Record | None,
    end_user_id: str,
) -> link_token_pb2.LinkToken:
    """The new token's fields from the request (and the account it binds to). Only the fields that
    differ from their defaults are set: the same message (proto3 scalars and maps have no presence),
    at half the cost of passing every field to the constructor."""
    token = link_token_pb2.LinkToken(
        mode=link_token_pb2.WORKSPACE_MODE_SANDBOX
        if call.workspace.sandbox
        else link_token_pb2.WORKSPACE_MODE_PRODUCTION,
        org_name=request.org_name.strip(),
        required_jobs=request.required_jobs,  # validated: each job once
        end_user_id=end_user_id,
        language=request.language or link_token_pb2.LANGUAGE_EN,
        api_version=versions.label(call.api_version),
    )
    platform_id = bound["platform_id"] if bound else preselected_platform(deps, request)
    if platform_id:
        token.platform_id = platform_id
    if bound:
        token.bound_account_id = str(bound["id"])
    if request.employer_id:
        token.employer_id = request.employer_id.strip()
    if request.disable_direct_deposit_splitting:
        token.disable_direct_deposit_splitting = True
    if request.skip_intro_screen:
        token.skip_intro_screen = True
    if request.tags:
        token.tags.update(request.tags)
    return token


def _allocation(
    deps: Deps,
    token: link_token_pb2.LinkToken,
    request: link_token_pb2.CreateLinkTokenRequest,
    token_id: uuid.UUID,
) -> tuple[bytes | None, bytes | None]:
    """Puts the masked allocation on the token; returns it serialized, and the full one sealed."""
    if not request.HasField("allocation"):
        return None, None
    token.allocation.CopyFrom(validation.masked_allocation(request.allocation))
    full = deps.vault.seal(
        request.allocation.SerializeToString(), aad=sealed.LINK_TOKEN_ALLOCATION.aad(token_id)
    )
    return token.allocation.SerializeToString(), full


async def get(deps: Deps, workspace_id: uuid.UUID, link_token_id: str) -> link_token_pb2.LinkToken:
    parsed = ids.parse_uuid(link_token_id)
    row = None
    if parsed is not None:
        row = await deps.pool.fetchrow(
            "SELECT options, used_at FROM link_tokens WHERE id = $1 AND workspace_id = $2",
            parsed,
            workspace_id,
        )
    if row is None:
        raise errors.not_found("link_token", link_token_id)
    return from_row(row["options"], row["used_at"])


def from_row(options: bytes, used_at: dt.datetime | None) -> link_token_pb2.LinkToken:
    token = link_token_pb2.LinkToken.FromString(bytes(options))
    timeutil.set_ts(token.used_at, used_at)
    return token


@dataclasses.dataclass(frozen=True, slots=True)
class SessionStart:
    """What a session takes from the token that starts it."""

    id: uuid.UUID
    used: bool  # the token already started a session
    expired: bool
    bound_account_id: uuid.UUID | None
    platform_id: str
    required_jobs: tuple[int, ...]
    api_version: str
    end_user_id: str
    allocation_targets: int


_LOCK = """
SELECT id, expires_at, used_at, bound_account_id, platform_id, required_jobs, api_version, end_user_id, options
FROM link_tokens WHERE token_hash = $1 AND workspace_id = $2 FOR UPDATE
"""


async def lock_for_session(conn: db.Conn, workspace_id: uuid.UUID, token: str) -> SessionStart:
    """Locks the token (caller's transaction), so one StartSession at a time decides what it starts.

    INVALID_ARGUMENT for an empty token, NOT_FOUND for an unknown one (or another workspace's).
    """
    if not token:
        raise errors.invalid_field("token", "is required")
    row = await conn.fetchrow(_LOCK, ids.sha256(token), workspace_id) if len(token) <= 200 else None
    if row is None:
        raise errors.not_found("link_token", "(token)")
    options = link_token_pb2.LinkToken.FromString(bytes(row["options"]))
    return SessionStart(
        id=row["id"],
        used=row["used_at"] is not None,
        expired=row["expires_at"] <= timeutil.now(),
        bound_account_id=row["bound_account_id"],
        platform_id=row["platform_id"],
        required_jobs=tuple(row["required_jobs"]),
        api_version=row["api_version"],
        end_user_id=row["end_user_id"],
        allocation_targets=len(options.allocation.targets),
    )


async def erase_sealed(conn: db.Conn, workspace_id: uuid.UUID) -> int:
    """Erases the full allocations (account numbers) of a deleted workspace's tokens; the masked
    copy stays. Returns how many were erased."""
    result: str = await conn.execute(
        "UPDATE link_tokens SET allocation_sealed = NULL"
        " WHERE workspace_id = $1 AND allocation_sealed IS NOT NULL",
        workspace_id,
    )
    return int(result.rsplit(" ", 1)[-1])


# --- Erasure of an end user (service/erasure.py) ---------------------------------------------

_OF_END_USER = "workspace_id = $1 AND (end_user_id = $2 OR bound_account_id = ANY($3::uuid[]))"


async def expire_for_end_user(
    conn: db.Executor, workspace_id: uuid.UUID, end_user_id: str, account_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Expires the end user's unused tokens (and those bound to their accounts); returns the ids of
    all their tokens."""
    await conn.execute(
        f"UPDATE link_tokens SET expires_at = now() WHERE {_OF_END_USER} AND expires_at > now()",
        workspace_id,
        end_user_id,
        account_ids,
    )
    rows = await conn.fetch(
        f"SELECT id FROM link_tokens WHERE {_OF_END_USER}", workspace_id, end_user_id, account_ids
    )
    return [r["id"] for r in rows]


async def scrub_for_end_user(
    conn: db.Executor, workspace_id: uuid.UUID, end_user_id: str, account_ids: list[uuid.UUID]
) -> int:
    """Erases the deposit targets the end user's tokens offered (sealed, masked, and in the stored
    options); the tokens themselves stay. Returns how many changed."""
    changed = 0
    rows = await conn.fetch(
        f"SELECT id, options FROM link_tokens WHERE {_OF_END_USER}", workspace_id, end_user_id, account_ids
    )
    for row in rows:
        options = link_token_pb2.LinkToken.FromString(bytes(row["options"]))
        options.ClearField("allocation")
        status = await conn.execute(
            "UPDATE link_tokens SET allocation = NULL, allocation_sealed = NULL, options = $2"
            " WHERE id = $1 AND (allocation IS NOT NULL OR allocation_sealed IS NOT NULL OR options <> $2)",
            row["id"],
            options.SerializeToString(deterministic=True),
        )
        changed += int(status.rsplit(" ", 1)[-1])
    return changed


async def has_usable(conn: db.Executor, workspace_id: uuid.UUID, end_user_id: str) -> bool:
    """Whether the end user has a link token that can still start a session."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM link_tokens WHERE workspace_id = $1 AND end_user_id = $2"
        " AND expires_at > now() AND used_at IS NULL)",
        workspace_id,
        end_user_id,
    )
    return found


async def tags_of(conn: db.Executor, link_token_id: uuid.UUID) -> dict[str, str]:
    """The caller's tags on a link token (copied onto the account it connects)."""
    options = await conn.fetchval("SELECT options FROM link_tokens WHERE id = $1", link_token_id)
    if options is None:
        return {}
    return dict(link_token_pb2.LinkToken.FromString(bytes(options)).tags)


async def mark_used(conn: db.Conn, token_id: uuid.UUID) -> None:
    await conn.execute("UPDATE link_tokens SET used_at = coalesce(used_at, now()) WHERE id = $1", token_id)
