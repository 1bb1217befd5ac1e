"""Sealing at rest covers every column of personal data (issue 17), on real PostgreSQL:

- every binary column of the schema is registered in service/sealed.py (sealed with a row AAD,
  personal data sealed per account and kind, or listed with the reason it is not sealed), so a new
  or renamed column cannot silently escape `vault reencrypt`;
- every personal-data column has its sealer in `vault reencrypt`;
- shifts, tax forms and document bytes are sealed as they are stored and read back the same;
- rows stored before sealing (plain) read, and `vault reencrypt` seals them online and re-keys
  their change digests, a second run changing nothing;
- document bytes sealed in parts read back by any range.
"""

from __future__ import annotations

import os
import uuid

import pytest
from paylink.v1 import account_pb2, common_pb2

from service import audit, documents, maintenance, pii, record_jobs, records, runtime, sealed, timeutil
from service.drivers.sandbox import SandboxDriver
from service.vault import VaultError
from tests.harness import Client, link_account

J = common_pb2


async def test_every_binary_column_is_registered_sealed_or_says_why(app: runtime.Running) -> None:
    rows = await app.deps.pool.fetch(
        "SELECT table_name || '.' || column_name AS name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND data_type = 'bytea'"
    )
    schema = {r["name"] for r in rows}
    with_row_aad = {f"{c.table}.{c.column}" for c in sealed.COLUMNS}
    personal = {c.name for c in sealed.PERSONAL_DATA}
    groups = [with_row_aad, personal, {sealed.IDEMPOTENCY_RESPONSE}, set(sealed.NOT_SEALED)]
    registered = set().union(*groups)
    assert sum(len(g) for g in groups) == len(registered), "a column is registered twice"
    assert schema - registered == set(), "binary columns that nobody says are sealed or why not"
    assert registered - schema == set(), "registered columns that the schema no longer has (renamed?)"
    assert set(maintenance.PERSONAL_SEALERS) == personal


async def _account(
    app: runtime.Running, client: Client, username: str, platform: str
) -> tuple[uuid.UUID, audit.Who]:
    _, session = await link_account(client, username, [J.JOB_NAME_IDENTITY], platform_id=platform)
    account_id = uuid.UUID(session.account_id)
    workspace = await app.deps.pool.fetchval("SELECT workspace_id FROM accounts WHERE id = $1", account_id)
    from service import grants
    from service.drivers.base import AccessGrant, JobContext

    grant = await grants.load(app.deps, app.deps.pool, account_id)
    assert grant is not None
    ctx = JobContext(str(account_id), platform, AccessGrant(grant), attempt=1)
    for name in (J.JOB_NAME_SHIFTS, J.JOB_NAME_TAX_FORMS, J.JOB_NAME_DOCUMENTS):
        fetched = await record_jobs.fetch(SandboxDriver(), ctx, name, common_pb2.JobParams())
        async with app.deps.pool.acquire() as conn, conn.transaction():
            await record_jobs.store(
                conn, app.deps.vault, app.deps.documents, account_id, fetched, timeutil.now()
            )
    return account_id, audit.Who(workspace, "sealing-test", "", "test", "req-sealing")


async def _read_all(
    app: runtime.Running, who: audit.Who, account_id: uuid.UUID
) -> tuple[
    account_pb2.ListShiftsResponse,
    account_pb2.ListTaxFormsResponse,
    account_pb2.ListDocumentsResponse,
    list[bytes],
]:
    a = str(account_id)
    shifts = await records.list_shifts(
        app.deps, who, account_pb2.ListShiftsRequest(account_id=a, page_size=100)
    )
    forms = await records.list_tax_forms(app.deps, who, account_pb2.ListTaxFormsRequest(account_id=a))
    docs = await records.list_documents(app.deps, who, account_pb2.ListDocumentsRequest(account_id=a))
    contents: list[bytes] = []
    for doc in docs.documents:
        request = account_pb2.DownloadDocumentRequest(account_id=a, document_id=doc.id, chunk_size=4096)
        contents.append(
            b"".join([c.data async for c in await records.download_document(app.deps, who, request)])
        )
    return shifts, forms, docs, contents


async def _stored(app: runtime.Running, account_id: uuid.UUID) -> list[bytes]:
    pool = app.deps.pool
    out = [
        bytes(r["data"])
        for r in await pool.fetch("SELECT data FROM shifts WHERE account_id = $1", account_id)
    ]
    out += [
        bytes(r["data"])
        for r in await pool.fetch("SELECT data FROM tax_forms WHERE account_id = $1", account_id)
    ]
    out += [
        bytes(r["content"])
        for r in await pool.fetch(
            "SELECT c.content FROM document_contents c JOIN documents d ON d.id = c.document_id"
            " WHERE d.account_id = $1",
            account_id,
        )
    ]
    return out


