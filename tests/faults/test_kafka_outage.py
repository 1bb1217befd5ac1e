"""The Kafka broker is stopped for 30 s while jobs complete under load: RPCs keep answering, events
wait in the outbox, and once the broker is back every event is published exactly as the outbox holds
it (count of distinct event_ids, per-account sequences, order within each partition)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2

from tests.faults.cluster import Deployment, assert_delivery, read_log, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

OUTAGE_SECONDS = 30
JOBS = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_broker_outage_events_wait_then_all_arrive(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    await dep.spawn("api")
    await dep.spawn("worker", sandbox_latency_seconds=0.1)
    await dep.spawn("relay")
    client = await dep.new_client()
    assert dep.channel is not None
    health = health_pb2_grpc.HealthStub(dep.channel)

    stop = asyncio.Event()
    outage = False
    calls: collections.Counter[str] = collections.Counter()  # "<phase> <status code>"
    sessions: list[str] = []

    async def one_user(n: int) -> None:
        while not stop.is_set():
            phase = "outage" if outage else "normal"
            try:
                _, session = await client.connect(f"user_good+k{n}-{len(sessions)}", JOBS)
                sessions.append(session.id)
                await client.link.GetSession(
                    link_pb2.GetSessionRequest(session_id=session.id), metadata=client.md(), timeout=5
                )
                calls[f"{phase} OK"] += 4
            except grpc.aio.AioRpcError as exc:
                calls[f"{phase} {exc.code().name}"] += 1
            await asyncio.sleep(0.05)

    users = [asyncio.create_task(one_user(n)) for n in range(3)]
    try:

        async def flowing() -> bool:
            return bool(
                await dep.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") >= 40
            )

        await wait_until(flowing, 60, "events flowing to Kafka before the outage")

        await dep.stack.stop_kafka()
        outage = True
        down_at = time.monotonic()

        async def broker_noticed() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            return bool(reply.status == NOT_SERVING)

        await wait_until(broker_noticed, 15, "health '' NOT_SERVING while the broker is down", interval=0.5)
        # RPCs keep working: a load balancer checks the service names, which stay SERVING.
        per_service = await health.Check(
            health_pb2.HealthCheckRequest(service="paylink.v1.LinkTokenService"), timeout=5
        )
        assert per_service.status == SERVING
        published_before = await dep.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        waiting_peak = 0
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            waiting_peak = max(waiting_peak, await dep.unpublished())
            await asyncio.sleep(1)
        published_during = (
            await dep.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            - published_before
        )
        outage = False
        downtime = time.monotonic() - down_at
        restart_started = time.monotonic()
        await dep.stack.up()
        broker_back = time.monotonic()
        catch_up = await dep.wait_outbox_published(within=120)
    finally:
        stop.set()
        for task in users:
            with contextlib.suppress(Exception):
                await task

    assert calls["outage OK"] > 0 and calls["normal OK"] > 0
    failures = {k: v for k, v in calls.items() if not k.endswith(" OK")}
    assert not failures, failures  # no RPC failed, before, during or after the outage
    assert published_during == 0  # nothing was published while the broker was away...
    assert waiting_peak > 0  # ...so events waited in the outbox

    total = len(sessions) * len(JOBS)
    await dep.wait_all_jobs_final(total, within=120)
    await dep.wait_outbox_published(within=120)
    outbox = await dep.outbox()
    assert len(outbox) == len(sessions) * (1 + len(JOBS) + 1)
    await dep.wait_consumed({e.event_id for e in outbox}, within=120)
    assert_delivery(dep.events.items, outbox)  # the live consumer that lived through the outage
    delivery = assert_delivery(await read_log(dep.stack.bootstrap, dep.prefix), outbox)

    async def healthy() -> bool:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return bool(reply.status == SERVING)

    await wait_until(healthy, 15, "health '' SERVING again", interval=0.5)
    figures(
        broker_down_seconds=round(downtime, 1),
        broker_restart_seconds=round(broker_back - restart_started, 1),
        rpcs_ok_during_outage=calls["outage OK"],
        rpcs_failed=sum(failures.values()),
        events_waiting_peak=waiting_peak,
        seconds_to_drain_after_restart=round(catch_up, 1),
        sessions=len(sessions),
        jobs=total,
        events=len(outbox),
        distinct_consumed=delivery.distinct,
        redelivered=delivery.redelivered,
        accounts=delivery.accounts,
    )
