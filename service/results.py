"""Job results: the latest data per account and type, with refreshed_at and updated_at.

`refreshed_at` moves on every successful fetch; `updated_at` only when the content really changed
(compared by a hash of the deterministic serialization).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message
from paylink.v1 import account_pb2, common_pb2, data_pb2

from service import accounts, db, errors, ids, income_rules, pagination, pii, timeutil, validation
from service.deps import Deps
from service.drivers.base import FetchedPaystub

_Data = TypeVar(
    "_Data", data_pb2.Identity, data_pb2.Employment, data_pb2.Income, data_pb2.DirectDepositAllocations
)

# Upserts the latest data and says whether its content changed, with what was stored before (the
# CTE reads the row as it was when the statement started).
_UPSERT = """
WITH old AS (SELECT data, content_hash FROM job_results WHERE account_id = $1 AND name = $2)
INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $5)
ON CONFLICT (account_id, name) DO UPDATE SET
  data = EXCLUDED.data,
  refreshed_at = EXCLUDED.refreshed_at,
  updated_at = CASE WHEN job_results.content_hash = EXCLUDED.content_hash
                    THEN job_results.updated_at ELSE EXCLUDED.refreshed_at END,
  content_hash = EXCLUDED.content_hash
RETURNING (SELECT content_hash FROM old) IS DISTINCT FROM $4 AS changed, (SELECT data FROM old) AS previous
"""
# Upserts paystubs by the platform's id in one statement; says which ones are new.
_PAYSTUBS = """
INSERT INTO paystubs (id, account_id, external_id, pay_date, data, document_external_id)
SELECT i, $1, e, d, b, x FROM unnest($2::uuid[], $3::text[], $4::date[], $5::bytea[], $6::text[])
  AS u(i, e, d, b, x)
ON CONFLICT (account_id, external_id) DO UPDATE SET data = EXCLUDED.data, pay_date = EXCLUDED.pay_date,
  document_external_id = EXCLUDED.document_external_id
RETURNING id, account_id, external_id, pay_date, data, created_at, (xmax = 0) AS inserted,
  (SELECT d.id FROM documents d WHERE d.account_id = paystubs.account_id
     AND d.external_id = paystubs.document_external_id AND paystubs.document_external_id <> '') AS document_id
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """What storing a job's data found: whether the content changed, and the previous content."""

    changed: bool
    previous: bytes | None = None  # the serialized message stored before (None for paystubs or the first)
    added_paystubs: tuple[data_pb2.Paystub, ...] = ()  # paystubs stored for the first time, newest first


def _hash(parts: Sequence[bytes]) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def digest(data: Message) -> bytes:
    """The stable content digest of one data message (deterministic serialization, SHA-256)."""
    return _hash([data.SerializeToString(deterministic=True)])


async def store(conn: db.Conn, account_id: uuid.UUID, name: int, data: Message, at: dt.datetime) -> Stored:
    """Stores the latest data of a job type; `refreshed_at` moves, `updated_at` only on change."""
    body = data.SerializeToString(deterministic=True)
    row = await conn.fetchrow(_UPSERT, account_id, name, body, _hash([body]), at)
    assert row is not None  # an upsert returns its row
    previous = row["previous"]
    return Stored(row["changed"], bytes(previous) if previous is not None else None)


# The same upsert for many (account, name) pairs, each at most once: one statement for a batch of outcomes.
_UPSERT_MANY = """
INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
SELECT a, n, d, h, t, t FROM unnest($1::uuid[], $2::smallint[], $3::bytea[], $4::bytea[], $5::timestamptz[])
     AS u(a, n, d, h, t)
ON CONFLICT (account_id, name) DO UPDATE SET
  data = EXCLUDED.data,
  refreshed_at = EXCLUDED.refreshed_at,
  updated_at = CASE WHEN job_results.content_hash = EXCLUDED.content_hash
                    THEN job_results.updated_at ELSE EXCLUDED.refreshed_at END,
  content_hash = EXCLUDED.content_hash
"""


async def store_many(conn: db.Conn, rows: Sequence[tuple[uuid.UUID, int, Message, dt.datetime]]) -> None:
    """`store` for many (account, job name) pairs at once, each pair at most once."""
    if not rows:
        return
    bodies = [data.SerializeToString(deterministic=True) for _, _, data, _ in rows]
    await conn.execute(
        _UPSERT_MANY,
        [account for account, _, _, _ in rows],
        [name for _, name, _, _ in rows],
        bodies,
        [_hash([body]) for body in bodies],
        [at for _, _, _, at in rows],
    )


