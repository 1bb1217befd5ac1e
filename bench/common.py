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


def cpu_seconds_by_component(labels: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds used so far by each part of the system, from /proc (utime + stime).

    `labels` names processes by pid (the benchmark's own servers); the rest is found by command line.
    """
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
        pid = int(entry.name)
        if labels and pid in labels:
            part = labels[pid]
        elif pid == me:
            part = "benchmark driver (gRPC client, Kafka consumer)"
        elif cmd.startswith("postgres") or "/postgres" in cmd.split(" ")[0]:
            part = "PostgreSQL (all clusters)"
        elif "kafka.Kafka" in cmd:
            part = "Kafka broker"
        else:
            continue
        out[part] += seconds
    return dict(out)


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


def ghz(
    ghz_bin: str,
    port: int,
    call: str,
    data: dict[str, Any],
    metadata: dict[str, str],
    concurrency: int,
    seconds: float,
) -> dict[str, float]:
    out = subprocess.run(
        [
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
