"""Where document bytes are kept: the DocumentStore interface and its PostgreSQL implementation
(the default).

Metadata (name, type, size, SHA-256) always lives in the `documents` table (service/records_store.py);
a DocumentStore only keeps the bytes, by document id. The PostgreSQL store writes them in the same
transaction as the metadata (`document_contents`), and reads them back a chunk at a time with
`substring`, so a download never holds a whole document in memory. docs/architecture.md says how a
deployment moves the bytes to object storage behind the same interface.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from service import db

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024  # larger documents are not stored (the job records why)
MAX_DOCUMENTS_PER_JOB = 100
DEFAULT_CHUNK_BYTES = 64 * 1024
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 512, 1024 * 1024


class DocumentStore(Protocol):
    """Keeps document bytes by document id."""

    async def put(self, conn: db.Conn, document_id: uuid.UUID, content: bytes) -> None:
        """Stores (or replaces) the bytes, inside the caller's transaction."""
        ...

    async def read(self, conn: db.Executor, document_id: uuid.UUID, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`; b"" past the end or for an unknown id."""
        ...


class PostgresDocumentStore:
    """Bytes in the `document_contents` table."""

    async def put(self, conn: db.Conn, document_id: uuid.UUID, content: bytes) -> None:
        await conn.execute(
            "INSERT INTO document_contents (document_id, content) VALUES ($1, $2)"
            " ON CONFLICT (document_id) DO UPDATE SET content = EXCLUDED.content",
            document_id,
            content,
        )

    async def read(self, conn: db.Executor, document_id: uuid.UUID, offset: int, length: int) -> bytes:
        # substring() on bytea counts from 1.
        chunk = await conn.fetchval(
            "SELECT substring(content FROM $2 FOR $3) FROM document_contents WHERE document_id = $1",
            document_id,
            offset + 1,
            length,
        )
        return bytes(chunk) if chunk is not None else b""