async def store_paystubs(
    conn: db.Conn, account_id: uuid.UUID, fetched: Sequence[FetchedPaystub], at: dt.datetime
) -> Stored:
    """Upserts paystubs by the platform's id; the result row's hash covers the whole set."""
    bodies = []
    ids_, externals, dates, datas, documents = [], [], [], [], []
    for item in fetched:
        stub = data_pb2.Paystub()
        stub.CopyFrom(item.paystub)
        stub.ClearField("id")
        stub.ClearField("account_id")
        stub.ClearField("created_at")
        stub.ClearField("document_id")
        body = stub.SerializeToString(deterministic=True)
        bodies.append(item.external_id.encode() + b"\0" + body)
        ids_.append(ids.new_id())
        externals.append(item.external_id)
        dates.append(dt.date.fromisoformat(stub.pay_date))
        datas.append(body)
        documents.append(item.document_external_id)
    rows = await conn.fetch(_PAYSTUBS, account_id, ids_, externals, dates, datas, documents) if ids_ else []
    added = sorted((r for r in rows if r["inserted"]), key=lambda r: (r["pay_date"], r["id"]), reverse=True)
    # Only the set's content matters for updated_at, not the order the platform listed it in.
    row = await conn.fetchrow(
        _UPSERT, account_id, common_pb2.JOB_NAME_PAYSTUBS, None, _hash(sorted(bodies)), at
    )
    assert row is not None
    return Stored(row["changed"], None, tuple(_paystub_of(bytes(r["data"]), r) for r in added))


async def _result(
    deps: Deps, workspace_id: uuid.UUID, account_id: str, name: int, what: str
) -> asyncpg.Record:
    parsed = ids.parse_uuid(account_id)
    row = None
    if parsed is not None:  # the account (workspace check) and its result in one round trip
        row = await deps.pool.fetchrow(
            "SELECT a.id AS account_id, r.data, r.refreshed_at, r.updated_at FROM accounts a"
            " LEFT JOIN job_results r ON r.account_id = a.id AND r.name = $3"
            " WHERE a.id = $1 AND a.workspace_id = $2",
            parsed,
            workspace_id,
            name,
        )
    if row is None:
        raise errors.not_found("account", account_id)
    if row["refreshed_at"] is None:
        raise errors.not_found(what, account_id)
    return row


def _body(deps: Deps, row: asyncpg.Record, name: int) -> bytes:
    """The serialized message of a result row, opened (rows stored before sealing read as they are)."""
    return pii.open_data(deps.vault, pii.result_kind(name), row["account_id"], bytes(row["data"]))


async def identity(deps: Deps, workspace_id: uuid.UUID, account_id: str) -> data_pb2.Identity:
    name = common_pb2.JOB_NAME_IDENTITY
    row = await _result(deps, workspace_id, account_id, name, "identity")
    return _stamp(data_pb2.Identity.FromString(_body(deps, row, name)), account_id, row)


async def employment(deps: Deps, workspace_id: uuid.UUID, account_id: str) -> data_pb2.Employment:
    name = common_pb2.JOB_NAME_EMPLOYMENT
    row = await _result(deps, workspace_id, account_id, name, "employment")
    return _stamp(data_pb2.Employment.FromString(_body(deps, row, name)), account_id, row)


async def income(deps: Deps, workspace_id: uuid.UUID, account_id: str) -> data_pb2.Income:
    """The stored income, completed from the stored paystubs where the platform left fields out
    (service/income_rules.py)."""
    name = common_pb2.JOB_NAME_INCOME
    row = await _result(deps, workspace_id, account_id, name, "income")
    stubs = await deps.pool.fetch(
        "SELECT id, account_id, external_id, pay_date, data, created_at, NULL::uuid AS document_id"
        " FROM paystubs WHERE account_id = $1 AND pay_date >="
        " (SELECT max(pay_date) FROM paystubs WHERE account_id = $1) - 366 ORDER BY pay_date DESC",
        row["account_id"],
    )
    reported = data_pb2.Income.FromString(_body(deps, row, name))
    derived = income_rules.derive(reported, [_paystub(deps, r) for r in stubs])
    return _stamp(derived, account_id, row)


