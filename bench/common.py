"""Helpers shared by the benchmark parts: processes, /proc readings, percentiles, ghz."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated")]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with at least p % of the values at or below it
    (for 2,833 values, p99 is the 2,805th: ceil(0.99 * 2833))."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def tool(name: str) -> str:
    return subprocess.run(
        [str(ROOT / "scripts/tools.sh"), name], check=True, capture_output=True, text=True
    ).stdout.strip()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds(proc_stat: str) -> float:
    """CPU seconds the whole machine spent busy (every core, every process and the kernel: all but
    idle and iowait), from /proc/stat's text (its `cpu` line, in clock ticks)."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
            return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    raise ValueError("no cpu line in /proc/stat")


def machine_busy_seconds() -> float:
    return busy_seconds(pathlib.Path("/proc/stat").read_text())


def cluster_cpu_seconds(postmaster: int | None) -> float:
    """CPU seconds used so far by one PostgreSQL cluster's backends and helpers (the children of
    its postmaster; 0.0 without one)."""
    if not postmaster:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_seconds_by_component(
    labels: dict[int, str] | None = None, pg_port: int | None = None
) -> dict[str, float]:
    """CPU seconds used so far by each part of the system, from /proc (utime + stime).

    `labels` names processes by pid (the benchmark's own servers); the rest is found by command line.
    With `pg_port`, PostgreSQL is only the cluster listening there (its postmaster, found by its
    `postmaster.pid`, and that postmaster's children) and Kafka only this checkout's broker: the
    other clusters and brokers on a shared box (other checkouts' stacks) are not the benchmark's.
    """
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    postmaster = postmaster_pid(pg_port) if pg_port else None
    own_kafka = str(ROOT / ".stack")
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
        pid, ppid = int(entry.name), int(fields[1])
        if labels and pid in labels:
            part = labels[pid]
        elif pid == me:
            part = "benchmark driver (gRPC client, Kafka consumer)"
        elif postmaster is not None:
            if pid == postmaster or ppid == postmaster:
                part = "PostgreSQL (the benchmark's cluster)"
            elif "kafka.Kafka" in cmd and own_kafka in cmd:
                part = "Kafka broker (this stack's)"
            else:
                continue
        elif cmd.startswith("postgres") or "/postgres" in cmd.split(" ")[0]:
            part = "PostgreSQL (all clusters)"
        elif "kafka.Kafka" in cmd:
            part = "Kafka broker"
        else:
            continue
        out[part] += seconds
    return dict(out)


def postmaster_pid(port: int) -> int | None:
    """The pid of the postmaster listening on `port` (its data directory's postmaster.pid names the
    port on its fourth line), or None when none is found."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args[0].endswith(b"/postgres") or b"-D" not in args:
            continue
        data = pathlib.Path(args[args.index(b"-D") + 1].decode())
        with contextlib.suppress(OSError, IndexError, ValueError):
            lines = (data / "postmaster.pid").read_text().splitlines()
            if int(lines[3]) == port:
                return int(entry.name)
    return None


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def start_process(
    args: list[str], env: dict[str, str], ready: str, cwd: str | pathlib.Path = ROOT
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if ready in line:
            return proc
        if proc.poll() is not None:
            break
    raise RuntimeError(f"{args} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PROTOSET: list[str] = []


def protoset() -> str:
    """A descriptor set of every service ghz calls (its reflection client cannot resolve methods
    through grpcio-reflection, so it is given the descriptors directly)."""
    if PROTOSET:
        return PROTOSET[0]
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2
    from paylink.v1 import account_pb2, job_pb2, link_token_pb2

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
    PROTOSET.append(str(path))
    return str(path)


# How ghz's client reports the calls still in flight when its `-z` duration ends: it closes its
# connections under them, and each fails on the client side (Unavailable "error reading from server:
# ... use of closed network connection", or Canceled "the client connection is closing"), about one
# per concurrent call and measurement. They are not answers of the server.
CUT_OFF = ("use of closed network connection", "the client connection is closing", "context canceled")


def split_errors(report: dict[str, Any]) -> tuple[int, int]:
    """(errors, cut) of a ghz JSON report: the calls that failed, apart from those cut off by the end
    of the run (`CUT_OFF`, by their error message), and those."""
    codes = report.get("statusCodeDistribution") or {}
    failed = sum(v for k, v in codes.items() if k != "OK")
    cut = sum(
        n
        for message, n in (report.get("errorDistribution") or {}).items()
        if any(s in message for s in CUT_OFF)
    )
    cut = min(cut, failed)
    return failed - cut, cut


def ghz_command(
    ghz_bin: str,
    port: int,
    call: str,
    data: dict[str, Any],
    metadata: dict[str, str],
    concurrency: int,
    seconds: float,
    rps: int = 0,
) -> list[str]:
    """ghz's command line: `concurrency` workers on min(4, concurrency) connections for `seconds`.
    `rps`: calls a second over all the workers (0: each worker sends its next call as soon as its last
    is answered, a closed loop that saturates the server)."""
    return [
        ghz_bin,
        "--insecure",
        "--protoset",
        protoset(),
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
        *(["--rps", str(rps)] if rps else []),
        "-z",
        f"{seconds}s",
        "--format",
        "json",
        f"127.0.0.1:{port}",
    ]


def ghz(
    ghz_bin: str,
    port: int,
    call: str,
    data: dict[str, Any],
    metadata: dict[str, str],
    concurrency: int,
    seconds: float,
    rps: int = 0,
) -> dict[str, float]:
    """ghz's JSON report, summed up (`ghz_command`)."""
    out = subprocess.run(
        ghz_command(ghz_bin, port, call, data, metadata, concurrency, seconds, rps),
        capture_output=True,
        text=True,
        check=False,
    )
    if not out.stdout.strip().startswith("{"):
        raise RuntimeError(f"ghz failed for {call}: {out.stdout[:300]} {out.stderr[:300]}")
    report = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    codes = report.get("statusCodeDistribution") or {}
    errors, cut = split_errors(report)
    return {
        "rps": report["rps"],
        "p50_ms": lat.get(50, 0.0),
        "p99_ms": lat.get(99, 0.0),
        "ok": codes.get("OK", 0),
        "errors": errors,  # answered with a status other than OK
        "cut": cut,  # in flight when the run's duration ended (not the server's answers)
    }


