"""Reads of shifts, tax forms and documents (AccountService): validation, pages, messages, and the
chunked document download. Storage is in service/records_store.py, document bytes behind
service/documents.DocumentStore. Every read that releases personal data writes one audit record
(a list page even when empty, like ListPaystubs; a document only when found)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
from google.protobuf.message import Message
from paylink.v1 import account_pb2, common_pb2, document_pb2, privacy_pb2

from service import (
    accounts,
    audit,
    db,
    documents,
    errors,
    ids,
    pagination,
    records_store,
    timeutil,
    validation,
)
from service.deps import Deps
from service.vault import Vault

MIN_YEAR, MAX_YEAR = 2000, 2100


def _times(response: Message, row: asyncpg.Record | None) -> None:
    if row is not None:
        timeutil.set_ts(response.refreshed_at, row["refreshed_at"])  # type: ignore[attr-defined]
        timeutil.set_ts(response.updated_at, row["updated_at"])  # type: ignore[attr-defined]


def _date_cursor(cursor: pagination.Cursor | None) -> tuple[dt.date, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        return dt.date.fromisoformat(cursor.key), cursor.id
    except ValueError as exc:
        raise errors.invalid_field("page_token", "is not a page token this list returned") from exc


def year_in_range(v: errors.Violations, field: str, year: int) -> None:
    """0 (no year) or a year from MIN_YEAR to MAX_YEAR."""
    if year and not MIN_YEAR <= year <= MAX_YEAR:
        v.add(field, f"must be 0 or a year from {MIN_YEAR} to {MAX_YEAR}")


async def list_shifts(
    deps: Deps, who: audit.Who, request: account_pb2.ListShiftsRequest
) -> account_pb2.ListShiftsResponse:
    v = errors.Violations()
    size = pagination.page_size(request.page_size)
    low, high = validation.date_range(v, "from_date", request.from_date, "to_date", request.to_date)
    v.raise_if_any()
    account = await accounts.fetch(deps.pool, who.workspace_id, request.account_id)
    filters = {"a": request.account_id, "f": request.from_date, "t": request.to_date}
    after = _date_cursor(pagination.decode(request.page_token, filters))
    record = _record(who, privacy_pb2.AUDIT_RESOURCE_SHIFTS, account)
    rows = await records_store.shift_rows(deps.audited, record, low, high, after, size + 1)
    response = account_pb2.ListShiftsResponse(
        shifts=[records_store.shift_from_row(deps.vault, r) for r in rows[:size]]
    )
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = pagination.encode(
            pagination.Cursor(last["shift_date"].isoformat(), last["id"]), filters
        )
    _times(response, await records_store.data_times(deps.pool, account["id"], common_pb2.JOB_NAME_SHIFTS))
    return response


async def list_tax_forms(
    deps: Deps, who: audit.Who, request: account_pb2.ListTaxFormsRequest
) -> account_pb2.ListTaxFormsResponse:
    v = errors.Violations()
    size = pagination.page_size(request.page_size)
    year_in_range(v, "year", request.year)
    v.raise_if_any()
    account = await accounts.fetch(deps.pool, who.workspace_id, request.account_id)
    filters = {"a": request.account_id, "y": request.year}
    cursor = pagination.decode(request.page_token, filters)
    after = None
    if cursor is not None:
        if not cursor.key.isdigit():
            raise errors.invalid_field("page_token", "is not a page token this list returned")
        after = (int(cursor.key), cursor.id)
    record = _record(who, privacy_pb2.AUDIT_RESOURCE_TAX_FORMS, account)
    rows = await records_store.tax_form_rows(deps.audited, record, request.year, after, size + 1)
    response = account_pb2.ListTaxFormsResponse(
        tax_forms=[records_store.tax_form_from_row(deps.vault, r) for r in rows[:size]]
    )
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = pagination.encode(
            pagination.Cursor(str(last["year"]), last["id"]), filters
        )
    _times(response, await records_store.data_times(deps.pool, account["id"], common_pb2.JOB_NAME_TAX_FORMS))
    return response


async def list_documents(
    deps: Deps, who: audit.Who, request: account_pb2.ListDocumentsRequest
) -> account_pb2.ListDocumentsResponse:
    size = pagination.page_size(request.page_size)
    if request.type not in document_pb2.DocumentType.values():
        raise errors.invalid_field("type", "is not a known document type")
    account = await accounts.fetch(deps.pool, who.workspace_id, request.account_id)
    filters = {"a": request.account_id, "t": request.type}
    after = _date_cursor(pagination.decode(request.page_token, filters))
    record = _record(who, privacy_pb2.AUDIT_RESOURCE_DOCUMENTS, account)
    rows = await documents.list_rows(deps.audited, record, request.type, after, size + 1)
    response = account_pb2.ListDocumentsResponse(documents=[documents.from_row(r) for r in rows[:size]])
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = pagination.encode(
            pagination.Cursor(last["sort_date"].isoformat(), last["id"]), filters
        )
    _times(response, await records_store.data_times(deps.pool, account["id"], common_pb2.JOB_NAME_DOCUMENTS))
    return response


def _record(who: audit.Who, resource: int, account: asyncpg.Record) -> audit.Record:
    return audit.Record(who, audit.READ, resource, account["id"], account["end_user_id"])


async def _document(deps: Deps, who: audit.Who, account_id: str, document_id: str) -> asyncpg.Record:
    """A document's row, with the read's audit record (only when found)."""
    account = await accounts.fetch(deps.pool, who.workspace_id, account_id)
    parsed = ids.parse_uuid(document_id)
    record = _record(who, privacy_pb2.AUDIT_RESOURCE_DOCUMENTS, account)
    row = await documents.get_row(deps.audited, record, parsed) if parsed else None
    if row is None:
        raise errors.not_found("document", document_id)
    return row


async def get_document(
    deps: Deps, who: audit.Who, request: account_pb2.GetDocumentRequest
) -> document_pb2.Document:
    return documents.from_row(await _document(deps, who, request.account_id, request.document_id))


def chunk_size(value: int) -> int:
    """The chunk size of a download: 0 means the default; otherwise within the limits."""
    if value == 0:
        return documents.DEFAULT_CHUNK_BYTES
    if not documents.MIN_CHUNK_BYTES <= value <= documents.MAX_CHUNK_BYTES:
        raise errors.invalid_field(
            "chunk_size",
            f"must be 0 or from {documents.MIN_CHUNK_BYTES} to {documents.MAX_CHUNK_BYTES} bytes",
        )
    return value


async def download_document(
    deps: Deps, who: audit.Who, request: account_pb2.DownloadDocumentRequest
) -> AsyncIterator[document_pb2.DocumentChunk]:
    """The document's bytes in order, `chunk_size` at a time; the first chunk carries the metadata.
    Every error (bad chunk size, unknown account or document) is raised before the first chunk."""
    size = chunk_size(request.chunk_size)
    row = await _document(deps, who, request.account_id, request.document_id)
    meta = documents.from_row(row)
    return _chunks(deps.documents, deps.pool, deps.vault, row, meta, size)


async def _chunks(
    store: documents.DocumentStore,
    pool: db.Pool,
    vault: Vault,
    row: asyncpg.Record,
    meta: document_pb2.Document,
    size: int,
) -> AsyncIterator[document_pb2.DocumentChunk]:
    offset = 0
    while True:
        data = (
            await store.read(pool, vault, row["account_id"], row["id"], offset, size)
            if offset < meta.size_bytes
            else b""
        )
        chunk = document_pb2.DocumentChunk(data=data, offset=offset)
        if offset == 0:
            chunk.document.CopyFrom(meta)
        yield chunk
        offset += len(data)
        if not data or offset >= meta.size_bytes:
            return
