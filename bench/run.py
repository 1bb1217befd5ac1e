"""`make bench`: paylink's benchmark suite (see BENCHMARKS.md). `make bench` runs it through
bench/bench.sh on a PostgreSQL cluster that is durable like production.

Runs, in one go, every ratio taken within one run:
- rpcs: the echo baseline, the one-query floors (bench/floor_server.py) and four paylink RPCs under
  ghz at each --concurrency (median of --runs rounds);
- pipeline: jobs created through the API -> events consumed from Kafka, saturated and at half load
  (half the saturated rate, or a fixed --half-rate), in each deployment --api-processes names: serve
  alone taking the driver's calls, and serve (worker + relay) beside `service api` processes that take
  them (the production shape, docs/deployment.md); with --fleet, also without serve: `service api`
  processes, one `service worker` and one `service relay`;
- peers: procrastinate, PgQueuer and paylink's queue core on the same PostgreSQL (bench/peers.py);
- latency: one worker process against a platform taking --latency seconds a call (bench/latency.py);
- relay: a large outbox of realistic events drained to Kafka (bench/relay_bench.py);
- footprint: the serve process's RSS under load and over a soak.
Writes bench/results.json and BENCHMARKS.md (a full run only).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import grpc

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent)]
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2, link_pb2

from bench import latency, logins, relay_bench, stages
from bench.common import (
    ROOT,
    StatementStats,
    cpu_seconds_by_component,
    ghz,
    ghz_with_cpu,
    load_average,
    machine_busy_seconds,
    percentile,
    postmaster_pid,
    rss_mb,
    start_process,
    stop,
    tool,
)
from service import auth, outbox
from service.config import Settings
from tests.harness import Client, EventLog, create_test_database, drop_database

# name: (method, request, the floor it is compared with)
RPCS: dict[str, tuple[str, dict[str, Any], str]] = {
    "CreateLinkToken": (
        "paylink.v1.LinkTokenService.CreateLinkToken",
        {"org_name": "Bench Bank", "required_jobs": ["JOB_NAME_IDENTITY"], "end_user_id": "bench-user"},
        "write floor",
    ),
    "GetAccount": ("paylink.v1.AccountService.GetAccount", {"account_id": "{account}"}, "read floor"),
    "ListJobs": (
        "paylink.v1.JobService.ListJobs",
        {"account_id": "{account}", "page_size": 25},
        "read floor",
    ),
    # A read that writes its audit record and waits for its durable commit (service/audit_commit.py):
    # a durable write, compared with the write floor.
    "GetIdentity": ("paylink.v1.AccountService.GetIdentity", {"account_id": "{account}"}, "write floor"),
}
FLOORS: dict[str, tuple[str, dict[str, Any]]] = {
    "read floor": ("paylink.v1.AccountService.GetAccount", {"account_id": "{account}"}),
    "write floor": ("paylink.v1.LinkTokenService.CreateLinkToken", RPCS["CreateLinkToken"][1]),
}
PARTS = ("rpcs", "pipeline", "peers", "latency", "logins", "relay", "footprint")
DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")

# The pipeline's deployments (--api-processes). 0: serve alone takes the driver's calls (results key
# "pipeline", the figure of every run before session 29). N > 0: serve keeps the worker (with its
# completer) and the relay, and N `service api` processes on their own ports take every one of the
# driver's calls (results key "pipeline_split"; bench/NOTES.md, inflight session 28 and rpc session 29).
# --fleet N: serve's one loop split up, no serve at all: N `service api` processes take the driver's
# calls, one `service worker` runs the worker (with its completer) and one `service relay` the relay
# (results key "pipeline_fleet"; bench/NOTES.md, tidy session 30). Serve is stopped for it and started
# again after, so it runs after the --api-processes deployments.
SINGLE, SPLIT, FLEET = "pipeline", "pipeline_split", "pipeline_fleet"
API_PORT_OFFSET = 5  # the api processes listen on --port + 5, + 6, ... (after the 5 ports of the run)
SERVE_LABEL = "paylink serve (API + worker + relay)"
SPLIT_SERVE_LABEL = "paylink serve (worker + relay; no driver calls)"
API_LABEL = "paylink api processes (the driver's calls)"
WORKER_LABEL = "paylink worker process (worker + completer)"
RELAY_LABEL = "paylink relay process"


def api_process_counts(text: str) -> list[int]:
    """--api-processes: "0,1", ...; "none" for no deployment with serve (a --fleet-only run)."""
    return [] if text.strip() == "none" else [int(x) for x in text.split(",")]


def pipeline_deployments(counts: Sequence[int], fleet: int = 0) -> list[tuple[str, int]]:
    """(results key, api processes) of each pipeline deployment --api-processes asks for, in its
    order: 0 is serve alone ("pipeline"), N > 0 serve beside N api processes ("pipeline_split");
    then, with --fleet N > 0, the fleet without serve ("pipeline_fleet", N api processes)."""
    if fleet < 0 or any(n < 0 for n in counts):
        raise ValueError("--api-processes, --fleet: counts of 0 or more, e.g. 0,1")
    if not counts and not fleet:
        raise ValueError("--api-processes: at least one deployment (none only with --fleet)")
    if len(set(counts)) != len(counts) or sum(1 for n in counts if n) > 1:
        raise ValueError("--api-processes: serve alone (0) and at most one split deployment, each once")
    return [(SPLIT if n else SINGLE, n) for n in counts] + ([(FLEET, fleet)] if fleet else [])


def deployment(api_processes: int, key: str = "") -> str:
    """What a pipeline figure measured, as results.json and BENCHMARKS.md label it (`key` FLEET: the
    fleet without serve)."""
    plural = "es" if api_processes > 1 else ""
    if key == FLEET:
        return (
            f"{api_processes} `service api` process{plural} + `service worker` + `service relay` (no serve)"
        )
    if not api_processes:
        return "one process: `service serve` (API + worker + relay)"
    return f"`service serve` (worker + relay) + {api_processes} `service api` process{plural}"


def driver_ports(api_ports: Sequence[int], connections: int) -> list[int]:
    """The port each of the driver's `connections` dials: the api processes in turn (round robin by
    connection, as a client's round-robin balancing or the kernel's SO_REUSEPORT spreads them). The
    driver's call i then goes on connection i % connections."""
    if not api_ports or connections < 1:
        raise ValueError("at least one api port and one connection")
    return [api_ports[i % len(api_ports)] for i in range(connections)]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = pathlib.Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    # What the figures describe: the commit, and whether anything outside bench/ differed from it.
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    dirty = [line[3:] for line in status.splitlines() if not line[3:].startswith("bench/")]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "commit_full": git("rev-parse", "HEAD"),
        "uncommitted_changes": dirty,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": load_average(),
        "other_processes": other_load(),
    }