async def allocations(
    deps: Deps, workspace_id: uuid.UUID, account_id: str
) -> data_pb2.DirectDepositAllocations:
    name = common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS
    row = await _result(deps, workspace_id, account_id, name, "direct_deposit_allocations")
    return _stamp(data_pb2.DirectDepositAllocations.FromString(_body(deps, row, name)), account_id, row)


def _stamp(out: _Data, account_id: str, row: asyncpg.Record) -> _Data:
    out.account_id = account_id
    timeutil.set_ts(out.refreshed_at, row["refreshed_at"])
    timeutil.set_ts(out.updated_at, row["updated_at"])
    return out


# A paystub row with the id of its stored document (set once a documents job stored it).
_PAYSTUB_COLUMNS = (
    "p.id, p.account_id, p.external_id, p.pay_date, p.data, p.created_at, d.id AS document_id FROM paystubs p"
    " LEFT JOIN documents d ON d.account_id = p.account_id AND d.external_id = p.document_external_id"
    " AND p.document_external_id <> ''"
)


def _paystub(deps: Deps, row: asyncpg.Record) -> data_pb2.Paystub:
    """A stored paystub row as the message, its data opened."""
    body = pii.open_data(
        deps.vault, pii.Kind.PAYSTUB, row["account_id"], bytes(row["data"]), row["external_id"]
    )
    return _paystub_of(body, row)


def _paystub_of(body: bytes, row: asyncpg.Record) -> data_pb2.Paystub:
    stub = data_pb2.Paystub.FromString(body)
    stub.id = str(row["id"])
    stub.account_id = str(row["account_id"])
    stub.document_id = str(row["document_id"]) if row["document_id"] else ""
    timeutil.set_ts(stub.created_at, row["created_at"])
    return stub


async def list_paystubs(
    deps: Deps, workspace_id: uuid.UUID, request: account_pb2.ListPaystubsRequest
) -> account_pb2.ListPaystubsResponse:
    v = errors.Violations()
    size = pagination.page_size(request.page_size)
    low = validation.pay_date(v, "from_pay_date", request.from_pay_date)
    high = validation.pay_date(v, "to_pay_date", request.to_pay_date)
    if low and high and low > high:
        v.add("to_pay_date", "must not be before from_pay_date")
    v.raise_if_any()
    account = await accounts.fetch(deps.pool, workspace_id, request.account_id)
    filters = {"a": request.account_id, "f": request.from_pay_date, "t": request.to_pay_date}
    cursor = pagination.decode(request.page_token, filters)
    try:
        cursor_date = dt.date.fromisoformat(cursor.key) if cursor else None
    except ValueError as exc:
        raise errors.invalid_field("page_token", "is not a page token this list returned") from exc
    rows = await deps.pool.fetch(
        f"SELECT {_PAYSTUB_COLUMNS} WHERE p.account_id = $1"
        " AND ($2::date IS NULL OR p.pay_date >= $2) AND ($3::date IS NULL OR p.pay_date <= $3)"
        " AND ($4::date IS NULL OR (p.pay_date, p.id) < ($4, $5))"
        " ORDER BY p.pay_date DESC, p.id DESC LIMIT $6",
        account["id"],
        low,
        high,
        cursor_date,
        cursor.id if cursor else None,
        size + 1,
    )
    response = account_pb2.ListPaystubsResponse(paystubs=[_paystub(deps, r) for r in rows[:size]])
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = pagination.encode(
            pagination.Cursor(last["pay_date"].isoformat(), last["id"]), filters
        )
    times = await deps.pool.fetchrow(
        "SELECT refreshed_at, updated_at FROM job_results WHERE account_id = $1 AND name = $2",
        account["id"],
        common_pb2.JOB_NAME_PAYSTUBS,
    )
    if times:
        timeutil.set_ts(response.refreshed_at, times["refreshed_at"])
        timeutil.set_ts(response.updated_at, times["updated_at"])
    return response


async def get_paystub(
    deps: Deps, workspace_id: uuid.UUID, account_id: str, paystub_id: str
) -> data_pb2.Paystub:
    account = await accounts.fetch(deps.pool, workspace_id, account_id)
    parsed = ids.parse_uuid(paystub_id)
    row = None
    if parsed is not None:
        row = await deps.pool.fetchrow(
            f"SELECT {_PAYSTUB_COLUMNS} WHERE p.id = $1 AND p.account_id = $2",
            parsed,
            account["id"],
        )
    if row is None:
        raise errors.not_found("paystub", paystub_id)
    return _paystub(deps, row)
