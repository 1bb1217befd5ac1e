"""The audit trail against the real database and broker: append-only enforced by PostgreSQL,
retention, filters and pages, one record per read written by the read's own statement, and the
export to Kafka (audit.recorded)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import asyncpg
import pytest
from paylink.v1 import privacy_pb2

from service import audit, runtime, timeutil
from tests.harness import EventLog


def _who(workspace: uuid.UUID, caller: str = "svc-a", method: str = "GetIdentity") -> audit.Who:
    return audit.Who(workspace, caller, "0123456789abcdef", method, f"req-{uuid.uuid4().hex[:6]}")


def _read(
    who: audit.Who, account: uuid.UUID | None = None, resource: int = 1, end_user: str = "eu"
) -> audit.Record:
    return audit.Record(who, audit.READ, resource, account_id=account or uuid.uuid4(), end_user_id=end_user)


async def test_records_are_append_only_in_the_database(app: runtime.Running) -> None:
    pool = app.deps.pool
    record = _read(_who(uuid.uuid4()))
    await audit.write(pool, record)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("UPDATE audit_records SET caller = 'forged' WHERE id = $1", record.id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("DELETE FROM audit_records WHERE id = $1", record.id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("TRUNCATE audit_records")
    # Announcing a prune does not open the door for a young record.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('paylink.audit_prune_before', $1, true)", "2999-01-01T00:00:00Z"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("DELETE FROM audit_records WHERE id = $1", record.id)
    assert await pool.fetchval("SELECT caller FROM audit_records WHERE id = $1", record.id) == "svc-a"
    with pytest.raises(ValueError, match="at least 30 days"):
        await audit.prune(pool, 29)


async def test_retention_prunes_only_records_past_the_window(app: runtime.Running) -> None:
    pool = app.deps.pool
    workspace = uuid.uuid4()
    old, young = _read(_who(workspace)), _read(_who(workspace))
    await audit.write(pool, young)
    await pool.execute(
        f"INSERT INTO audit_records ({', '.join(audit.NAMES)}, recorded_at)"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(audit.NAMES) + 2))})",
        *old.args(),
        timeutil.now() - dt.timedelta(days=400),
    )
    assert await audit.prune(pool, 365, batch=1) >= 1
    left = {
        r["id"] for r in await pool.fetch("SELECT id FROM audit_records WHERE workspace_id = $1", workspace)
    }
    assert left == {young.id}


async def test_list_filters_and_pages_newest_first(app: runtime.Running) -> None:
    pool = app.deps.pool
    workspace, account = uuid.uuid4(), uuid.uuid4()
    written = []
    for caller, resource in [("svc-a", 1), ("svc-b", 4), ("svc-a", 4), ("svc-a", 1)]:
        record = _read(_who(workspace, caller), account, resource, end_user="eu-1")
        await audit.write(pool, record)
        written.append(record)
    await audit.write(pool, _read(_who(uuid.uuid4())))  # another workspace's: never listed
    erase = audit.Record(
        _who(workspace, "ops", "EraseEndUser"), audit.ERASE, 9, end_user_id="eu-1", erasure_id=uuid.uuid4()
    )
    await audit.write(pool, erase)

    async def listing(**filters: Any) -> list[privacy_pb2.AuditRecord]:
        out: list[privacy_pb2.AuditRecord] = []
        token = ""
        while True:
            page = await audit.list_page(
                pool, workspace, privacy_pb2.ListAuditRecordsRequest(page_size=2, page_token=token, **filters)
            )
            assert len(page.records) <= 2
            out += page.records
            token = page.next_page_token
            if not token:
                return out

    everything = await listing()
    assert [r.id for r in everything] == [str(erase.id)] + [str(r.id) for r in reversed(written)]
    assert {r.workspace_id for r in everything} == {str(workspace)}
    assert [r.id for r in await listing(caller="svc-a", resource=1)] == [
        str(written[3].id),
        str(written[0].id),
    ]
    assert len(await listing(account_id=str(account))) == 4
    erasures = await listing(action=audit.ERASE, end_user_id="eu-1")
    assert [(r.method, r.erasure_id, r.account_id) for r in erasures] == [
        ("EraseEndUser", str(erase.erasure_id), "")
    ]
    later = timeutil.ts(timeutil.now() + dt.timedelta(minutes=1))
    assert await listing(from_time=later) == []
    first = everything[0]
    assert (
        first.caller == "ops" and first.key_id == "0123456789abcdef" and first.request_id.startswith("req-")
    )


async def test_a_read_and_its_record_are_one_statement(app: runtime.Running) -> None:
    pool = app.deps.pool
    workspace = uuid.uuid4()
    who = _who(workspace)
    found, missing = uuid.uuid4(), uuid.uuid4()
    sql = audit.attach(
        "SELECT $1::uuid AS account_id, 'eu-7'::text AS end_user_id, $2::bool AS present",
        2,
        subject="SELECT account_id, end_user_id FROM target WHERE present",
    )
    record = audit.Record(who, audit.READ, 1)
    rows = await pool.fetch(sql, found, True, *record.args(from_subject=True))
    assert rows[0]["account_id"] == found
    # Nothing released: no record.
    await pool.fetch(sql, missing, False, *audit.Record(who, audit.READ, 1).args(from_subject=True))
    stored = await pool.fetch(
        "SELECT account_id, end_user_id FROM audit_records WHERE workspace_id = $1", workspace
    )
    assert [(r["account_id"], r["end_user_id"]) for r in stored] == [(found, "eu-7")]


async def test_records_are_exported_to_their_own_topic(app: runtime.Running, events: EventLog) -> None:
    workspace = uuid.uuid4()
    record = _read(_who(workspace, "svc-export"))
    await audit.write(app.deps.pool, record)
    (received,) = await events.wait_for(lambda r: r.event.event_id == str(record.id))
    assert received.topic == app.deps.settings.topic_prefix + "audit.recorded"
    assert received.key == str(workspace) and received.event.account_id == ""
    assert received.event.audit_recorded.account_id == str(record.account_id)
    assert received.headers["event-type"] == "audit.recorded"
    assert received.event.sequence == 0
    assert received.event.audit_recorded.caller == "svc-export"
    assert received.event.audit_recorded.resource == privacy_pb2.AUDIT_RESOURCE_IDENTITY
    # Exported once acknowledged: the queue forgets it.
    deadline = time.monotonic() + 30
    while await app.deps.pool.fetchval("SELECT true FROM audit_unexported WHERE record_id = $1", record.id):
        assert time.monotonic() < deadline, "the exported record stayed queued"
        await asyncio.sleep(0.05)
