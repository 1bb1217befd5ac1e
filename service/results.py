"""Job results: the latest data per account and type, with refreshed_at and updated_at.

The data is personal: it is sealed with the vault before it is written and opened when read
(service/pii.py: AAD bound to the account and the data kind). `refreshed_at` moves on every
successful fetch; `updated_at` only when the content really changed, compared by a keyed digest of
the deterministic serialization (`Vault.digests`: under every key of the ring, so a key rotation
alone is no change), never by a plain hash of the plaintext.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message
from paylink.v1 import account_pb2, common_pb2, data_pb2, privacy_pb2

from service import accounts, audit, db, errors, ids, income_rules, pagination, pii, timeutil, validation
from service.deps import Deps
from service.drivers.base import FetchedPaystub
from service.vault import Vault

_Data = TypeVar(
    "_Data", data_pb2.Identity, data_pb2.Employment, data_pb2.Income, data_pb2.DirectDepositAllocations
)

# Upserts the latest data and says whether its content changed, with what was stored before (the
# CTE reads the row as it was when the statement started). $4: the content's digests under every
# key of the ring, the primary's first (the one stored). No row comes back for an account that an
# erasure fenced (the database skips the write).
_UPSERT = """
WITH old AS (SELECT data, content_hash FROM job_results WHERE account_id = $1 AND name = $2)
INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
VALUES ($1, $2, $3, ($4::bytea[])[1], $5, $5)
ON CONFLICT (account_id, name) DO UPDATE SET
  data = EXCLUDED.data,
  refreshed_at = EXCLUDED.refreshed_at,
  updated_at = CASE WHEN job_results.content_hash = ANY($4::bytea[])
                    THEN job_results.updated_at ELSE EXCLUDED.refreshed_at END,
  content_hash = EXCLUDED.content_hash
RETURNING NOT coalesce((SELECT content_hash FROM old) = ANY($4::bytea[]), false) AS changed,
          (SELECT data FROM old) AS previous
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


async def store(
    conn: db.Conn, vault: Vault, account_id: uuid.UUID, name: int, data: Message, at: dt.datetime
) -> Stored:
    """Stores the latest data of a job type, sealed; `refreshed_at` moves, `updated_at` only on change."""
    kind = pii.result_kind(name)
    body = data.SerializeToString(deterministic=True)
    sealed = pii.seal(vault, kind, account_id, body)
    row = await conn.fetchrow(_UPSERT, account_id, name, sealed, vault.digests([body]), at)
    if row is None:  # fenced by an erasure: nothing was stored
        return Stored(False)
    previous = row["previous"]
    if previous is not None:
        previous = pii.open_data(vault, kind, account_id, bytes(previous))
    return Stored(row["changed"], previous)


# `_UPSERT` for many (account, name) pairs, each at most once, in one statement. $4: every row's
# digests under the ring's $6 keys one after the other (row i's are $4[(i-1)*$6+1 : i*$6], the
# primary's first); the change is judged against the live row exactly as `_UPSERT` judges it.
_UPSERT_MANY = """
WITH u AS (
  SELECT a, n, d, t, ($4::bytea[])[(i - 1) * $6 + 1 : i * $6] AS ring
  FROM unnest($1::uuid[], $2::smallint[], $3::bytea[], $5::timestamptz[]) WITH ORDINALITY AS x(a, n, d, t, i)),
old AS (SELECT r.account_id, r.name, r.data, r.content_hash FROM job_results r JOIN u ON r.account_id = u.a AND r.name = u.n),
up AS (
  INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
  SELECT a, n, d, ring[1], t, t FROM u
  ON CONFLICT (account_id, name) DO UPDATE SET
    data = EXCLUDED.data,
    refreshed_at = EXCLUDED.refreshed_at,
    updated_at = CASE WHEN EXISTS (SELECT FROM u WHERE u.a = job_results.account_id AND u.n = job_results.name
                                                  AND job_results.content_hash = ANY(u.ring))
                      THEN job_results.updated_at ELSE EXCLUDED.refreshed_at END,
    content_hash = EXCLUDED.content_hash
  RETURNING account_id, name)
SELECT up.account_id, up.name, NOT coalesce(o.content_hash = ANY(u.ring), false) AS changed, o.data AS previous
FROM up JOIN u ON u.a = up.account_id AND u.n = up.name
     LEFT JOIN old o ON o.account_id = up.account_id AND o.name = up.name
"""


