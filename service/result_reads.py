"""Reads of stored job results and paystubs (AccountService): GetIdentity, GetEmployment,
GetIncome, GetDirectDepositAllocations, ListPaystubs, GetPaystub. Each read of personal data writes
its audit record in the same statement (service/audit.py: `attach`), run with the reads waiting with
it in one transaction (`deps.audited`, service/audit_commit.py), and opens the sealed values
(service/pii.py). Storage is service/results.py.
"""

from __future__ import annotations

from typing import TypeVar

import asyncpg
from paylink.v1 import account_pb2, common_pb2, data_pb2, privacy_pb2

from service import accounts, audit, errors, ids, income_rules, pagination, pii, results, timeutil, validation
from service.deps import Deps

_Data = TypeVar(
    "_Data", data_pb2.Identity, data_pb2.Employment, data_pb2.Income, data_pb2.DirectDepositAllocations
)


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
        row = await deps.audited.fetchrow(
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
    return results.paystub_of(body, row)


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
    low, high = validation.date_range(
        v, "from_pay_date", request.from_pay_date, "to_pay_date", request.to_pay_date
    )
    v.raise_if_any()
    account = await accounts.fetch(deps.pool, who.workspace_id, request.account_id)
    filters = {"a": request.account_id, "f": request.from_pay_date, "t": request.to_pay_date}
    cursor_date, cursor_id = pagination.date_cursor(pagination.decode(request.page_token, filters))
    record = audit.Record(
        who, audit.READ, privacy_pb2.AUDIT_RESOURCE_PAYSTUBS, account["id"], account["end_user_id"]
    )
    rows = await deps.audited.fetch(
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
        row = await deps.audited.fetchrow(
            _PAYSTUB, parsed, account["id"], account["end_user_id"], *record.args(from_subject=True)
        )
    if row is None:
        raise errors.not_found("paystub", paystub_id)
    return _paystub(deps, row)
