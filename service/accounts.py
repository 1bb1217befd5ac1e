"""Accounts: creation (and its `account.added` event), re-linking, reading, listing, disconnecting,
monitoring status changes (with their events). The sealed grant an account keeps is service/grants.py's.

This module owns the `accounts` table."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import asyncpg
from paylink.v1 import account_pb2, common_pb2, event_pb2

from service import db, errors, grants, idempotency, ids, link_tokens, outbox, pagination, timeutil, uow
from service.context import CallContext
from service.deps import Deps
from service.drivers.registry import DriverRegistry
from service.monitoring import schedules

MONITORING = {
    "active": common_pb2.MONITORING_STATUS_ACTIVE,
    "degraded": common_pb2.MONITORING_STATUS_DEGRADED,
    "user_action_required": common_pb2.MONITORING_STATUS_USER_ACTION_REQUIRED,
    "customer_disabled": common_pb2.MONITORING_STATUS_CUSTOMER_DISABLED,
    "unavailable": common_pb2.MONITORING_STATUS_UNAVAILABLE,
}
MONITORING_NAMES = {v: k for k, v in MONITORING.items()}

_COLUMNS = (
    "id, workspace_id, end_user_id, platform_id, link_token_id, created_at, connected, monitoring_status,"
    " monitoring_enabled, tags"
)

# The account row with its data times in the same round trip (one array per column): for lists,
# where PostgreSQL evaluates these subqueries only for the rows of the page.
_READ = (
    _COLUMNS
    + ", array(SELECT name FROM job_results r WHERE r.account_id = accounts.id ORDER BY name) AS r_names"
    + ", array(SELECT refreshed_at FROM job_results r WHERE r.account_id = accounts.id ORDER BY name)"
    + " AS r_refreshed"
    + ", array(SELECT updated_at FROM job_results r WHERE r.account_id = accounts.id ORDER BY name) AS r_updated"
    + schedules.READ_COLUMNS
)

# The same for one account (also the read floor's statement, bench/floor_server.py): its job results and its schedule each read once (lateral aggregates,
# two index scans instead of seven subqueries).
ONE_WITH_DATA_TIMES = (
    f"SELECT {_COLUMNS}, r_names, r_refreshed, r_updated{schedules.LATERAL_COLUMNS} FROM accounts"
    " CROSS JOIN LATERAL (SELECT coalesce(array_agg(name ORDER BY name), '{}') AS r_names,"
    " coalesce(array_agg(refreshed_at ORDER BY name), '{}') AS r_refreshed,"
    " coalesce(array_agg(updated_at ORDER BY name), '{}') AS r_updated"
    " FROM job_results r WHERE r.account_id = accounts.id) r" + schedules.LATERAL
)

# `fetch`'s statements by (data_times, lock), built once: the same strings every call (asyncpg's
# statement cache is keyed by the text).
_FETCH = {
    (data_times, lock): (ONE_WITH_DATA_TIMES if data_times else f"SELECT {_COLUMNS} FROM accounts")
    + " WHERE id = $1 AND workspace_id = $2"
    + (" FOR UPDATE OF accounts" if lock else "")
    for data_times in (False, True)
    for lock in (False, True)
}

_TIME_FIELDS = {
    common_pb2.JOB_NAME_IDENTITY: "identity",
    common_pb2.JOB_NAME_EMPLOYMENT: "employment",
    common_pb2.JOB_NAME_INCOME: "income",
    common_pb2.JOB_NAME_PAYSTUBS: "paystubs",
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: "direct_deposit_allocations",
    common_pb2.JOB_NAME_SHIFTS: "shifts",
    common_pb2.JOB_NAME_TAX_FORMS: "tax_forms",
    common_pb2.JOB_NAME_DOCUMENTS: "documents",
}


async def fetch(
    conn: db.Executor,
    workspace_id: uuid.UUID,
    account_id: str,
    *,
    lock: bool = False,
    data_times: bool = False,
) -> asyncpg.Record:
    """The account row, or NOT_FOUND (also for a malformed id or another workspace's account).

    `data_times` adds the per-job data times that `to_proto` needs; other callers skip them.
    """
    row = None
    if ids.is_uuid(account_id):  # asyncpg encodes the checked text itself: no uuid.UUID built
        row = await conn.fetchrow(_FETCH[(data_times, lock)], account_id, workspace_id)
    if row is None:
        raise errors.not_found("account", account_id)
    return row


async def get(
    conn: db.Executor, workspace_id: uuid.UUID, account_id: str, drivers: DriverRegistry
) -> account_pb2.Account:
    """GetAccount: `to_proto` of `fetch(data_times=True)`, read in this coroutine (one fewer to resume)."""
    row = None
    if ids.is_uuid(account_id):
        row = await conn.fetchrow(_FETCH[True, False], account_id, workspace_id)
    if row is None:
        raise errors.not_found("account", account_id)
    return to_proto(row, drivers)


def to_proto(row: asyncpg.Record, drivers: DriverRegistry) -> account_pb2.Account:
    """The Account message; `row` comes from `fetch` or `list_page` (account columns and data times)."""
    platform = drivers.platform(row["platform_id"])
    account = account_pb2.Account(
        id=str(row["id"]),
        end_user_id=row["end_user_id"],
        platform_id=row["platform_id"],
        platform_name=platform.name if platform else row["platform_id"],
        link_token_id=str(row["link_token_id"]),
        connected=row["connected"],
        monitoring_status=MONITORING[row["monitoring_status"]],
        monitoring_enabled=row["monitoring_enabled"],
        tags=json.loads(row["tags"]),
    )
    timeutil.set_ts(account.created_at, row["created_at"])
    for name, refreshed, updated in zip(row["r_names"], row["r_refreshed"], row["r_updated"], strict=True):
        field = _TIME_FIELDS.get(name)
        if field:
            timeutil.set_ts(getattr(account.data_refreshed_at, field), refreshed)
            timeutil.set_ts(getattr(account.data_updated_at, field), updated)
    if row["r_refreshed"]:
        timeutil.set_ts(account.refreshed_at, max(row["r_refreshed"]))
    schedules.to_proto(account, row)
    return account


async def list_page(
    deps: Deps, workspace_id: uuid.UUID, request: account_pb2.ListAccountsRequest
) -> account_pb2.ListAccountsResponse:
    size = pagination.page_size(request.page_size)
    status = ""
    if request.monitoring_status:
        status = MONITORING_NAMES.get(request.monitoring_status, "")
        if not status:
            raise errors.invalid_field("monitoring_status", "is not a known monitoring status")
    connected = request.connected if request.HasField("connected") else None
    filters = {"end_user_id": request.end_user_id, "c": str(connected), "m": status}
    after_ts, after_id = pagination.timestamp_cursor(pagination.decode(request.page_token, filters))
    rows = await deps.pool.fetch(
        f"SELECT {_READ} FROM accounts WHERE workspace_id = $1"
        " AND ($2::text = '' OR end_user_id = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))"
        " AND ($6::boolean IS NULL OR connected = $6) AND ($7::text = '' OR monitoring_status = $7)"
        " ORDER BY created_at DESC, id DESC LIMIT $5",
        workspace_id,
        request.end_user_id,
        after_ts,
        after_id,
        size + 1,
        connected,
        status,
    )
    response = account_pb2.ListAccountsResponse()
    for row in rows[:size]:
        response.accounts.append(to_proto(row, deps.drivers))
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = pagination.encode(
            pagination.Cursor(last["created_at"].isoformat(), last["id"]), filters
        )
    return response


_SET_MONITORING = """
WITH old AS (SELECT monitoring_status FROM accounts WHERE id = $1 FOR UPDATE)
UPDATE accounts SET monitoring_status = $2 FROM old
WHERE accounts.id = $1 AND old.monitoring_status <> $2
RETURNING old.monitoring_status
"""


async def set_monitoring(
    work: uow.UnitOfWork,
    account: db.Row,
    status: str,
    reason: str,
    *,
    api_version: str,
    at: dt.datetime | None = None,
) -> bool:
    """Changes the monitoring status and emits the change (`account` needs id, workspace_id and
    end_user_id). Returns False (and emits nothing) when the status is already `status`."""
    current = await work.conn.fetchval(_SET_MONITORING, account["id"], status)
    if current is None:
        return False
    await schedules.sync(work.conn, [account["id"]])  # refreshes stop or resume with the status
    payload = event_pb2.Event(
        monitoring_status_updated=event_pb2.MonitoringStatusUpdatedPayload(
            account_id=str(account["id"]),
            end_user_id=account["end_user_id"],
            previous_status=MONITORING[current],
            monitoring_status=MONITORING[status],
            reason=reason,
        )
    )
    when = at or timeutil.now()
    timeutil.set_ts(payload.monitoring_status_updated.timestamp, when)
    work.emit(
        account["workspace_id"], account["id"], outbox.MONITORING_STATUS_UPDATED, api_version, payload, when
    )
    return True


async def set_monitoring_enabled(conn: db.Conn, account_id: uuid.UUID, enabled: bool) -> None:
    """The account's own monitoring switch (restarts its failure run; the caller publishes the status)."""
    await conn.execute(
        "UPDATE accounts SET monitoring_enabled = $2, refresh_failures = 0 WHERE id = $1", account_id, enabled
    )
    await schedules.sync(conn, [account_id])


async def set_refresh_failures(conn: db.Conn, account_id: uuid.UUID, failures: int) -> None:
    """The account's run of failed scheduled refreshes (monitoring/rules.py counts it)."""
    sql = "UPDATE accounts SET refresh_failures = $2 WHERE id = $1 AND refresh_failures <> $2"
    await conn.execute(sql, account_id, failures)


async def create(
    work: uow.UnitOfWork,
    *,
    account_id: uuid.UUID,
    workspace_id: uuid.UUID,
    end_user_id: str,
    platform_id: str,
    link_token_id: uuid.UUID,
    login_fingerprint: bytes | None,
    api_version: str,
) -> uuid.UUID:
    """A new connected account, and its `account.added` event."""
    at = timeutil.now()
    await work.conn.execute(
        "INSERT INTO accounts (id, workspace_id, end_user_id, platform_id, link_token_id, created_at,"
        " login_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        account_id,
        workspace_id,
        end_user_id,
        platform_id,
        link_token_id,
        at,
        login_fingerprint,
    )
    tags = await link_tokens.tags_of(work.conn, link_token_id)
    if tags:
        await work.conn.execute("UPDATE accounts SET tags = $2 WHERE id = $1", account_id, json.dumps(tags))
    platform = work.deps.drivers.platform(platform_id)
    await schedules.create(
        work.conn,
        account_id=account_id,
        workspace_id=workspace_id,
        platform_id=platform_id,
        supported_jobs=platform.supported_jobs if platform else (),
        now=at,
    )
    payload = event_pb2.AccountAddedPayload(
        account_id=str(account_id),
        end_user_id=end_user_id,
        link_token_id=str(link_token_id),
        platform_id=platform_id,
        platform_name=platform.name if platform else platform_id,
    )
    timeutil.set_ts(payload.timestamp, at)
    work.emit(
        workspace_id,
        account_id,
        outbox.ACCOUNT_ADDED,
        api_version,
        event_pb2.Event(account_added=payload),
        at,
    )
    return account_id


async def relink(
    work: uow.UnitOfWork,
    workspace_id: uuid.UUID,
    account_id: uuid.UUID,
    fingerprint: bytes | None,
    api_version: str,
) -> None:
    """A bound (On Demand Updates) session logged in again: connected, monitoring active (unless the
    customer turned monitoring off for the account: that stays)."""
    account = await fetch(work.conn, workspace_id, str(account_id), lock=True)
    await work.conn.execute(
        "UPDATE accounts SET connected = true, login_fingerprint = coalesce(login_fingerprint, $2)"
        " WHERE id = $1",
        account_id,
        fingerprint,
    )
    if account["monitoring_enabled"]:
        await set_monitoring(work, account, "active", "reaccess_succeeded", api_version=api_version)
    else:
        await schedules.sync(work.conn, [account_id])  # connected again; still paused by the switch


async def login_fingerprint(conn: db.Executor, account_id: uuid.UUID) -> bytes | None:
    """Which platform login the account belongs to (None for accounts linked before it was kept)."""
    known = await conn.fetchval("SELECT login_fingerprint FROM accounts WHERE id = $1", account_id)
    return bytes(known) if known is not None else None


async def platform_and_connected(conn: db.Executor, id_: uuid.UUID, lock: bool = False) -> tuple[str, bool]:
    """The account's platform, and whether it is connected (`lock`: against a concurrent disconnect)."""
    sql = "SELECT platform_id, connected FROM accounts WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, id_)
    assert row is not None  # sessions and tokens reference existing accounts
    return str(row["platform_id"]), bool(row["connected"])


async def disconnect(
    work: uow.UnitOfWork, workspace_id: uuid.UUID, account_id: str, api_version: str
) -> asyncpg.Record:
    """Erases stored credentials, marks the account disconnected and customer_disabled."""
    conn = work.conn
    row = await fetch(conn, workspace_id, account_id, lock=True)
    await grants.delete(conn, [row["id"]])
    await conn.execute("UPDATE accounts SET connected = false WHERE id = $1", row["id"])
    await set_monitoring(work, row, "customer_disabled", "customer_disconnected", api_version=api_version)
    return await fetch(conn, workspace_id, account_id, data_times=True)


async def connected_ids(pool: db.Executor, workspace_id: uuid.UUID) -> list[uuid.UUID]:
    """The workspace's connected accounts (workspace delete disconnects them one by one)."""
    sql = "SELECT id FROM accounts WHERE workspace_id = $1 AND connected ORDER BY created_at"
    return [r["id"] for r in await pool.fetch(sql, workspace_id)]


async def disconnect_rpc(
    deps: Deps, call: CallContext, request: account_pb2.DisconnectAccountRequest
) -> account_pb2.Account:
    """AccountService.DisconnectAccount (idempotent by request_id)."""

    async def mutate(work: uow.UnitOfWork) -> account_pb2.Account:
        row = await disconnect(work, call.workspace.id, request.account_id, call.version_label)
        return to_proto(row, deps.drivers)

    return await idempotency.run_once(
        deps, call, "DisconnectAccount", request, request.request_id, account_pb2.Account, mutate
    )


# --- Erasure of an end user (service/erasure.py) ---------------------------------------------


async def fence(
    conn: db.Executor, workspace_id: uuid.UUID, end_user_id: str, erasure_id: uuid.UUID
) -> tuple[list[uuid.UUID], int]:
    """Marks the end user's accounts (those no earlier erasure took) with the erasure: the database
    then refuses data, credentials and reconnection for them. Disconnects them and deletes their
    credentials. Returns (the accounts, how many credentials were deleted)."""
    rows = await conn.fetch(
        "UPDATE accounts SET erasure_id = $3, connected = false, login_fingerprint = NULL"
        " WHERE workspace_id = $1 AND end_user_id = $2 AND (erasure_id IS NULL OR erasure_id = $3)"
        " RETURNING id",
        workspace_id,
        end_user_id,
        erasure_id,
    )
    ids_ = sorted(r["id"] for r in rows)
    return ids_, await grants.delete(conn, ids_)


async def mark_erased(
    work: uow.UnitOfWork, account_ids: list[uuid.UUID], at: dt.datetime
) -> list[asyncpg.Record]:
    """Marks the accounts erased and customer_disabled (with its event); returns their rows."""
    rows = await work.conn.fetch(
        "UPDATE accounts SET erased_at = coalesce(erased_at, $2) WHERE id = ANY($1::uuid[])"
        " RETURNING id, workspace_id, end_user_id",
        account_ids,
        at,
    )
    for row in rows:
        await set_monitoring(work, row, "customer_disabled", "end_user_erased", api_version="", at=at)
    return list(rows)


async def has_unerased(conn: db.Executor, workspace_id: uuid.UUID, end_user_id: str) -> bool:
    """Whether the end user has an account that no erasure took."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE workspace_id = $1 AND end_user_id = $2"
        " AND erasure_id IS NULL)",
        workspace_id,
        end_user_id,
    )
    return found
