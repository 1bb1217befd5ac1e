"""`make bench`: paylink's benchmark suite against the local stack (see BENCHMARKS.md).

Runs, in one go: the echo baseline and four RPCs under ghz at concurrency 1/16/64 (median of
--runs runs, every ratio taken within one run), the job pipeline (jobs created -> events consumed
from Kafka) saturated and at half load, the relay draining a 100k-row outbox, and the serve
process's RSS under load and over a soak. Writes bench/results.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated")]

from paylink.v1 import common_pb2 as c
from paylink.v1 import event_pb2, job_pb2

from service import auth
from service.config import Settings
from tests.harness import Client, EventLog, create_test_database, drop_database

RPCS = {
    "CreateLinkToken": (
        "paylink.v1.LinkTokenService.CreateLinkToken",
        {"org_name": "Bench Bank", "required_jobs": ["JOB_NAME_IDENTITY"], "end_user_id": "bench-user"},
    ),
    "GetAccount": ("paylink.v1.AccountService.GetAccount", {"account_id": "{account}"}),
    "ListJobs": ("paylink.v1.JobService.ListJobs", {"account_id": "{account}", "page_size": 25}),
    "GetIdentity": ("paylink.v1.AccountService.GetIdentity", {"account_id": "{account}"}),
}
CONCURRENCY = (1, 16, 64)


def tool(name: str) -> str:
    return subprocess.run(
        [str(ROOT / "scripts/tools.sh"), name], check=True, capture_output=True, text=True
    ).stdout.strip()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = pathlib.Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def cpu_seconds_by_component() -> dict[str, float]:
    """CPU seconds used so far by each part of the system, from /proc (utime + stime)."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    out: dict[str, float] = collections.defaultdict(float)
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(entry.name) == me:
            part = "benchmark driver (gRPC client, Kafka consumer)"
        elif "service serve" in cmd:
            part = "paylink serve (API + worker + relay)"
        elif "service worker" in cmd:
            part = "paylink extra workers"
        elif cmd.startswith("postgres") or "/postgres" in cmd.split(" ")[0]:
            part = "PostgreSQL"
        elif "kafka.Kafka" in cmd:
            part = "Kafka broker"
        else:
            continue
        out[part] += seconds
    return dict(out)


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def protoset() -> str:
    """A descriptor set of every service ghz calls (its reflection client cannot resolve methods
    through grpcio-reflection, so it is given the descriptors directly)."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2
    from paylink.v1 import account_pb2, link_token_pb2

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: Any) -> None:
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto

    for module in (health_pb2, account_pb2, job_pb2, link_token_pb2):
        add(module.DESCRIPTOR)
    path = ROOT / ".tools/bench.protoset"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString())
    return str(path)


PROTOSET: list[str] = []


def ghz(
    ghz_bin: str,
    port: int,
    call: str,
    data: dict[str, Any],
    metadata: dict[str, str],
    concurrency: int,
    seconds: float,
) -> dict[str, float]:
    if not PROTOSET:
        PROTOSET.append(protoset())
    out = subprocess.run(
        [
            ghz_bin,
            "--insecure",
            "--protoset",
            PROTOSET[0],
            "--call",
            call,
            "-d",
            json.dumps(data),
            "-m",
            json.dumps(metadata),
            "-c",
            str(concurrency),
            "--connections",
            str(min(4, concurrency)),
            "-z",
            f"{seconds}s",
            "--format",
            "json",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if not out.stdout.strip().startswith("{"):
        raise RuntimeError(f"ghz failed for {call}: {out.stdout[:300]} {out.stderr[:300]}")
    report = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    codes = report.get("statusCodeDistribution") or {}
    return {
        "rps": report["rps"],
        "p50_ms": lat.get(50, 0.0),
        "p99_ms": lat.get(99, 0.0),
        "ok": codes.get("OK", 0),
        "errors": sum(v for k, v in codes.items() if k != "OK"),
    }


async def start_process(args: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if ready in line:
            return proc
        if proc.poll() is not None:
            break
    raise RuntimeError(f"{args} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def setup_account(client: Client) -> str:
    jobs = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]
    _, session = await client.connect("user_good", jobs)
    from paylink.v1 import link_pb2

    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED, timeout=60)
    for _ in range(30):
        await client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=session.account_id, name=c.JOB_NAME_INCOME),
            metadata=client.md(),
        )
    return session.account_id


async def bench_rpcs(
    args: argparse.Namespace, port: int, echo_port: int, secret: str, account: str, server_pid: int
) -> tuple[list[dict[str, Any]], float]:
    ghz_bin = tool("ghz")
    md = {"x-api-secret": secret, "api-version": "2021-07-28"}
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    peak = 0.0
    for run in range(args.runs):
        for conc in CONCURRENCY:
            base = await asyncio.to_thread(
                ghz, ghz_bin, echo_port, "grpc.health.v1.Health.Check", {}, {}, conc, args.seconds
            )
            rows.setdefault(("echo", conc), []).append({**base, "ratio": 1.0})
            for name, (call, data) in RPCS.items():
                body = json.loads(json.dumps(data).replace("{account}", account))
                result = await asyncio.to_thread(ghz, ghz_bin, port, call, body, md, conc, args.seconds)
                result["ratio"] = result["rps"] / base["rps"] if base["rps"] else 0.0
                rows.setdefault((name, conc), []).append(result)
                peak = max(peak, rss_mb(server_pid))
                print(
                    f"run {run + 1} c={conc:<3} {name:16} {result['rps']:8.0f} rps  p50 {result['p50_ms']:6.2f} ms"
                    f"  p99 {result['p99_ms']:6.2f} ms  {result['ratio']:.0%} of echo {base['rps']:.0f}",
                    flush=True,
                )
    out = []
    for (name, conc), runs in rows.items():
        out.append(
            {
                "rpc": name,
                "concurrency": conc,
                "runs": len(runs),
                **{k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "ratio")},
                "errors": sum(r["errors"] for r in runs),
            }
        )
    return out, peak


async def bench_pipeline(
    args: argparse.Namespace, client: Client, settings: Settings, accounts: list[str]
) -> dict[str, Any]:
    log = EventLog(settings.kafka_bootstrap, settings.topic_prefix)
    await log.start()
    names = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]
    try:

        async def create(n: int, rate: float | None) -> dict[str, float]:
            created: dict[str, float] = {}
            sem = asyncio.Semaphore(64)
            start = time.monotonic()

            async def one(i: int) -> None:
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                async with sem:
                    job = await client.jobs.CreateJob(
                        job_pb2.CreateJobRequest(account_id=accounts[i % len(accounts)], name=names[i % 3]),
                        metadata=client.md(),
                    )
                created[job.id] = job.created_at.ToDatetime(tzinfo=dt.UTC).timestamp()

            await asyncio.gather(*(one(i) for i in range(n)))
            return created

        async def measure(n: int, rate: float | None) -> dict[str, Any]:
            started = time.time()
            created = await create(n, rate)
            ids = set(created)
            seen: dict[str, float] = {}
            read = 0
            deadline = time.monotonic() + 600
            while len(seen) < n:  # scan only what arrived since the last look
                items = log.items
                for r in items[read:]:
                    if r.event.WhichOneof("payload") == "job" and r.event.job.job_id in ids:
                        seen.setdefault(r.event.job.job_id, r.received_at)
                read = len(items)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(seen)} of {n} job events arrived")
                await asyncio.sleep(0.2)
            lat = sorted((seen[j] - created[j]) * 1000 for j in ids)
            end = max(seen.values())
            return {
                "jobs": n,
                "jobs_per_s": n / (end - started),
                "p50_ms": lat[len(lat) // 2],
                "p99_ms": lat[int(len(lat) * 0.99) - 1],
                "offered_per_s": rate or 0.0,
            }

        profiler = None
        if args.profile:  # py-spy on the serve process while the pipeline is saturated
            profiler = subprocess.Popen(
                [
                    str(pathlib.Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(args.server_pid),
                    "-d",
                    "15",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(ROOT / "bench/profile-pipeline.txt"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cpu_before, wall_before = cpu_seconds_by_component(), time.monotonic()
        saturated = await measure(args.jobs, None)
        wall = time.monotonic() - wall_before
        cpu_after = cpu_seconds_by_component()
        saturated["cpu_cores_used"] = {
            part: round((cpu_after[part] - cpu_before.get(part, 0.0)) / wall, 2) for part in cpu_after
        }
        if profiler is not None:
            profiler.wait()
        print(f"pipeline saturated: {saturated}", flush=True)
        half_rate = saturated["jobs_per_s"] / 2
        half = await measure(int(half_rate * args.half_seconds), half_rate)
        print(f"pipeline half load: {half}", flush=True)
        return {"saturated": saturated, "half_load": half}
    finally:
        await log.stop()


async def bench_relay(args: argparse.Namespace, base: Settings, env: dict[str, str]) -> dict[str, Any]:
    url = await create_test_database(base.database_url)
    try:
        conn = await asyncpg.connect(url)
        event = event_pb2.Event(event="identity.added", workspace_id=str(uuid.uuid4()))
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload)"
            " SELECT gen_random_uuid(), $1, 'identity.added', gen_random_uuid(), gen_random_uuid(), 1, $2"
            " FROM generate_series(1, $3)",
            f"bench{uuid.uuid4().hex[:6]}.identity.added",
            event.SerializeToString(),
            args.relay_rows,
        )
        relay_env = {**env, "PAYLINK_DATABASE_URL": url}
        proc = await start_process([sys.executable, "-m", "service", "relay"], relay_env, "paylink serving")
        try:
            while await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                await asyncio.sleep(0.5)
            span = await conn.fetchval(
                "SELECT extract(epoch FROM max(published_at) - min(published_at)) FROM outbox"
            )
        finally:
            stop(proc)
            await conn.close()
        return {
            "rows": args.relay_rows,
            "seconds": float(span),
            "events_per_s": args.relay_rows / float(span),
        }
    finally:
        await drop_database(base.database_url, url)


async def soak(args: argparse.Namespace, port: int, secret: str, account: str, pid: int) -> dict[str, Any]:
    ghz_bin = tool("ghz")
    md = {"x-api-secret": secret, "api-version": "2021-07-28"}
    samples: list[tuple[float, float]] = []
    task = asyncio.create_task(
        asyncio.to_thread(
            ghz,
            ghz_bin,
            port,
            "paylink.v1.AccountService.GetAccount",
            {"account_id": account},
            md,
            16,
            args.soak_seconds,
        )
    )
    start = time.monotonic()
    while not task.done():
        samples.append((time.monotonic() - start, rss_mb(pid)))
        await asyncio.sleep(10)
    load = await task
    warm = [s for t, s in samples if t >= 30] or [s for _, s in samples]
    return {
        "seconds": args.soak_seconds,
        "rps": load["rps"],
        "rss_start_mb": warm[0],
        "rss_end_mb": warm[-1],
        "rss_peak_mb": max(s for _, s in samples),
        "growth_mb": warm[-1] - warm[0],
        "samples": [[round(t), round(s, 1)] for t, s in samples],
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="ghz duration per measurement")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--half-seconds", type=float, default=10.0)
    parser.add_argument("--relay-rows", type=int, default=100_000)
    parser.add_argument("--soak-seconds", type=int, default=300)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument(
        "--extra-workers", type=int, default=0, help="extra `python -m service worker` processes beside serve"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server during the saturated pipeline"
    )
    parser.add_argument(
        "--only",
        choices=("rpcs", "pipeline", "relay", "footprint", "privacy"),
        action="append",
        help="run only these parts (repeatable); results.json and BENCHMARKS.md are written only for a full run",
    )
    args = parser.parse_args()

    def want(part: str) -> bool:
        return not args.only or part in args.only

    base = Settings()
    url = await create_test_database(base.database_url)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    port, echo_port = 50151, 50152
    env = {
        **os.environ,
        "PAYLINK_DATABASE_URL": url,
        "PAYLINK_TOPIC_PREFIX": prefix,
        "PAYLINK_GRPC_PORT": str(port),
        "PAYLINK_RATE_LINK_TOKENS_PER_MINUTE": "0",
        "PAYLINK_RATE_LOGINS_PER_MINUTE": "0",
        "PAYLINK_SANDBOX_LATENCY_SECONDS": "0",
        "PAYLINK_LOG_LEVEL": "WARNING",
        "PAYLINK_WORKER_CONCURRENCY": "64",
        # The sandbox platform has no real capacity to protect; the default (16) would cap the pipeline.
        "PAYLINK_PLATFORM_CONCURRENCY": "64",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
    }
    results: dict[str, Any] = {"machine": machine(), "args": dict(vars(args))}
    server = await start_process([sys.executable, "-m", "service", "serve"], env, "paylink serving")
    args.server_pid = server.pid
    extra = [
        await start_process([sys.executable, "-m", "service", "worker"], env, "paylink serving")
        for _ in range(args.extra_workers)
    ]
    echo = await start_process(
        [sys.executable, str(ROOT / "bench/echo_server.py"), str(echo_port)], env, "echo serving"
    )
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        _, secret = await auth.create_workspace(pool, "bench")
        await pool.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = Client(channel, secret)
            account = await setup_account(client)
            peak = 0.0
            if args.only and "privacy" in args.only:  # bench/privacy.py: only when asked for
                from bench.privacy import bench_privacy

                results["privacy"] = await bench_privacy(args, ghz, tool("ghz"), port, echo_port, client)
            if want("rpcs"):
                results["rpcs"], peak = await bench_rpcs(args, port, echo_port, secret, account, server.pid)
            if want("pipeline"):
                accounts = [account]
                for i in range(args.accounts - 1):
                    _, session = await client.connect(f"user_good+bench{i}", [c.JOB_NAME_IDENTITY])
                    accounts.append(session.account_id)
                settings = base.model_copy(update={"topic_prefix": prefix})
                results["pipeline"] = await bench_pipeline(args, client, settings, accounts)
        if want("relay"):
            results["relay"] = await bench_relay(args, base, env)
            print(f"relay: {results['relay']}", flush=True)
        if want("footprint"):
            results["footprint"] = {
                "rss_peak_under_rpc_load_mb": peak,
                "soak": await soak(args, port, secret, account, server.pid),
            }
            print(f"footprint: {results['footprint']['soak']['growth_mb']:.1f} MB growth", flush=True)
    finally:
        stop(server)
        for proc in extra:
            stop(proc)
        stop(echo)
        await drop_database(base.database_url, url)
    if args.only:
        print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "args")}, indent=2))
        return 0
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=2) + "\n")
    subprocess.run([sys.executable, str(ROOT / "bench/report.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
