"""Documents: their metadata in the `documents` table and their bytes behind the DocumentStore
interface, with its PostgreSQL implementation (the default); the one writer of `documents` and
`document_contents`.

Metadata (name, type, size, SHA-256) always lives in the `documents` table, upserted by the
platform's id in the job outcome's transaction (the erasure fence fires once per record, like
service/records_store.py's upserts) and read with the read's audit record in the same statement
(service/audit.py: `attach`). A DocumentStore only keeps the bytes, by document id. Documents are personal data (a paystub's or a
W-2's PDF names the person, their SSN digits and pay): the PostgreSQL store seals them in parts of
SEGMENT_BYTES, each with the AAD `pii:document:<account_id>:<document_id>:<part>` (service/pii.py),
writes them in the same transaction as the metadata, and reads back only the parts a chunk needs, so
a download never holds a whole document in memory. A document stored before sealing is one plain
part (sealed = false) that still reads until `vault reencrypt` seals it (`seal_existing`).
docs/architecture.md says how a deployment moves the bytes to object storage behind the same
interface.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from typing import Protocol

import asyncpg
from paylink.v1 import common_pb2, document_pb2

from service import audit, db, ids, pii, results, sealed, timeutil
from service.audit_commit import GroupCommit
from service.drivers.base import DocumentInfo
from service.vault import Vault

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024  # larger documents are not stored (the job records why)
MAX_DOCUMENTS_PER_JOB = 100
DEFAULT_CHUNK_BYTES = 64 * 1024
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 512, 1024 * 1024
SEGMENT_BYTES = 64 * 1024  # plaintext bytes per sealed part (never change: stored parts use it)


class DocumentStore(Protocol):
    """Keeps document bytes by document id, sealed for their account."""

    async def put(
        self, conn: db.Conn, vault: Vault, account_id: uuid.UUID, document_id: uuid.UUID, content: bytes
    ) -> None:
        """Stores (or replaces) the bytes, inside the caller's transaction."""
        ...

    async def read(
        self,
        conn: db.Executor,
        vault: Vault,
        account_id: uuid.UUID,
        document_id: uuid.UUID,
        offset: int,
        length: int,
    ) -> bytes:
        """Up to `length` bytes from `offset`; b"" past the end or for an unknown id."""
        ...


# --- Metadata: the `documents` table ------------------------------------------------------------

_DOCUMENT_SET = """type = {new}.type, name = {new}.name, content_type = {new}.content_type,
  size_bytes = {new}.size_bytes, sha256 = {new}.sha256, pay_date = {new}.pay_date, year = {new}.year,
  sort_date = {new}.sort_date,
  updated_at = CASE WHEN documents.sha256 = {new}.sha256 THEN documents.updated_at ELSE {new}.updated_at END"""
_DOCUMENT_UPSERT = f"""
WITH v AS (
  SELECT $1::uuid AS id, $3::text AS external_id, $4::smallint AS type, $5::text AS name, $6::text AS content_type,
         $7::int AS size_bytes, $8::bytea AS sha256, $9::date AS pay_date, $10::int AS year,
         $11::date AS sort_date, $12::timestamptz AS updated_at),
updated AS (
  UPDATE documents SET {_DOCUMENT_SET.format(new="v")}
  FROM v WHERE documents.account_id = $2 AND documents.external_id = v.external_id
  RETURNING documents.id, false AS inserted, documents.updated_at = $12 AS changed),
inserted AS (
  INSERT INTO documents (id, account_id, external_id, type, name, content_type, size_bytes, sha256,
                         pay_date, year, sort_date, created_at, updated_at)
  SELECT id, $2, external_id, type, name, content_type, size_bytes, sha256, pay_date, year, sort_date,
         updated_at, updated_at
  FROM v WHERE NOT EXISTS (SELECT FROM documents d WHERE d.account_id = $2 AND d.external_id = v.external_id)
  ON CONFLICT (account_id, external_id) DO UPDATE SET {_DOCUMENT_SET.format(new="EXCLUDED")}
  RETURNING id, (xmax = 0) AS inserted, updated_at = $12 AS changed)
SELECT * FROM updated UNION ALL SELECT * FROM inserted
"""


def _sort_date(info: DocumentInfo) -> dt.date:
    if info.pay_date:
        return dt.date.fromisoformat(info.pay_date)
    return dt.date(min(max(info.year, 1), 9999), 12, 31)


