"""Where document bytes are kept: the DocumentStore interface and its PostgreSQL implementation
(the default), the one writer of `document_contents`.

Metadata (name, type, size, SHA-256) always lives in the `documents` table (service/records_store.py);
a DocumentStore only keeps the bytes, by document id. Documents are personal data (a paystub's or a
W-2's PDF names the person, their SSN digits and pay): the PostgreSQL store seals them in parts of
SEGMENT_BYTES, each with the AAD `pii:document:<account_id>:<document_id>:<part>` (service/pii.py),
writes them in the same transaction as the metadata, and reads back only the parts a chunk needs, so
a download never holds a whole document in memory. A document stored before sealing is one plain
part (sealed = false) that still reads until `vault reencrypt` seals it (`seal_existing`).
docs/architecture.md says how a deployment moves the bytes to object storage behind the same
interface.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from service import db, pii, sealed
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
