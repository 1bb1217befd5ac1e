"""CPU per job of serve's Python around a refresh that touches no database: the worker's run (the
job's request id and span, the sandbox's re-access and fetch, each in its platform-call span) and
the outcome's application in its job's context (its event and link_session.completed, built and
added to the unit of work). No PostgreSQL, no Kafka, no gRPC: a load-independent complement to the
pipeline's per-process CPU, which moves ±25 % with the box's load (bench/NOTES.md).

Compare two trees by running it with each on PYTHONPATH, alternately:

    git archive main service | tar -x -C /tmp/main_src
    PYTHONPATH=/tmp/main_src .venv/bin/python bench/job_path_cpu.py   # main
    .venv/bin/python bench/job_path_cpu.py                            # this tree
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import datetime as dt
import json
import pathlib
import time
import types
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from opentelemetry.trace import SpanKind
from paylink.v1 import common_pb2, data_pb2

from service import job_outcomes, results, tracing, uow
from service.drivers.base import AccessGrant, Credentials, JobContext, LoggedIn
from service.drivers.sandbox import SANDBOX_ADP, SandboxDriver
from service.drivers.traced import TracedDriver
from service.job_types import LockedJob
from service.queue import JobStatus

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def worker_part(driver: TracedDriver, grant: bytes, n: int) -> None:
    """What Worker._execute and _run do around the platform for n identity refreshes."""
    for _ in range(n):
        with (
            tracing.request("bench-request"),
            tracing.span(
                "job JOB_NAME_IDENTITY",
                context=tracing.continued(TRACEPARENT),
                kind=SpanKind.CONSUMER,
                attributes={"paylink.job": "JOB_NAME_IDENTITY"},
            ),
        ):
            access = await driver.reaccess("acct", SANDBOX_ADP, AccessGrant(grant))
            assert isinstance(access, LoggedIn)
            ctx = JobContext("acct", SANDBOX_ADP, AccessGrant(access.grant.secret), attempt=1)
            await driver.fetch_identity(ctx)


def locked_job() -> LockedJob:
    return LockedJob(
        id=uuid.uuid4(),
        workspace_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        link_token_id=uuid.uuid4(),
        link_session_id=None,
        batch_id=uuid.uuid4(),
        name=common_pb2.JOB_NAME_IDENTITY,
        origin=common_pb2.JOB_ORIGIN_REFRESH,
        platform_id=SANDBOX_ADP,
        params=common_pb2.JobParams().SerializeToString(),
        api_version="2026-11-01",
        pending_since=None,
        status=JobStatus.RUNNING,
        locked_by="bench",
        end_user_id="end-user",
        monitoring_status="active",
        connected=True,
        event_sequence=1,
        scheduled=False,
        tags={},
        refresh_failures=0,
    )


async def outcome_part(n: int) -> None:
    """What apply_many does per outcome of a changed refresh: applied in its job's context
    (in_context where the tree has it, else a task created with that context, as before)."""
    run: Callable[[Any, contextvars.Context], Awaitable[None]]
    stepper = getattr(job_outcomes, "in_context", None)
    if stepper is not None:
        run = stepper
    else:

        async def run(coro: Any, context: contextvars.Context) -> None:
            await asyncio.create_task(coro, context=context)

    deps = types.SimpleNamespace(settings=types.SimpleNamespace(topic_prefix="bench"))
    data = data_pb2.Identity(full_name="Bench User")
    at = dt.datetime.now(dt.UTC)
    for _ in range(n):
        work = uow.UnitOfWork(cast(Any, deps), cast(Any, None))
        job = locked_job()
        writes = job_outcomes._Writes()
        writes.stored[job.id] = results.Stored(changed=True, previous=None)
        work.account_locked(job.workspace_id, job.account_id, job.event_sequence, job.tags)
        outcome = job_outcomes.Success(data)
        await run(job_outcomes._apply(work, job, outcome, writes, at), contextvars.copy_context())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    tracing.configure()
    driver = TracedDriver(SandboxDriver(slow_latency=0.0))
    login = await driver.login(SANDBOX_ADP, Credentials("user_good", "pass_good"))
    assert isinstance(login, LoggedIn)
    await worker_part(driver, login.grant.secret, 200)  # warm up
    await outcome_part(200)
    figures: dict[str, float] = {}
    started = time.process_time()
    await worker_part(driver, login.grant.secret, args.jobs)
    figures["worker_us_per_job"] = round((time.process_time() - started) / args.jobs * 1e6, 1)
    started = time.process_time()
    await outcome_part(args.jobs)
    figures["outcome_us_per_job"] = round((time.process_time() - started) / args.jobs * 1e6, 1)
    print(json.dumps({"service": str(pathlib.Path(job_outcomes.__file__).parent), **figures}))


if __name__ == "__main__":
    asyncio.run(main())
