"""A live worker whose lease was taken over cannot write an outcome (docs/reliability.md, "Jobs:
effect once"). Worker A claims a slow job and is paused (SIGSTOP, as a long GC pause or a frozen VM
would) past its lease; worker B rescues and claims the job; A resumes, finishes its platform call
and tries to write: refused while B holds the job. Only B's outcome exists, with one event."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest
from paylink.v1 import common_pb2 as c

from tests.faults.cluster import Deployment, assert_one_outcome_per_job, connect_many, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


def _finished_lines(log: str, job_id: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [
        line for line in lines if line.get("msg") == "job attempt finished" and line.get("job_id") == job_id
    ]


async def test_worker_paused_past_its_lease_cannot_write_an_outcome(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    await dep.spawn("api", sandbox_slow_latency_seconds=0)
    await dep.spawn("relay")
    client = await dep.new_client()
    await connect_many(client, 1, [c.JOB_NAME_IDENTITY], platform_id="sandbox_slow")
    (job,) = await dep.jobs()
    job_id = str(job["id"])

    # A: a 4 s platform call, lease 3 s (renewed by its heartbeat while it runs).
    worker_a = await dep.spawn("worker", sandbox_slow_latency_seconds=4, worker_lease_seconds=3)

    async def claimed_by_a() -> bool:
        row = (await dep.fetch("SELECT status, locked_by FROM jobs WHERE id = $1", job["id"]))[0]
        return row["status"] == "running" and row["locked_by"] is not None

    await wait_until(claimed_by_a, 30, "worker A claimed the job")
    a_id = await dep.fetchval("SELECT locked_by FROM jobs WHERE id = $1", job["id"])
    worker_a.send(signal.SIGSTOP)
    try:
        # B: rescues the job once A's lease ran out, and holds it for a long call.
        await dep.spawn("worker", sandbox_slow_latency_seconds=20, worker_lease_seconds=3)

        async def taken_over() -> bool:
            locked = await dep.fetchval("SELECT locked_by FROM jobs WHERE id = $1", job["id"])
            return locked is not None and locked != a_id

        await wait_until(taken_over, 60, "worker B took the job over")
        b_id = await dep.fetchval("SELECT locked_by FROM jobs WHERE id = $1", job["id"])
    finally:
        worker_a.send(signal.SIGCONT)

    # A wakes up, its call completes, and its outcome is refused.
    async def a_tried() -> bool:
        return bool(_finished_lines(worker_a.log_path.read_text(errors="replace"), job_id))

    await wait_until(a_tried, 30, "worker A finished its attempt")
    (a_line,) = _finished_lines(worker_a.log_path.read_text(errors="replace"), job_id)
    assert a_line["result"] == "success" and a_line["written"] is False, a_line
    row = (await dep.fetch("SELECT status, locked_by, attempts FROM jobs WHERE id = $1", job["id"]))[0]
    assert (row["status"], row["locked_by"], row["attempts"]) == ("running", b_id, 2)
    assert await dep.fetchval("SELECT count(*) FROM job_results") == 0
    assert await dep.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'identity.added'") == 0

    # B finishes: one outcome, one event.
    await dep.wait_all_jobs_final(1, within=60)
    jobs = await dep.jobs()
    assert [(j["status"], j["attempts"]) for j in jobs] == [("success", 2)]
    assert await dep.fetchval("SELECT count(*) FROM job_results") == 1
    await dep.wait_outbox_published(within=30)
    assert_one_outcome_per_job(jobs, await dep.outbox())
    assert worker_a.returncode is None  # A was alive throughout
    figures(lease_seconds=3, stale_outcome_written=False, attempts=2, outcome_events=1)