def other_load() -> dict[str, int]:
    """Other work on the machine at the start: python, postgres and java processes not ours."""
    counts: dict[str, int] = {}
    out = subprocess.run(["ps", "-eo", "comm="], capture_output=True, text=True).stdout.split()
    for name in ("python", "postgres", "java", "ghz", "pytest"):
        counts[name] = sum(1 for x in out if x.startswith(name))
    return counts


async def durability(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        return {name: await conn.fetchval(f"SHOW {name}") for name in DURABILITY}
    finally:
        await conn.close()


def disk_fdatasync_per_s() -> float:
    """fdatasync calls per second of one 8 kB write on this checkout's disk (pg_test_fsync, 1 s)."""
    import glob
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_test_fsync")) or ["pg_test_fsync"]
    with tempfile.TemporaryDirectory(dir=ROOT / ".stack") as tmp:
        try:
            out = subprocess.run(
                [found[-1], "-s", "1", "-f", f"{tmp}/probe"], capture_output=True, text=True, timeout=60
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return 0.0
    for line in out.splitlines():
        if line.strip().startswith("fdatasync"):
            return float(line.split()[1])
    return 0.0


async def setup_account(client: Client) -> str:
    jobs = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]
    _, session = await client.connect("user_good", jobs)
    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED, timeout=60)
    for _ in range(30):
        await client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=session.account_id, name=c.JOB_NAME_INCOME),
            metadata=client.md(),
        )
    return session.account_id


# The targets: each measured right beside its floor, in two halves around the floor's two halves
# (floor, RPC, RPC, floor; RPC first in odd rounds), so a drift of the machine within a pair weighs
# on both sides alike. The other RPCs are measured once a round, against that round's floors.
PAIRS: tuple[tuple[str, str], ...] = (("read floor", "GetAccount"), ("write floor", "CreateLinkToken"))


def round_plan(run: int) -> list[tuple[str, int]]:
    """What round `run` (0-based) measures after echo, in order: (name, half) for a pair's halves
    (1 or 2), (name, 0) for a whole measurement."""
    plan: list[tuple[str, int]] = []
    for floor, rpc in PAIRS:
        a, b = (floor, rpc) if run % 2 == 0 else (rpc, floor)
        plan += [(a, 1), (b, 1), (b, 2), (a, 2)]
    paired = {name for pair in PAIRS for name in pair}
    plan += [(name, 0) for name in RPCS if name not in paired]
    return plan


def joined(halves: list[dict[str, float]]) -> dict[str, float]:
    """One measurement of a pair's two halves (each the same duration): the mean rate and
    latencies, the errors, cut-off calls and calls summed, the CPU per call over both."""
    calls = sum(h["ok"] + h["errors"] + h.get("cut", 0) for h in halves)
    cpu, pg = sum(h["cpu_s"] for h in halves), sum(h["pg_cpu_s"] for h in halves)
    return {
        **{k: sum(h[k] for h in halves) / len(halves) for k in ("rps", "p50_ms", "p99_ms")},
        **{k: sum(h[k] for h in halves) for k in ("ok", "errors", "cpu_s", "pg_cpu_s")},
        "cut": sum(h.get("cut", 0) for h in halves),
        "cpu_us_per_call": cpu / calls * 1e6 if calls else 0.0,
        "pg_us_per_call": pg / calls * 1e6 if calls else 0.0,
    }


