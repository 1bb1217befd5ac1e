"""PostgreSQL is stopped and started again under load: while it is down, RPCs answer UNAVAILABLE
(never INTERNAL, never a hang past the deadline); afterwards they recover by themselves, and the
worker and the relay reconnect, including their LISTEN connections (polls are set to 10 s here, so a
worker or relay that lost its NOTIFY wake-ups would show as 10-second delays)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2, link_pb2, link_token_pb2

from tests.faults.cluster import (
    Deployment,
    assert_delivery,
    assert_one_outcome_per_job,
    connect_many,
    read_log,
    wait_until,
)
from tests.harness import Client

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

DEADLINE = 3.0
DOWN_SECONDS = 6
JOBS = [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME]
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclasses.dataclass
class Call:
    at: float
    method: str
    code: grpc.StatusCode
    seconds: float


class Load:
    """Clients linking accounts and reading jobs in a loop, recording every RPC's status and time."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls: list[Call] = []
        self.stop = asyncio.Event()

    async def rpc(self, method: str, call: Callable[..., Awaitable[Any]], request: Any) -> Any:
        started = time.monotonic()
        try:
            reply = await call(request, metadata=self.client.md(), timeout=DEADLINE)
        except grpc.aio.AioRpcError as exc:
            self.calls.append(Call(started, method, exc.code(), time.monotonic() - started))
            return None
        self.calls.append(Call(started, method, grpc.StatusCode.OK, time.monotonic() - started))
        return reply

    async def linker(self, n: int) -> None:
        link, client = self.client.link, self.client
        while not self.stop.is_set():
            token = await self.rpc(
                "CreateLinkToken",
                client.tokens.CreateLinkToken,
                link_token_pb2.CreateLinkTokenRequest(
                    org_name="Acme Bank", required_jobs=JOBS, end_user_id=f"user-{n}"
                ),
            )
            session = token and await self.rpc(
                "StartSession", link.StartSession, link_pb2.StartSessionRequest(token=token.token)
            )
            if session:
                await self.rpc(
                    "SubmitCredentials",
                    link.SubmitCredentials,
                    link_pb2.SubmitCredentialsRequest(
                        session_id=session.id,
                        platform_id="sandbox_adp",
                        username=f"user_good+{n}",
                        password="pass_good",
                    ),
                )
            await asyncio.sleep(0.05)

    async def reader(self) -> None:
        while not self.stop.is_set():
            page = await self.rpc("ListJobs", self.client.jobs.ListJobs, job_pb2.ListJobsRequest(page_size=5))
            if page and page.jobs:
                await self.rpc(
                    "GetJob", self.client.jobs.GetJob, job_pb2.GetJobRequest(job_id=page.jobs[0].id)
                )
            await asyncio.sleep(0.05)


