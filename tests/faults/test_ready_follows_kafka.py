"""`GET /ready` needs Kafka exactly in a process that publishes events: the broker of the fault stack is
stopped and started again while a relay and a worker run. The relay's readiness turns 503 (it cannot
publish the outbox, nor take over as a standby) and 200 again once the broker is back; the worker's
stays 200 throughout (its outcomes and their events go to PostgreSQL, and wait in the outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.faults.cluster import Deployment, free_port, wait_until
from tests.harness import get_ready

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


async def test_a_relays_readiness_follows_the_broker_and_a_workers_does_not(deployment: Deployment) -> None:
    dep = deployment
    relay, worker = free_port(), free_port()
    await dep.spawn("relay", metrics_port=relay, health_check_seconds=0.5)
    await dep.spawn("worker", metrics_port=worker, health_check_seconds=0.5, monitoring_scheduler="false")

    def answers(port: int, status: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            got, _ = await asyncio.to_thread(get_ready, port)
            return got == status

        return check

    await wait_until(answers(relay, 200), 30, "the relay ready with the broker up")
    status, body = await asyncio.to_thread(get_ready, relay)
    assert (status, body["kafka"], body["kafka_required"]) == (200, True, True), body

    await dep.stack.stop_kafka()
    try:
        await wait_until(answers(relay, 503), 30, "the relay not ready with the broker down")
        status, body = await asyncio.to_thread(get_ready, relay)
        assert (status, body["database"], body["kafka"]) == (503, True, False), body
        assert body["reason"] == "Kafka does not answer: this process publishes events (relay)"
        # The worker, checked as often, is still ready: it needs the database only.
        status, body = await asyncio.to_thread(get_ready, worker)
        assert (status, body["kafka"], body["kafka_required"], body["reason"]) == (200, False, False, ""), (
            body
        )
    finally:
        await dep.stack.up()
    await wait_until(answers(relay, 200), 60, "the relay ready again with the broker back")
    status, body = await asyncio.to_thread(get_ready, worker)
    assert (status, body["kafka"]) == (200, True), body