def against(result: dict[str, float], floor: dict[str, float], echo: dict[str, float]) -> dict[str, float]:
    """A paylink measurement with its ratios to the floor and echo of the same round."""
    return {
        **result,
        "ratio": result["rps"] / echo["rps"] if echo["rps"] else 0.0,
        "floor_ratio": result["rps"] / floor["rps"] if floor["rps"] else 0.0,
        # serve's CPU per call ÷ the floor server's, the measure that drifts least with the load
        "cpu_ratio": result["cpu_us_per_call"] / floor["cpu_us_per_call"]
        if floor["cpu_us_per_call"]
        else 0.0,
        "floor_p99_ms": floor["p99_ms"],
    }


ROUND_KEYS = ("rps", "p50_ms", "p99_ms", "ratio", "floor_ratio", "cpu_us_per_call", "pg_us_per_call")
PAYLINK_KEYS = ("cpu_ratio", "floor_p99_ms")


def summary(name: str, conc: int, runs: list[dict[str, float]]) -> dict[str, Any]:
    """The medians of one RPC's (or floor's) rounds, and each round's figures as measured."""
    keys = ROUND_KEYS + (PAYLINK_KEYS if name in RPCS else ())
    return {
        "rpc": name,
        "concurrency": conc,
        "runs": len(runs),
        "floor": RPCS[name][2] if name in RPCS else "",
        **{k: statistics.median(r[k] for r in runs) for k in keys},
        "errors": sum(r["errors"] for r in runs),
        # calls in flight when a measurement's duration ended, which ghz fails on its side: about
        # `concurrency` per measurement (a pair's two halves: twice), not errors of the server
        "cut": sum(r.get("cut", 0) for r in runs),
        "rounds": [{k: round(r[k], 3) for k in keys} for r in runs],
    }


async def bench_rpcs(
    args: argparse.Namespace,
    ports: dict[str, int],
    secret: str,
    account: str,
    pids: dict[str, int],
    postmaster: int | None,
) -> tuple[list[dict[str, Any]], float]:
    """Per round and concurrency: echo, each target RPC beside its floor (`round_plan`), then the
    other RPCs; every ratio against that round's echo and floor. `pids`: the paylink server's
    ("api"), the floor server's ("floor") and echo's ("echo"), for CPU per call."""
    ghz_bin = tool("ghz")
    md = {"x-api-secret": secret, "api-version": "2021-07-28"}
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    peak = 0.0

    def body(data: dict[str, Any]) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(json.dumps(data).replace("{account}", account))
        return loaded

    def target(name: str) -> tuple[int, int, str, dict[str, Any], dict[str, str]]:
        if name in FLOORS:  # the same request on the wire, metadata included (the floor ignores it)
            call, data = FLOORS[name]
            return pids["floor"], ports["floor"], call, body(data), md
        return pids["api"], ports["api"], RPCS[name][0], body(RPCS[name][1]), md

    async def one(name: str, conc: int, seconds: float) -> dict[str, float]:
        pid, port, call, data, metadata = target(name)
        return await asyncio.to_thread(
            ghz_with_cpu, pid, postmaster, ghz_bin, port, call, data, metadata, conc, seconds
        )

    for run in range(args.runs):
        for conc in args.concurrency:
            echo = await asyncio.to_thread(
                ghz_with_cpu,
                pids["echo"],
                None,
                ghz_bin,
                ports["echo"],
                "grpc.health.v1.Health.Check",
                {},
                {},
                conc,
                args.seconds,
            )
            rows.setdefault(("echo", conc), []).append({**echo, "ratio": 1.0, "floor_ratio": 0.0})
            halves: dict[str, list[dict[str, float]]] = {}
            measured: dict[str, dict[str, float]] = {}
            for name, half in round_plan(run):
                result = await one(name, conc, args.seconds / 2 if half else args.seconds)
                if name in RPCS:
                    peak = max(peak, rss_mb(pids["api"]))
                if half:
                    halves.setdefault(name, []).append(result)
                    if half == 1:
                        continue
                    result = joined(halves[name])
                measured[name] = result
            for name, result in measured.items():
                if name in FLOORS:
                    rows.setdefault((name, conc), []).append(
                        {
                            **result,
                            "ratio": result["rps"] / echo["rps"] if echo["rps"] else 0.0,
                            "floor_ratio": 1.0,
                        }
                    )
                    continue
                floor = RPCS[name][2]
                row = against(result, measured[floor], echo)
                rows.setdefault((name, conc), []).append(row)
                print(
                    f"run {run + 1} c={conc:<3} {name:16} {row['rps']:8.0f} rps  p50 {row['p50_ms']:6.2f} ms"
                    f"  p99 {row['p99_ms']:6.2f} ms (floor {row['floor_p99_ms']:6.2f})"
                    f"  {row['ratio']:.0%} of echo {echo['rps']:.0f}, {row['floor_ratio']:.0%} of the {floor}"
                    f" {measured[floor]['rps']:.0f}; CPU/call {row['cpu_us_per_call']:.0f} us"
                    f" = {row['cpu_ratio']:.2f}x the floor's  load {load_average()}",
                    flush=True,
                )
    order = {"echo": 0, **{floor: 1 for floor in FLOORS}}
    out = [
        summary(name, conc, runs)
        for (name, conc), runs in sorted(rows.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 2)))
    ]
    return out, peak