def ghz_with_cpu(
    pid: int,
    postmaster: int | None,
    ghz_bin: str,
    port: int,
    call: str,
    data: dict[str, Any],
    metadata: dict[str, str],
    concurrency: int,
    seconds: float,
    rps: int = 0,
) -> dict[str, float]:
    """`ghz` (`rps`: calls a second; 0: saturating), plus the CPU per call of the server process `pid`
    (utime + stime over the run divided by the calls ghz made, cut off at the end included: `cpu_us_per_call`) and of the PostgreSQL cluster (`pg_us_per_call`);
    `cpu_s` and `pg_cpu_s` are the seconds themselves.

    CPU per call moves far less with what else the machine runs than the rate does (bench/NOTES.md,
    rpc sessions 21-23): it is the measure to compare a server with its floor on a shared box."""
    before, pg_before = cpu_seconds(pid), cluster_cpu_seconds(postmaster)
    result = ghz(ghz_bin, port, call, data, metadata, concurrency, seconds, rps)
    used, pg_used = cpu_seconds(pid) - before, cluster_cpu_seconds(postmaster) - pg_before
    calls = result["ok"] + result["errors"] + result["cut"]
    result["cpu_s"], result["pg_cpu_s"] = used, pg_used
    result["cpu_us_per_call"] = used / calls * 1e6 if calls else 0.0
    result["pg_us_per_call"] = pg_used / calls * 1e6 if calls else 0.0
    return result


class StatementStats:
    """pg_stat_statements over a window of a benchmark (the cluster must preload it): reset at the
    start, then calls, rows, execution time and WAL per statement, divided by the units of work done.
    Every database of the cluster counts (the benchmark's cluster runs nothing else)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    async def start(cls, url: str) -> StatementStats:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            # bench/bench.sh starts its cluster with PAYLINK_PG_STATEMENTS=1 for `--statements`:
            # preloaded, the extension created and the role allowed to reset and read it
            # (scripts/stack.sh pg_statements_grants).
            await conn.execute("SELECT pg_stat_statements_reset()")
        finally:
            await conn.close()
        return cls(url)

    async def per_job(self, jobs: int, top: int = 30) -> list[dict[str, Any]]:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                """SELECT query, calls, plans, total_plan_time, rows, total_exec_time, wal_records, wal_bytes
                   FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
                   ORDER BY total_exec_time DESC LIMIT $1""",
                top,
            )
        finally:
            await conn.close()
        return [
            {
                "calls_per_job": round(r["calls"] / jobs, 4),
                "rows_per_job": round(r["rows"] / jobs, 3),
                "exec_us_per_job": round(r["total_exec_time"] * 1000 / jobs, 1),
                # Plans made (pg_stat_statements.track_planning = on; else 0) and their time.
                "plans_per_job": round(r["plans"] / jobs, 4),
                "plan_us_per_job": round(r["total_plan_time"] * 1000 / jobs, 1),
                "wal_records_per_job": round(r["wal_records"] / jobs, 2),
                "wal_bytes_per_job": round(int(r["wal_bytes"]) / jobs),
                "query": " ".join(r["query"].split())[:160],
            }
            for r in rows
        ]
