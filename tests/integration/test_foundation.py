"""The ground everything stands on, each checked directly: PostgreSQL through asyncpg, Kafka through
aiokafka, the standard health service, and authentication on every paylink RPC."""

from __future__ import annotations

import uuid

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paylink.v1 import account_pb2

from service import runtime
from service.api.server import SERVICE_NAMES
from service.config import Settings
from tests.harness import Client, rpc_error, stop_consumer


async def test_a_row_written_through_asyncpg_reads_back(app: runtime.Running) -> None:
    workspace_id = uuid.uuid4()
    await app.deps.pool.execute(
        "INSERT INTO workspaces (id, name, sandbox) VALUES ($1, $2, false)", workspace_id, "foundation"
    )
    row = await app.deps.pool.fetchrow("SELECT name, sandbox FROM workspaces WHERE id = $1", workspace_id)
    assert row is not None and (row["name"], row["sandbox"]) == ("foundation", False)


async def test_a_message_goes_through_the_real_broker(settings: Settings) -> None:
    topic = f"foundation-{uuid.uuid4().hex[:8]}"  # outside the run's event prefix: not an Event
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1", headers=[("h", b"v")])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await stop_consumer(consumer)
    assert (record.key, record.value, list(record.headers)) == (b"k1", b"hello", [("h", b"v")])


async def test_health_reports_serving_for_the_server_and_each_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICE_NAMES):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_a_call_without_or_with_a_wrong_secret_is_unauthenticated(client: Client) -> None:
    request = account_pb2.GetAccountRequest(account_id=str(uuid.uuid4()))
    missing = await rpc_error(client.accounts.GetAccount(request))
    wrong = await rpc_error(
        client.accounts.GetAccount(request, metadata=[("x-api-secret", client.secret[:-2] + "xx")])
    )
    assert missing.code() == wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-api-secret" in (missing.details() or "")
