"""Storage of shifts, tax forms and documents: every write and every read of their tables.

One module on purpose: whoever seals these records at rest (or moves them) changes the write
functions (`store_*`) and the decode functions (`*_from_row`) here and nowhere else. Writes run in
the job outcome's transaction; each upserts the platform's records by their stable id and moves
the job_results row's refreshed_at (and updated_at when the set's content changed), like paystubs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence

import asyncpg
from paylink.v1 import common_pb2, document_pb2, shift_pb2, tax_form_pb2

from service import db, ids, timeutil
from service.documents import DocumentStore
from service.drivers.base import DocumentInfo, FetchedShift, FetchedTaxForm

_RESULT = """
INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
VALUES ($1, $2, NULL, $3, $4, $4)
ON CONFLICT (account_id, name) DO UPDATE SET
  refreshed_at = EXCLUDED.refreshed_at,
  updated_at = CASE WHEN job_results.content_hash = EXCLUDED.content_hash
                    THEN job_results.updated_at ELSE EXCLUDED.refreshed_at END,
  content_hash = EXCLUDED.content_hash
"""


def _set_hash(parts: Sequence[bytes]) -> bytes:
    """Hash of a set of records: independent of the order the platform listed them in."""
    digest = hashlib.sha256()
    for part in sorted(parts):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


async def _mark(
    conn: db.Conn, account_id: uuid.UUID, name: int, parts: Sequence[bytes], at: dt.datetime
) -> None:
    await conn.execute(_RESULT, account_id, name, _set_hash(parts), at)


# -- writes ----------------------------------------------------------------------------------------


async def store_shifts(
    conn: db.Conn, account_id: uuid.UUID, fetched: Sequence[FetchedShift], at: dt.datetime
) -> None:
    """Upserts the shifts by the platform's id."""
    bodies = []
    for item in fetched:
        shift = shift_pb2.Shift()
        shift.CopyFrom(item.shift)
        for field in ("id", "account_id", "created_at"):
            shift.ClearField(field)
        bodies.append(shift.SerializeToString(deterministic=True))
    await conn.execute(
        "INSERT INTO shifts (id, account_id, external_id, shift_date, data)"
        " SELECT i, $2, e, d, b FROM unnest($1::uuid[], $3::text[], $4::date[], $5::bytea[]) AS t(i, e, d, b)"
        " ON CONFLICT (account_id, external_id) DO UPDATE SET data = EXCLUDED.data, shift_date = EXCLUDED.shift_date",
        [ids.new_id() for _ in fetched],
        account_id,
        [item.external_id for item in fetched],
        [dt.date.fromisoformat(item.shift.date) for item in fetched],
        bodies,
    )
    parts = [item.external_id.encode() + b"\0" + body for item, body in zip(fetched, bodies, strict=True)]
    await _mark(conn, account_id, common_pb2.JOB_NAME_SHIFTS, parts, at)


async def store_tax_forms(
    conn: db.Conn, account_id: uuid.UUID, fetched: Sequence[FetchedTaxForm], at: dt.datetime
) -> None:
    """Upserts the tax forms by the platform's id."""
    bodies = []
    for item in fetched:
        form = tax_form_pb2.TaxForm()
        form.CopyFrom(item.tax_form)
        for field in ("id", "account_id", "created_at", "document_id"):
            form.ClearField(field)
        bodies.append(form.SerializeToString(deterministic=True))
    await conn.execute(
        "INSERT INTO tax_forms (id, account_id, external_id, year, document_external_id, data)"
        " SELECT i, $2, e, y, x, b FROM unnest($1::uuid[], $3::text[], $4::int[], $5::text[], $6::bytea[])"
        " AS t(i, e, y, x, b)"
        " ON CONFLICT (account_id, external_id) DO UPDATE SET data = EXCLUDED.data, year = EXCLUDED.year,"
        " document_external_id = EXCLUDED.document_external_id",
        [ids.new_id() for _ in fetched],
        account_id,
        [item.external_id for item in fetched],
        [item.tax_form.year for item in fetched],
        [item.document_external_id for item in fetched],
        bodies,
    )
    parts = [
        item.external_id.encode() + b"\0" + item.document_external_id.encode() + b"\0" + body
        for item, body in zip(fetched, bodies, strict=True)
    ]
    await _mark(conn, account_id, common_pb2.JOB_NAME_TAX_FORMS, parts, at)


def _sort_date(info: DocumentInfo) -> dt.date:
    if info.pay_date:
        return dt.date.fromisoformat(info.pay_date)
    return dt.date(min(max(info.year, 1), 9999), 12, 31)


