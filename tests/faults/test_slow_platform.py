"""A hung platform: every sandbox_slow call outlives PAYLINK_PLATFORM_CALL_TIMEOUT_SECONDS, so its jobs
end `error` with code TIMEOUT after PAYLINK_JOB_MAX_ATTEMPTS attempts; at most
PAYLINK_PLATFORM_CONCURRENCY of its calls run at once, and jobs on sandbox_adp queued behind them
still finish at once: the hung platform never holds the worker's other slots."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import pytest
from paylink.v1 import common_pb2 as c

from tests.faults.cluster import Deployment, assert_one_outcome_per_job, connect_many, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

# The call timeout is wide enough that a fast job finishing under it means it never waited for a
# hung call, even on a loaded 2-core CI machine (a fast job took 1.4 s there under heavy load).
TIMEOUT = 3.0
ATTEMPTS = 2
PLATFORM_CONCURRENCY = 2
WORKER_CONCURRENCY = 8
SLOW_JOBS = 8  # as many as the worker has slots
FAST_JOBS = 12


async def test_hung_platform_times_out_without_blocking_others(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    await dep.spawn("api", sandbox_slow_latency_seconds=0)  # logins on sandbox_slow are quick
    await dep.spawn("relay")
    client = await dep.new_client()
    await connect_many(client, SLOW_JOBS, [c.JOB_NAME_IDENTITY], platform_id="sandbox_slow")
    await dep.spawn(
        "worker",
        sandbox_slow_latency_seconds=60,  # hung: far beyond the call timeout
        sandbox_latency_seconds=0.05,
        platform_call_timeout_seconds=TIMEOUT,
        job_max_attempts=ATTEMPTS,
        platform_concurrency=PLATFORM_CONCURRENCY,
        worker_concurrency=WORKER_CONCURRENCY,
    )

    async def slow_started() -> bool:
        return (await dep.job_statuses())["running"] > 0

    await wait_until(slow_started, 30, "the slow jobs claimed")
    started = time.monotonic()
    await connect_many(client, FAST_JOBS, [c.JOB_NAME_IDENTITY])
    await dep.wait_all_jobs_final(SLOW_JOBS + FAST_JOBS, within=90)
    elapsed = time.monotonic() - started

    jobs = await dep.jobs()
    slow = [j for j in jobs if j["platform_id"] == "sandbox_slow"]
    fast = [j for j in jobs if j["platform_id"] == "sandbox_adp"]
    assert collections.Counter((j["status"], j["error_code"], j["attempts"]) for j in slow) == {
        ("error", c.JOB_ERROR_CODE_TIMEOUT, ATTEMPTS): SLOW_JOBS
    }
    assert {j["error_type"] for j in slow} == {c.JOB_ERROR_TYPE_PLATFORM}
    assert collections.Counter((j["status"], j["attempts"]) for j in fast) == {("success", 1): FAST_JOBS}
    fast_seconds = max((j["completed_at"] - j["created_at"]).total_seconds() for j in fast)
    # Not one of them waited for a hung call to time out.
    assert fast_seconds < TIMEOUT, fast_seconds
    # At most PLATFORM_CONCURRENCY hung calls at a time: the attempts need this long at least.
    slow_span = max(j["completed_at"] for j in slow) - min(j["created_at"] for j in slow)
    minimum = SLOW_JOBS * ATTEMPTS * TIMEOUT / PLATFORM_CONCURRENCY
    assert slow_span.total_seconds() >= minimum * 0.95, (slow_span, minimum)

    await dep.wait_outbox_published(within=30)
    assert_one_outcome_per_job(jobs, await dep.outbox())
    figures(
        slow_jobs=SLOW_JOBS,
        fast_jobs=FAST_JOBS,
        call_timeout_seconds=TIMEOUT,
        max_attempts=ATTEMPTS,
        platform_concurrency=PLATFORM_CONCURRENCY,
        worker_concurrency=WORKER_CONCURRENCY,
        slowest_fast_job_seconds=round(fast_seconds, 2),
        slow_jobs_span_seconds=round(slow_span.total_seconds(), 1),
        total_seconds=round(elapsed, 1),
    )
