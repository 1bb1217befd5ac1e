"""A worker SIGKILLed with many jobs in flight: every job is rescued after its lease and finishes
once in effect (one outcome event, one settled event per session), none stays `running`."""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Callable

import pytest
from paylink.v1 import common_pb2 as c

from tests.faults.cluster import (
    Deployment,
    assert_delivery,
    assert_one_outcome_per_job,
    queued_sessions,
    read_log,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

SESSIONS = 40
JOBS = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]


async def test_killed_worker_jobs_are_rescued_once(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    sessions = await queued_sessions(dep, SESSIONS, JOBS)
    total = SESSIONS * len(JOBS)

    # Worker A takes 64 jobs at a time, each platform call lasting 2 s: kill it once it has finished
    # some jobs and holds many more. "Holds" is read once the queue is empty: the jobs then running
    # were all claimed by the last refill, so they stay running for about one platform call (2 s)
    # after the check. Read earlier, while the first wave's outcomes were still being committed,
    # the count could fall below 30 between the check and the kill on a loaded machine.
    victim = await dep.spawn(
        "worker", worker_concurrency=64, platform_concurrency=64, sandbox_latency_seconds=2.0
    )

    async def busy() -> bool:
        statuses = await dep.job_statuses()
        return statuses["success"] >= 20 and statuses["running"] >= 30 and statuses["queued"] == 0

    await wait_until(busy, 60, "worker A finished some jobs and holds many more")
    victim.send(signal.SIGKILL)
    assert await victim.wait() == -signal.SIGKILL
    killed_at = time.monotonic()
    stranded = {r["id"] for r in await dep.fetch("SELECT id FROM jobs WHERE status = 'running'")}
    finished_by_victim = {r["id"] for r in await dep.fetch("SELECT id FROM jobs WHERE status = 'success'")}
    assert len(stranded) >= 30

    # Worker B rescues the stranded jobs once their lease (3 s) has run out, and runs the rest.
    await dep.spawn("worker", worker_concurrency=64, platform_concurrency=64, sandbox_latency_seconds=0.2)
    await dep.wait_all_jobs_final(total, within=90)
    recovered = time.monotonic() - killed_at

    jobs = await dep.jobs()
    assert collections.Counter(j["status"] for j in jobs) == {"success": total}
    for job in jobs:
        # Claimed by A and killed there, then claimed once by B; everything else ran exactly once.
        expected = 2 if job["id"] in stranded else 1
        assert job["attempts"] == expected, (job["id"], job["attempts"], expected)
    assert {j["id"] for j in jobs if j["attempts"] == 1} >= finished_by_victim
    assert await dep.fetchval("SELECT count(*) FROM job_results") == total  # one result per job

    await dep.wait_outbox_published(within=60)
    outbox = await dep.outbox()
    assert_one_outcome_per_job(jobs, outbox)
    settled = collections.Counter(
        e.link_session_completed.link_session_id for e in outbox if e.event == "link_session.completed"
    )
    assert settled == {s: 1 for s in sessions}  # one settled event per session
    assert collections.Counter(e.event for e in outbox)["account.added"] == SESSIONS

    await dep.wait_consumed({e.event_id for e in outbox}, within=60)
    assert_delivery(dep.events.items, outbox)  # what a live consumer saw
    delivery = assert_delivery(await read_log(dep.stack.bootstrap, dep.prefix), outbox)  # the whole log
    assert delivery.distinct == len(outbox) == SESSIONS * (1 + len(JOBS) + 1)
    assert delivery.redelivered == 0  # the relay was not disturbed: each event is in Kafka once
    figures(
        jobs=total,
        in_flight_at_kill=len(stranded),
        finished_before_kill=len(finished_by_victim),
        lease_seconds=3,
        seconds_kill_to_all_done=round(recovered, 1),
        events=len(outbox),
        messages_in_kafka=delivery.consumed,
    )
