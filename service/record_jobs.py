"""The shifts, tax_forms and documents jobs: what the worker asks the platform for, the checks on
what comes back, and storing it (in the outcome transaction).

`fetch` runs with no database connection held (it is the platform call); `store` runs inside the
job outcome's transaction. Parameters are validated by `check_params` when a job is created.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid

from paylink.v1 import common_pb2

from service import db, documents, errors, records_store, validation
from service.documents import DocumentStore
from service.drivers.base import (
    DocumentInfo,
    FetchedShift,
    FetchedTaxForm,
    JobContext,
    PlatformDriver,
    PlatformError,
    ShiftQuery,
)
from service.vault import Vault

J = common_pb2
RECORD_JOBS = frozenset({J.JOB_NAME_SHIFTS, J.JOB_NAME_TAX_FORMS, J.JOB_NAME_DOCUMENTS})
MAX_SHIFT_RANGE = dt.timedelta(days=366)
MAX_TAX_FORMS = 100
MAX_SHIFTS = 1000  # per job


@dataclasses.dataclass(frozen=True, slots=True)
class Records:
    """What a shifts, tax_forms or documents job fetched."""

    name: int
    shifts: tuple[FetchedShift, ...] = ()
    tax_forms: tuple[FetchedTaxForm, ...] = ()
    documents: tuple[tuple[DocumentInfo, bytes], ...] = ()
    skipped: tuple[str, ...] = ()  # documents not stored (over the size limit), by name


def check_params(v: errors.Violations, field: str, name: int, params: common_pb2.JobParams) -> None:
    """Validates the shifts and tax_forms parameters of a job (`field` prefixes the names)."""
    if params.HasField("shifts"):
        if name != J.JOB_NAME_SHIFTS:
            v.add(f"{field}shifts", "is only allowed with JOB_NAME_SHIFTS")
        low, high = validation.date_range(
            v,
            f"{field}shifts.from_date",
            params.shifts.from_date,
            f"{field}shifts.to_date",
            params.shifts.to_date,
        )
        if low and high and high - low > MAX_SHIFT_RANGE:  # a negative span is the violation above
            v.add(f"{field}shifts.to_date", "must be at most 366 days after from_date")
    if params.HasField("tax_forms"):
        if name != J.JOB_NAME_TAX_FORMS:
            v.add(f"{field}tax_forms", "is only allowed with JOB_NAME_TAX_FORMS")
        year = params.tax_forms.year
        if year and not 2000 <= year <= 2100:
            v.add(f"{field}tax_forms.year", "must be 0 or a year from 2000 to 2100")


async def fetch(driver: PlatformDriver, ctx: JobContext, name: int, params: common_pb2.JobParams) -> Records:
    """Calls the platform for one job; PlatformError as the driver raises it, or when a document's
    bytes do not match the size and SHA-256 the platform stated (transient: fetched again)."""
    if name == J.JOB_NAME_SHIFTS:
        query = ShiftQuery(params.shifts.from_date, params.shifts.to_date)
        return Records(name, shifts=tuple((await driver.fetch_shifts(ctx, query))[:MAX_SHIFTS]))
    if name == J.JOB_NAME_TAX_FORMS:
        forms = await driver.fetch_tax_forms(ctx, params.tax_forms.year)
        return Records(name, tax_forms=tuple(forms[:MAX_TAX_FORMS]))
    infos = (await driver.fetch_documents(ctx))[: documents.MAX_DOCUMENTS_PER_JOB]
    fetched, skipped = [], []
    for info in infos:
        if info.size_bytes > documents.MAX_DOCUMENT_BYTES:
            skipped.append(info.name)
            continue
        content = await driver.fetch_document_content(ctx, info.external_id)
        if len(content) != info.size_bytes or hashlib.sha256(content).hexdigest() != info.sha256.lower():
            raise PlatformError(
                J.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE,
                f"The document {info.name!r} arrived damaged (size or SHA-256 mismatch)",
                transient=True,
            )
        fetched.append((info, content))
    return Records(name, documents=tuple(fetched), skipped=tuple(skipped))


async def store(
    conn: db.Conn,
    vault: Vault,
    store_: DocumentStore,
    account_id: uuid.UUID,
    records: Records,
    at: dt.datetime,
) -> None:
    """Stores what the job fetched, sealed (inside the outcome transaction)."""
    if records.name == J.JOB_NAME_SHIFTS:
        await records_store.store_shifts(conn, vault, account_id, records.shifts, at)
    elif records.name == J.JOB_NAME_TAX_FORMS:
        await records_store.store_tax_forms(conn, vault, account_id, records.tax_forms, at)
    else:
        await documents.store_fetched(conn, vault, store_, account_id, records.documents, at)
