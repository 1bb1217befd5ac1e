"""Storage of shifts and tax forms: every write and every read of their tables.

The one writer of `shifts` and `tax_forms` (documents, metadata and bytes: service/documents.py).
Shifts and tax forms are personal data, sealed per record (service/pii.py: AAD
`pii:<shift|tax_form>:<account_id>:<external_id>`) by the write functions (`store_*`) and opened
by the decode functions (`*_from_row`). Writes run in the job outcome's transaction; each upserts
the platform's records by their stable id and moves the job_results row's refreshed_at (and
updated_at when the set's keyed digest changed: `results.mark_set`), like paystubs. Reads of
records write their audit record in the same statement (service/audit.py: `attach`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
from paylink.v1 import common_pb2, shift_pb2, tax_form_pb2

from service import audit, db, ids, pii, results, sealed, timeutil
from service.audit_commit import GroupCommit
from service.drivers.base import FetchedShift, FetchedTaxForm
from service.vault import Vault

# -- writes ----------------------------------------------------------------------------------------

# Each upsert by the platform's id updates the stored records and inserts only the new ones, so the
# erasure fence (0017/0171's BEFORE INSERT OR UPDATE row trigger on each table, a query on `accounts`)
# fires once per record, where INSERT ... ON CONFLICT DO UPDATE fired it twice for each one stored
# (tests/integration/test_records_fence.py). A fenced account's records are skipped by either firing;
# one another transaction inserted since the statement began takes the insert's ON CONFLICT update, as
# before (the fence then fires twice, as before). `$2` is the account throughout.
_SHIFTS_UPSERT = """
WITH v AS (SELECT * FROM unnest($1::uuid[], $3::text[], $4::date[], $5::bytea[]) AS t(i, e, d, b)),
updated AS (
  UPDATE shifts SET data = v.b, shift_date = v.d FROM v WHERE shifts.account_id = $2 AND shifts.external_id = v.e)
INSERT INTO shifts (id, account_id, external_id, shift_date, data)
SELECT i, $2, e, d, b FROM v WHERE NOT EXISTS (SELECT FROM shifts s WHERE s.account_id = $2 AND s.external_id = v.e)
ON CONFLICT (account_id, external_id) DO UPDATE SET data = EXCLUDED.data, shift_date = EXCLUDED.shift_date
"""
_TAX_FORMS_UPSERT = """
WITH v AS (SELECT * FROM unnest($1::uuid[], $3::text[], $4::int[], $5::text[], $6::bytea[]) AS t(i, e, y, x, b)),
updated AS (
  UPDATE tax_forms SET data = v.b, year = v.y, document_external_id = v.x
  FROM v WHERE tax_forms.account_id = $2 AND tax_forms.external_id = v.e)
INSERT INTO tax_forms (id, account_id, external_id, year, document_external_id, data)
SELECT i, $2, e, y, x, b FROM v WHERE NOT EXISTS (SELECT FROM tax_forms f WHERE f.account_id = $2 AND f.external_id = v.e)
ON CONFLICT (account_id, external_id) DO UPDATE SET data = EXCLUDED.data, year = EXCLUDED.year,
  document_external_id = EXCLUDED.document_external_id
"""


async def store_shifts(
    conn: db.Conn, vault: Vault, account_id: uuid.UUID, fetched: Sequence[FetchedShift], at: dt.datetime
) -> None:
    """Upserts the shifts by the platform's id, each sealed."""
    bodies = []
    for item in fetched:
        shift = shift_pb2.Shift()
        shift.CopyFrom(item.shift)
        for field in ("id", "account_id", "created_at"):
            shift.ClearField(field)
        bodies.append(shift.SerializeToString(deterministic=True))
    await conn.execute(
        _SHIFTS_UPSERT,
        [ids.new_id() for _ in fetched],
        account_id,
        [item.external_id for item in fetched],
        [dt.date.fromisoformat(item.shift.date) for item in fetched],
        [
            pii.seal(vault, pii.Kind.SHIFT, account_id, body, item.external_id)
            for item, body in zip(fetched, bodies, strict=True)
        ],
    )
    parts = pii.set_parts([(item.external_id, body) for item, body in zip(fetched, bodies, strict=True)])
    await results.mark_set(conn, vault, account_id, common_pb2.JOB_NAME_SHIFTS, parts, at)


