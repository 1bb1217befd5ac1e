"""`results.store_many` (a batch of job outcomes' data in one statement, service/job_outcomes.py)
stores exactly what `results.store` stores: the same sealing (AAD bound to the account and the data
kind), the same change detection by keyed digests (`changed`, the previous content, `updated_at`
moving only on a real change), and nothing for an account an erasure fenced."""

from __future__ import annotations

import datetime as dt
import uuid

from paylink.v1 import common_pb2, data_pb2

from service import pii, results, runtime, timeutil
from service.db import connect as db_connect
from tests.harness import Client, count_firings, insert_account, link_account

J = common_pb2


async def _account(client: Client, username: str) -> uuid.UUID:
    _, session = await link_account(client, username, [J.JOB_NAME_IDENTITY])
    return uuid.UUID(session.account_id)


async def _row(
    app: runtime.Running, account_id: uuid.UUID, name: int
) -> tuple[bytes, dt.datetime, dt.datetime]:
    row = await app.deps.pool.fetchrow(
        "SELECT data, refreshed_at, updated_at FROM job_results WHERE account_id = $1 AND name = $2",
        account_id,
        name,
    )
    assert row is not None
    return bytes(row["data"]), row["refreshed_at"], row["updated_at"]


async def test_store_many_seals_and_detects_changes_like_store(app: runtime.Running, client: Client) -> None:
    first, second = await _account(client, "user_good"), await _account(client, "user_salaried")
    vault = app.deps.vault
    employment = J.JOB_NAME_EMPLOYMENT
    a = data_pb2.Employment(title="Baker")
    b = data_pb2.Employment(title="Chef")
    t0 = timeutil.now()
    async with app.deps.pool.acquire() as conn, conn.transaction():
        # One account stored before with `store`, the other new: both in one batch.
        await results.store(conn, vault, first, employment, a, t0)
    t1 = t0 + dt.timedelta(seconds=1)
    async with app.deps.pool.acquire() as conn, conn.transaction():
        stored = await results.store_many(
            conn, vault, [(first, employment, a, t1), (second, employment, b, t1)]
        )
    assert stored == [
        results.Stored(False, a.SerializeToString(deterministic=True)),
        results.Stored(True, None),
    ]
    data, refreshed, updated = await _row(app, first, employment)
    assert (refreshed, updated) == (t1, t0)  # refreshed, not changed
    kind = pii.result_kind(employment)
    assert pii.is_sealed(data) and pii.open_data(vault, kind, first, data) == a.SerializeToString(
        deterministic=True
    )
    data, refreshed, updated = await _row(app, second, employment)
    assert (refreshed, updated) == (t1, t1)
    assert pii.open_data(vault, kind, second, data) == b.SerializeToString(deterministic=True)

    # A change: reported with the previous content, updated_at moves; the same answer `store` gives.
    t2 = t1 + dt.timedelta(seconds=1)
    async with app.deps.pool.acquire() as conn, conn.transaction():
        stored = await results.store_many(conn, vault, [(first, employment, b, t2)])
        again = await results.store(conn, vault, second, employment, a, t2)
    assert stored == [results.Stored(True, a.SerializeToString(deterministic=True))]
    assert again == results.Stored(True, b.SerializeToString(deterministic=True))
    assert (await _row(app, first, employment))[1:] == (t2, t2)


async def test_store_many_stores_nothing_for_a_fenced_account(app: runtime.Running, client: Client) -> None:
    fenced, kept = await _account(client, "user_good"), await _account(client, "user_good")
    await app.deps.pool.execute("UPDATE accounts SET erasure_id = $2 WHERE id = $1", fenced, uuid.uuid4())
    identity = data_pb2.Identity(first_name="Ada")
    at = timeutil.now()
    async with app.deps.pool.acquire() as conn, conn.transaction():
        stored = await results.store_many(
            conn,
            app.deps.vault,
            [(fenced, J.JOB_NAME_INCOME, identity, at), (kept, J.JOB_NAME_INCOME, identity, at)],
        )
    assert stored == [results.Stored(False), results.Stored(True, None)]
    names = await app.deps.pool.fetch(
        "SELECT account_id FROM job_results WHERE account_id = ANY($1::uuid[]) AND name = $2",
        [fenced, kept],
        J.JOB_NAME_INCOME,
    )
    assert [r["account_id"] for r in names] == [kept]


async def test_store_many_keeps_a_fenced_account_s_stored_data_as_it_was(
    app: runtime.Running, client: Client
) -> None:
    """An account fenced after its data was stored: a later store changes nothing (the refresh's
    update is skipped as the new row's insert is)."""
    fenced = await _account(client, "user_good")
    employment = J.JOB_NAME_EMPLOYMENT
    t0 = timeutil.now()
    async with app.deps.pool.acquire() as conn, conn.transaction():
        await results.store_many(
            conn, app.deps.vault, [(fenced, employment, data_pb2.Employment(title="A"), t0)]
        )
    before = await _row(app, fenced, employment)
    await app.deps.pool.execute("UPDATE accounts SET erasure_id = $2 WHERE id = $1", fenced, uuid.uuid4())
    later = t0 + dt.timedelta(seconds=1)
    async with app.deps.pool.acquire() as conn, conn.transaction():
        stored = await results.store_many(
            conn, app.deps.vault, [(fenced, employment, data_pb2.Employment(title="B"), later)]
        )
        alone = await results.store(
            conn, app.deps.vault, fenced, employment, data_pb2.Employment(title="C"), later
        )
    assert stored == [results.Stored(False)] and alone == results.Stored(False)
    assert await _row(app, fenced, employment) == before


async def test_storing_a_result_fires_the_erasure_fence_once(
    app: runtime.Running, fresh_database: str
) -> None:
    """The fence (migration 0017's row trigger on job_results, BEFORE INSERT OR UPDATE) runs a query on
    `accounts` each time it fires. As one INSERT ... ON CONFLICT DO UPDATE, a refresh of stored data
    fired it twice: before the insert, then before the update of the conflicting row. A new result
    is inserted and a stored one updated, each firing it once. Counted by a trigger of the test's own
    with the fence's timing and events."""
    conn = await db_connect(fresh_database)
    try:
        _, account = await insert_account(conn, name="fence")
        await conn.execute(_COUNT_FIRINGS)
        vault, employment, identity = app.deps.vault, J.JOB_NAME_EMPLOYMENT, J.JOB_NAME_IDENTITY
        t0 = timeutil.now()
        async with conn.transaction():  # new: inserted
            await results.store_many(conn, vault, [(account, employment, data_pb2.Employment(title="A"), t0)])
        assert await conn.fetchval("SELECT count(*) FROM fence_firings") == 1
        t1 = t0 + dt.timedelta(seconds=1)
        async with conn.transaction():  # stored: updated, and a new one inserted beside it
            await results.store_many(
                conn,
                vault,
                [
                    (account, employment, data_pb2.Employment(title="B"), t1),
                    (account, identity, data_pb2.Identity(first_name="Ada"), t1),
                ],
            )
        assert await conn.fetchval("SELECT count(*) FROM fence_firings") == 3
        async with conn.transaction():  # `store` (paystubs' result row) alike
            await results.store(conn, vault, account, identity, data_pb2.Identity(first_name="Bo"), t1)
        assert await conn.fetchval("SELECT count(*) FROM fence_firings") == 4
        assert await conn.fetchval("SELECT count(*) FROM job_results WHERE account_id = $1", account) == 2
    finally:
        await conn.close()


_COUNT_FIRINGS = count_firings("job_results")
