"""Issue 13 end to end through gRPC and Kafka: the shifts, tax_forms and documents jobs in a Link
session, with CreateJob and with On Demand Updates; their reads (pages, date range, year, chunked
download whose SHA-256 matches); catalogue use outside a session; employer_id preselection."""

from __future__ import annotations

import hashlib

import grpc
from paylink.v1 import account_pb2, catalog_pb2, document_pb2, event_pb2, job_pb2, link_pb2, tax_form_pb2
from paylink.v1 import common_pb2 as c

from tests.harness import (
    Client,
    EventLog,
    error_reason,
    link_account,
    rpc_error,
    start_session,
    violation_fields,
    wait_job,
)

RECORD_JOBS = [c.JOB_NAME_SHIFTS, c.JOB_NAME_TAX_FORMS, c.JOB_NAME_DOCUMENTS]
EVENTS = {
    c.JOB_NAME_SHIFTS: "shifts.added",
    c.JOB_NAME_TAX_FORMS: "tax_forms.added",
    c.JOB_NAME_DOCUMENTS: "documents.added",
}


async def job_event(
    events: EventLog, account_id: str, name: c.JobName.ValueType, job_id: str = ""
) -> event_pb2.Event:
    found = await events.wait_for(
        lambda r: (
            r.event.account_id == account_id
            and r.event.event == EVENTS[name]
            and (not job_id or r.event.job.job_id == job_id)
            and r.event.job.outcome != c.JOB_OUTCOME_PENDING
        )
    )
    return found[-1].event


async def download(
    client: Client, account_id: str, document_id: str, chunk_size: int = 512
) -> tuple[document_pb2.Document, bytes, int]:
    chunks = [
        chunk
        async for chunk in client.accounts.DownloadDocument(
            account_pb2.DownloadDocumentRequest(
                account_id=account_id, document_id=document_id, chunk_size=chunk_size
            ),
            metadata=client.md(),
        )
    ]
    assert chunks[0].HasField("document") and not any(ch.HasField("document") for ch in chunks[1:])
    offsets, position = [], 0
    for ch in chunks:
        offsets.append(ch.offset)
        assert ch.offset == position and len(ch.data) <= (chunk_size or 65536)
        position += len(ch.data)
    return chunks[0].document, b"".join(ch.data for ch in chunks), len(chunks)


async def test_gig_worker_jobs_events_and_reads(client: Client, events: EventLog) -> None:
    _, session = await link_account(
        client, "user_gig+e2e", [c.JOB_NAME_PAYSTUBS, *RECORD_JOBS], platform_id="sandbox_gig"
    )
    account_id = session.account_id
    for item in session.jobs:
        if item.name in EVENTS:
            event = await job_event(events, account_id, item.name, item.job_id)
            assert event.job.outcome == c.JOB_OUTCOME_SUCCESS and event.job.name == item.name
            assert event.job.platform_id == "sandbox_gig" and event.job.origin == c.JOB_ORIGIN_LINK
    settled = await events.settled(account_id)
    assert sorted(j.name for j in settled.event.link_session_completed.jobs) == sorted(
        [c.JOB_NAME_PAYSTUBS, *RECORD_JOBS]
    )
    md = client.md()
    # Shifts: pages of 10 walk everything once, newest first; a date range narrows.
    seen, token = [], ""
    while True:
        page = await client.accounts.ListShifts(
            account_pb2.ListShiftsRequest(account_id=account_id, page_size=10, page_token=token), metadata=md
        )
        seen += list(page.shifts)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) > 20 and len({s.id for s in seen}) == len(seen)
    assert [s.date for s in seen] == sorted((s.date for s in seen), reverse=True)
    assert all(
        s.total_pay.amount_cents == s.base_pay.amount_cents + s.tips.amount_cents + s.incentives.amount_cents
        for s in seen
    )
    low, high = seen[-1].date, seen[len(seen) // 2].date
    ranged = await client.accounts.ListShifts(
        account_pb2.ListShiftsRequest(account_id=account_id, from_date=low, to_date=high, page_size=100),
        metadata=md,
    )
    assert (
        ranged.shifts and all(low <= s.date <= high for s in ranged.shifts) and len(ranged.shifts) < len(seen)
    )
    assert page.HasField("refreshed_at") and page.HasField("updated_at")
    # Tax forms by year: a 1099-K and a 1099-NEC for 2025, each with its PDF.
    forms = await client.accounts.ListTaxForms(
        account_pb2.ListTaxFormsRequest(account_id=account_id, year=2025), metadata=md
    )
    assert sorted(f.type for f in forms.tax_forms) == [
        tax_form_pb2.TAX_FORM_TYPE_1099_NEC,
        tax_form_pb2.TAX_FORM_TYPE_1099_K,
    ]
    k = next(f for f in forms.tax_forms if f.type == tax_form_pb2.TAX_FORM_TYPE_1099_K)
    assert (
        sum(m.amount_cents for m in k.form_1099_k.monthly_gross)
        == k.form_1099_k.gross_amount.amount_cents
        > 0
    )
    # Documents: metadata, then a download in chunks whose SHA-256 matches.
    docs = await client.accounts.ListDocuments(
        account_pb2.ListDocumentsRequest(account_id=account_id, page_size=100), metadata=md
    )
    by_id = {d.id: d for d in docs.documents}
    assert k.document_id in by_id and by_id[k.document_id].type == document_pb2.DOCUMENT_TYPE_TAX_FORM
    meta, body, chunks = await download(client, account_id, k.document_id)
    assert meta == by_id[k.document_id] and chunks > 1
    assert len(body) == meta.size_bytes and hashlib.sha256(body).hexdigest() == meta.sha256
    assert body.startswith(b"%PDF-1.4") and meta.content_type == "application/pdf"
    stubs = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=md
    )
    newest = stubs.paystubs[0]
    assert newest.document_id in by_id and by_id[newest.document_id].pay_date == newest.pay_date
    one = await client.accounts.GetDocument(
        account_pb2.GetDocumentRequest(account_id=account_id, document_id=newest.document_id), metadata=md
    )
    assert one == by_id[newest.document_id]
    _, whole, count = await download(client, account_id, newest.document_id, chunk_size=0)
    assert count == 1 and hashlib.sha256(whole).hexdigest() == one.sha256
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=md
    )
    assert account.data_refreshed_at.HasField("shifts") and account.data_refreshed_at.HasField("documents")