def _tax_form_part(document_external_id: str, body: bytes) -> bytes:
    return document_external_id.encode() + b"\0" + body


async def store_tax_forms(
    conn: db.Conn, vault: Vault, account_id: uuid.UUID, fetched: Sequence[FetchedTaxForm], at: dt.datetime
) -> None:
    """Upserts the tax forms by the platform's id, each sealed."""
    bodies = []
    for item in fetched:
        form = tax_form_pb2.TaxForm()
        form.CopyFrom(item.tax_form)
        for field in ("id", "account_id", "created_at", "document_id"):
            form.ClearField(field)
        bodies.append(form.SerializeToString(deterministic=True))
    await conn.execute(
        _TAX_FORMS_UPSERT,
        [ids.new_id() for _ in fetched],
        account_id,
        [item.external_id for item in fetched],
        [item.tax_form.year for item in fetched],
        [item.document_external_id for item in fetched],
        [
            pii.seal(vault, pii.Kind.TAX_FORM, account_id, body, item.external_id)
            for item, body in zip(fetched, bodies, strict=True)
        ],
    )
    parts = pii.set_parts(
        [
            (item.external_id, _tax_form_part(item.document_external_id, body))
            for item, body in zip(fetched, bodies, strict=True)
        ]
    )
    await results.mark_set(conn, vault, account_id, common_pb2.JOB_NAME_TAX_FORMS, parts, at)


# -- reads -----------------------------------------------------------------------------------------


async def data_times(conn: db.Executor, account_id: uuid.UUID, name: int) -> asyncpg.Record | None:
    """refreshed_at and updated_at of a job's data, or None before its first success."""
    return await conn.fetchrow(
        "SELECT refreshed_at, updated_at FROM job_results WHERE account_id = $1 AND name = $2",
        account_id,
        name,
    )


# Each read of records is one statement that also writes the read's audit record (service/audit.py).
_SHIFTS = audit.attach(
    "SELECT id, account_id, external_id, shift_date, data, created_at FROM shifts WHERE account_id = $1"
    " AND ($2::date IS NULL OR shift_date >= $2) AND ($3::date IS NULL OR shift_date <= $3)"
    " AND ($4::date IS NULL OR (shift_date, id) < ($4, $5))"
    " ORDER BY shift_date DESC, id DESC LIMIT $6",
    6,
)