def fixed_rate_plan(saturated: list[dict[str, Any]], fraction: float, conc: int) -> list[tuple[str, int]]:
    """(name, calls a second) for `--rpc-fixed-rate`: echo and each floor at `fraction` of its own
    saturated median rate at concurrency `conc`, each RPC at `fraction` of its floor's."""
    rps = {x["rpc"]: x["rps"] for x in saturated if x["concurrency"] == conc}
    plan = [(name, int(fraction * rps[name])) for name in ("echo", *FLOORS) if name in rps]
    plan += [(name, int(fraction * rps[RPCS[name][2]])) for name in RPCS if RPCS[name][2] in rps]
    return [(name, rate) for name, rate in plan if rate > 0]


async def bench_rpcs_fixed_rate(
    args: argparse.Namespace,
    ports: dict[str, int],
    secret: str,
    account: str,
    saturated: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each RPC, its floors and echo at a fixed offered rate (`fixed_rate_plan`) with the saturated
    rounds' concurrency 16 as the bound on calls in flight: the latency of a server that is not
    saturated, beside the saturated p99 (results key rpcs_fixed_rate; the targets' p99 ≤ 15 ms)."""
    ghz_bin = tool("ghz")
    md = {"x-api-secret": secret, "api-version": "2021-07-28"}
    conc = 16
    out = []
    for name, rate in fixed_rate_plan(saturated, args.rpc_fixed_rate, conc):
        port, call = ports["echo"], "grpc.health.v1.Health.Check"
        data: dict[str, Any] = {}
        metadata: dict[str, str] = {}
        if name != "echo":
            port = ports["floor"] if name in FLOORS else ports["api"]
            call, template = FLOORS[name] if name in FLOORS else RPCS[name][:2]
            data, metadata = json.loads(json.dumps(template).replace("{account}", account)), md
        found = await asyncio.to_thread(ghz, ghz_bin, port, call, data, metadata, conc, args.seconds, rate)
        row = {"rpc": name, "concurrency": conc, "offered_rps": rate, **found}
        print(
            f"fixed rate c={conc} {name:16} offered {rate:6d} rps: {found['rps']:8.0f} rps"
            f"  p50 {found['p50_ms']:6.2f} ms  p99 {found['p99_ms']:6.2f} ms  load {load_average()}",
            flush=True,
        )
        out.append(row)
    return out


async def bench_pipeline(
    args: argparse.Namespace,
    clients: list[Client],
    settings: Settings,
    accounts: list[str],
    labels: dict[int, str],
    profile_path: pathlib.Path,
    profile_pid: int | None = None,
) -> dict[str, Any]:
    """The pipeline saturated, then at half load. The driver's call i goes on clients[i % len(clients)]
    (one connection each, `driver_ports`); `labels` names the paylink processes whose CPU (and RSS
    peak, while saturated) are counted; --profile samples `profile_pid` (default: serve)."""
    names = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]
    # The job events only (each one is checked): the pipeline's jobs' `<job>.added` topics, not every
    # topic on the broker (a pattern re-reads all their metadata every 0.5 s).
    log = EventLog(settings.kafka_bootstrap, settings.topic_prefix, [outbox.JOB_EVENTS[n] for n in names])
    await log.start()
    try:
        answered: dict[str, float] = {}  # job id: when the driver had CreateJob's answer (--stages)

        async def create(n: int, rate: float | None) -> dict[str, float]:
            created: dict[str, float] = {}
            sem = asyncio.Semaphore(64)
            start = time.monotonic()

            async def one(i: int) -> None:
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                client = clients[i % len(clients)]
                async with sem:
                    job = await client.jobs.CreateJob(
                        job_pb2.CreateJobRequest(account_id=accounts[i % len(accounts)], name=names[i % 3]),
                        metadata=client.md(),
                    )
                if job.id in created:  # CreateJob answered with a refresh already in flight
                    raise RuntimeError("a refresh of this account and job was in flight: use more --accounts")
                answered[job.id] = time.time()
                created[job.id] = job.created_at.ToDatetime(tzinfo=dt.UTC).timestamp()

            await asyncio.gather(*(one(i) for i in range(n)))
            return created

        async def measure(n: int, rate: float | None, with_stages: bool = False) -> dict[str, Any]:
            started = time.time()
            created = await create(n, rate)
            ids = set(created)
            seen: dict[str, float] = {}
            event_ids: dict[str, str] = {}
            sent: dict[str, float] = {}  # the event's Kafka CreateTime (the relay built it)
            read = 0
            deadline = time.monotonic() + 600
            while len(seen) < n:  # scan only what arrived since the last look
                items = log.items
                for r in items[read:]:
                    job_id = r.event.job.job_id if r.event.WhichOneof("payload") == "job" else ""
                    if job_id in ids and job_id not in seen:
                        seen[job_id] = r.received_at
                        event_ids[job_id] = r.event.event_id
                        sent[job_id] = r.kafka_timestamp_ms / 1000
                read = len(items)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(seen)} of {n} job events arrived")
                await asyncio.sleep(0.2)
            lat = sorted((seen[j] - created[j]) * 1000 for j in ids)
            end = max(seen.values())
            found: dict[str, Any] = {
                "jobs": n,
                "jobs_per_s": n / (end - started),
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
                "offered_per_s": rate or 0.0,
            }
            if with_stages:
                consumed = {j: (seen[j], sent[j], event_ids[j]) for j in ids}
                found["stages"] = stages.summarize(await stages.read(args.database_url, answered, consumed))
                print(stages.line(found["stages"]), flush=True)
            return found

        profiler = None
        if args.profile:  # py-spy on the serve process (the fleet's worker) while saturated
            profiler = subprocess.Popen(
                [
                    str(ROOT / ".venv/bin/py-spy"),
                    "record",
                    "-p",
                    str(profile_pid or args.server_pid),
                    "-d",
                    "15",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(profile_path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        pg_port = urllib.parse.urlsplit(settings.database_url).port
        statements = await StatementStats.start(settings.database_url) if args.statements else None
        rss_peak: dict[str, float] = {}

        async def sample_rss() -> None:  # the peak of each labelled process (one label: the largest)
            while True:
                for pid, label in labels.items():
                    rss_peak[label] = max(rss_peak.get(label, 0.0), rss_mb(pid))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample_rss())
        busy_before = machine_busy_seconds()
        cpu_before, wall_before = cpu_seconds_by_component(labels, pg_port), time.monotonic()
        try:
            saturated = await measure(args.jobs, None)
        finally:
            sampler.cancel()
        wall = time.monotonic() - wall_before
        # The whole machine, kernel and every other process included (the parts above are only the
        # benchmark's processes): how close the box was to all its cores busy.
        saturated["machine_cores_busy"] = round((machine_busy_seconds() - busy_before) / wall, 2)
        cpu_after = cpu_seconds_by_component(labels, pg_port)
        saturated["cpu_cores_used"] = {
            part: round((cpu_after[part] - cpu_before.get(part, 0.0)) / wall, 2) for part in cpu_after
        }
        # Milliseconds of CPU per job, by part (the window includes the tail of waiting for events).
        saturated["cpu_ms_per_job"] = {
            part: round((cpu_after[part] - cpu_before.get(part, 0.0)) * 1000 / args.jobs, 3)
            for part in cpu_after
        }
        if statements is not None:
            saturated["statements_per_job"] = await statements.per_job(args.jobs)
        saturated["rss_peak_mb_per_process"] = {label: round(mb, 1) for label, mb in rss_peak.items()}
        if profiler is not None:
            profiler.wait()
        print(f"pipeline saturated ({len(clients)} connection(s)): {saturated}", flush=True)
        # Half load: half the saturated rate of this run, or a fixed offered rate (--half-rate) so
        # that runs of different code compare at the same load (bench/NOTES.md, session 23).
        half_rate = args.half_rate or saturated["jobs_per_s"] / 2
        if args.stages:  # each job's claim time, by a trigger on the bench database (bench/stages.py)
            await stages.install(args.database_url)
        cpu_before, wall_before = cpu_seconds_by_component(labels, pg_port), time.monotonic()
        try:
            half = await measure(int(half_rate * args.half_seconds), half_rate, args.stages)
        finally:
            if args.stages:
                await stages.remove(args.database_url)
        cpu_after = cpu_seconds_by_component(labels, pg_port)
        half["cpu_ms_per_job"] = {
            part: round((cpu_after[part] - cpu_before.get(part, 0.0)) * 1000 / half["jobs"], 3)
            for part in cpu_after
        }
        print(f"pipeline half load: {half}", flush=True)
        return {"saturated": saturated, "half_load": half}
    finally:
        await log.stop()


async def pipeline_deployment(
    args: argparse.Namespace,
    key: str,
    api_processes: int,
    env: dict[str, str],
    secret: str,
    client: Client,
    settings: Settings,
    accounts: list[str],
    serve_pid: int,
    extra: list[subprocess.Popen[str]],
) -> dict[str, Any]:
    """The pipeline in one deployment: serve alone (SINGLE: the driver's one connection, `client`, to
    serve), serve beside `api_processes` `service api` processes (SPLIT), or, with serve stopped by
    the caller, the fleet (FLEET): a `service relay`, a `service worker` and `api_processes` `service
    api` processes. The processes are started here (the api processes on --port + 5, ..., one driver
    connection each) and stopped again afterwards."""
    extras = {p.pid: "paylink extra workers" for p in extra}
    label = deployment(api_processes, key)
    print(f"pipeline deployment: {label}", flush=True)
    if key == SINGLE:
        labels = {serve_pid: SERVE_LABEL, **extras}
        found = await bench_pipeline(
            args, [client], settings, accounts, labels, ROOT / "bench/profile-pipeline.txt"
        )
        return {"deployment": label, "api_processes": 0, **found}
    ports = [args.port + API_PORT_OFFSET + k for k in range(api_processes)]
    procs: list[subprocess.Popen[str]] = []
    channels: list[grpc.aio.Channel] = []
    labels = {serve_pid: SPLIT_SERVE_LABEL} if key == SPLIT else {}
    try:
        if key == FLEET:  # the relay first: it leads from the start (serve, the last leader, is gone)
            for command, what in (("relay", RELAY_LABEL), ("worker", WORKER_LABEL)):
                procs.append(
                    await start_process([sys.executable, "-m", "service", command], env, "paylink serving")
                )
                labels[procs[-1].pid] = what
        for port in ports:
            procs.append(
                await start_process(
                    [sys.executable, "-m", "service", "api"],
                    {**env, "PAYLINK_GRPC_PORT": str(port)},
                    "paylink serving",
                )
            )
            labels[procs[-1].pid] = API_LABEL
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in driver_ports(ports, api_processes)
        ]
        found = await bench_pipeline(
            args,
            [Client(channel, secret) for channel in channels],
            settings,
            accounts,
            {**labels, **extras},
            ROOT / f"bench/profile-{key.replace('_', '-')}.txt",
            profile_pid=next((pid for pid, what in labels.items() if what == WORKER_LABEL), None),
        )
        fleet = {"worker_processes": 1, "relay_processes": 1} if key == FLEET else {}
        return {
            "deployment": label,
            "api_processes": api_processes,
            **fleet,
            "driver_connections": len(channels),
            **found,
        }
    finally:
        for channel in channels:
            await channel.close()
        # SIGTERM, the api processes first (the relay last): each drains and exits 0 (a kill after 30 s)
        for proc in reversed(procs):
            await asyncio.to_thread(stop, proc)
            if proc.returncode:
                print(f"{labels.get(proc.pid)}: {proc.pid} exited {proc.returncode}", flush=True)


PEER_QUEUES = ("paylink", "pgqueuer", "procrastinate")  # the order within a round


async def bench_peers(args: argparse.Namespace, admin_url: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """Each queue and mode in its own process on the durable cluster (and, for comparison, paylink's
    queue core and PgQueuer end to end on the throw-away cluster): --peer-runs rounds per mode, each
    round one run of every queue back to back (interleaved, so the host's drift hits all alike);
    each queue's median run, and paylink's median ratio to each round's faster peer (peers.summarize)."""
    from bench.peers import summarize

    out = []
    plan: list[tuple[str, str, tuple[str, ...]]] = [(m, admin_url, PEER_QUEUES) for m in ("drain", "e2e")]
    if args.throwaway_url:
        plan.append(("e2e", args.throwaway_url, ("paylink", "pgqueuer")))
    for mode, url, queues in plan:
        rounds: list[dict[str, dict[str, Any]]] = []
        for _ in range(args.peer_runs):
            one: dict[str, dict[str, Any]] = {}
            for queue in queues:
                proc = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, str(ROOT / "bench/peers.py"), queue, mode, str(args.peer_jobs), url],
                    env=env,
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    timeout=600,
                )
                lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                if proc.returncode or not lines:
                    raise RuntimeError(f"peers.py {queue} {mode} failed: {proc.stderr[-2000:]}")
                one[queue] = json.loads(lines[-1])
                one[queue]["load_average"] = load_average()[0]
            rounds.append(one)
            print(
                f"peers round {len(rounds)} {mode}: "
                + ", ".join(f"{q} {one[q]['jobs_per_s']:.0f}" for q in queues)
                + f" jobs/s (load {load_average()[0]:.1f})",
                flush=True,
            )
        for summary in summarize(queues, rounds):
            summary["cluster"] = "throw-away" if url == args.throwaway_url else "durable"
            print(f"peers: {summary}", flush=True)
            out.append(summary)
    return out


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
        await asyncio.sleep(5)
    load = await task
    warm = [s for t, s in samples if t >= 20] or [s for _, s in samples]
    return {
        "seconds": args.soak_seconds,
        "rps": load["rps"],
        "rss_start_mb": warm[0],
        "rss_end_mb": warm[-1],
        "rss_peak_mb": max(s for _, s in samples),
        "growth_mb": warm[-1] - warm[0],
        "samples": [[round(t), round(s, 1)] for t, s in samples],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds of RPC measurements (median)")
    parser.add_argument("--seconds", type=float, default=4.0, help="ghz duration per measurement")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64], help="e.g. 1,16,64"
    )
    parser.add_argument(
        "--rpc-fixed-rate",
        type=float,
        default=0.0,
        help="after the RPC rounds: echo, the floors and each RPC at this fraction of the (floor's)"
        " saturated c=16 rate, e.g. 0.5 (results key rpcs_fixed_rate). Default 0: not measured",
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the saturated pipeline")
    parser.add_argument("--half-seconds", type=float, default=10.0)
    parser.add_argument(
        "--half-rate",
        type=float,
        default=0.0,
        help="jobs/s offered in the pipeline's half-load part (default: half the saturated rate)",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=100,
        help="linked accounts the pipeline's jobs go to (at least jobs/3)",
    )
    parser.add_argument("--peer-jobs", type=int, default=5_000, help="no-op jobs per peer measurement")
    parser.add_argument(
        "--peer-runs", type=int, default=3, help="interleaved rounds of the peer measurements (medians)"
    )
    parser.add_argument("--latency", type=float, default=2.0, help="platform seconds per call")
    parser.add_argument("--latency-jitter", type=float, default=0.5, help="± uniform jitter per call")
    parser.add_argument("--latency-jobs", type=int, default=12_000)
    parser.add_argument("--latency-concurrency", type=int, default=2000, help="the worker's concurrency")
    parser.add_argument(
        "--latency-accounts",
        type=int,
        default=1000,
        help="accounts the slow-platform jobs are spread over (at least latency-jobs/3)",
    )
    parser.add_argument("--relay-rows", type=int, default=50_000)
    parser.add_argument("--soak-seconds", type=int, default=90)
    parser.add_argument(
        "--port",
        type=int,
        default=50151,
        help="first of the 5 gRPC ports used (the pipeline's api processes: the next ones)",
    )
    parser.add_argument(
        "--extra-workers", type=int, default=0, help="extra `python -m service worker` processes beside serve"
    )
    parser.add_argument(
        "--api-processes",
        type=api_process_counts,
        default=[0, 1],
        help="the pipeline's deployments, in order: 0 = serve alone takes the driver's calls (results key"
        " pipeline); N = serve (worker + relay) beside N `service api` processes on --port + 5, ... that take"
        " them (key pipeline_split); none = neither (with --fleet). Default 0,1",
    )
    parser.add_argument(
        "--fleet",
        type=int,
        default=0,
        help="N > 0: then the pipeline without serve (stopped for it, started again after): N `service api`"
        " processes on --port + 5, ... take the driver's calls, beside one `service worker` and one"
        " `service relay` (results key pipeline_fleet). Default 0: not measured",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="pg_stat_statements over the saturated pipeline (bench/bench.sh then preloads it in its cluster)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="the half-load pipeline's time by stage (created, answered, claimed, outcome, published,"
        " consumed; bench/stages.py): a bench-only trigger records each job's claim",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy serve during each saturated pipeline (bench/profile-pipeline.txt; with api processes"
        " beside it: bench/profile-pipeline-split.txt; the --fleet's worker process:"
        " bench/profile-pipeline-fleet.txt)",
    )
    parser.add_argument(
        "--throwaway-url", default="", help="a non-durable cluster: queue figures there too, for comparison"
    )
    parser.add_argument(
        "--only",
        # privacy: bench/privacy.py; monitoring: bench/monitoring.py (its own database and server); only
        # when asked for
        choices=(*PARTS, "privacy", "monitoring"),
        action="append",
        help="run only these parts (repeatable); results.json and BENCHMARKS.md are written only for a full run",
    )
    parser.add_argument(
        "--monitoring-accounts", type=int, default=1_000_000, help="monitored accounts seeded"
    )
    parser.add_argument("--monitoring-due", type=int, default=2_000, help="of them due now (x5 refreshes)")
    args = parser.parse_args()
    try:
        pipeline_deployments(args.api_processes, args.fleet)
    except ValueError as exc:
        parser.error(str(exc))
    return args


async def main() -> int:
    args = parse_args()
    if args.only and "monitoring" in args.only:
        from bench.monitoring import bench as bench_monitoring
        from bench.monitoring import record

        found = await bench_monitoring(args.monitoring_accounts, args.monitoring_due, 500, 10)
        print(json.dumps({"monitoring": found}, indent=2))
        record(found, "make bench BENCH_ARGS='--only monitoring'")
        if args.only == ["monitoring"]:
            return 0

    def want(part: str) -> bool:
        return not args.only or part in args.only

    started = time.monotonic()
    base = Settings()
    url = await create_test_database(base.database_url)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    ports = {
        "api": args.port,
        "echo": args.port + 1,
        "floor": args.port + 2,
        "latency": args.port + 3,
        "logins": args.port + 4,
    }
    env = {
        **os.environ,
        "PAYLINK_DATABASE_URL": url,
        "PAYLINK_TOPIC_PREFIX": prefix,
        "PAYLINK_GRPC_PORT": str(ports["api"]),
        "PAYLINK_RATE_LINK_TOKENS_PER_MINUTE": "0",
        "PAYLINK_RATE_LOGINS_PER_MINUTE": "0",
        "PAYLINK_RATE_CREATE_JOBS_PER_MINUTE": "0",
        "PAYLINK_SANDBOX_LATENCY_SECONDS": "0",
        "PAYLINK_LOG_LEVEL": "WARNING",
        "PAYLINK_WORKER_CONCURRENCY": "64",
        # The sandbox platform has no real capacity to protect; the default (16) would cap the pipeline.
        "PAYLINK_PLATFORM_CONCURRENCY": "64",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
    }
    args_record = {k: v for k, v in vars(args).items() if k != "throwaway_url"}
    results: dict[str, Any] = {
        "machine": machine(),
        "args": args_record,
        "postgres": {"durable": await durability(base.database_url)},
    }
    results["postgres"]["disk_fdatasync_per_s"] = disk_fdatasync_per_s()
    if args.throwaway_url:
        results["postgres"]["throw-away"] = await durability(args.throwaway_url)
    print(f"PostgreSQL settings: {results['postgres']}", flush=True)
    server = await start_process([sys.executable, "-m", "service", "serve"], env, "paylink serving")
    args.server_pid = server.pid
    args.database_url = url  # this run's database (bench/stages.py's trigger goes there)
    extra = [
        await start_process([sys.executable, "-m", "service", "worker"], env, "paylink serving")
        for _ in range(args.extra_workers)
    ]
    echo = await start_process(
        [sys.executable, str(ROOT / "bench/echo_server.py"), str(ports["echo"])], env, "echo serving"
    )
    floor = None
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        workspace, secret = await auth.create_workspace(pool, "bench")
        await pool.close()
        floor = await start_process(
            [
                sys.executable,
                str(ROOT / "bench/floor_server.py"),
                str(ports["floor"]),
                url,
                str(workspace.id),
            ],
            env,
            "floor serving",
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['api']}") as channel:
            client = Client(channel, secret)
            account = await setup_account(client)
            templates = await relay_bench.collect_templates(client, url) if want("relay") else []
            peak = 0.0
            if args.only and "privacy" in args.only:
                from bench.privacy import bench_privacy

                results["privacy"] = await bench_privacy(args, ports, client)
            if want("rpcs"):
                pids = {"api": server.pid, "floor": floor.pid, "echo": echo.pid}
                cluster = postmaster_pid(urllib.parse.urlsplit(base.database_url).port or 5432)
                results["rpcs"], peak = await bench_rpcs(args, ports, secret, account, pids, cluster)
                if args.rpc_fixed_rate:
                    results["rpcs_fixed_rate"] = await bench_rpcs_fixed_rate(
                        args, ports, secret, account, results["rpcs"]
                    )
            if want("pipeline"):
                # One refresh per account and job type in flight (CreateJob answers the one in flight):
                # the saturated run's jobs need their own (account, job type) pairs, 3 job types.
                n = latency.accounts_for(args.jobs, args.accounts) - 1
                accounts = [account, *await latency.link_accounts(client, n, prefix="bench")]
                # The fresh database's tables have no statistics yet, and plans cached while the setup
                # filled them would read them whole: a production database has statistics (ANALYZE
                # also invalidates serve's cached plans). bench/NOTES.md, inflight (session 24).
                analyze = await asyncpg.connect(url)
                try:
                    await analyze.execute("ANALYZE")
                finally:
                    await analyze.close()
                settings = base.model_copy(update={"topic_prefix": prefix})
                for key, n in pipeline_deployments(args.api_processes, args.fleet):
                    if key == FLEET:  # no serve beside the fleet (its worker and relay would take part)
                        await asyncio.to_thread(stop, server)
                    try:
                        results[key] = await pipeline_deployment(
                            args, key, n, env, secret, client, settings, accounts, server.pid, extra
                        )
                    finally:
                        if key == FLEET:  # serve again, for the parts after the pipeline
                            server = await start_process(
                                [sys.executable, "-m", "service", "serve"], env, "paylink serving"
                            )
                            args.server_pid = server.pid
            if want("footprint"):
                results["footprint"] = {
                    "rss_peak_under_rpc_load_mb": peak,
                    "soak": await soak(args, ports["api"], secret, account, server.pid),
                }
                print(f"footprint: {results['footprint']['soak']['growth_mb']:.1f} MB growth", flush=True)
    finally:
        stop(server)
        for proc in extra:
            stop(proc)
        stop(echo)
        if floor is not None:
            stop(floor)
        await drop_database(base.database_url, url)
    if want("peers"):
        results["peers"] = await bench_peers(args, base.database_url, env)
    if want("latency"):
        results["latency"] = await latency.run(
            base.database_url,
            env,
            ports["latency"],
            jobs=args.latency_jobs,
            accounts=args.latency_accounts,
            latency=args.latency,
            jitter=args.latency_jitter,
            concurrency=args.latency_concurrency,
        )
    if want("logins"):
        load_at_start = load_average()
        results["logins"] = await logins.run(base.database_url, env, ports["logins"])
        # Its own results file, which BENCHMARKS.md's slow-logins section is rendered from (a full run
        # renders it with the rest; `--only logins` re-renders that section alone).
        command = "make bench BENCH_ARGS='--only logins'" if args.only else "make bench"
        logins.record(results["logins"], load_at_start, command)
        if args.only:
            subprocess.run([sys.executable, str(ROOT / "bench/report.py"), "--only", "logins"], check=True)
    if want("relay"):
        results["relay"] = await relay_bench.run(
            args.relay_rows, templates, base.database_url, base.kafka_bootstrap, env
        )
        print(f"relay: {results['relay']}", flush=True)
    results["machine"]["load_average_at_end"] = load_average()
    results["machine"]["seconds"] = round(time.monotonic() - started)
    if args.only:
        print(
            json.dumps({k: v for k, v in results.items() if k not in ("machine", "args")}, indent=2)[:20000]
        )
        return 0
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=2) + "\n")
    subprocess.run([sys.executable, str(ROOT / "bench/report.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