async def test_refresh_and_on_demand_update_run_the_new_jobs(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_salaried+odu", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    md = client.md()
    job = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(
            account_id=account_id, name=c.JOB_NAME_TAX_FORMS, tax_forms=c.TaxFormsParams(year=2024)
        ),
        metadata=md,
    )
    done = await wait_job(client, job.id)
    assert done.outcome == c.JOB_OUTCOME_SUCCESS and done.params.tax_forms.year == 2024
    event = await job_event(events, account_id, c.JOB_NAME_TAX_FORMS, job.id)
    assert event.job.origin == c.JOB_ORIGIN_REFRESH and event.job.params.tax_forms.year == 2024
    forms = await client.accounts.ListTaxForms(
        account_pb2.ListTaxFormsRequest(account_id=account_id), metadata=md
    )
    assert [(f.year, f.type) for f in forms.tax_forms] == [(2024, tax_form_pb2.TAX_FORM_TYPE_W2)]
    # A salaried user has no shifts: the job succeeds and stores none.
    shifts_job = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(
            account_id=account_id,
            name=c.JOB_NAME_SHIFTS,
            shifts=c.ShiftsParams(from_date="2026-01-01", to_date="2026-06-30"),
        ),
        metadata=md,
    )
    assert (await wait_job(client, shifts_job.id)).outcome == c.JOB_OUTCOME_SUCCESS
    assert (
        list(
            (
                await client.accounts.ListShifts(
                    account_pb2.ListShiftsRequest(account_id=account_id), metadata=md
                )
            ).shifts
        )
        == []
    )
    # On Demand Updates: a token bound to the account runs the documents job with no credentials.
    token = await client.token([c.JOB_NAME_DOCUMENTS], account_id=account_id)
    bound = await start_session(client, token.token)
    assert bound.on_demand_update
    await client.wait_session(bound.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    event = await job_event(events, account_id, c.JOB_NAME_DOCUMENTS)
    assert event.job.outcome == c.JOB_OUTCOME_SUCCESS and event.job.link_session_id == bound.id
    docs = await client.accounts.ListDocuments(
        account_pb2.ListDocumentsRequest(account_id=account_id, type=document_pb2.DOCUMENT_TYPE_TAX_FORM),
        metadata=md,
    )
    assert {d.year for d in docs.documents} == {2024, 2025}


async def test_new_requests_are_validated(client: Client) -> None:
    _, session = await link_account(
        client, "user_good+v", [c.JOB_NAME_IDENTITY], platform_id="sandbox_workday"
    )
    account_id, md = session.account_id, client.md()
    cases = [
        (
            client.jobs.CreateJob(
                job_pb2.CreateJobRequest(
                    account_id=account_id,
                    name=c.JOB_NAME_SHIFTS,
                    shifts=c.ShiftsParams(from_date="2025-01-01", to_date="2026-06-01"),
                ),
                metadata=md,
            ),
            ["shifts.to_date"],
        ),
        (
            client.jobs.CreateJob(
                job_pb2.CreateJobRequest(
                    account_id=account_id, name=c.JOB_NAME_TAX_FORMS, tax_forms=c.TaxFormsParams(year=1999)
                ),
                metadata=md,
            ),
            ["tax_forms.year"],
        ),
        (
            client.jobs.CreateJob(
                job_pb2.CreateJobRequest(
                    account_id=account_id, name=c.JOB_NAME_IDENTITY, tax_forms=c.TaxFormsParams(year=2024)
                ),
                metadata=md,
            ),
            ["tax_forms"],
        ),
        (
            client.accounts.ListShifts(
                account_pb2.ListShiftsRequest(account_id=account_id, from_date="2026-02-30"), metadata=md
            ),
            ["from_date"],
        ),
        (
            client.accounts.ListShifts(
                account_pb2.ListShiftsRequest(
                    account_id=account_id, from_date="2026-02-01", to_date="2026-01-01"
                ),
                metadata=md,
            ),
            ["to_date"],
        ),
        (
            client.accounts.ListTaxForms(
                account_pb2.ListTaxFormsRequest(account_id=account_id, year=3000), metadata=md
            ),
            ["year"],
        ),
        (
            client.accounts.ListDocuments(
                account_pb2.ListDocumentsRequest(
                    account_id=account_id, type=document_pb2.DocumentType.ValueType(99)
                ),
                metadata=md,
            ),
            ["type"],
        ),
        (
            client.accounts.ListShifts(
                account_pb2.ListShiftsRequest(account_id=account_id, page_size=101), metadata=md
            ),
            ["page_size"],
        ),
    ]
    for call, fields in cases:
        exc = await rpc_error(call)
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == fields, fields
    # Workday keeps no shifts: CreateJob says so before anything runs.
    exc = await rpc_error(
        client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_SHIFTS), metadata=md
        )
    )
    assert exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    exc = await rpc_error(
        client.accounts.GetDocument(
            account_pb2.GetDocumentRequest(
                account_id=account_id, document_id="00000000-0000-4000-8000-000000000000"
            ),
            metadata=md,
        )
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    call = client.accounts.DownloadDocument(
        account_pb2.DownloadDocumentRequest(account_id=account_id, document_id="nope", chunk_size=100),
        metadata=md,
    )
    exc = await rpc_error(_drain(call))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["chunk_size"]
    call = client.accounts.DownloadDocument(
        account_pb2.DownloadDocumentRequest(account_id=account_id, document_id="nope")
    )
    exc = await rpc_error(_drain(call))
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED  # streaming RPCs are authenticated too


async def _drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


async def test_employer_id_preselects_its_platform(client: Client) -> None:
    found = await client.catalog.SearchEmployers(
        catalog_pb2.SearchEmployersRequest(query="bluebird"), metadata=client.md()
    )
    employer = found.employers[0]
    assert employer.platform_id == "sandbox_workday"
    token = await client.token([c.JOB_NAME_IDENTITY], employer_id=employer.id)
    assert token.employer_id == employer.id and token.platform_id == "sandbox_workday"
    session = await start_session(client, token.token)
    assert session.platform_id == "sandbox_workday"
    # The user logs in without choosing a platform: the employer's is used.
    done = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(session_id=session.id, username="user_good", password="pass_good"),
        metadata=client.md(),
    )
    assert done.account_id
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=done.account_id), metadata=client.md()
    )
    assert account.platform_id == "sandbox_workday"
    exc = await rpc_error(client.token([c.JOB_NAME_IDENTITY], employer_id="emp_nobody"))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["employer_id"]
    exc = await rpc_error(
        client.token([c.JOB_NAME_IDENTITY], employer_id=employer.id, platform_id="sandbox_adp")
    )
    assert violation_fields(exc) == ["employer_id"]
    exc = await rpc_error(client.token([c.JOB_NAME_SHIFTS], employer_id=employer.id))  # Workday has no shifts
    assert violation_fields(exc) == ["employer_id"]
    _ = error_reason
