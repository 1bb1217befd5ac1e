"""paylink as a fleet (docs/deployment.md): two `api`, two `worker` and two `relay` processes against
one PostgreSQL and one Kafka, clients on one gRPC channel over both api processes configured with the
published service config (examples/grpc_service_config.json: round robin, client-side health
checks, retry on UNAVAILABLE).

- The leading relay is SIGKILLed mid-stream: the standby relay takes the leader lock and publishes
  on, within a measured time; every outbox event reaches Kafka (exact count by event_id).
- Every process is restarted in turn with SIGTERM under load: no RPC fails for the client that
  follows the retry policy, every job ends, every event is published exactly as the outbox holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2, link_token_pb2

from service import auth
from tests.faults.cluster import (
    Deployment,
    Proc,
    assert_delivery,
    assert_one_outcome_per_job,
    free_port,
    read_log,
    wait_until,
)
from tests.faults.fleet import fleet_channel, metric
from tests.harness import Client

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

JOBS = [c.JOB_NAME_IDENTITY]
EVENTS_PER_SESSION = 3  # link_session.created, identity.added, link_session.completed
DRAIN = 2  # PAYLINK_SHUTDOWN_DRAIN_SECONDS of the api processes, as docs/deployment.md recommends


def log_says(proc: Proc, text: str) -> bool:
    try:
        return text in proc.log_path.read_text(errors="replace")
    except OSError:
        return False


async def leading_relays(dep: Deployment) -> tuple[Proc, Proc]:
    """Starts relay A, waits until it leads, then relay B, waits until it stands by."""
    lead = await dep.spawn("relay")

    async def leads() -> bool:
        return log_says(lead, "relay is the leader")

    await wait_until(leads, 60, "the first relay to lead")
    standby = await dep.spawn("relay")

    async def stands_by() -> bool:
        return log_says(standby, "relay standing by")

    await wait_until(stands_by, 60, "the second relay to stand by")
    return lead, standby


class Linking:
    """Clients linking accounts through the fleet channel; records every failed RPC."""

    def __init__(self, client: Client, parallel: int = 3) -> None:
        self.client = client
        self.parallel = parallel
        self.linked: list[str] = []
        self.calls = 0
        self.failures: list[tuple[str, str]] = []
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._linker(n)) for n in range(self.parallel)]

    async def finish(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await task

    async def _linker(self, n: int) -> None:
        client = self.client
        while not self.stop.is_set():
            user = f"user-{n}-{uuid.uuid4().hex[:8]}"
            try:
                self.calls += 1
                token = await client.tokens.CreateLinkToken(
                    link_token_pb2.CreateLinkTokenRequest(
                        org_name="Acme", required_jobs=JOBS, end_user_id=user, request_id=user
                    ),
                    metadata=client.md(),
                )
                self.calls += 1
                session = await client.link.StartSession(
                    link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
                )
                self.calls += 1
                linked = await client.link.SubmitCredentials(
                    link_pb2.SubmitCredentialsRequest(
                        session_id=session.id,
                        platform_id="sandbox_adp",
                        username=f"user_good+{user}",
                        password="pass_good",
                    ),
                    metadata=client.md(),
                )
                assert linked.account_id
                self.linked.append(linked.account_id)
            except grpc.aio.AioRpcError as exc:
                self.failures.append((exc.code().name, exc.details() or ""))
            await asyncio.sleep(0.05)


async def fleet_client(dep: Deployment, ports: list[int]) -> tuple[Client, grpc.aio.Channel]:
    assert dep.pool is not None
    _, secret = await auth.create_workspace(dep.pool, f"fleet-{uuid.uuid4().hex[:6]}")
    channel = fleet_channel(ports)
    return Client(channel, secret), channel


async def check_everything_delivered(dep: Deployment, sessions: int) -> tuple[int, int, int]:
    await dep.wait_all_jobs_final(sessions * len(JOBS), within=90)
    await dep.wait_outbox_published(within=90)
    outbox = await dep.outbox()
    assert len(outbox) == sessions * EVENTS_PER_SESSION
    assert_one_outcome_per_job(await dep.jobs(), outbox)
    expected = {e.event_id for e in outbox}

    async def in_kafka() -> bool:
        return expected <= {r.event.event_id for r in await read_log(dep.stack.bootstrap, dep.prefix)}

    await wait_until(in_kafka, 90, "every outbox event in Kafka", interval=1.0)
    delivery = assert_delivery(await read_log(dep.stack.bootstrap, dep.prefix), outbox)
    assert delivery.distinct == len(outbox)
    return len(outbox), delivery.distinct, delivery.redelivered


async def test_leading_relay_killed_standby_takes_over(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    ports = [free_port(), free_port()]
    for port in ports:
        await dep.spawn("api", grpc_port=port)
    for _ in range(2):
        await dep.spawn("worker")
    lead, standby = await leading_relays(dep)
    client, channel = await fleet_client(dep, ports)
    load = Linking(client)
    load.start()
    try:

        async def streaming() -> bool:
            return bool(
                await dep.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") >= 60
            )

        await wait_until(streaming, 90, "the leading relay publishing")
        killed_at: dt.datetime = await dep.fetchval("SELECT clock_timestamp()")
        lead.send(signal.SIGKILL)
        assert await lead.wait() == -signal.SIGKILL

        async def taken_over() -> bool:
            return bool(
                await dep.fetchval("SELECT count(*) FROM outbox WHERE published_at > $1", killed_at) >= 30
            )

        await wait_until(taken_over, 60, "the standby relay publishing")
        assert log_says(standby, "relay is the leader")
        first: dt.datetime = await dep.fetchval(
            "SELECT min(published_at) FROM outbox WHERE published_at > $1", killed_at
        )
    finally:
        await load.finish()
        await channel.close()
    assert not load.failures, load.failures[:5]
    expected, consumed, redelivered = await check_everything_delivered(dep, len(load.linked))
    figures(
        processes="2 api, 2 worker, 2 relay",
        seconds_kill_to_standby_publishing=round((first - killed_at).total_seconds(), 2),
        relay_poll_seconds=0.5,
        sessions=len(load.linked),
        failed_rpcs=len(load.failures),
        events_expected=expected,
        events_consumed_distinct=consumed,
        redelivered=redelivered,
    )


async def test_rolling_restart_under_load_no_failed_rpc(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    ports = [free_port(), free_port()]
    metrics_ports = [free_port(), free_port()]
    plan: list[tuple[str, dict[str, Any]]] = [
        ("api", {"grpc_port": ports[0], "metrics_port": metrics_ports[0], "shutdown_drain_seconds": DRAIN}),
        ("api", {"grpc_port": ports[1], "metrics_port": metrics_ports[1], "shutdown_drain_seconds": DRAIN}),
        ("worker", {}),
        ("worker", {}),
    ]
    procs = [await dep.spawn(role, **settings) for role, settings in plan]
    lead, standby = await leading_relays(dep)
    plan += [("relay", {}), ("relay", {})]
    procs += [lead, standby]
    client, channel = await fleet_client(dep, ports)
    load = Linking(client)
    load.start()
    stops: list[float] = []
    try:
        for index, (role, settings) in enumerate(plan):
            linked = len(load.linked)

            async def progressing(linked: int = linked) -> bool:
                return len(load.linked) >= linked + 10

            await wait_until(progressing, 60, f"load going before restarting {role} {index}")
            started = time.monotonic()
            assert await procs[index].stop(signal.SIGTERM, within=60) == 0, procs[index].tail()
            stops.append(time.monotonic() - started)
            procs[index] = await dep.spawn(role, **settings)
            if role == "api":
                port = int(str(settings["metrics_port"]))

                async def routed(port: int = port) -> bool:
                    with contextlib.suppress(OSError):
                        return metric(port, 'paylink_rpc_seconds_count{code="OK"') > 0
                    return False

                # The clients' channel uses the restarted process again before the next goes.
                await wait_until(routed, 60, f"clients reaching the restarted api {index}")
        linked = len(load.linked)

        async def after() -> bool:
            return len(load.linked) >= linked + 10

        await wait_until(after, 60, "load going after the rolling restart")
    finally:
        await load.finish()
        await channel.close()
    assert not load.failures, load.failures[:5]
    expected, consumed, redelivered = await check_everything_delivered(dep, len(load.linked))
    figures(
        processes_restarted=len(plan),
        shutdown_drain_seconds=DRAIN,
        rpcs=load.calls,
        failed_rpcs=len(load.failures),
        slowest_sigterm_exit_seconds=round(max(stops), 1),
        sessions=len(load.linked),
        events_expected=expected,
        events_consumed_distinct=consumed,
        redelivered=redelivered,
    )