async def test_records_are_sealed_and_rows_stored_before_sealing_are_sealed_online(
    app: runtime.Running, client: Client
) -> None:
    pool, vault = app.deps.pool, app.deps.vault
    account_id, who = await _account(app, client, "user_gig+sealed", "sandbox_gig")
    before = await _read_all(app, who, account_id)
    shifts, forms, docs, contents = before
    assert shifts.shifts and forms.tax_forms and docs.documents
    stored = await _stored(app, account_id)
    assert stored and all(pii.is_sealed(v) for v in stored)
    assert not [v for v in stored if b"%PDF" in v or b"Paid to" in v]
    assert await pool.fetchval(
        "SELECT bool_and(sealed) FROM document_contents c JOIN documents d"
        " ON d.id = c.document_id WHERE d.account_id = $1",
        account_id,
    )

    # As a database before sealing held them: plain bodies, each document one plain part, plain
    # SHA-256 set digests.
    for table, kind in (("shifts", pii.Kind.SHIFT), ("tax_forms", pii.Kind.TAX_FORM)):
        for row in await pool.fetch(
            f"SELECT id, external_id, data FROM {table} WHERE account_id = $1", account_id
        ):
            plain = pii.open_data(vault, kind, account_id, bytes(row["data"]), row["external_id"])
            await pool.execute(f"UPDATE {table} SET data = $2 WHERE id = $1", row["id"], plain)
    for doc, content in zip(docs.documents, contents, strict=True):
        await pool.execute("DELETE FROM document_contents WHERE document_id = $1", uuid.UUID(doc.id))
        await pool.execute(
            "INSERT INTO document_contents (document_id, part, sealed, content) VALUES ($1, 0, false, $2)",
            uuid.UUID(doc.id),
            content,
        )
    names = [J.JOB_NAME_SHIFTS, J.JOB_NAME_TAX_FORMS, J.JOB_NAME_DOCUMENTS]
    await pool.execute(
        "UPDATE job_results SET content_hash = sha256(content_hash) WHERE account_id = $1 AND name = ANY($2)",
        account_id,
        names,
    )
    assert not [v for v in await _stored(app, account_id) if pii.is_sealed(v)]
    assert await _read_all(app, who, account_id) == before  # rows stored before sealing still read

    counts = await maintenance.reencrypt(pool, vault)
    assert counts["shifts.data"] >= len(shifts.shifts) and counts["tax_forms.data"] >= len(forms.tax_forms)
    assert counts["document_contents.content"] >= len(contents)
    stored = await _stored(app, account_id)
    assert stored and all(pii.is_sealed(v) for v in stored)
    assert await _read_all(app, who, account_id) == before
    digests = await pool.fetch(
        "SELECT content_hash FROM job_results WHERE account_id = $1 AND name = ANY($2)", account_id, names
    )
    primary = vault.keyring.primary  # keyed digests again (they name their key), not plain SHA-256
    assert len(digests) == 3 and all(
        bytes(d["content_hash"])[1 : 1 + d["content_hash"][0]].decode() == primary for d in digests
    )
    again = await maintenance.reencrypt(pool, vault)
    assert {k: v for k, v in again.items() if v} == {}


async def test_document_bytes_sealed_in_parts_read_back_by_any_range(
    app: runtime.Running, client: Client
) -> None:
    pool, vault = app.deps.pool, app.deps.vault
    _, session = await link_account(client, "user_good+parts", [J.JOB_NAME_IDENTITY])
    account_id = uuid.UUID(session.account_id)
    document_id = uuid.uuid4()
    content = os.urandom(3 * documents.SEGMENT_BYTES + 1234)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO documents (id, account_id, external_id, type, name, content_type, size_bytes, sha256,"
            " sort_date) VALUES ($1, $2, 'parts', 1, 'p.pdf', 'application/pdf', $3, '\\x00', current_date)",
            document_id,
            account_id,
            len(content),
        )
        await app.deps.documents.put(conn, vault, account_id, document_id, content)
    parts = await pool.fetch(
        "SELECT part, sealed, content FROM document_contents WHERE document_id = $1 ORDER BY part",
        document_id,
    )
    assert [p["part"] for p in parts] == [0, 1, 2, 3] and all(p["sealed"] for p in parts)
    seg = documents.SEGMENT_BYTES
    for offset, length in [
        (0, 512),
        (seg - 10, 20),
        (seg - 1, 2 * seg + 2),
        (3 * seg, 5000),
        (len(content) - 1, 100),
        (len(content), 10),
    ]:
        got = await app.deps.documents.read(pool, vault, account_id, document_id, offset, length)
        assert got == content[offset : offset + length], (offset, length)
    with pytest.raises(VaultError):  # a part opens only for its account
        await app.deps.documents.read(pool, vault, uuid.uuid4(), document_id, 0, 10)
