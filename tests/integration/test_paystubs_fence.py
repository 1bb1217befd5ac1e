"""Paystubs and the erasure fence (migration 0017's BEFORE INSERT OR UPDATE row trigger on `paystubs`):
storing fires it once per paystub (stored ones updated, only new ones inserted; as one INSERT ... ON
CONFLICT DO UPDATE it fired twice for each one stored), and for an account an erasure fenced nothing
is added or changed, and no paystub is reported added."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
from paylink.v1 import common_pb2, data_pb2

from service import results, runtime, timeutil
from service.drivers.base import FetchedPaystub
from tests.harness import count_firings, insert_account

_COUNT_FIRINGS = count_firings("paystubs")


def _stub(external_id: str, pay_date: str, net: int) -> FetchedPaystub:
    return FetchedPaystub(
        external_id,
        data_pb2.Paystub(pay_date=pay_date, net_pay=common_pb2.Money(amount_cents=net, currency="USD")),
        f"doc-{external_id}",
    )


async def _store(
    app: runtime.Running,
    conn: asyncpg.Connection,
    account: uuid.UUID,
    stubs: list[FetchedPaystub],
    at: dt.datetime,
) -> results.Stored:
    async with conn.transaction():
        return await results.store_paystubs(conn, app.deps.vault, account, stubs, at)


async def _stored(conn: asyncpg.Connection, account: uuid.UUID) -> dict[str, bytes]:
    rows = await conn.fetch("SELECT external_id, data FROM paystubs WHERE account_id = $1", account)
    return {r["external_id"]: bytes(r["data"]) for r in rows}


async def test_storing_paystubs_fires_the_fence_once_per_paystub(
    app: runtime.Running, db: asyncpg.Connection
) -> None:
    _, account = await insert_account(db, name="fence")
    await db.execute(_COUNT_FIRINGS)
    t0 = timeutil.now()
    first = await _store(app, db, account, [_stub("a", "2026-01-15", 100), _stub("b", "2026-01-31", 200)], t0)
    assert [s.pay_date for s in first.added_paystubs] == ["2026-01-31", "2026-01-15"]
    assert await db.fetchval("SELECT count(*) FROM fence_firings") == 2
    before = await _stored(db, account)
    later = [_stub("a", "2026-01-15", 100), _stub("b", "2026-01-31", 250), _stub("c", "2026-02-15", 300)]
    second = await _store(app, db, account, later, t0 + dt.timedelta(seconds=1))
    assert await db.fetchval("SELECT count(*) FROM fence_firings") == 5  # before: 7 (2 per stored one)
    assert [s.pay_date for s in second.added_paystubs] == ["2026-02-15"] and second.changed
    after = await _stored(db, account)
    assert set(after) == {"a", "b", "c"} and after["b"] != before["b"]
    [added] = second.added_paystubs
    assert added.net_pay.amount_cents == 300 and added.account_id == str(account) and added.id


async def test_a_fenced_account_s_paystubs_are_neither_added_nor_changed(
    app: runtime.Running, db: asyncpg.Connection
) -> None:
    _, account = await insert_account(db, name="fence")
    t0 = timeutil.now()
    await _store(app, db, account, [_stub("a", "2026-01-15", 100)], t0)
    before = await _stored(db, account)
    await db.execute("UPDATE accounts SET erasure_id = gen_random_uuid() WHERE id = $1", account)
    stored = await _store(
        app,
        db,
        account,
        [_stub("a", "2026-01-15", 999), _stub("b", "2026-01-31", 200)],
        t0 + dt.timedelta(seconds=1),
    )
    assert stored == results.Stored(False)
    assert await _stored(db, account) == before
