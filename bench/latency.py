"""The pipeline against a platform that takes about 2 s per call.

One `python -m service worker` process with the sandbox's latency (PAYLINK_SANDBOX_LATENCY_SECONDS
± PAYLINK_SANDBOX_LATENCY_JITTER_SECONDS, uniform: the mean call takes the latency) and a high
worker concurrency runs `jobs` jobs that were created through the API beforehand (CreateJob, over
`accounts` linked accounts). Every half second the driver reads, from the worker's own metrics
endpoint, how many of its jobs are inside their platform calls (`calls`) and how many it holds
(`held`: also those whose outcome waits to be committed), and from the database how many jobs are
`running` (leased) and how many are finished; and the worker's RSS and CPU.

The steady window: from one job's worth of calls (`CALLS_PER_JOB` times the latency) after the first
sample with at least 90 % of the peak calls in flight, to the last such sample. The first job
cannot finish before its calls have taken their time, so a window starting at the fill counts
that wait against the rate (with 2,000 calls of 2 s and a 20 s window: 1,000 jobs ÷ 20 s, about
10 %). In it, throughput (committed outcomes times calls per job) is compared with calls
in flight ÷ latency (Little's law: the difference is the time a job's slot spends outside its
platform calls). The latency is the configured mean, not the measured call time: the worker's own
delay in resuming a call whose answer came (a busy event loop) counts against it.
"""

from __future__ import annotations

import asyncio
import math
import socket
import statistics
import sys
import time
import urllib.request
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
# The worker's gauges (service/metrics.py), read from its /metrics endpoint.
_GAUGES = {
    "paylink_worker_platform_calls_in_flight": "calls",
    "paylink_worker_jobs_held": "held",
    "paylink_worker_outcomes_waiting": "waiting",
}
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
    # The API and the relay expose no metrics here: a PAYLINK_METRICS_PORT inherited from the
    # caller's environment would be bound by the first and make the second fail to start. The
    # worker gets a free port of its own below.
    base_env = {k: v for k, v in env.items() if k != "PAYLINK_METRICS_PORT"}
    base_env.update({"PAYLINK_DATABASE_URL": url, "PAYLINK_GRPC_PORT": str(port)})
    api = await start_process([sys.executable, "-m", "service", "api"], base_env, "paylink serving")
    try:
        relay = await start_process([sys.executable, "-m", "service", "relay"], base_env, "paylink serving")
    except BaseException:
        stop(api)  # not left listening on the port for the next run
        await drop_database(admin_url, url)
        raise
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """The worker's gauges (only those: the endpoint filters by name)."""
    query = "&".join(f"name[]={name}" for name in _GAUGES)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?{query}", timeout=5) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _GAUGES:
            found[_GAUGES[name]] = float(value)
    return found


async def _measure(
    url: str, base_env: dict[str, str], *, jobs: int, latency: float, jitter: float, concurrency: int
) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    metrics_port = _free_port()
    worker_env = {
        **base_env,
        "PAYLINK_SANDBOX_LATENCY_SECONDS": str(latency),
        "PAYLINK_SANDBOX_LATENCY_JITTER_SECONDS": str(jitter),
        "PAYLINK_WORKER_CONCURRENCY": str(concurrency),
        "PAYLINK_PLATFORM_CONCURRENCY": str(concurrency),
        "PAYLINK_METRICS_PORT": str(metrics_port),
    }
    samples: list[dict[str, float]] = []
    proc = await start_process([sys.executable, "-m", "service", "worker"], worker_env, "paylink serving")
    start = time.monotonic()
    cpu0 = cpu_seconds(proc.pid)
    try:
        deadline = start + max(120.0, 4 * jobs * latency / concurrency)
        while True:
            gauges = await asyncio.to_thread(_scrape, metrics_port)
            row = await conn.fetchrow(_SAMPLE, c.JOB_ORIGIN_REFRESH)
            assert row is not None  # an aggregate: always one row
            now = time.monotonic()
            # A worker without these gauges (before issue 14's round two; compare_checkouts.sh)
            # freed a slot only when its outcome committed: its calls in flight were its held jobs.
            samples.append(
                {
                    "t": now - start,
                    "calls": gauges.get("calls", row["running"]),
                    "held": gauges.get("held", row["running"]),
                    "waiting": gauges.get("waiting", 0.0),
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
    return summarize(samples, jobs=jobs, latency=latency, jitter=jitter, concurrency=concurrency)


def _rate(window: list[dict[str, float]]) -> tuple[float, float]:
    """Jobs finished per second over the window, and its length."""
    span = window[-1]["t"] - window[0]["t"] if window else 0.0
    return ((window[-1]["finished"] - window[0]["finished"]) / span if span > 0 else 0.0), span


def summarize(
    samples: list[dict[str, float]], *, jobs: int, latency: float, jitter: float, concurrency: int
) -> dict[str, Any]:
    """The steady window's figures (see the module's docstring)."""
    peak = max(s["calls"] for s in samples)
    steady = [s for s in samples if s["calls"] >= 0.9 * peak]  # >= 90 % of the peak calls in flight
    filled, end = steady[0]["t"], steady[-1]["t"]
    begin = filled + CALLS_PER_JOB * latency  # the first jobs' calls have taken their time
    window = [s for s in samples if begin <= s["t"] <= end]
    jobs_per_s, span = _rate(window)
    in_flight = statistics.mean(s["calls"] for s in window) if window else 0.0
    calls_per_s = jobs_per_s * CALLS_PER_JOB
    ideal = in_flight / latency  # uniform jitter around the latency: the mean call takes `latency`
    # The same from the fill on (how this benchmark measured before: the first jobs' calls inside).
    from_fill = [s for s in samples if filled <= s["t"] <= end]
    fill_jobs_per_s, _ = _rate(from_fill)
    fill_in_flight = statistics.mean(s["calls"] for s in from_fill)
    return {
        "jobs": jobs,
        "latency_s": latency,
        "jitter_s": jitter,
        "calls_per_job": CALLS_PER_JOB,
        "worker_concurrency": concurrency,
        "peak_in_flight": peak,
        "mean_in_flight": in_flight,
        "mean_held": statistics.mean(s["held"] for s in window) if window else 0.0,
        "peak_held": max(s["held"] for s in samples),
        "peak_running": max(s["running"] for s in samples),
        "mean_outcomes_waiting": statistics.mean(s["waiting"] for s in window) if window else 0.0,
        "steady_seconds": span,
        "jobs_per_s": jobs_per_s,
        "calls_per_s": calls_per_s,
        "ideal_calls_per_s": ideal,
        "ratio": calls_per_s / ideal if ideal else 0.0,
        "ratio_from_fill": fill_jobs_per_s * CALLS_PER_JOB * latency / fill_in_flight
        if fill_in_flight
        else 0.0,
        "overall_jobs_per_s": jobs / samples[-1]["t"],
        "rss_peak_mb": max(s["rss_mb"] for s in samples),
        "worker_cpu_cores": (window[-1]["cpu_s"] - window[0]["cpu_s"]) / span if span > 0 else 0.0,
        "samples": [{k: round(v, 2) for k, v in s.items()} for s in samples],
    }