async def store_many(
    conn: db.Conn, vault: Vault, items: Sequence[tuple[uuid.UUID, int, Message, dt.datetime]]
) -> list[Stored]:
    """`store` for many (account, job name) pairs, each at most once, in one statement: each sealed
    and compared exactly as `store` does. Returns what storing each found, in order."""
    if not items:
        return []
    kinds = [pii.result_kind(name) for _, name, _, _ in items]
    bodies = [data.SerializeToString(deterministic=True) for _, _, data, _ in items]
    rings = [vault.digests([body]) for body in bodies]
    rows = await conn.fetch(
        _UPSERT_MANY,
        [account for account, _, _, _ in items],
        [name for _, name, _, _ in items],
        [pii.seal(vault, kind, item[0], body) for kind, item, body in zip(kinds, items, bodies, strict=True)],
        [digest for ring in rings for digest in ring],
        [at for _, _, _, at in items],
        len(rings[0]),
    )
    found = {(r["account_id"], r["name"]): r for r in rows}  # none for an account an erasure fenced
    out = []
    for kind, (account, name, _, _) in zip(kinds, items, strict=True):
        row = found.get((account, name))
        previous = row["previous"] if row is not None else None
        if previous is not None:
            previous = pii.open_data(vault, kind, account, bytes(previous))
        out.append(Stored(row["changed"], previous) if row is not None else Stored(False))
    return out


async def store_paystubs(
    conn: db.Conn, vault: Vault, account_id: uuid.UUID, fetched: Sequence[FetchedPaystub], at: dt.datetime
) -> Stored:
    """Upserts paystubs by the platform's id, each sealed; the result row's digest covers the set."""
    items: list[tuple[str, bytes]] = []
    ids_, externals, dates, datas, documents = [], [], [], [], []
    for item in fetched:
        stub = data_pb2.Paystub()
        stub.CopyFrom(item.paystub)
        stub.ClearField("id")
        stub.ClearField("account_id")
        stub.ClearField("created_at")
        stub.ClearField("document_id")
        body = stub.SerializeToString(deterministic=True)
        items.append((item.external_id, body))
        ids_.append(ids.new_id())
        externals.append(item.external_id)
        dates.append(dt.date.fromisoformat(stub.pay_date))
        datas.append(pii.seal(vault, pii.Kind.PAYSTUB, account_id, body, item.external_id))
        documents.append(item.document_external_id)
    rows = await conn.fetch(_PAYSTUBS, account_id, ids_, externals, dates, datas, documents) if ids_ else []
    added = sorted((r for r in rows if r["inserted"]), key=lambda r: (r["pay_date"], r["id"]), reverse=True)
    bodies = dict(items)
    # Only the set's content matters for updated_at, not the order the platform listed it in.
    digests = vault.digests(pii.paystub_set_parts(items))
    row = await conn.fetchrow(_UPSERT, account_id, common_pb2.JOB_NAME_PAYSTUBS, None, digests, at)
    if row is None:  # fenced by an erasure
        return Stored(False)
    return Stored(row["changed"], None, tuple(_paystub_of(bodies[r["external_id"]], r) for r in added))


# The account (workspace check), its result and the read's audit record, in one round trip; the
# record is written only when there is data to release.
_RESULT = audit.attach(
    "SELECT a.id AS account_id, a.end_user_id, r.data, r.refreshed_at, r.updated_at FROM accounts a"
    " LEFT JOIN job_results r ON r.account_id = a.id AND r.name = $3"
    " WHERE a.id = $1 AND a.workspace_id = $2",
    3,
    subject="SELECT account_id, end_user_id FROM target WHERE refreshed_at IS NOT NULL",
)
_RESOURCES: dict[int, int] = {
    common_pb2.JOB_NAME_IDENTITY: privacy_pb2.AUDIT_RESOURCE_IDENTITY,
    common_pb2.JOB_NAME_EMPLOYMENT: privacy_pb2.AUDIT_RESOURCE_EMPLOYMENT,
    common_pb2.JOB_NAME_INCOME: privacy_pb2.AUDIT_RESOURCE_INCOME,
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: privacy_pb2.AUDIT_RESOURCE_DIRECT_DEPOSIT_ALLOCATIONS,
}


async def _result(deps: Deps, who: audit.Who, account_id: str, name: int, what: str) -> asyncpg.Record:
    parsed = ids.parse_uuid(account_id)
    row = None
    if parsed is not None:
        record = audit.Record(who, audit.READ, _RESOURCES[name])
        row = await deps.pool.fetchrow(
            _RESULT, parsed, who.workspace_id, name, *record.args(from_subject=True)
        )
    if row is None:
        raise errors.not_found("account", account_id)
    if row["refreshed_at"] is None:
        raise errors.not_found(what, account_id)
    return row


def _body(deps: Deps, row: asyncpg.Record, name: int) -> bytes:
    """The serialized message of a result row, opened (rows stored before sealing read as they are)."""
    return pii.open_data(deps.vault, pii.result_kind(name), row["account_id"], bytes(row["data"]))


async def identity(deps: Deps, who: audit.Who, account_id: str) -> data_pb2.Identity:
    name = common_pb2.JOB_NAME_IDENTITY
    row = await _result(deps, who, account_id, name, "identity")
    return _stamp(data_pb2.Identity.FromString(_body(deps, row, name)), account_id, row)


