"""The audit trail: who read or erased whose personal data, and when.

One record per read of personal data (GetIdentity, GetEmployment, GetIncome, paystubs, allocations,
documents...) and per erasure request, in `audit_records`, which the database keeps append-only
(migrations/0017_privacy.sql). A read's record is written by the read's own statement (`attach`),
and the data is never released without its record: the reads waiting together share one
transaction and one durable commit, and each gets its rows only after it (service/audit_commit.py). Each record is also queued in
`audit_unexported` for the exporter (service/audit_export.py), which publishes it as an
`audit.recorded` event for a SIEM. Records older than PAYLINK_AUDIT_RETENTION_DAYS are pruned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid

import asyncpg
from paylink.v1 import privacy_pb2

from service import db, errors, ids, pagination, timeutil
from service.context import CallContext

X_CALLER = "x-caller"
_CALLER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,99}")

READ = privacy_pb2.AUDIT_ACTION_READ
ERASE = privacy_pb2.AUDIT_ACTION_ERASE
CHANGE = privacy_pb2.AUDIT_ACTION_CHANGE  # a sandbox control that changes the end user's data


def caller_of(x_caller: str | None, key_id: str) -> str:
    """The calling service's identity: its `x-caller` metadata, else `key:<API secret key id>`.

    ValueError (the interceptor answers INVALID_ARGUMENT naming x-caller) when the value is not a
    plain name of 1 to 100 characters: letters, digits and `. _ : @ / + -`, starting alphanumeric.
    """
    if x_caller is None or x_caller == "":
        return f"key:{key_id}" if key_id else "key:unknown"
    if not _CALLER.fullmatch(x_caller):
        raise ValueError(
            "must be 1 to 100 characters: letters, digits and . _ : @ / + - (starting with a letter or digit)"
        )
    return x_caller


@dataclasses.dataclass(frozen=True, slots=True)
class Who:
    """Who is asking: the part of an audit record that comes from the call."""

    workspace_id: uuid.UUID
    caller: str
    key_id: str
    method: str
    request_id: str


def who(call: CallContext, method: str) -> Who:
    """Who is asking, from the call context the API interceptor (or the CLI) built."""
    caller = call.caller or (f"key:{call.key_id}" if call.key_id else "key:unknown")
    return Who(call.workspace.id, caller, call.key_id, method, call.request_id)


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One audit record to write."""

    who: Who
    action: int
    resource: int
    account_id: uuid.UUID | None = None
    end_user_id: str = ""
    erasure_id: uuid.UUID | None = None
    id: uuid.UUID = dataclasses.field(default_factory=ids.new_id)

    def args(self, *, from_subject: bool = False) -> list[object]:
        """The values in `_COLUMNS` order; without account_id and end_user_id when a read's
        statement takes them from the row it found (`attach` with `subject`)."""
        w = self.who
        subject = [] if from_subject else [self.account_id, self.end_user_id]
        return [
            self.id,
            w.workspace_id,
            w.caller,
            w.key_id,
            self.action,
            self.resource,
            *subject,
            self.erasure_id,
            w.method,
            w.request_id,
        ]


NAMES = [
    "id",
    "workspace_id",
    "caller",
    "key_id",
    "action",
    "resource",
    "account_id",
    "end_user_id",
    "erasure_id",
    "method",
    "request_id",
]
_COLUMNS = ", ".join(NAMES)
_SUBJECT = ("account_id", "end_user_id")
_RESULT = "SELECT * FROM target"  # the end of every statement `attach` builds
TAG = "audit_read"  # the column `tagged` adds


def attach(query: str, arity: int, *, subject: str | None = None) -> str:
    """`query` (with `arity` parameters) as one statement that also writes one audit record.

    The record's values are parameters after the query's own, from `Record.args()`. With
    `subject` — a SELECT over the CTE `target` (the query's rows) that yields at most one row with
    the columns `account_id` and `end_user_id` — the record is written only when that row exists
    (the read found data to release) and takes those two columns from it (then pass
    `Record.args(from_subject=True)`). The statement returns the query's rows.
    """
    values, n = [], arity
    for name in NAMES:
        if subject is not None and name in _SUBJECT:
            values.append(f"s.{name}")
        else:
            n += 1
            values.append(f"${n}")
    source = f"SELECT {', '.join(values)}" + (f" FROM ({subject}) AS s" if subject is not None else "")
    return (
        f"WITH target AS ({query}),\n"
        f"audit AS (INSERT INTO audit_records ({_COLUMNS}) {source} RETURNING id),\n"
        "queued AS (INSERT INTO audit_unexported (record_id) SELECT id FROM audit)\n" + _RESULT
    )


def tagged(statement: str, parameter: int) -> str | None:
    """A statement `attach` built, its rows carrying one more, last column `TAG`: the value of
    parameter `parameter` (an int, the one after the statement's own). A batch of reads of the same
    statement runs as one pipelined round trip (asyncpg's `fetchmany`), and the tag tells whose
    each row is (service/audit_commit.py). None for a statement `attach` did not build."""
    if not (statement.startswith("WITH target AS (") and statement.endswith("\n" + _RESULT)):
        return None
    return statement[: -len(_RESULT)] + f"SELECT *, ${parameter}::int4 AS {TAG} FROM target"


_INSERT = (
    f"WITH audit AS (INSERT INTO audit_records ({_COLUMNS})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(NAMES) + 1))}) RETURNING id)\n"
    "INSERT INTO audit_unexported (record_id) SELECT id FROM audit"
)


async def write(conn: db.Executor, record: Record) -> None:
    """Writes one record (and queues its export) in the caller's transaction."""
    await conn.execute(_INSERT, *record.args())


