"""The pipeline against a platform that takes about 2 s per call.

One `python -m service worker` process with the sandbox's latency (PAYLINK_SANDBOX_LATENCY_SECONDS,
with jitter where the driver has it) and a high worker concurrency runs `jobs` jobs that were
created through the API beforehand (CreateJob, over `accounts` linked accounts). Every half second
the driver samples how many jobs that worker holds (claimed: calling the platform or writing the
outcome), how many are finished, and the worker's RSS and CPU. The steady window runs from the
first to the last sample in which the worker holds at least 90 % of its peak; in it, throughput is compared with in-flight ÷ latency (Little's law: the difference is the time a
job spends outside the platform call).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import time
from typing import Any

import asyncpg
import grpc
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2

from bench.common import cpu_seconds, rss_mb, start_process, stop
from service import auth
from tests.harness import Client, create_test_database, drop_database

# Jobs created with CreateJob are refreshes: the worker re-accesses the platform, then fetches.
CALLS_PER_JOB = 2
_SAMPLE = """
SELECT count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status IN ('success', 'error')) AS finished,
       count(*) FILTER (WHERE status = 'queued') AS queued
FROM jobs WHERE origin = $1
"""


def accounts_for(jobs: int, at_least: int) -> int:
    """How many accounts `jobs` CreateJobs need (job i: account i % n, job type i % 3) so that no two
    ask for the same account and job type: CreateJob answers a refresh in flight with that one."""
    n = max(at_least, -(-jobs // 3))
    while math.lcm(n, 3) < jobs:
        n += 1
    return n


async def create_jobs(client: Client, accounts: list[str], n: int, concurrency: int = 64) -> list[str]:
    names = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]
    created: list[str] = []
    left = iter(range(n))

    async def one() -> None:
        for i in left:
            job = await client.jobs.CreateJob(
                job_pb2.CreateJobRequest(account_id=accounts[i % len(accounts)], name=names[i % 3]),
                metadata=client.md(),
            )
            created.append(job.id)

    await asyncio.gather(*(one() for _ in range(concurrency)))
    if len(set(created)) < n:  # CreateJob answered with refreshes already in flight
        raise RuntimeError("one refresh per account and job type in flight: use more --latency-accounts")
    return created


async def run(
    admin_url: str,
    env: dict[str, str],
    port: int,
    *,
    jobs: int,
    accounts: int,
    latency: float,
    jitter: float,
    concurrency: int,
) -> dict[str, Any]:
    """On a database of its own, with its own API and relay processes (no platform latency there)."""
    url = await create_test_database(admin_url)
    base_env = {**env, "PAYLINK_DATABASE_URL": url, "PAYLINK_GRPC_PORT": str(port)}
    api = await start_process([sys.executable, "-m", "service", "api"], base_env, "paylink serving")
    relay = await start_process([sys.executable, "-m", "service", "relay"], base_env, "paylink serving")
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        _, secret = await auth.create_workspace(pool, "bench-latency")
        await pool.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = Client(channel, secret)
            # One refresh per account and job type in flight: each job its own (account, type) pair.
            linked = await link_accounts(client, accounts_for(jobs, accounts))
            await run_link_jobs(url, base_env)
            await create_jobs(client, linked, jobs)
        found = await _measure(
            url, base_env, jobs=jobs, latency=latency, jitter=jitter, concurrency=concurrency
        )
        print(f"latency: { {k: v for k, v in found.items() if k != 'samples'} }", flush=True)
        return found
    finally:
        stop(api)
        stop(relay)
        await drop_database(admin_url, url)


async def link_accounts(client: Client, n: int, parallel: int = 32, prefix: str = "latency") -> list[str]:
    """`n` accounts linked through Link (their sessions' jobs run first, when the worker starts)."""
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> str:
        async with sem:
            _, session = await client.connect(f"user_good+{prefix}{i}", [c.JOB_NAME_IDENTITY])
            return str(session.account_id)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def run_link_jobs(url: str, env: dict[str, str]) -> None:
    """The linked sessions' own jobs, run by a worker with no platform latency before the measurement."""
    worker = await start_process([sys.executable, "-m", "service", "worker"], env, "paylink serving")
    conn = await asyncpg.connect(url)
    try:
        while await conn.fetchval("SELECT count(*) FROM jobs WHERE status NOT IN ('success', 'error')"):
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
        stop(worker)


async def _measure(
    url: str, base_env: dict[str, str], *, jobs: int, latency: float, jitter: float, concurrency: int
) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    worker_env = {
        **base_env,
        "PAYLINK_SANDBOX_LATENCY_SECONDS": str(latency),
        "PAYLINK_SANDBOX_LATENCY_JITTER_SECONDS": str(jitter),
        "PAYLINK_WORKER_CONCURRENCY": str(concurrency),
        "PAYLINK_PLATFORM_CONCURRENCY": str(concurrency),
    }
    samples: list[dict[str, float]] = []
    proc = await start_process([sys.executable, "-m", "service", "worker"], worker_env, "paylink serving")
    start = time.monotonic()
    cpu0 = cpu_seconds(proc.pid)
    try:
        deadline = start + max(120.0, 4 * jobs * latency / concurrency)
        while True:
            row = await conn.fetchrow(_SAMPLE, c.JOB_ORIGIN_REFRESH)
            now = time.monotonic()
            samples.append(
                {
                    "t": now - start,
                    "running": row["running"],
                    "finished": row["finished"],
                    "queued": row["queued"],
                    "rss_mb": rss_mb(proc.pid),
                    "cpu_s": cpu_seconds(proc.pid) - cpu0,
                }
            )
            if row["finished"] >= jobs:
                break
            if now > deadline:
                raise RuntimeError(f"only {row['finished']} of {jobs} jobs finished")
            await asyncio.sleep(0.5)
    finally:
        stop(proc)
        await conn.close()
    peak = max(s["running"] for s in samples)
    steady = [s for s in samples if s["running"] >= 0.9 * peak]  # the worker held >= 90 % of its peak
    begin, end = steady[0], steady[-1]
    window = [s for s in samples if begin["t"] <= s["t"] <= end["t"]]
    span = end["t"] - begin["t"]
    jobs_per_s = (end["finished"] - begin["finished"]) / span if span > 0 else 0.0
    in_flight = statistics.mean(s["running"] for s in window)
    # A refresh job makes CALLS_PER_JOB platform calls one after the other, so a held job always
    # has exactly one call in flight: calls in flight = jobs held.
    calls_per_s = jobs_per_s * CALLS_PER_JOB
    ideal = in_flight / latency  # the jitter is symmetric: the mean call takes `latency`
    return {
        "jobs": jobs,
        "latency_s": latency,
        "jitter_s": jitter,
        "calls_per_job": CALLS_PER_JOB,
        "worker_concurrency": concurrency,
        "peak_in_flight": peak,
        "mean_in_flight": in_flight,
        "steady_seconds": span,
        "jobs_per_s": jobs_per_s,
        "calls_per_s": calls_per_s,
        "ideal_calls_per_s": ideal,
        "ratio": calls_per_s / ideal if ideal else 0.0,
        "overall_jobs_per_s": jobs / samples[-1]["t"],
        "rss_peak_mb": max(s["rss_mb"] for s in samples),
        "worker_cpu_cores": (end["cpu_s"] - begin["cpu_s"]) / span if span > 0 else 0.0,
        "samples": [{k: round(v, 2) for k, v in s.items()} for s in samples],
    }
