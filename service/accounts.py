"""Accounts: reading, listing, disconnecting, and monitoring status changes (with their events)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
from paylink.v1 import account_pb2, common_pb2, event_pb2

from service import db, errors, ids, outbox, pagination, timeutil
from service.deps import Deps
from service.drivers.registry import DriverRegistry

MONITORING = {
    "active": common_pb2.MONITORING_STATUS_ACTIVE,
    "degraded": common_pb2.MONITORING_STATUS_DEGRADED,
    "user_action_required": common_pb2.MONITORING_STATUS_USER_ACTION_REQUIRED,
    "customer_disabled": common_pb2.MONITORING_STATUS_CUSTOMER_DISABLED,
    "unavailable": common_pb2.MONITORING_STATUS_UNAVAILABLE,
}
MONITORING_NAMES = {v: k for k, v in MONITORING.items()}

_COLUMNS = (
    "id, workspace_id, end_user_id, platform_id, link_token_id, created_at, connected, monitoring_status"
)

# The account row with its data times in the same round trip (one array per column).
_READ = (
    _COLUMNS
    + ", array(SELECT name FROM job_results r WHERE r.account_id = accounts.id ORDER BY name) AS r_names"
    + ", array(SELECT refreshed_at FROM job_results r WHERE r.account_id = accounts.id ORDER BY name)"
    + " AS r_refreshed"
    + ", array(SELECT updated_at FROM job_results r WHERE r.account_id = accounts.id ORDER BY name) AS r_updated"
)

_TIME_FIELDS = {
    common_pb2.JOB_NAME_IDENTITY: "identity",
    common_pb2.JOB_NAME_EMPLOYMENT: "employment",
    common_pb2.JOB_NAME_INCOME: "income",
    common_pb2.JOB_NAME_PAYSTUBS: "paystubs",
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: "direct_deposit_allocations",
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
    parsed = ids.parse_uuid(account_id)
    row = None
    if parsed is not None:
        row = await conn.fetchrow(
            f"SELECT {_READ if data_times else _COLUMNS} FROM accounts WHERE id = $1 AND workspace_id = $2"
            + (" FOR UPDATE" if lock else ""),
            parsed,
            workspace_id,
        )
    if row is None:
        raise errors.not_found("account", account_id)
    return row


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
    )
    timeutil.set_ts(account.created_at, row["created_at"])
    for name, refreshed, updated in zip(row["r_names"], row["r_refreshed"], row["r_updated"], strict=True):
        field = _TIME_FIELDS.get(name)
        if field:
            timeutil.set_ts(getattr(account.data_refreshed_at, field), refreshed)
            timeutil.set_ts(getattr(account.data_updated_at, field), updated)
    return account


async def list_page(
    deps: Deps, workspace_id: uuid.UUID, request: account_pb2.ListAccountsRequest
) -> account_pb2.ListAccountsResponse:
    size = pagination.page_size(request.page_size)
    filters = {"end_user_id": request.end_user_id}
    after_ts, after_id = pagination.timestamp_cursor(pagination.decode(request.page_token, filters))
    rows = await deps.pool.fetch(
        f"SELECT {_READ} FROM accounts WHERE workspace_id = $1"
        " AND ($2::text = '' OR end_user_id = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))"
        " ORDER BY created_at DESC, id DESC LIMIT $5",
        workspace_id,
        request.end_user_id,
        after_ts,
        after_id,
        size + 1,
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
    conn: db.Conn,
    account: db.Row,
    status: str,
    reason: str,
    *,
    topic_prefix: str,
    api_version: str,
    at: dt.datetime | None = None,
    events: outbox.Events | None = None,
) -> bool:
    """Changes the monitoring status and publishes the change (into `events` when given).

    Returns False (and publishes nothing) when the status is already `status`.
    """
    current = await conn.fetchval(_SET_MONITORING, account["id"], status)
    if current is None:
        return False
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
    if events is not None:
        events.add(outbox.MONITORING_STATUS_UPDATED, api_version, payload, when)
        return True
    await outbox.append(
        conn,
        topic_prefix=topic_prefix,
        workspace_id=account["workspace_id"],
        account_id=account["id"],
        name=outbox.MONITORING_STATUS_UPDATED,
        api_version=api_version,
        payload=payload,
        at=when,
    )
    return True


async def disconnect(
    deps: Deps, conn: db.Conn, workspace_id: uuid.UUID, account_id: str, api_version: str
) -> asyncpg.Record:
    """Erases stored credentials, marks the account disconnected and customer_disabled."""
    row = await fetch(conn, workspace_id, account_id, lock=True)
    await conn.execute("DELETE FROM account_credentials WHERE account_id = $1", row["id"])
    await conn.execute("UPDATE accounts SET connected = false WHERE id = $1", row["id"])
    await set_monitoring(
        conn,
        row,
        "customer_disabled",
        "customer_disconnected",
        topic_prefix=deps.settings.topic_prefix,
        api_version=api_version,
    )
    return await fetch(conn, workspace_id, account_id, data_times=True)


def grant_aad(account_id: uuid.UUID) -> bytes:
    return b"account-grant:" + str(account_id).encode()


async def store_grant(deps: Deps, conn: db.Conn, account_id: uuid.UUID, grant: bytes) -> None:
    sealed = deps.vault.seal(grant, aad=grant_aad(account_id))
    await conn.execute(
        "INSERT INTO account_credentials (account_id, key_id, sealed) VALUES ($1, $2, $3)"
        " ON CONFLICT (account_id) DO UPDATE SET key_id = EXCLUDED.key_id, sealed = EXCLUDED.sealed,"
        " updated_at = now()",
        account_id,
        deps.vault.key_id_of(sealed),
        sealed,
    )


async def load_access(deps: Deps, conn: db.Executor, account_id: uuid.UUID) -> bytes | None:
    """The unsealed grant of a connected account in one round trip; None when disconnected or gone."""
    row = await conn.fetchrow(
        "SELECT c.sealed FROM accounts a JOIN account_credentials c ON c.account_id = a.id"
        " WHERE a.id = $1 AND a.connected",
        account_id,
    )
    if row is None:
        return None
    return deps.vault.open(bytes(row["sealed"]), aad=grant_aad(account_id))


async def load_grant(deps: Deps, conn: db.Executor, account_id: uuid.UUID) -> bytes | None:
    sealed = await conn.fetchval("SELECT sealed FROM account_credentials WHERE account_id = $1", account_id)
    if sealed is None:
        return None
    return deps.vault.open(bytes(sealed), aad=grant_aad(account_id))