async def employment(deps: Deps, who: audit.Who, account_id: str) -> data_pb2.Employment:
    name = common_pb2.JOB_NAME_EMPLOYMENT
    row = await _result(deps, who, account_id, name, "employment")
    return _stamp(data_pb2.Employment.FromString(_body(deps, row, name)), account_id, row)


async def income(deps: Deps, who: audit.Who, account_id: str) -> data_pb2.Income:
    """The stored income, completed from the stored paystubs where the platform left fields out
    (service/income_rules.py)."""
    name = common_pb2.JOB_NAME_INCOME
    row = await _result(deps, who, account_id, name, "income")
    stubs = await deps.pool.fetch(
        "SELECT id, account_id, external_id, pay_date, data, created_at, NULL::uuid AS document_id"
        " FROM paystubs WHERE account_id = $1 AND pay_date >="
        " (SELECT max(pay_date) FROM paystubs WHERE account_id = $1) - 366 ORDER BY pay_date DESC",
        row["account_id"],
    )
    reported = data_pb2.Income.FromString(_body(deps, row, name))
    derived = income_rules.derive(reported, [_paystub(deps, r) for r in stubs])
    return _stamp(derived, account_id, row)


async def allocations(deps: Deps, who: audit.Who, account_id: str) -> data_pb2.DirectDepositAllocations:
    name = common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS
    row = await _result(deps, who, account_id, name, "direct_deposit_allocations")
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


# A page of paystubs and the read's audit record, in one round trip.
_PAYSTUB_PAGE = audit.attach(
    f"SELECT {_PAYSTUB_COLUMNS} WHERE p.account_id = $1"
    " AND ($2::date IS NULL OR p.pay_date >= $2) AND ($3::date IS NULL OR p.pay_date <= $3)"
    " AND ($4::date IS NULL OR (p.pay_date, p.id) < ($4, $5))"
    " ORDER BY p.pay_date DESC, p.id DESC LIMIT $6",
    6,
)
# One paystub and, when found, the read's audit record.
_PAYSTUB = audit.attach(
    f"SELECT $3::text AS end_user_id, {_PAYSTUB_COLUMNS} WHERE p.id = $1 AND p.account_id = $2",
    3,
    subject="SELECT account_id, end_user_id FROM target",
)


async def list_paystubs(
    deps: Deps, who: audit.Who, request: account_pb2.ListPaystubsRequest
) -> account_pb2.ListPaystubsResponse:
    v = errors.Violations()
    size = pagination.page_size(request.page_size)
    low = validation.pay_date(v, "from_pay_date", request.from_pay_date)
    high = validation.pay_date(v, "to_pay_date", request.to_pay_date)
    if low and high and low > high:
        v.add("to_pay_date", "must not be before from_pay_date")
    v.raise_if_any()
    account = await accounts.fetch(deps.pool, who.workspace_id, request.account_id)
    filters = {"a": request.account_id, "f": request.from_pay_date, "t": request.to_pay_date}
    cursor_date, cursor_id = pagination.date_cursor(pagination.decode(request.page_token, filters))
    record = audit.Record(
        who, audit.READ, privacy_pb2.AUDIT_RESOURCE_PAYSTUBS, account["id"], account["end_user_id"]
    )
    rows = await deps.pool.fetch(
        _PAYSTUB_PAGE,
        account["id"],
        low,
        high,
        cursor_date,
        cursor_id,
        size + 1,
        *record.args(),
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


async def get_paystub(deps: Deps, who: audit.Who, account_id: str, paystub_id: str) -> data_pb2.Paystub:
    account = await accounts.fetch(deps.pool, who.workspace_id, account_id)
    parsed = ids.parse_uuid(paystub_id)
    row = None
    if parsed is not None:
        record = audit.Record(who, audit.READ, privacy_pb2.AUDIT_RESOURCE_PAYSTUBS)
        row = await deps.pool.fetchrow(
            _PAYSTUB, parsed, account["id"], account["end_user_id"], *record.args(from_subject=True)
        )
    if row is None:
        raise errors.not_found("paystub", paystub_id)
    return _paystub(deps, row)
    if row is None:
        raise errors.not_found("paystub", paystub_id)
    return _paystub(deps, row)


async def erase(conn: db.Executor, account_ids: list[uuid.UUID]) -> dict[str, int]:
    """Deletes every stored result and paystub of these accounts (an erasure); returns counts."""
    counts = {}
    for table in ("job_results", "paystubs"):
        status = await conn.execute(f"DELETE FROM {table} WHERE account_id = ANY($1::uuid[])", account_ids)
        counts[table] = int(status.rsplit(" ", 1)[-1])
    return counts
