"""The Kafka adapter: producer settings, and how an outbox row becomes a Kafka message.

The relay and `events replay` both publish through here, so a message's topic, key, headers and
value are the same whichever sent it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from service.config import Settings

CONTENT_TYPE = b"application/x-protobuf"

# The outbox columns a message is built from (every query that feeds `send` selects these).
OUTBOX_COLUMNS = "id, event_id, topic, event_type, workspace_id, account_id, payload"


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=15000,
        retry_backoff_ms=200,
    )


def headers(row: asyncpg.Record) -> list[tuple[str, bytes]]:
    return [
        ("event-id", str(row["event_id"]).encode()),
        ("event-type", row["event_type"].encode()),
        ("workspace-id", str(row["workspace_id"]).encode()),
        ("content-type", CONTENT_TYPE),
    ]


def send(producer: AIOKafkaProducer, row: asyncpg.Record) -> Awaitable[asyncio.Future[Any]]:
    """Sends one outbox row as its Kafka message: topic, key account_id, headers, Event bytes.

    Awaiting the result queues the message; awaiting the future it returns waits for the ack.
    """
    return producer.send(  # type: ignore[no-any-return]
        row["topic"],
        value=bytes(row["payload"]),
        key=str(row["account_id"]).encode(),
        headers=headers(row),
    )
