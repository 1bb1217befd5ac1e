"""The Kafka adapter: producer settings, and how an outbox row becomes a Kafka message.

The relay and `events replay` both publish through here, so a message's topic, key, headers and
value are the same whichever sent it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from service.config import Settings

CONTENT_TYPE = b"application/x-protobuf"

# The outbox columns a message is built from (every query that feeds `send` selects these).
OUTBOX_COLUMNS = "id, event_id, topic, event_type, workspace_id, account_id, payload, traceparent, request_id"


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
    """event-id, event-type, workspace-id, content-type; then, when the work had them, traceparent
    (W3C: a consumer continues the trace) and x-request-id (docs/events.md)."""
    out = [
        ("event-id", str(row["event_id"]).encode()),
        ("event-type", row["event_type"].encode()),
        ("workspace-id", str(row["workspace_id"]).encode()),
        ("content-type", CONTENT_TYPE),
    ]
    if row["traceparent"]:
        out.append(("traceparent", row["traceparent"].encode()))
    if row["request_id"]:
        out.append(("x-request-id", row["request_id"].encode()))
    return out


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


# --- Batches (the relay) -------------------------------------------------------------------------

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key, equal to aiokafka's `partitioner.murmur2` (and the Java client's)
    for every input (tests/unit/test_kafka_batches.py), about three times faster: the key's 32-bit
    words are read with one `struct` call instead of byte by byte."""
    length = len(data)
    words = _WORDS.get(length >> 2)
    if words is None:
        words = _WORDS[length >> 2] = struct.Struct(f"<{length >> 2}I")
    h = 0x9747B28C ^ length
    for word in words.unpack_from(data):
        k = (word * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    base, tail = length & ~3, length & 3
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition aiokafka's DefaultPartitioner (and the Java client) gives a key: murmur2 of the
    key, positive, modulo the number of partitions, indexing the partition ids in order."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


async def send_many(producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]) -> list[asyncio.Future[Any]]:
    """Sends outbox rows as their Kafka messages (the same topic, key, partition, headers and value
    as `send` gives each), built into one record batch per topic-partition instead of one `send` per
    row: the rows of one partition keep their order, so per-key (per-account) order holds.

    Returns once every batch is queued; each returned future completes when its batch is
    acknowledged (or fails with the batch's error). Each batch is closed when queued: it is whole,
    and an open one would wait out the producer's `linger_ms` for rows that never come (the relay
    sends batch N+1 only once N is acknowledged, so that wait was in every one of its rounds:
    bench/NOTES.md, latency session 31).
    """
    # Every topic's partitions first, all at once: a topic the producer has not seen yet costs a
    # metadata round (retried every retry_backoff_ms until the broker lists it), once per topic if
    # waited for one by one.
    topics = list({row["topic"] for row in rows})
    found = await asyncio.gather(*(producer.partitions_for(topic) for topic in topics))
    partitions = {topic: sorted(ids) for topic, ids in zip(topics, found, strict=True)}
    keys: dict[tuple[str, bytes], int] = {}  # rows of one account in one call hash once
    open_: dict[tuple[str, int], BatchBuilder] = {}
    queued: list[asyncio.Future[Any]] = []
    for row in rows:
        topic = row["topic"]
        key = str(row["account_id"]).encode()
        partition = keys.get((topic, key))
        if partition is None:
            partition = keys[(topic, key)] = partition_of(key, partitions[topic])
        value, headers_ = bytes(row["payload"]), headers(row)
        builder = open_.get((topic, partition))
        if builder is None or builder.append(timestamp=None, key=key, value=value, headers=headers_) is None:
            if builder is not None:  # full (closed by its append): queue it, continue in a new one
                queued.append(await producer.send_batch(builder, topic, partition=partition))
            builder = open_[(topic, partition)] = producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers_) is None:
                raise ValueError(f"outbox row {row['id']} is larger than a Kafka batch")
    for (topic, partition), builder in open_.items():
        builder.close()  # sent now, not after the linger
        queued.append(await producer.send_batch(builder, topic, partition=partition))
    return queued