async def shift_rows(
    reads: GroupCommit,
    record: audit.Record,
    low: dt.date | None,
    high: dt.date | None,
    after: tuple[dt.date, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Shifts of the record's account newest first, within inclusive dates, after a (date, id)
    cursor; writes the read's audit record."""
    return list(
        await reads.fetch(
            _SHIFTS,
            record.account_id,
            low,
            high,
            after[0] if after else None,
            after[1] if after else None,
            limit,
            *record.args(),
        )
    )


def shift_from_row(vault: Vault, row: asyncpg.Record) -> shift_pb2.Shift:
    body = pii.open_data(vault, pii.Kind.SHIFT, row["account_id"], bytes(row["data"]), row["external_id"])
    shift = shift_pb2.Shift.FromString(body)
    shift.id = str(row["id"])
    shift.account_id = str(row["account_id"])
    timeutil.set_ts(shift.created_at, row["created_at"])
    return shift


_TAX_FORMS = audit.attach(
    "SELECT t.id, t.account_id, t.external_id, t.year, t.data, t.created_at, d.id AS document_id"
    " FROM tax_forms t"
    " LEFT JOIN documents d ON d.account_id = t.account_id AND d.external_id = t.document_external_id"
    " WHERE t.account_id = $1 AND ($2 = 0 OR t.year = $2)"
    " AND ($3::int IS NULL OR (t.year, t.id) < ($3, $4))"
    " ORDER BY t.year DESC, t.id DESC LIMIT $5",
    5,
)


async def tax_form_rows(
    reads: GroupCommit, record: audit.Record, year: int, after: tuple[int, uuid.UUID] | None, limit: int
) -> list[asyncpg.Record]:
    """Tax forms of the record's account newest year first (optionally of one year), after a
    (year, id) cursor, with the id of their stored document; writes the read's audit record."""
    return list(
        await reads.fetch(
            _TAX_FORMS,
            record.account_id,
            year,
            after[0] if after else None,
            after[1] if after else None,
            limit,
            *record.args(),
        )
    )


def tax_form_from_row(vault: Vault, row: asyncpg.Record) -> tax_form_pb2.TaxForm:
    body = pii.open_data(vault, pii.Kind.TAX_FORM, row["account_id"], bytes(row["data"]), row["external_id"])
    form = tax_form_pb2.TaxForm.FromString(body)
    form.id = str(row["id"])
    form.account_id = str(row["account_id"])
    form.document_id = str(row["document_id"]) if row["document_id"] else ""
    timeutil.set_ts(form.created_at, row["created_at"])
    return form


# --- Sealing rows stored before sealing; re-sealing after a rotation (`vault reencrypt`) ----------

_ITEMS: dict[str, tuple[pii.Kind, int, str]] = {
    # table: (kind, job name of its set digest, the column its digest covers beside the body)
    "shifts": (pii.Kind.SHIFT, common_pb2.JOB_NAME_SHIFTS, "NULL::text"),
    "tax_forms": (pii.Kind.TAX_FORM, common_pb2.JOB_NAME_TAX_FORMS, "document_external_id"),
}


async def seal_existing(pool: db.Pool, vault: Vault, batch: int) -> dict[str, int]:
    """`shifts.data` and `tax_forms.data`: seals plain values and re-seals those under an older key,
    online, account by account in batches, each update a compare-and-set on what was read (a
    concurrent writer wins); re-keys each set's digest. Returns how many values changed."""
    counts = {}
    for column in (sealed.SHIFT_DATA, sealed.TAX_FORM_DATA):
        counts[column.name] = await _seal_table(pool, vault, column.table, batch)
    return counts


async def _seal_table(pool: db.Pool, vault: Vault, table: str, batch: int) -> int:
    kind, name, extra = _ITEMS[table]
    done, last = 0, None
    while accounts := await pool.fetch(
        f"SELECT DISTINCT account_id FROM {table} WHERE ($1::uuid IS NULL OR account_id > $1)"
        " ORDER BY account_id LIMIT $2",
        last,
        batch,
    ):
        last = accounts[-1]["account_id"]
        for account in accounts:
            account_id, items = account["account_id"], []
            async with pool.acquire() as conn:
                old = await results.set_digest(conn, account_id, name)
                rows = await conn.fetch(
                    f"SELECT id, external_id, {extra} AS extra, data FROM {table} WHERE account_id = $1",
                    account_id,
                )
                for row in rows:
                    stored = bytes(row["data"])
                    body, new = pii.resealed(vault, kind, account_id, stored, row["external_id"])
                    part = body if row["extra"] is None else _tax_form_part(row["extra"], body)
                    items.append((row["external_id"], part))
                    if new is not None:
                        status = await conn.execute(
                            f"UPDATE {table} SET data = $2 WHERE id = $1 AND data = $3",
                            row["id"],
                            new,
                            stored,
                        )
                        done += status.endswith(" 1")
                await results.rekey_set_digest(conn, vault, account_id, name, pii.set_parts(items), old)
    return done


async def erase(conn: db.Executor, account_ids: list[uuid.UUID]) -> dict[str, int]:
    """Deletes every shift and tax form of these accounts (an erasure). Returns counts."""
    counts = {}
    for table in ("shifts", "tax_forms"):
        status = await conn.execute(f"DELETE FROM {table} WHERE account_id = ANY($1::uuid[])", account_ids)
        counts[table] = int(status.rsplit(" ", 1)[-1])
    return counts