async def store_documents(
    conn: db.Conn,
    store: DocumentStore,
    account_id: uuid.UUID,
    fetched: Sequence[tuple[DocumentInfo, bytes]],
    at: dt.datetime,
) -> None:
    """Upserts document metadata by the platform's id and hands the bytes to `store` when they are
    new or changed (by SHA-256). The caller checked sizes and hashes."""
    for info, content in fetched:
        digest = hashlib.sha256(content).digest()
        row = await conn.fetchrow(
            "INSERT INTO documents (id, account_id, external_id, type, name, content_type, size_bytes, sha256,"
            " pay_date, year, sort_date, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)"
            " ON CONFLICT (account_id, external_id) DO UPDATE SET type = EXCLUDED.type, name = EXCLUDED.name,"
            " content_type = EXCLUDED.content_type, size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256,"
            " pay_date = EXCLUDED.pay_date, year = EXCLUDED.year, sort_date = EXCLUDED.sort_date,"
            " updated_at = CASE WHEN documents.sha256 = EXCLUDED.sha256 THEN documents.updated_at"
            " ELSE EXCLUDED.updated_at END"
            " RETURNING id, (xmax = 0) AS inserted, updated_at = $12 AS changed",
            ids.new_id(),
            account_id,
            info.external_id,
            info.type,
            info.name,
            info.content_type,
            len(content),
            digest,
            dt.date.fromisoformat(info.pay_date) if info.pay_date else None,
            info.year,
            _sort_date(info),
            at,
        )
        assert row is not None
        if row["inserted"] or row["changed"]:
            await store.put(conn, row["id"], content)
    parts = [
        info.external_id.encode() + b"\0" + hashlib.sha256(content).digest() for info, content in fetched
    ]
    await _mark(conn, account_id, common_pb2.JOB_NAME_DOCUMENTS, parts, at)


# -- reads -----------------------------------------------------------------------------------------


async def data_times(conn: db.Executor, account_id: uuid.UUID, name: int) -> asyncpg.Record | None:
    """refreshed_at and updated_at of a job's data, or None before its first success."""
    return await conn.fetchrow(
        "SELECT refreshed_at, updated_at FROM job_results WHERE account_id = $1 AND name = $2",
        account_id,
        name,
    )


async def shift_rows(
    conn: db.Executor,
    account_id: uuid.UUID,
    low: dt.date | None,
    high: dt.date | None,
    after: tuple[dt.date, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Shifts newest first, within inclusive dates, after a (date, id) cursor."""
    return list(
        await conn.fetch(
            "SELECT id, account_id, shift_date, data, created_at FROM shifts WHERE account_id = $1"
            " AND ($2::date IS NULL OR shift_date >= $2) AND ($3::date IS NULL OR shift_date <= $3)"
            " AND ($4::date IS NULL OR (shift_date, id) < ($4, $5))"
            " ORDER BY shift_date DESC, id DESC LIMIT $6",
            account_id,
            low,
            high,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
    )


def shift_from_row(row: asyncpg.Record) -> shift_pb2.Shift:
    shift = shift_pb2.Shift.FromString(bytes(row["data"]))
    shift.id = str(row["id"])
    shift.account_id = str(row["account_id"])
    timeutil.set_ts(shift.created_at, row["created_at"])
    return shift


async def tax_form_rows(
    conn: db.Executor, account_id: uuid.UUID, year: int, after: tuple[int, uuid.UUID] | None, limit: int
) -> list[asyncpg.Record]:
    """Tax forms newest year first (optionally of one year), after a (year, id) cursor, with the
    id of their stored document."""
    return list(
        await conn.fetch(
            "SELECT t.id, t.account_id, t.year, t.data, t.created_at, d.id AS document_id FROM tax_forms t"
            " LEFT JOIN documents d ON d.account_id = t.account_id AND d.external_id = t.document_external_id"
            " WHERE t.account_id = $1 AND ($2 = 0 OR t.year = $2)"
            " AND ($3::int IS NULL OR (t.year, t.id) < ($3, $4))"
            " ORDER BY t.year DESC, t.id DESC LIMIT $5",
            account_id,
            year,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
    )


def tax_form_from_row(row: asyncpg.Record) -> tax_form_pb2.TaxForm:
    form = tax_form_pb2.TaxForm.FromString(bytes(row["data"]))
    form.id = str(row["id"])
    form.account_id = str(row["account_id"])
    form.document_id = str(row["document_id"]) if row["document_id"] else ""
    timeutil.set_ts(form.created_at, row["created_at"])
    return form


_DOCUMENT_COLUMNS = "id, account_id, type, name, content_type, size_bytes, sha256, pay_date, year, sort_date, created_at, updated_at"


async def document_rows(
    conn: db.Executor,
    account_id: uuid.UUID,
    doc_type: int,
    after: tuple[dt.date, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Documents newest first (optionally of one type), after a (sort date, id) cursor."""
    return list(
        await conn.fetch(
            f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE account_id = $1 AND ($2 = 0 OR type = $2)"
            " AND ($3::date IS NULL OR (sort_date, id) < ($3, $4))"
            " ORDER BY sort_date DESC, id DESC LIMIT $5",
            account_id,
            doc_type,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
    )


async def document_row(
    conn: db.Executor, account_id: uuid.UUID, document_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE id = $1 AND account_id = $2",
        document_id,
        account_id,
    )


def document_from_row(row: asyncpg.Record) -> document_pb2.Document:
    doc = document_pb2.Document(
        id=str(row["id"]),
        account_id=str(row["account_id"]),
        type=row["type"],
        name=row["name"],
        content_type=row["content_type"],
        size_bytes=row["size_bytes"],
        sha256=bytes(row["sha256"]).hex(),
        pay_date=row["pay_date"].isoformat() if row["pay_date"] else "",
        year=row["year"],
    )
    timeutil.set_ts(doc.created_at, row["created_at"])
    timeutil.set_ts(doc.updated_at, row["updated_at"])
    return doc
