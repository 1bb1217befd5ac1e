"""The relay's batches are sent as soon as they are queued (service/kafka.py `send_many` closes each):
not after the producer's `linger_ms`, which would wait for rows that never join a batch the relay
built whole. The relay sends batch N+1 only once N is acknowledged, so a linger was in every round
(bench/NOTES.md, latency session 31). Here the producer lingers a minute; the acknowledgements of
batches on three partitions of two topics come long before it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from aiokafka import AIOKafkaProducer

from service import kafka
from service.config import Settings

_ROWS = """
SELECT n::bigint AS id, gen_random_uuid() AS event_id, $1 || (n % 2)::text AS topic, 'job.added' AS event_type,
       $2::uuid AS workspace_id, gen_random_uuid() AS account_id, '\\x0a00'::bytea AS payload,
       NULL::text AS traceparent, NULL::text AS request_id
FROM generate_series(1, 20) AS n
"""


async def test_send_many_does_not_wait_out_the_linger(settings: Settings, db: asyncpg.Connection) -> None:
    rows = await db.fetch(_ROWS, f"{settings.topic_prefix}linger.", uuid.uuid4())
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=60_000
    )
    await producer.start()
    try:
        acks = await kafka.send_many(producer, rows)
        assert len(acks) >= 2  # a batch per topic-partition
        # Within 20 s, a third of the linger: each batch went when queued, none waited for more rows.
        sent = await asyncio.wait_for(asyncio.gather(*acks), timeout=20)
        assert all(meta.offset >= 0 for meta in sent)
    finally:
        await producer.stop()