async def test_postgres_restart_unavailable_then_recovers(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    polls: dict[str, Any] = {"worker_poll_seconds": 10, "relay_poll_seconds": 10}
    await dep.spawn("api", **polls)
    await dep.spawn("worker", **polls)
    await dep.spawn("relay", **polls)
    client = await dep.new_client()
    assert dep.channel is not None
    health = health_pb2_grpc.HealthStub(dep.channel)
    load = Load(client)
    tasks = [asyncio.create_task(load.linker(n)) for n in range(3)] + [asyncio.create_task(load.reader())]
    try:

        async def working() -> bool:
            return (await dep.job_statuses())["success"] >= 20

        await wait_until(working, 60, "jobs completing before the restart")
        await dep.stack.stop_postgres()
        stopped_at = time.monotonic()

        async def noticed() -> bool:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service="paylink.v1.JobService"), timeout=5
            )
            return bool(reply.status == NOT_SERVING)

        await wait_until(noticed, 15, "health NOT_SERVING while the database is down", interval=0.5)
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped_at)))
        starting_at = time.monotonic()
        await dep.stack.up()
        started_at = time.monotonic()

        def ok_since(t: float) -> bool:
            return any(call.code == grpc.StatusCode.OK and call.at >= t for call in load.calls)

        async def recovered() -> bool:
            return ok_since(started_at)

        rpc_recovery = await wait_until(recovered, 30, "an RPC succeeds after the restart")
        await asyncio.sleep(2)  # a little more load after the recovery
    finally:
        load.stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task

    codes = collections.Counter(call.code.name for call in load.calls)
    down = [call for call in load.calls if stopped_at <= call.at < starting_at]
    down_codes = collections.Counter(call.code.name for call in down)
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes  # never INTERNAL, UNKNOWN or a deadline
    assert down_codes["UNAVAILABLE"] > 0 and down_codes["OK"] == 0, down_codes
    slowest = max(call.seconds for call in load.calls)
    assert slowest < DEADLINE, slowest  # every call answered before its deadline
    assert {call.method for call in down} >= {"CreateLinkToken", "ListJobs"}

    # The worker and relay reconnected, LISTEN included: new work finishes without waiting a poll.
    jobs_before = await dep.fetchval("SELECT count(*) FROM jobs")
    started = time.monotonic()
    await connect_many(client, 10, JOBS)
    await dep.wait_all_jobs_final(int(jobs_before) + 10 * len(JOBS), within=60)
    jobs_done = time.monotonic() - started
    await dep.wait_outbox_published(within=30)
    events_done = time.monotonic() - started
    assert jobs_done < 6 and events_done < 8, (jobs_done, events_done)

    jobs = await dep.jobs()
    assert collections.Counter(j["status"] for j in jobs) == {"success": len(jobs)}
    outbox = await dep.outbox()
    assert_one_outcome_per_job(jobs, outbox)
    await dep.wait_consumed({e.event_id for e in outbox}, within=60)
    delivery = assert_delivery(await read_log(dep.stack.bootstrap, dep.prefix), outbox)

    async def healthy() -> bool:
        reply = await health.Check(health_pb2.HealthCheckRequest(service="paylink.v1.JobService"), timeout=5)
        return bool(reply.status == SERVING)

    await wait_until(healthy, 15, "health SERVING again", interval=0.5)
    figures(
        database_down_seconds=round(starting_at - stopped_at, 1),
        restart_seconds=round(started_at - starting_at, 1),
        rpcs=len(load.calls),
        rpcs_while_down=len(down),
        unavailable_while_down=down_codes["UNAVAILABLE"],
        codes=dict(codes),
        slowest_rpc_seconds=round(slowest, 2),
        deadline_seconds=DEADLINE,
        seconds_to_first_ok_after_start=round(rpc_recovery, 2),
        seconds_new_jobs_done_after_recovery=round(jobs_done, 2),
        jobs=len(jobs),
        events=len(outbox),
        redelivered=delivery.redelivered,
    )


async def test_idle_worker_and_relay_listen_again_after_a_quick_restart(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    """An idle worker and relay do not touch the database while it restarts, so nothing fails in
    them; their LISTEN connections are gone all the same and must come back."""
    dep = deployment
    polls: dict[str, Any] = {"worker_poll_seconds": 20, "relay_poll_seconds": 20}
    await dep.spawn("api", **polls)
    await dep.spawn("worker", **polls)
    await dep.spawn("relay", **polls)
    client = await dep.new_client()
    await connect_many(client, 2, JOBS)
    await dep.wait_all_jobs_final(2 * len(JOBS), within=30)
    await dep.wait_outbox_published(within=30)
    await asyncio.sleep(1)  # both idle, waiting for a NOTIFY

    started = time.monotonic()
    await dep.stack.stop_postgres()
    await dep.stack.up()
    restart = time.monotonic() - started

    async def api_back() -> bool:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await client.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=client.md(), timeout=DEADLINE)
            return True
        return False

    await wait_until(api_back, 30, "the API answers again")
    started = time.monotonic()
    await connect_many(client, 5, JOBS)
    await dep.wait_all_jobs_final(7 * len(JOBS), within=60)
    jobs_done = time.monotonic() - started
    await dep.wait_outbox_published(within=60)
    events_done = time.monotonic() - started
    # Far below the 20 s poll: the jobs and events were picked up on NOTIFY.
    assert jobs_done < 5 and events_done < 6, (jobs_done, events_done)
    figures(
        restart_seconds=round(restart, 1),
        poll_seconds=20,
        seconds_new_jobs_done=round(jobs_done, 2),
        seconds_new_events_published=round(events_done, 2),
    )
