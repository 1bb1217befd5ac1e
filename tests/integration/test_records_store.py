"""Shifts, tax forms and documents fetched from the sandbox platform, stored in PostgreSQL and read
back (service/record_jobs.py, records_store.py, records.py): upserts by the platform's id,
refreshed_at/updated_at, pages, filters, paystub and tax form links to their documents, and a
chunked download whose SHA-256 matches."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable

import pytest
from paylink.v1 import account_pb2, common_pb2, document_pb2, tax_form_pb2

from service import audit, errors, record_jobs, records, result_reads, results, runtime, timeutil
from service.api.status import ApiError, from_domain
from service.drivers.base import AccessGrant, JobContext, PaystubQuery
from service.drivers.sandbox import SandboxDriver
from tests.harness import Client, link_account

J = common_pb2


async def _as_api(call: Awaitable[object]) -> object:
    """What the caller sees on the wire: a domain error as its gRPC status (service/api/status.py)."""
    try:
        return await call
    except errors.DomainError as exc:
        raise from_domain(exc) from exc


async def _context(
    app: runtime.Running, client: Client, username: str, platform_id: str
) -> tuple[uuid.UUID, uuid.UUID, JobContext]:
    _, session = await link_account(client, username, [J.JOB_NAME_IDENTITY], platform_id=platform_id)
    account_id = uuid.UUID(session.account_id)
    workspace_id = await app.deps.pool.fetchval("SELECT workspace_id FROM accounts WHERE id = $1", account_id)
    from service import grants

    grant = await grants.load(app.deps, app.deps.pool, account_id)
    assert grant is not None
    return workspace_id, account_id, JobContext(str(account_id), platform_id, AccessGrant(grant), attempt=1)


async def _run(
    app: runtime.Running,
    ctx: JobContext,
    account_id: uuid.UUID,
    name: int,
    params: common_pb2.JobParams | None = None,
) -> record_jobs.Records:
    fetched = await record_jobs.fetch(SandboxDriver(), ctx, name, params or common_pb2.JobParams())
    async with app.deps.pool.acquire() as conn, conn.transaction():
        await record_jobs.store(conn, app.deps.vault, app.deps.documents, account_id, fetched, timeutil.now())
    return fetched


def _who(workspace_id: uuid.UUID) -> audit.Who:
    return audit.Who(workspace_id, "records-test", "", "records", "req-records")


async def test_shifts_are_upserted_paged_and_filtered(app: runtime.Running, client: Client) -> None:
    workspace_id, account_id, ctx = await _context(app, client, "user_gig", "sandbox_gig")
    fetched = await _run(app, ctx, account_id, J.JOB_NAME_SHIFTS)
    assert len(fetched.shifts) > 30
    first = await records.list_shifts(
        app.deps, _who(workspace_id), account_pb2.ListShiftsRequest(account_id=str(account_id), page_size=100)
    )
    assert len(first.shifts) == len(fetched.shifts) and first.HasField("refreshed_at")
    dates = [s.date for s in first.shifts]
    assert dates == sorted(dates, reverse=True)
    # The same job again: the same rows (upserted by the platform's id), updated_at unchanged.
    await _run(app, ctx, account_id, J.JOB_NAME_SHIFTS)
    again = await records.list_shifts(
        app.deps, _who(workspace_id), account_pb2.ListShiftsRequest(account_id=str(account_id), page_size=100)
    )
    assert [s.id for s in again.shifts] == [
        s.id for s in first.shifts
    ] and again.updated_at == first.updated_at
    # Pages walk everything once; a date range narrows.
    seen, token = [], ""
    while True:
        page = await records.list_shifts(
            app.deps,
            _who(workspace_id),
            account_pb2.ListShiftsRequest(account_id=str(account_id), page_size=7, page_token=token),
        )
        seen += [s.id for s in page.shifts]
        token = page.next_page_token
        if not token:
            break
    assert seen == [s.id for s in first.shifts]
    low, high = dates[-1], dates[len(dates) // 2]
    ranged = await records.list_shifts(
        app.deps,
        _who(workspace_id),
        account_pb2.ListShiftsRequest(account_id=str(account_id), from_date=low, to_date=high, page_size=100),
    )
    assert ranged.shifts and all(low <= s.date <= high for s in ranged.shifts)
    for bad, fields in (
        (account_pb2.ListShiftsRequest(account_id=str(account_id), from_date="2026-13-01"), ["from_date"]),
        (
            account_pb2.ListShiftsRequest(
                account_id=str(account_id), from_date="2026-02-01", to_date="2026-01-01"
            ),
            ["to_date"],
        ),
    ):
        with pytest.raises(ApiError) as info:
            await _as_api(records.list_shifts(app.deps, _who(workspace_id), bad))
        assert [f.field for f in info.value.details[0].field_violations] == fields  # type: ignore[attr-defined]


async def test_tax_forms_by_year_with_their_documents(app: runtime.Running, client: Client) -> None:
    workspace_id, account_id, ctx = await _context(app, client, "user_gig", "sandbox_gig")
    await _run(app, ctx, account_id, J.JOB_NAME_TAX_FORMS)
    everything = await records.list_tax_forms(
        app.deps, _who(workspace_id), account_pb2.ListTaxFormsRequest(account_id=str(account_id))
    )
    assert [(f.year, f.type) for f in everything.tax_forms] == sorted(
        ((f.year, f.type) for f in everything.tax_forms), key=lambda x: x[0], reverse=True
    )
    assert {f.type for f in everything.tax_forms} == {
        tax_form_pb2.TAX_FORM_TYPE_1099_K,
        tax_form_pb2.TAX_FORM_TYPE_1099_NEC,
    }
    assert all(f.document_id == "" for f in everything.tax_forms)  # no documents job yet
    only = await records.list_tax_forms(
        app.deps, _who(workspace_id), account_pb2.ListTaxFormsRequest(account_id=str(account_id), year=2024)
    )
    assert only.tax_forms and {f.year for f in only.tax_forms} == {2024}
    with pytest.raises(errors.DomainError):
        await records.list_tax_forms(
            app.deps,
            _who(workspace_id),
            account_pb2.ListTaxFormsRequest(account_id=str(account_id), year=1999),
        )
    # After a documents job each form names its PDF.
    await _run(app, ctx, account_id, J.JOB_NAME_DOCUMENTS)
    linked = await records.list_tax_forms(
        app.deps, _who(workspace_id), account_pb2.ListTaxFormsRequest(account_id=str(account_id))
    )
    assert all(f.document_id for f in linked.tax_forms)


async def test_documents_download_in_chunks_and_link_paystubs(app: runtime.Running, client: Client) -> None:
    workspace_id, account_id, ctx = await _context(app, client, "user_salaried", "sandbox_adp")
    driver = SandboxDriver()
    async with app.deps.pool.acquire() as conn, conn.transaction():
        await results.store_paystubs(
            conn, app.deps.vault, account_id, await driver.fetch_paystubs(ctx, PaystubQuery()), timeutil.now()
        )
    fetched = await _run(app, ctx, account_id, J.JOB_NAME_DOCUMENTS)
    listed = await records.list_documents(
        app.deps,
        _who(workspace_id),
        account_pb2.ListDocumentsRequest(account_id=str(account_id), page_size=100),
    )
    assert len(listed.documents) == len(fetched.documents) and listed.HasField("updated_at")
    by_name = {info.name: content for info, content in fetched.documents}
    for doc in listed.documents[:3] + listed.documents[-1:]:
        chunks = [
            c
            async for c in await records.download_document(
                app.deps,
                _who(workspace_id),
                account_pb2.DownloadDocumentRequest(
                    account_id=str(account_id), document_id=doc.id, chunk_size=512
                ),
            )
        ]
        assert (
            len(chunks) > 1
            and chunks[0].document == doc
            and not any(c.HasField("document") for c in chunks[1:])
        )
        assert [c.offset for c in chunks] == [512 * i for i in range(len(chunks))]
        body = b"".join(c.data for c in chunks)
        assert (
            body == by_name[doc.name]
            and hashlib.sha256(body).hexdigest() == doc.sha256
            and len(body) == doc.size_bytes
        )
    who = audit.Who(workspace_id, "records-test", "", "ListPaystubs", "req-records")
    stubs = await result_reads.list_paystubs(
        app.deps, who, account_pb2.ListPaystubsRequest(account_id=str(account_id), page_size=100)
    )
    paystub_docs = {
        d.pay_date: d.id for d in listed.documents if d.type == document_pb2.DOCUMENT_TYPE_PAYSTUB
    }
    assert stubs.paystubs and all(s.document_id == paystub_docs[s.pay_date] for s in stubs.paystubs)
    only_forms = await records.list_documents(
        app.deps,
        _who(workspace_id),
        account_pb2.ListDocumentsRequest(
            account_id=str(account_id), type=document_pb2.DOCUMENT_TYPE_TAX_FORM
        ),
    )
    assert only_forms.documents and {d.type for d in only_forms.documents} == {
        document_pb2.DOCUMENT_TYPE_TAX_FORM
    }
    with pytest.raises(errors.DomainError):
        await records.download_document(
            app.deps,
            _who(workspace_id),
            account_pb2.DownloadDocumentRequest(
                account_id=str(account_id), document_id=listed.documents[0].id, chunk_size=100
            ),
        )
    with pytest.raises(errors.DomainError):
        await records.get_document(
            app.deps,
            _who(workspace_id),
            account_pb2.GetDocumentRequest(account_id=str(account_id), document_id=str(uuid.uuid4())),
        )
    got = await records.get_document(
        app.deps,
        _who(workspace_id),
        account_pb2.GetDocumentRequest(account_id=str(account_id), document_id=listed.documents[0].id),
    )
    assert got == listed.documents[0]


def test_job_params_are_checked() -> None:
    v = errors.Violations()
    params = common_pb2.JobParams(
        shifts=common_pb2.ShiftsParams(from_date="2025-01-01", to_date="2026-06-01")
    )
    record_jobs.check_params(v, "", J.JOB_NAME_SHIFTS, params)
    params = common_pb2.JobParams(tax_forms=common_pb2.TaxFormsParams(year=1999))
    record_jobs.check_params(v, "", J.JOB_NAME_SHIFTS, params)
    assert v.items == [
        ("shifts.to_date", "must be at most 366 days after from_date"),
        ("tax_forms", "is only allowed with JOB_NAME_TAX_FORMS"),
        ("tax_forms.year", "must be 0 or a year from 2000 to 2100"),
    ]
