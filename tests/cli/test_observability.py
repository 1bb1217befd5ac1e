"""Operability: health follows the database and the broker, the sampler reports backlog, the RPC /
job / relay metrics move during a flow, and a request id leads from the RPC to its jobs and events
in the JSON logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import time
import uuid

import grpc
from grpc_health.v1 import health, health_pb2
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2
from prometheus_client import REGISTRY

from service import db, logs, sampler
from service.api.server import SERVICE_NAMES
from service.config import Settings
from service.health_monitor import HealthMonitor
from service.queue import JobStatus
from tests.harness import (
    Client,
    EventLog,
    insert_account,
    insert_jobs,
    rpc_error,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(servicer: health.aio.HealthServicer, service: str) -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return int(reply.status)


def _value(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_health_follows_database_and_broker(settings: Settings) -> None:
    servicer = health.aio.HealthServicer()
    pool = await db.create_pool(settings, size=1)
    try:
        # Both up: everything SERVING.
        monitor = HealthMonitor(settings, pool, servicer, SERVICE_NAMES)
        assert await monitor.check() == (True, True)
        assert await _status(servicer, "") == SERVING
        assert _value("paylink_dependency_up", dependency="kafka") == 1.0
        # Later checks ask the connected client (a metadata request naming no topic).
        assert await monitor.check() == (True, True)
        assert await monitor.check() == (True, True)

        # Broker unreachable: "" is NOT_SERVING, the API services still serve (events wait in the outbox).
        no_kafka = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
        monitor = HealthMonitor(no_kafka, pool, servicer, SERVICE_NAMES)
        assert await monitor.check() == (True, False)
        assert await _status(servicer, "") == NOT_SERVING
        assert await _status(servicer, "paylink.v1.LinkTokenService") == SERVING
        assert _value("paylink_dependency_up", dependency="kafka") == 0.0
    finally:
        await pool.close()

    # Database unreachable: nothing serves.
    assert await monitor.check() == (False, False)
    for service in ("", *SERVICE_NAMES):
        assert await _status(servicer, service) == NOT_SERVING
    assert _value("paylink_dependency_up", dependency="database") == 0.0

    # The periodic loop recovers by itself once both answer again.
    pool = await db.create_pool(settings, size=1)
    try:
        monitor = HealthMonitor(
            settings.model_copy(update={"health_check_seconds": 0.1}), pool, servicer, SERVICE_NAMES
        )
        task = asyncio.create_task(monitor.run())
        for _ in range(100):
            if await _status(servicer, "") == SERVING:
                break
            await asyncio.sleep(0.05)
        assert await _status(servicer, "") == SERVING
        monitor.stop()
        await asyncio.wait_for(task, 5)
    finally:
        await pool.close()


async def test_sampler_reports_queue_depth_and_outbox_lag(fresh_database: str, settings: Settings) -> None:
    conn = await db.connect(fresh_database)
    try:
        workspace, account = await insert_account(conn, name="sampler")
        # Three refreshes of different job types (one refresh per account and job type is in flight).
        now = dt.datetime.now(dt.UTC)
        for name, (run_at, status) in enumerate(
            (
                (now - dt.timedelta(seconds=40), JobStatus.QUEUED),
                (now + dt.timedelta(hours=1), JobStatus.PENDING),
                (now, JobStatus.RUNNING),
            ),
            start=1,
        ):
            await insert_jobs(
                conn, workspace, account, status=status, name=name, origin=c.JOB_ORIGIN_REFRESH, run_at=run_at
            )
        for sequence, age in ((1, 30), (2, 5)):
            await conn.execute(
                # Each event with its pending row, as service/outbox.py writes them (migration 0175).
                "WITH rows AS (INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence,"
                " payload, created_at) VALUES ($1, 'x.identity.added', 'identity.added', $2, $3, $4, '',"
                f" now() - interval '{age} seconds') RETURNING id, created_at)"
                " INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM rows",
                uuid.uuid4(),
                workspace,
                account,
                sequence,
            )
    finally:
        await conn.close()
    pool = await db.create_pool(settings.model_copy(update={"database_url": fresh_database}), size=1)
    try:
        row = await sampler.sample_once(pool)
    finally:
        await pool.close()
    assert (row["runnable"], row["scheduled"], row["running"], row["unpublished"]) == (1, 1, 1, 2)
    assert _value("paylink_job_queue_depth", state="runnable") == 1.0
    assert _value("paylink_job_queue_depth", state="scheduled") == 1.0
    assert _value("paylink_job_queue_depth", state="running") == 1.0
    assert 40 <= _value("paylink_job_queue_oldest_age_seconds") < 60
    assert _value("paylink_outbox_unpublished") == 2.0
    assert 30 <= _value("paylink_outbox_oldest_age_seconds") < 60


async def test_flow_moves_rpc_job_and_relay_metrics(client: Client, events: EventLog) -> None:
    labels = {"method": "SubmitCredentials", "code": "OK"}
    rpcs = _value("paylink_rpc_seconds_count", **labels)
    job = {"name": "JOB_NAME_IDENTITY", "platform": "sandbox_adp", "outcome": "success", "error_code": ""}
    jobs = _value("paylink_jobs_finished_total", **job)
    published = _value("paylink_events_published_total", event="identity.added")
    _, session = await client.connect("user_good", [c.JOB_NAME_IDENTITY])
    await events.settled(session.account_id)
    assert _value("paylink_rpc_seconds_count", **labels) == rpcs + 1
    assert _value("paylink_jobs_finished_total", **job) >= jobs + 1
    # The relay counts a batch after marking it, which can be just after a consumer already read it.
    deadline = time.monotonic() + 10
    while _value("paylink_events_published_total", event="identity.added") < published + 1:
        assert time.monotonic() < deadline, "paylink_events_published_total did not move"
        await asyncio.sleep(0.05)
    assert (
        _value(
            "paylink_job_seconds_count", name="JOB_NAME_IDENTITY", platform="sandbox_adp", result="success"
        )
        >= 1
    )
    assert _value("paylink_relay_batch_seconds_count") >= 1
    assert _value("paylink_relay_leader") == 1.0
    # A failing call is counted under its code.
    bad = _value("paylink_rpc_seconds_count", method="GetSession", code="NOT_FOUND")
    missing = await rpc_error(
        client.link.GetSession(link_pb2.GetSessionRequest(session_id=str(uuid.uuid4())), metadata=client.md())
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert _value("paylink_rpc_seconds_count", method="GetSession", code="NOT_FOUND") == bad + 1


async def test_request_id_leads_to_jobs_and_events_in_the_logs(client: Client, events: EventLog) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("paylink")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    try:
        token = await client.token([c.JOB_NAME_IDENTITY])
        md = [*client.md(), ("x-request-id", request_id)]
        session = await client.link.StartSession(link_pb2.StartSessionRequest(token=token.token), metadata=md)
        session = await client.link.SubmitCredentials(
            link_pb2.SubmitCredentialsRequest(
                session_id=session.id, platform_id="sandbox_adp", username="user_good", password="pass_good"
            ),
            metadata=md,
        )
        await events.settled(session.account_id)
        await asyncio.sleep(0.3)  # the relay logs after marking the batch published
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    job_id = session.jobs[0].job_id

    # The RPC's lines carry its request id: the job it created and the event it appended.
    created = [x for x in lines if x["msg"] == "job created" and x.get("request_id") == request_id]
    assert [x["job_id"] for x in created] == [job_id]
    added = [x for x in lines if x["msg"] == "event appended" and x.get("request_id") == request_id]
    assert [x["event"] for x in added] == ["account.added"]
    # The worker's lines carry the job id, including the event its outcome appended.
    by_job = [x for x in lines if x.get("job_id") == job_id and "request_id" not in x]
    assert {"job attempt finished", "event appended"} <= {x["msg"] for x in by_job}
    outcome_events = {x["event_id"] for x in by_job if x["msg"] == "event appended"}
    # The relay names every event id it published.
    published = {event_id for x in lines if x["msg"] == "events published" for event_id in x["event_ids"]}
    assert {added[0]["event_id"], *outcome_events} <= published
    assert all(x["level"] and x["ts"].endswith("Z") for x in lines)
