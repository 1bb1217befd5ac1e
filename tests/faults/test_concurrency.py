"""Races with one winner and no duplicates: sessions racing on one link token, workers racing on one
job (three worker processes on one queue, and the claim statement itself from many connections), and
the same request_id fired concurrently."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
from paylink.v1 import account_pb2, job_pb2, link_pb2, link_token_pb2
from paylink.v1 import common_pb2 as c

from service import db
from service.queue import CLAIM as _CLAIM
from service.queue import release_worker
from tests.faults.cluster import (
    Deployment,
    assert_delivery,
    assert_one_outcome_per_job,
    queued_sessions,
    read_log,
)
from tests.harness import Client, error_reason, link_account

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

RACERS = 20


async def outcomes(calls: list[Any]) -> list[Any]:
    """Runs calls concurrently; each result is the reply or the AioRpcError."""
    return list(await asyncio.gather(*calls, return_exceptions=True))


def codes(results: list[Any]) -> collections.Counter[str]:
    return collections.Counter(
        r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results
    )


async def test_sessions_racing_on_one_token(deployment: Deployment, figures: Callable[..., None]) -> None:
    dep = deployment
    await dep.spawn("serve")
    client = await dep.new_client()
    tokens = [await client.token([c.JOB_NAME_IDENTITY]) for _ in range(10)]
    for token in tokens:
        results = await outcomes(
            [
                client.link.StartSession(
                    link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
                )
                for _ in range(RACERS)
            ]
        )
        # StartSession is idempotent per token (issue 10): every racer gets the one session.
        assert codes(results) == {"OK": RACERS}
        assert len({r.id for r in results}) == 1
        rows = await dep.fetchval(
            "SELECT count(*) FROM link_sessions WHERE link_token_id = $1", uuid.UUID(token.id)
        )
        assert rows == 1
    figures(
        tokens=len(tokens),
        racers_per_token=RACERS,
        sessions_created=await dep.fetchval("SELECT count(*) FROM link_sessions"),
    )


async def test_workers_racing_on_jobs(deployment: Deployment, figures: Callable[..., None]) -> None:
    dep = deployment
    sessions = 60
    await queued_sessions(dep, sessions, [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME])
    total = sessions * 2

    # The claim statement itself, from 12 connections at once, one job at a time: every job goes to
    # exactly one claimer (FOR UPDATE SKIP LOCKED), then is put back for the real workers.
    assert dep.pool is not None
    claimers = [await db.connect(dep.database_url) for _ in range(12)]
    try:
        claimed: collections.Counter[uuid.UUID] = collections.Counter()

        async def claim_all(conn: asyncpg.Connection[asyncpg.Record], name: str) -> None:
            while rows := await conn.fetch(_CLAIM, name, dt.timedelta(seconds=60), 1, []):
                claimed.update(r["id"] for r in rows)

        await asyncio.gather(*(claim_all(conn, f"racer-{i}") for i, conn in enumerate(claimers)))
    finally:
        for conn in claimers:
            await conn.close()
    assert len(claimed) == total and set(claimed.values()) == {1}
    racers = await dep.fetchval("SELECT count(DISTINCT locked_by) FROM jobs")
    for i in range(len(claimers)):  # back to queued, attempt not counted (as at a worker's shutdown)
        await release_worker(dep.pool, f"racer-{i}")

    # Three worker processes started together on the same queue.
    workers = await asyncio.gather(
        *(dep.spawn("worker", sandbox_latency_seconds=0.3, worker_concurrency=8) for _ in range(3))
    )
    await dep.wait_all_jobs_final(total, within=60)
    jobs = await dep.jobs()
    assert [(j["status"], j["attempts"]) for j in jobs] == [("success", 1)] * total  # each ran once
    ran_by: collections.Counter[str] = collections.Counter()
    per_worker = []
    for worker in workers:
        mine = set()
        for line in worker.log_path.read_text().splitlines():
            if '"job attempt finished"' in line:
                record = json.loads(line)
                assert record["written"] is True
                mine.add(record["job_id"])
        ran_by.update(mine)
        per_worker.append(len(mine))
    assert len(ran_by) == total and set(ran_by.values()) == {1}  # no job in two workers' logs
    assert min(per_worker) > 0  # they really competed
    await dep.wait_outbox_published(within=60)
    outbox = await dep.outbox()
    assert_one_outcome_per_job(jobs, outbox)
    await dep.wait_consumed({e.event_id for e in outbox}, within=60)
    assert_delivery(await read_log(dep.stack.bootstrap, dep.prefix), outbox)
    figures(
        jobs=total,
        claim_racers=len(claimers),
        claimers_that_won_some=racers,
        worker_processes=len(workers),
        jobs_per_worker=per_worker,
    )


async def _same_request(client: Client, method: Any, requests: list[Any]) -> list[Any]:
    return await outcomes([method(r, metadata=client.md()) for r in requests])


async def test_duplicate_request_ids_fired_concurrently(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    await dep.spawn("serve")
    client = await dep.new_client()

    # CreateLinkToken: the same request 20 times at once -> one token, the same answer for all.
    request = link_token_pb2.CreateLinkTokenRequest(
        org_name="Acme Bank",
        required_jobs=[c.JOB_NAME_IDENTITY],
        end_user_id="racer",
        request_id="rq-token-1",
    )
    results = await _same_request(client, client.tokens.CreateLinkToken, [request] * RACERS)
    assert codes(results) == {"OK": RACERS}
    assert len({(r.id, r.token) for r in results}) == 1
    assert await dep.fetchval("SELECT count(*) FROM link_tokens") == 1

    # The same request_id with two different bodies at once: one body wins, the other is refused.
    other = link_token_pb2.CreateLinkTokenRequest()
    other.CopyFrom(request)
    other.request_id = "rq-token-2"
    changed = link_token_pb2.CreateLinkTokenRequest()
    changed.CopyFrom(other)
    changed.end_user_id = "someone-else"
    mixed = [other, changed] * (RACERS // 2)
    results = await _same_request(client, client.tokens.CreateLinkToken, mixed)
    assert codes(results) == {"OK": RACERS // 2, "ALREADY_EXISTS": RACERS // 2}
    winners = [
        (m.end_user_id, r.id) for m, r in zip(mixed, results, strict=True) if not isinstance(r, Exception)
    ]
    assert len(set(winners)) == 1
    assert {error_reason(r) for r in results if isinstance(r, grpc.aio.AioRpcError)} == {"REQUEST_ID_REUSED"}
    assert await dep.fetchval("SELECT count(*) FROM link_tokens") == 2

    # CreateJob (server-side refresh): one job for 20 concurrent identical calls.
    _, session = await link_account(client, "user_good")
    account_id = session.account_id
    create = job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_INCOME, request_id="rq-job-1")
    results = await _same_request(client, client.jobs.CreateJob, [create] * RACERS)
    assert codes(results) == {"OK": RACERS} and len({r.id for r in results}) == 1
    refreshes = await dep.fetchval("SELECT count(*) FROM jobs WHERE origin = $1", c.JOB_ORIGIN_REFRESH)
    assert refreshes == 1

    # DisconnectAccount: one disconnection, one monitoring event.
    disconnect = account_pb2.DisconnectAccountRequest(account_id=account_id, request_id="rq-disconnect-1")
    results = await _same_request(client, client.accounts.DisconnectAccount, [disconnect] * RACERS)
    assert codes(results) == {"OK": RACERS}
    assert {(r.connected, r.monitoring_status) for r in results} == {
        (False, c.MONITORING_STATUS_CUSTOMER_DISABLED)
    }
    await dep.wait_all_jobs_final(2, within=30)
    outbox = await dep.outbox()
    disabled = [
        e
        for e in outbox
        if e.event == "account.monitoring_status.updated"
        and e.monitoring_status_updated.monitoring_status == c.MONITORING_STATUS_CUSTOMER_DISABLED
    ]
    assert len(disabled) == 1
    stored = await dep.fetchval("SELECT count(*) FROM idempotency_keys")
    assert stored == 4
    figures(
        racers_per_request=RACERS,
        link_tokens=2,
        refresh_jobs=refreshes,
        disconnect_events=len(disabled),
        idempotency_keys=stored,
    )
