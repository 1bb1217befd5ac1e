"""The relay draining a large outbox of realistic events.

The events are real: `collect_templates` runs Link sessions and refreshes through the API so that
the service itself builds one event of every topic (account.added, every job's `.added`,
link_session.completed, account.monitoring_status.updated), and takes their stored rows. `run`
creates the topics beforehand (as in production, where they exist), starts `python -m service relay`
on a fresh database whose outbox holds one event of every topic, and waits until the relay has
published them: its startup (the producer's connections, every topic's metadata, the first batch's
acknowledgement) is behind it. Then it fills the outbox with `rows` copies of the events, round robin
over the topics and spread over 1,000 accounts with per-account sequences, and times from the first
send of those measured events only (the earliest Kafka record timestamp after the startup events'
offsets, which the producer sets at send) to the last of them marked published.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2, link_pb2

from bench.common import start_process, stop
from service import db
from service.outbox import NOTIFY_CHANNEL
from tests.harness import ALL_JOBS, TEST_ALLOCATION, Client, create_test_database, drop_database

ACCOUNTS = 1000
PARTITIONS = 3  # of each topic, created by `run`


async def collect_templates(client: Client, url: str, timeout: float = 60) -> list[dict[str, Any]]:
    """One stored outbox row per event type, built by the service for real flows."""
    _, session = await client.connect("user_good+relay", ALL_JOBS, allocation=TEST_ALLOCATION)
    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED, timeout=timeout)
    # A refresh that needs MFA: the job fails and the account's monitoring status changes.
    _, mfa = await client.connect("user_reauth_mfa+relay", [c.JOB_NAME_IDENTITY])
    await client.wait_session(mfa.id, link_pb2.LINK_SESSION_STATE_COMPLETED, timeout=timeout)
    await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=mfa.account_id, name=c.JOB_NAME_EMPLOYMENT), metadata=client.md()
    )
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = await conn.fetch(
                "SELECT DISTINCT ON (event_type) event_type, payload FROM outbox"
                " WHERE account_id = ANY($1::uuid[]) ORDER BY event_type, id",
                [session.account_id, mfa.account_id],
            )
            if "account.monitoring_status.updated" in {r["event_type"] for r in rows}:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only these events were written: {[r['event_type'] for r in rows]}")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return [{"event_type": r["event_type"], "payload": bytes(r["payload"])} for r in rows]


async def _offsets(bootstrap: str, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The end offset of each partition now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def _first_send_ms(bootstrap: str, since: dict[TopicPartition, int]) -> int:
    """The earliest timestamp of the records after `since` (each partition's offset then)."""
    ends = await _offsets(bootstrap, list(since))
    parts = [tp for tp in since if ends[tp] > since[tp]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, since[tp])
        first: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + 30
        while len(first) < len(parts) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=len(parts) * 50)
            for tp, records in batch.items():
                if records and tp not in first:
                    first[tp] = min(r.timestamp for r in records)
                    consumer.pause(tp)
        if len(first) < len(parts):
            raise RuntimeError(f"no record read from {len(parts) - len(first)} partitions")
        return min(first.values())
    finally:
        await consumer.stop()


# Each event with its pending row, as service/outbox.py writes them (migration 0175); a schema before
# 0175 (bench/compare_checkouts.sh of an older commit) has no pending table.
_WITH_PENDING = " INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM rows"
_WITHOUT_PENDING = " SELECT count(*) FROM rows"


async def _published(conn: asyncpg.Connection, pending: bool) -> None:
    unpublished = "outbox_pending" if pending else "outbox WHERE published_at IS NULL"
    while await conn.fetchval(f"SELECT exists(SELECT 1 FROM {unpublished})"):
        await asyncio.sleep(0.2)


async def run(
    rows: int, templates: list[dict[str, Any]], admin_url: str, bootstrap: str, env: dict[str, str]
) -> dict[str, Any]:
    url = await create_test_database(admin_url)
    prefix = f"benchrelay{uuid.uuid4().hex[:6]}."
    topics = [prefix + t["event_type"] for t in templates]
    parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics]
            )
        finally:
            await admin.close()
        # Marked as this release's connections are: the rows carry their pending rows themselves, the
        # trigger for older releases' writes (migration 0175) stays out of the way.
        conn = await db.connect(url)
        pending = bool(await conn.fetchval("SELECT to_regclass('outbox_pending') IS NOT NULL"))
        write_pending = _WITH_PENDING if pending else _WITHOUT_PENDING
        workspace = uuid.uuid4()
        types = [t["event_type"] for t in templates]
        payloads = [t["payload"] for t in templates]
        # The startup events: one of every topic, each its own account (not measured).
        await conn.execute(
            "WITH rows AS (INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence,"
            " payload) SELECT gen_random_uuid(), $1::text || t.type, t.type, $2, gen_random_uuid(), 1, t.payload"
            " FROM unnest($3::text[], $4::bytea[]) AS t(type, payload) RETURNING id, created_at)"
            + write_pending,
            prefix,
            workspace,
            types,
            payloads,
        )
        proc = await start_process(
            [sys.executable, "-m", "service", "relay"],
            {**env, "PAYLINK_DATABASE_URL": url, "PAYLINK_TOPIC_PREFIX": prefix},
            "paylink serving",
        )
        try:
            await _published(conn, pending)
            startup_last_id = await conn.fetchval("SELECT max(id) FROM outbox")
            since = await _offsets(bootstrap, parts)
            accounts = [uuid.uuid4() for _ in range(ACCOUNTS)]
            n_types = len(templates)
            await conn.execute(
                "WITH rows AS (INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence,"
                " payload) SELECT gen_random_uuid(), $1::text || (t.types)[1 + i % $5], (t.types)[1 + i % $5], $2,"
                # Round k gives each account one event of every type, sequences k*T+1 .. k*T+T.
                "        ($3::uuid[])[1 + (i / $5) % $6], 1 + (i / ($5 * $6)) * $5 + i % $5,"
                "        (t.payloads)[1 + i % $5]"
                " FROM generate_series(0, $4 - 1) AS i, (SELECT $7::text[] AS types, $8::bytea[] AS payloads) AS t"
                " ORDER BY i RETURNING id, created_at)" + write_pending,
                prefix,
                workspace,
                accounts,
                rows,
                n_types,
                ACCOUNTS,
                types,
                payloads,
            )
            await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")  # as a committed unit of work does
            await _published(conn, pending)
            measured = await conn.fetchrow(
                "SELECT extract(epoch FROM max(published_at)) AS last,"
                " extract(epoch FROM min(published_at)) AS first_mark, count(*) AS n"
                " FROM outbox WHERE id > $1",
                startup_last_id,
            )
        finally:
            stop(proc)
            await conn.close()
        assert measured is not None and measured["n"] == rows
        first_send = await _first_send_ms(bootstrap, since) / 1000
        span = float(measured["last"]) - first_send
        sizes = {t["event_type"]: len(t["payload"]) for t in templates}
        return {
            "rows": rows,
            "topics": len(topics),
            "payload_bytes": sizes,
            "mean_payload_bytes": statistics.mean(sizes.values()),
            "seconds": span,
            "events_per_s": rows / span,
            "first_send_to_first_mark_s": float(measured["first_mark"]) - first_send,
        }
    finally:
        await drop_database(admin_url, url)