async def store_fetched(
    conn: db.Conn,
    vault: Vault,
    store: DocumentStore,
    account_id: uuid.UUID,
    fetched: Sequence[tuple[DocumentInfo, bytes]],
    at: dt.datetime,
) -> None:
    """Upserts document metadata by the platform's id and hands the bytes to `store` when they are
    new or changed (by SHA-256), which seals them. The caller checked sizes and hashes."""
    for info, content in fetched:
        digest = hashlib.sha256(content).digest()
        row = await conn.fetchrow(
            _DOCUMENT_UPSERT,
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
        if row is None:  # fenced by an erasure: nothing is stored
            return
        if row["inserted"] or row["changed"]:
            await store.put(conn, vault, account_id, row["id"], content)
    parts = pii.set_parts([(info.external_id, hashlib.sha256(content).digest()) for info, content in fetched])
    await results.mark_set(conn, vault, account_id, common_pb2.JOB_NAME_DOCUMENTS, parts, at)


_DOCUMENT_COLUMNS = "id, account_id, type, name, content_type, size_bytes, sha256, pay_date, year, sort_date, created_at, updated_at"
_DOCUMENTS = audit.attach(
    f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE account_id = $1 AND ($2 = 0 OR type = $2)"
    " AND ($3::date IS NULL OR (sort_date, id) < ($3, $4))"
    " ORDER BY sort_date DESC, id DESC LIMIT $5",
    5,
)
# One document and, when found, the read's audit record (account and end user from the row).
_DOCUMENT = audit.attach(
    f"SELECT $3::text AS end_user_id, {_DOCUMENT_COLUMNS} FROM documents WHERE id = $1 AND account_id = $2",
    3,
    subject="SELECT account_id, end_user_id FROM target",
)


async def list_rows(
    reads: GroupCommit,
    record: audit.Record,
    doc_type: int,
    after: tuple[dt.date, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Documents of the record's account newest first (optionally of one type), after a (sort date,
    id) cursor; writes the read's audit record."""
    return list(
        await reads.fetch(
            _DOCUMENTS,
            record.account_id,
            doc_type,
            after[0] if after else None,
            after[1] if after else None,
            limit,
            *record.args(),
        )
    )


async def get_row(reads: GroupCommit, record: audit.Record, document_id: uuid.UUID) -> asyncpg.Record | None:
    """One document of the record's account; writes the read's audit record when it exists."""
    return await reads.fetchrow(
        _DOCUMENT, document_id, record.account_id, record.end_user_id, *record.args(from_subject=True)
    )


def from_row(row: asyncpg.Record) -> document_pb2.Document:
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


# --- Bytes: the PostgreSQL DocumentStore (`document_contents`) -----------------------------------


def _item(document_id: uuid.UUID, part: int) -> str:
    return f"{document_id}:{part}"


# The parts a range needs; a part stored before sealing (the whole document) cut in SQL.
# substring() on bytea counts from 1.
_READ = """
SELECT part, sealed, CASE WHEN sealed THEN content ELSE substring(content FROM $4 FOR $5) END AS content
FROM document_contents WHERE document_id = $1 AND (NOT sealed OR part BETWEEN $2 AND $3) ORDER BY part
"""


class PostgresDocumentStore:
    """Sealed parts in the `document_contents` table."""

    async def put(
        self, conn: db.Conn, vault: Vault, account_id: uuid.UUID, document_id: uuid.UUID, content: bytes
    ) -> None:
        parts = [content[i : i + SEGMENT_BYTES] for i in range(0, len(content), SEGMENT_BYTES)]
        blobs = [
            pii.seal(vault, pii.Kind.DOCUMENT, account_id, body, _item(document_id, n))
            for n, body in enumerate(parts)
        ]
        await conn.execute("DELETE FROM document_contents WHERE document_id = $1", document_id)
        await conn.execute(
            "INSERT INTO document_contents (document_id, part, sealed, content)"
            " SELECT $1, p, true, c FROM unnest($2::int[], $3::bytea[]) AS t(p, c)",
            document_id,
            list(range(len(blobs))),
            blobs,
        )

    async def read(
        self,
        conn: db.Executor,
        vault: Vault,
        account_id: uuid.UUID,
        document_id: uuid.UUID,
        offset: int,
        length: int,
    ) -> bytes:
        first, last = offset // SEGMENT_BYTES, (offset + max(length, 1) - 1) // SEGMENT_BYTES
        rows = await conn.fetch(_READ, document_id, first, last, offset + 1, length)
        if rows and not rows[0]["sealed"]:
            return bytes(rows[0]["content"])
        body = b"".join(
            pii.open_data(
                vault, pii.Kind.DOCUMENT, account_id, bytes(r["content"]), _item(document_id, r["part"])
            )
            for r in rows
        )
        start = offset - first * SEGMENT_BYTES
        return body[start : start + length]


async def seal_existing(pool: db.Pool, vault: Vault, batch: int) -> dict[str, int]:
    """`document_contents.content`: seals documents stored before sealing (one at a time, each in
    its own transaction with the plain row locked) and re-seals parts under an older key (a
    compare-and-set on what was read). Returns how many documents or parts changed."""
    store, done = PostgresDocumentStore(), 0
    while plain := await pool.fetch(
        "SELECT c.document_id, d.account_id FROM document_contents c JOIN documents d ON d.id = c.document_id"
        " WHERE NOT c.sealed ORDER BY c.document_id LIMIT $1",
        min(batch, 20),  # up to 10 MiB each
    ):
        for row in plain:
            async with pool.acquire() as conn, conn.transaction():
                content = await conn.fetchval(
                    "SELECT content FROM document_contents WHERE document_id = $1 AND NOT sealed FOR UPDATE",
                    row["document_id"],
                )
                if content is not None:
                    await store.put(conn, vault, row["account_id"], row["document_id"], bytes(content))
                    done += 1
    last: tuple[uuid.UUID | None, int] = (None, 0)
    while rows := await pool.fetch(
        "SELECT c.document_id, c.part, c.content, d.account_id FROM document_contents c"
        " JOIN documents d ON d.id = c.document_id WHERE c.sealed"
        " AND ($1::uuid IS NULL OR (c.document_id, c.part) > ($1, $2)) ORDER BY c.document_id, c.part LIMIT $3",
        *last,
        batch,
    ):
        last = (rows[-1]["document_id"], rows[-1]["part"])
        for row in rows:
            stored = bytes(row["content"])
            item = _item(row["document_id"], row["part"])
            _, new = pii.resealed(vault, pii.Kind.DOCUMENT, row["account_id"], stored, item)
            if new is not None:
                status = await pool.execute(
                    "UPDATE document_contents SET content = $3 WHERE document_id = $1 AND part = $2"
                    " AND content = $4",
                    row["document_id"],
                    row["part"],
                    new,
                    stored,
                )
                done += status.endswith(" 1")
    return {sealed.DOCUMENT_CONTENT.name: done}


async def rekey_set_digests(pool: db.Pool, vault: Vault, batch: int) -> dict[str, int]:
    """Re-keys the set digest of every account's documents (their bytes: `seal_existing`)."""
    done, last = 0, None
    while accounts := await pool.fetch(
        "SELECT DISTINCT account_id FROM documents WHERE ($1::uuid IS NULL OR account_id > $1)"
        " ORDER BY account_id LIMIT $2",
        last,
        batch,
    ):
        last = accounts[-1]["account_id"]
        for account in accounts:
            account_id = account["account_id"]
            old = await results.set_digest(pool, account_id, common_pb2.JOB_NAME_DOCUMENTS)
            rows = await pool.fetch(
                "SELECT external_id, sha256 FROM documents WHERE account_id = $1", account_id
            )
            parts = pii.set_parts([(r["external_id"], bytes(r["sha256"])) for r in rows])
            done += await results.rekey_set_digest(
                pool, vault, account_id, common_pb2.JOB_NAME_DOCUMENTS, parts, old
            )
    return {"job_results.content_hash.documents": done}


async def erase(conn: db.Executor, account_ids: list[uuid.UUID]) -> int:
    """Deletes every document of these accounts (an erasure; their bytes in `document_contents` go
    with them, ON DELETE CASCADE; a DocumentStore outside PostgreSQL would delete its objects here
    too). Returns how many."""
    status = await conn.execute("DELETE FROM documents WHERE account_id = ANY($1::uuid[])", account_ids)
    return int(status.rsplit(" ", 1)[-1])
