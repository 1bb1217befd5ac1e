"""Slow Link logins (issue 10): 64 concurrent logins against a platform that takes 3 s each, on a
separate API process with the default pool (8 connections), while a client calls GetAccount on the
same process. No login holds a connection while the platform answers, so the logins run at once
(not in waves of the pool size) and GetAccount stays fast. The same scenario is the acceptance test
tests/faults/test_slow_logins.py::test_64_slow_logins_run_at_once_and_get_account_stays_fast.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

import asyncpg
import grpc
from paylink.v1 import account_pb2, link_pb2
from paylink.v1 import common_pb2 as c

from bench.common import ROOT, load_average, percentile, start_process, stop
from service import auth
from tests.harness import Client, create_test_database, drop_database


async def _session(client: Client) -> link_pb2.LinkSession:
    token = await client.token([c.JOB_NAME_IDENTITY])
    return await client.link.StartSession(
        link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
    )


async def _login(client: Client, session_id: str) -> tuple[link_pb2.LinkSession, float]:
    started = time.perf_counter()
    reply = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session_id,
            platform_id="sandbox_adp",
            username=f"user_good+{uuid.uuid4().hex[:8]}",
            password="pass_good",
        ),
        metadata=client.md(),
    )
    return reply, time.perf_counter() - started


def _get_account_buckets(metrics_port: int) -> dict[float, float]:
    """The API process's own answer times: cumulative GetAccount (OK) counts by latency bucket."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if (
            line.startswith("paylink_rpc_seconds_bucket{")
            and 'method="GetAccount"' in line
            and 'code="OK"' in line
        ):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _server_side(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """Of the GetAccount calls between the two readings: how many, the share within 50 ms, and the
    p99's histogram bucket (its upper bound, ms)."""
    served = after[float("inf")] - before[float("inf")]
    bounds = sorted(after)
    p99 = next(b for b in bounds if after[b] - before.get(b, 0) >= 0.99 * served)
    return {
        "get_account_server_calls": int(served),
        "get_account_server_within_50ms": round((after[0.05] - before.get(0.05, 0)) / max(served, 1), 4),
        "get_account_server_p99_bucket_ms": p99 * 1000,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run(
    admin_url: str, env: dict[str, str], port: int, *, logins: int = 64, latency: float = 3.0
) -> dict[str, Any]:
    url = await create_test_database(admin_url)
    metrics_port = _free_port()
    api_env = {
        **env,
        "PAYLINK_DATABASE_URL": url,
        "PAYLINK_GRPC_PORT": str(port),
        "PAYLINK_SANDBOX_LATENCY_SECONDS": str(latency),
        "PAYLINK_SANDBOX_LATENCY_JITTER_SECONDS": str(latency * 0.1),  # ± 10 %
        "PAYLINK_DATABASE_POOL_SIZE": "8",  # the default
        "PAYLINK_METRICS_PORT": str(metrics_port),
    }
    api = await start_process([sys.executable, "-m", "service", "api"], api_env, "paylink serving")
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        _, secret = await auth.create_workspace(pool, "bench-logins")
        await pool.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = Client(channel, secret)
            return await _measure(client, logins, latency, metrics_port)
    finally:
        stop(api)
        await drop_database(admin_url, url)


async def _measure(client: Client, logins: int, latency: float, metrics_port: int) -> dict[str, Any]:
    linked, _ = await _login(client, (await _session(client)).id)
    request = account_pb2.GetAccountRequest(account_id=linked.account_id)
    idle: list[float] = []
    for _ in range(200):
        started = time.perf_counter()
        await client.accounts.GetAccount(request, metadata=client.md())
        idle.append((time.perf_counter() - started) * 1000)
    sessions = await asyncio.gather(*(_session(client) for _ in range(logins)))
    done = asyncio.Event()
    during: list[float] = []

    async def sample() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await client.accounts.GetAccount(request, metadata=client.md())
            during.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)

    before = await asyncio.to_thread(_get_account_buckets, metrics_port)
    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    results = await asyncio.gather(*(_login(client, s.id) for s in sessions))
    wall = time.perf_counter() - started
    done.set()
    await sampler
    after = await asyncio.to_thread(_get_account_buckets, metrics_port)
    durations = sorted(d for _, d in results)
    idle.sort()
    during.sort()
    out = {
        "logins": logins,
        "platform_latency_s": latency,
        "pool_size": 8,
        "all_connected": all(r.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING for r, _ in results),
        "login_s_median": round(statistics.median(durations), 2),
        "login_s_max": round(durations[-1], 2),
        "all_logins_wall_s": round(wall, 2),
        "get_account_idle_p50_ms": round(percentile(idle, 50), 2),
        "get_account_idle_p99_ms": round(percentile(idle, 99), 2),
        "get_account_during_calls": len(during),
        "get_account_during_p50_ms": round(percentile(during, 50), 2),
        "get_account_during_p99_ms": round(percentile(during, 99), 2),
        **_server_side(before, after),
    }
    print(f"logins: {out}", flush=True)
    return out


RESULTS = ROOT / "bench/logins-results.json"


def record(found: dict[str, Any], load_at_start: list[float], command: str) -> None:
    """Keeps the figures for BENCHMARKS.md (bench/report.py renders them), with the machine's load."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    out = {
        **found,
        "command": command,
        "commit": commit.stdout.strip(),
        "ran_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
