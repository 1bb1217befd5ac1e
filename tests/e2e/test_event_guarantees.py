"""Event delivery guarantees, checked against the job rows, the outbox table and the real broker:
one event id per final job outcome, payloads equal to the job, gap-free per-account sequences, and
every outbox row published."""

from __future__ import annotations

import asyncio
import time

from paylink.v1 import account_pb2, event_pb2, job_pb2
from paylink.v1 import common_pb2 as c

from service import runtime
from tests.harness import (
    ALL_JOBS,
    JOB_EVENT_NAMES,
    TEST_ALLOCATION,
    Client,
    EventLog,
    link_account,
    list_all_jobs,
    unique_events,
    wait_event_ids,
    wait_job,
)


async def _wait_published(app: runtime.Running, event_ids: list[object], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        left = await app.deps.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE event_id = ANY($1::uuid[]) AND published_at IS NULL", event_ids
        )
        if left == 0:
            return
        assert time.monotonic() < deadline, f"{left} outbox rows were never published"
        await asyncio.sleep(0.05)


async def test_one_event_per_final_outcome_and_gap_free_sequences(
    client: Client, events: EventLog, app: runtime.Running
) -> None:
    linked = await asyncio.gather(
        link_account(client, "user_good+ev", ALL_JOBS, allocation=TEST_ALLOCATION),
        link_account(client, "user_error+ev", [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME]),
        link_account(client, "user_flaky+ev", [c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_PAYSTUBS]),
        link_account(client, "user_nodata+ev", [c.JOB_NAME_INCOME]),
        link_account(client, "user_pending+ev", [c.JOB_NAME_IDENTITY]),
    )
    good_account = linked[0][1].account_id
    refresh = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=good_account, name=c.JOB_NAME_INCOME), metadata=client.md()
    )
    await wait_job(client, refresh.id)

    accounts = {session.account_id for _, session in linked}
    jobs = await list_all_jobs(client)
    assert len(jobs) == len(ALL_JOBS) + 2 + 2 + 1 + 1 + 1
    assert all(j.status in (c.JOB_STATUS_SUCCESS, c.JOB_STATUS_ERROR) for j in jobs)
    platforms = {}
    for account_id in accounts:
        account = await client.accounts.GetAccount(
            account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
        )
        platforms[account_id] = account.platform_id

    # Every outbox row of these accounts gets published, and every one arrives in Kafka.
    rows = await app.deps.pool.fetch(
        "SELECT event_id, account_id, sequence, event_type, payload, traceparent, request_id FROM outbox"
        " WHERE account_id = ANY($1::uuid[])",
        list(accounts),
    )
    await _wait_published(app, [r["event_id"] for r in rows])
    outbox_ids = {str(r["event_id"]) for r in rows}
    await wait_event_ids(events, outbox_ids)
    received = unique_events([r for r in events.items if r.event.account_id in accounts])
    assert set(received) == outbox_ids
    for row in rows:
        got = received[str(row["event_id"])]
        assert got.event == event_pb2.Event.FromString(bytes(row["payload"]))  # the bytes as committed
        assert got.topic.endswith(row["event_type"]) and got.key == str(row["account_id"])
        assert got.headers == {
            "event-id": str(row["event_id"]),
            "event-type": row["event_type"],
            "workspace-id": got.event.workspace_id,
            "content-type": "application/x-protobuf",
            # The span that wrote the event and the request id of the call behind it (service/tracing.py).
            "traceparent": row["traceparent"],
            "x-request-id": row["request_id"],
        }
        assert row["traceparent"] and row["request_id"] == got.event.request_id != ""

    # Exactly one event id per job's final outcome, with the job's fields.
    for job in jobs:
        final = unique_events(
            [
                r
                for r in events.items
                if r.event.event == JOB_EVENT_NAMES[job.name]
                and r.event.job.job_id == job.id
                and r.event.job.outcome != c.JOB_OUTCOME_PENDING
            ]
        )
        assert len(final) == 1, (c.JobName.Name(job.name), len(final))
        event = next(iter(final.values())).event
        payload = event.job
        assert (
            payload.job_id,
            payload.account_id,
            payload.name,
            payload.outcome,
            payload.error_type,
            payload.error_code,
            payload.link_token_id,
            payload.platform_id,
            payload.origin,
        ) == (
            job.id,
            job.account_id,
            job.name,
            job.outcome,
            job.error_type,
            job.error_code,
            job.link_token_id,
            platforms[job.account_id],
            job.origin,
        )
        assert event.account_id == job.account_id and payload.params == job.params
        assert payload.error_message == job.error_message
        assert payload.timestamp == job.completed_at
        pending = unique_events(
            [
                r
                for r in events.items
                if r.event.job.job_id == job.id and r.event.job.outcome == c.JOB_OUTCOME_PENDING
            ]
        )
        assert len(pending) == (1 if job.account_id == linked[4][1].account_id else 0)

    # One link_session.completed per session and per refresh, listing its jobs' final outcomes.
    by_job = {j.id: j for j in jobs}
    completed = [
        r.event.link_session_completed for r in received.values() if r.event.event == "link_session.completed"
    ]
    assert len(completed) == len(linked) + 1
    for settled in completed:
        for item in settled.jobs:
            job = by_job[item.job_id]
            assert (item.name, item.outcome, item.error_type, item.error_code) == (
                job.name,
                job.outcome,
                job.error_type,
                job.error_code,
            )
    assert sorted(j.job_id for s in completed for j in s.jobs) == sorted(by_job)

    # Per account: sequences 1..n with no gap, in outbox order.
    for account_id in accounts:
        sequences = sorted(r.event.sequence for r in received.values() if r.event.account_id == account_id)
        assert sequences == list(range(1, len(sequences) + 1)), account_id
        assert [
            r.event.event
            for r in received.values()
            if r.event.account_id == account_id and r.event.sequence == 1
        ] == ["account.added"]


async def test_every_outbox_row_is_published_and_consumed(
    events: EventLog, app: runtime.Running, client: Client
) -> None:
    await link_account(client, "user_good+outbox", [c.JOB_NAME_IDENTITY])
    rows = await app.deps.pool.fetch("SELECT event_id, account_id, sequence FROM outbox")
    assert rows
    await _wait_published(app, [r["event_id"] for r in rows])
    ids = {str(r["event_id"]) for r in rows}
    await wait_event_ids(events, ids)
    assert ids <= {r.event.event_id for r in events.items}
    # Per-account sequences in the table itself are gap-free too.
    by_account: dict[str, list[int]] = {}
    for row in rows:
        by_account.setdefault(str(row["account_id"]), []).append(row["sequence"])
    for account_id, sequences in by_account.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), account_id