# --- Reading -----------------------------------------------------------------------------------

_SELECT = f"SELECT {_COLUMNS}, recorded_at FROM audit_records"


def to_proto(row: asyncpg.Record) -> privacy_pb2.AuditRecord:
    out = privacy_pb2.AuditRecord(
        id=str(row["id"]),
        workspace_id=str(row["workspace_id"]),
        caller=row["caller"],
        key_id=row["key_id"],
        action=row["action"],
        resource=row["resource"],
        account_id=str(row["account_id"]) if row["account_id"] else "",
        end_user_id=row["end_user_id"],
        erasure_id=str(row["erasure_id"]) if row["erasure_id"] else "",
        method=row["method"],
        request_id=row["request_id"],
    )
    timeutil.set_ts(out.recorded_at, row["recorded_at"])
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Filters:
    account_id: uuid.UUID | None = None
    end_user_id: str = ""
    caller: str = ""
    action: int = 0
    resource: int = 0
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def filters_of(request: privacy_pb2.ListAuditRecordsRequest) -> Filters:
    """The request's filters, validated (INVALID_ARGUMENT naming each bad field)."""
    v = errors.Violations()
    account = None
    if request.account_id:
        account = ids.parse_uuid(request.account_id)
        if account is None:
            v.add("account_id", "must be a UUID")
    if len(request.end_user_id) > 255:
        v.add("end_user_id", "must be at most 255 characters")
    if len(request.caller) > 105:
        v.add("caller", "must be at most 105 characters")
    if request.action not in privacy_pb2.AuditAction.values():
        v.add("action", "is not an AuditAction")
    if request.resource not in privacy_pb2.AuditResource.values():
        v.add("resource", "is not an AuditResource")
    since = until = None
    if request.HasField("from_time"):
        since = _time(v, "from_time", request.from_time.seconds, request.from_time.nanos)
    if request.HasField("to_time"):
        until = _time(v, "to_time", request.to_time.seconds, request.to_time.nanos)
    if since and until and since > until:
        v.add("to_time", "must not be before from_time")
    v.raise_if_any()
    return Filters(
        account, request.end_user_id, request.caller, request.action, request.resource, since, until
    )


def _time(v: errors.Violations, field: str, seconds: int, nanos: int) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=nanos // 1000)
    except (OverflowError, OSError, ValueError):
        v.add(field, "is not a valid time")
        return None


async def list_page(
    conn: db.Executor, workspace_id: uuid.UUID, request: privacy_pb2.ListAuditRecordsRequest
) -> privacy_pb2.ListAuditRecordsResponse:
    """A page of the workspace's records, newest first (keyset pagination on recorded_at, id)."""
    f = filters_of(request)
    size = pagination.page_size(request.page_size)
    echo = {
        "a": request.account_id,
        "e": f.end_user_id,
        "c": f.caller,
        "x": f.action,
        "r": f.resource,
        "s": f.since.isoformat() if f.since else "",
        "u": f.until.isoformat() if f.until else "",
    }
    after_ts, after_id = pagination.timestamp_cursor(pagination.decode(request.page_token, echo))
    clauses, args = ["workspace_id = $1"], list[object]([workspace_id])

    def where(clause: str, value: object) -> None:
        args.append(value)
        clauses.append(clause.replace("?", f"${len(args)}"))

    if f.account_id:
        where("account_id = ?", f.account_id)
    if f.end_user_id:
        where("end_user_id = ?", f.end_user_id)
    if f.caller:
        where("caller = ?", f.caller)
    if f.action:
        where("action = ?", f.action)
    if f.resource:
        where("resource = ?", f.resource)
    if f.since:
        where("recorded_at >= ?", f.since)
    if f.until:
        where("recorded_at < ?", f.until)
    if after_ts is not None:
        args += [after_ts, after_id]
        clauses.append(f"(recorded_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(size + 1)
    rows = await conn.fetch(
        f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY recorded_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    response = privacy_pb2.ListAuditRecordsResponse(records=[to_proto(r) for r in rows[:size]])
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = pagination.encode(
            pagination.Cursor(last["recorded_at"].isoformat(), last["id"]), echo
        )
    return response


async def mark_exported(conn: db.Executor, record_ids: list[uuid.UUID]) -> None:
    """Takes records off the export queue once Kafka acknowledged them (service/audit_export.py)."""
    await conn.execute("DELETE FROM audit_unexported WHERE record_id = ANY($1::uuid[])", record_ids)


# --- Retention ---------------------------------------------------------------------------------

_PRUNE = """
DELETE FROM audit_records WHERE id IN (
  SELECT id FROM audit_records WHERE recorded_at < $1 LIMIT $2)
"""
MIN_RETENTION_DAYS = 30  # the append-only trigger refuses to delete younger records


async def prune(pool: db.Pool, retention_days: int, batch: int = 5000) -> int:
    """Deletes records older than `retention_days` (at least 30), in batches; returns how many.

    The only DELETE the append-only trigger lets through: it announces its cutoff in the
    transaction (`paylink.audit_prune_before`), and the trigger checks each row against it.
    """
    if retention_days < MIN_RETENTION_DAYS:
        raise ValueError(f"audit retention must be at least {MIN_RETENTION_DAYS} days")
    cutoff = timeutil.now() - dt.timedelta(days=retention_days)
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('paylink.audit_prune_before', $1, true)", cutoff.isoformat()
            )
            status = await conn.execute(_PRUNE, cutoff, batch)
        count = int(status.rsplit(" ", 1)[-1])
        total += count
        if count < batch:
            return total
