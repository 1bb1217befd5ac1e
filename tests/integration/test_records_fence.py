"""Shifts, tax forms, documents and their sets' `job_results` rows and the erasure fence (migrations
0017 and 0171: a BEFORE INSERT OR UPDATE row trigger on each table): storing fires it once per record
(stored ones updated, only new ones inserted; as INSERT ... ON CONFLICT DO UPDATE it fired twice for
each one stored), and for an account an erasure fenced nothing is added or changed."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import asyncpg
from paylink.v1 import document_pb2, shift_pb2, tax_form_pb2

from service import documents, records_store, runtime, timeutil
from service.drivers.base import DocumentInfo, FetchedShift, FetchedTaxForm
from tests.harness import count_firings, insert_account

TABLES = ("shifts", "tax_forms", "documents", "job_results")
_COUNT_FIRINGS = count_firings(*TABLES)


def _shifts(*hours: int) -> list[FetchedShift]:
    return [
        FetchedShift(f"s{i}", shift_pb2.Shift(date=f"2026-01-{10 + i}", hours_hundredths=h))
        for i, h in enumerate(hours)
    ]


def _forms(*years: int) -> list[FetchedTaxForm]:
    return [FetchedTaxForm(f"t{i}", tax_form_pb2.TaxForm(year=y), f"doc-t{i}") for i, y in enumerate(years)]


def _documents(*bodies: bytes) -> list[tuple[DocumentInfo, bytes]]:
    return [
        (
            DocumentInfo(
                f"d{i}",
                document_pb2.DOCUMENT_TYPE_PAYSTUB,
                f"d{i}.pdf",
                "application/pdf",
                len(body),
                hashlib.sha256(body).hexdigest(),
                pay_date=f"2026-01-{10 + i}",
            ),
            body,
        )
        for i, body in enumerate(bodies)
    ]


async def _store(
    app: runtime.Running,
    conn: asyncpg.Connection,
    account: uuid.UUID,
    at: dt.datetime,
    shifts: list[FetchedShift],
    forms: list[FetchedTaxForm],
    fetched_documents: list[tuple[DocumentInfo, bytes]],
) -> None:
    vault = app.deps.vault
    async with conn.transaction():
        await records_store.store_shifts(conn, vault, account, shifts, at)
        await records_store.store_tax_forms(conn, vault, account, forms, at)
        await documents.store_fetched(conn, vault, app.deps.documents, account, fetched_documents, at)


async def _firings(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT tab, count(*) AS n FROM fence_firings GROUP BY tab")
    return {r["tab"]: r["n"] for r in rows}


async def _stored(conn: asyncpg.Connection, account: uuid.UUID) -> dict[str, list[tuple[object, ...]]]:
    return {
        t: [
            tuple(r)
            for r in await conn.fetch(
                f"SELECT * FROM {t} WHERE account_id = $1 ORDER BY {'name' if t == 'job_results' else 'external_id'}",
                account,
            )
        ]
        for t in TABLES
    }


async def test_storing_records_fires_the_fence_once_per_record(
    app: runtime.Running, db: asyncpg.Connection
) -> None:
    _, account = await insert_account(db, name="fence")
    await db.execute(_COUNT_FIRINGS)
    t0 = timeutil.now()
    await _store(app, db, account, t0, _shifts(100, 200), _forms(2024), _documents(b"one", b"two"))
    assert await _firings(db) == {"shifts": 2, "tax_forms": 1, "documents": 2, "job_results": 3}
    first = await _stored(db, account)
    t1 = t0 + dt.timedelta(seconds=1)
    # Stored again, one of each changed, one of each new: each record and each set's row once.
    await _store(
        app, db, account, t1, _shifts(100, 250, 300), _forms(2024, 2025), _documents(b"one", b"2", b"3")
    )
    assert await _firings(db) == {
        "shifts": 5,
        "tax_forms": 3,
        "documents": 5,
        "job_results": 6,
    }  # before: 7, 4, 7, 9
    second = await _stored(db, account)
    assert [len(second[t]) for t in TABLES] == [3, 2, 3, 3]
    documents = {r[2]: r for r in second["documents"]}  # by external_id: (..., updated_at) last
    assert (
        documents["d0"][-1] == first["documents"][0][-1] and documents["d1"][-1] == t1
    )  # changed bytes only
    assert all(r[4] == t1 for r in second["job_results"])  # refreshed_at moved for every set


async def test_a_fenced_account_s_records_are_neither_added_nor_changed(
    app: runtime.Running, db: asyncpg.Connection
) -> None:
    _, account = await insert_account(db, name="fence")
    t0 = timeutil.now()
    await _store(app, db, account, t0, _shifts(100), _forms(2024), _documents(b"one"))
    before = await _stored(db, account)
    await db.execute("UPDATE accounts SET erasure_id = gen_random_uuid() WHERE id = $1", account)
    await _store(
        app,
        db,
        account,
        t0 + dt.timedelta(seconds=1),
        _shifts(100, 200),
        _forms(2023, 2025),
        _documents(b"1", b"2"),
    )
    assert await _stored(db, account) == before
