"""The relay dies between publishing a batch and marking it: the batch is published again with the
same event_ids (at least once), and nothing is missing.

The first two tests are deterministic: the fault-injection hook PAYLINK_FAULT_RELAY_EXIT_AFTER_PUBLISH=n
(service/relay.py, off by default) makes the relay exit 137 right after the broker acknowledged its
n-th batch (the first; then the third, with the relay's steps overlapped). The last SIGKILLs the
relay repeatedly while events flow."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
from collections.abc import Callable

import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import event_pb2

from tests.faults.cluster import Delivery, Deployment, assert_delivery, connect_many, read_log, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

JOBS = [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME]


async def _outbox_waiting(dep: Deployment, sessions: int) -> list[event_pb2.Event]:
    """`sessions` linked accounts with their jobs run, and no relay yet: every event is in the outbox."""
    await dep.spawn("api")
    await dep.spawn("worker")
    client = await dep.new_client()
    await connect_many(client, sessions, JOBS)
    await dep.wait_all_jobs_final(sessions * len(JOBS), within=60)
    outbox = await dep.outbox()
    assert len(outbox) == sessions * (1 + len(JOBS) + 1)
    assert await dep.unpublished() == len(outbox)
    return outbox


async def _relay_exits_after(dep: Deployment, batch: int, batches: int) -> None:
    """A relay that exits 137 right after its `batches`-th batch was acknowledged."""
    crashing = await dep.spawn(
        "relay", wait_ready=False, relay_batch_size=batch, fault_relay_exit_after_publish=batches
    )
    assert await crashing.wait(60) == 137


async def _copies_in_kafka(dep: Deployment) -> collections.Counter[str]:
    return collections.Counter(r.event.event_id for r in await read_log(dep.stack.bootstrap, dep.prefix))


async def _next_relay_publishes_all(
    dep: Deployment, outbox: list[event_pb2.Event], batch: int
) -> tuple[Delivery, collections.Counter[str]]:
    """A new relay publishes the rest: what Kafka then holds (every event, each account's in order,
    redeliveries byte-identical with the same event_id) and how many copies of each event."""
    await dep.spawn("relay", relay_batch_size=batch)
    await dep.wait_outbox_published(within=60)
    await dep.wait_consumed({e.event_id for e in outbox}, within=60)
    log = await read_log(dep.stack.bootstrap, dep.prefix)
    return assert_delivery(log, outbox), collections.Counter(r.event.event_id for r in log)


async def test_relay_exit_between_publish_and_mark(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    batch = 50
    outbox = await _outbox_waiting(dep, sessions=30)

    await _relay_exits_after(dep, batch, batches=1)
    assert await dep.unpublished() == len(outbox)  # it died before marking anything
    first_batch = {
        str(r["event_id"]) for r in await dep.fetch("SELECT event_id FROM outbox ORDER BY id LIMIT $1", batch)
    }
    assert await _copies_in_kafka(dep) == dict.fromkeys(first_batch, 1)

    delivery, copies = await _next_relay_publishes_all(dep, outbox, batch)
    assert {event_id for event_id, n in copies.items() if n > 1} == first_batch
    assert max(copies.values()) == 2
    assert delivery.consumed == len(outbox) + batch and delivery.distinct == len(outbox)
    figures(
        events=len(outbox), batch=batch, redelivered=delivery.redelivered, messages_in_kafka=delivery.consumed
    )


async def test_relay_exit_mid_pipeline_resends_exactly_the_unmarked_batches(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    """The relay overlaps its steps (service/relay.py `_publish_stream`): batch N+1 is selected while
    N waits for its acknowledgements, and N is marked while N+1 is sent. It dies right after its
    third batch was acknowledged, while the mark of the second may still be in flight: Kafka holds
    exactly the three acknowledged batches (the fourth was selected, never sent), at most the first
    two are marked, and the next relay resends exactly the unmarked rows, in order."""
    dep = deployment
    batch, batches = 20, 3
    outbox = await _outbox_waiting(dep, sessions=30)
    assert len(outbox) > (batches + 1) * batch

    await _relay_exits_after(dep, batch, batches)
    ordered = [str(r["event_id"]) for r in await dep.fetch("SELECT event_id FROM outbox ORDER BY id")]
    sent = ordered[: batches * batch]
    marked = {
        str(r["event_id"])
        for r in await dep.fetch("SELECT event_id FROM outbox WHERE published_at IS NOT NULL")
    }
    assert set(ordered[:batch]) <= marked <= set(ordered[: 2 * batch])  # the mark of batch 2 raced the exit
    assert await _copies_in_kafka(dep) == dict.fromkeys(sent, 1)

    delivery, copies = await _next_relay_publishes_all(dep, outbox, batch)
    assert {event_id for event_id, n in copies.items() if n > 1} == set(sent) - marked
    assert max(copies.values()) == 2 and delivery.distinct == len(outbox)
    figures(
        events=len(outbox),
        batch=batch,
        marked_at_exit=len(marked),
        redelivered=delivery.redelivered,
        messages_in_kafka=delivery.consumed,
    )


async def test_relay_sigkilled_repeatedly_while_events_flow(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    kills = 4
    await dep.spawn("api")
    await dep.spawn("worker")
    client = await dep.new_client()
    stop = asyncio.Event()
    linked: list[str] = []

    async def load() -> None:
        while not stop.is_set():
            linked.extend(await connect_many(client, 4, JOBS, parallel=4))

    loader = asyncio.create_task(load())
    try:
        for _ in range(kills):
            before = await dep.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            relay = await dep.spawn("relay", relay_batch_size=10)

            async def publishing(before: int = before) -> bool:
                published = await dep.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
                return bool(published >= before + 20)

            await wait_until(publishing, 60, "the relay published a few batches")
            relay.send(signal.SIGKILL)
            assert await relay.wait() == -signal.SIGKILL
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await loader
    await dep.spawn("relay", relay_batch_size=10)
    total = len(linked) * len(JOBS)
    await dep.wait_all_jobs_final(total, within=60)
    await dep.wait_outbox_published(within=60)
    outbox = await dep.outbox()
    assert len(outbox) == len(linked) * (1 + len(JOBS) + 1)
    await dep.wait_consumed({e.event_id for e in outbox}, within=60)
    delivery = assert_delivery(await read_log(dep.stack.bootstrap, dep.prefix), outbox)
    figures(
        relay_kills=kills,
        sessions=len(linked),
        events=len(outbox),
        redelivered=delivery.redelivered,
        messages_in_kafka=delivery.consumed,
    )
