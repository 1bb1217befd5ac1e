"""Where an RPC's time goes, against its floor: CPU per call of the serve process and of the floor
server (bench/floor_server.py) under the same ghz load, and optionally a py-spy profile of each.

CPU per call (utime + stime of the server process over the run, divided by the calls it answered)
depends far less on what else the machine runs than the rate does, so it is the figure to compare
on a shared box. Run through bench/bench.sh's durable cluster:

    PAYLINK_DATABASE_URL=... python bench/profile_rpcs.py [--rpc GetAccount] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import grpc

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent)]
from bench.common import ROOT, cpu_seconds, ghz_with_cpu, load_average, start_process, stop, tool
from bench.run import FLOORS, RPCS, setup_account
from service import auth
from service.config import Settings
from tests.harness import Client, create_test_database, drop_database


def postmaster() -> int:
    """The durable cluster's postmaster (bench/bench.sh's, kept with PAYLINK_BENCH_KEEP=1)."""
    pidfile = ROOT / ".stack/bench/pg/postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else 0


def py_spy_command(pid: int, out: str, seconds: float, native: bool) -> list[str]:
    """py-spy's command line for a raw profile of `pid`. `--nonblocking` (sampling without pausing
    the process) only without `--native`: py-spy refuses the two together ("Can't get native stack
    traces with the --nonblocking option") and wrote no profile at all."""
    return [
        *(["sudo", "-n"] if native and os.geteuid() else []),
        str(ROOT / ".venv/bin/py-spy"),
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(seconds)),
        "-r",
        "250",
        "-f",
        "raw",
        "-o",
        out,
        *(["--native"] if native else ["--nonblocking"]),
    ]


def profiled(pid: int, out: str | None, seconds: float, native: bool) -> subprocess.Popen[bytes] | None:
    """py-spy recording `pid` into `out` (its messages in `out`.log, so a failure is not silent)."""
    if not out:
        return None
    with open(f"{out}.log", "wb") as messages:
        return subprocess.Popen(
            py_spy_command(pid, out, seconds, native), stdout=messages, stderr=subprocess.STDOUT
        )


def measure(
    name: str,
    pid: int,
    port: int,
    call: str,
    data: dict[str, Any],
    md: dict[str, str],
    args: argparse.Namespace,
    out: str | None,
) -> dict[str, float]:
    profiler = profiled(pid, out, args.seconds, args.native)
    result = ghz_with_cpu(
        pid, postmaster(), tool("ghz"), port, call, data, md, args.concurrency, args.seconds, args.rps
    )
    if profiler is not None and profiler.wait() != 0:
        print(f"py-spy wrote no profile of {name}: see {out}.log", flush=True)
    print(
        f"{name:24} {result['rps']:7.0f} rps  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms"
        f"  {result['cpu_us_per_call']:6.0f} us CPU/call (PostgreSQL {result['pg_us_per_call']:4.0f})  errors {result['errors']:.0f}  load {load_average()}",
        flush=True,
    )
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpc", action="append", choices=tuple(RPCS), help="default: all")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=50251, help="paylink's port; the floor's is the next")
    parser.add_argument("--profile", default="", help="a directory for py-spy raw profiles")
    parser.add_argument("--process", default="serve", choices=("serve", "api"), help="the paylink process")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    parser.add_argument(
        "--rps",
        type=int,
        default=0,
        help="calls a second for every measurement (ghz --rps), the same for the RPC and its floor: their"
        " latency at a load the box carries, not at saturation; 0 (default): as fast as each answers",
    )
    parser.add_argument(
        "--echo",
        action="store_true",
        help="also measure bench/echo_server.py (grpc.aio's health Check, nothing else) each round",
    )
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        help="a directory holding another service/ and migrations/ (e.g. `git archive main service"
        " migrations`) to measure beside this checkout's, back to back; repeatable",
    )
    args = parser.parse_args()
    base = Settings()
    for code in [str(ROOT), *args.code]:
        print(f"=== {code}", flush=True)
        await measure_code(args, base, code)
    return 0


async def measure_code(args: argparse.Namespace, base: Settings, code: str) -> None:
    url = await create_test_database(base.database_url)
    env = {
        **os.environ,
        "PAYLINK_DATABASE_URL": url,
        "PAYLINK_TOPIC_PREFIX": f"prof{uuid.uuid4().hex[:6]}.",
        "PAYLINK_GRPC_PORT": str(args.port),
        "PAYLINK_RATE_LINK_TOKENS_PER_MINUTE": "0",
        "PAYLINK_RATE_LOGINS_PER_MINUTE": "0",
        "PAYLINK_RATE_CREATE_JOBS_PER_MINUTE": "0",
        "PAYLINK_SANDBOX_LATENCY_SECONDS": "0",
        "PAYLINK_LOG_LEVEL": "WARNING",
        "PYTHONPATH": f"{code}:{ROOT / 'generated'}",
    }
    server = await start_process(
        [sys.executable, "-m", "service", args.process], env, "paylink serving", cwd=code
    )
    floor = None
    worker = None
    echo = None
    account = ""
    if args.process == "api":  # the Link session of the account read needs its jobs run
        worker = await start_process(
            [sys.executable, "-m", "service", "worker"], env, "paylink serving", cwd=code
        )
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        workspace, secret = await auth.create_workspace(pool, "profile")
        await pool.close()
        floor = await start_process(
            [sys.executable, str(ROOT / "bench/floor_server.py"), str(args.port + 1), url, str(workspace.id)],
            env,
            "floor serving",
        )
        if args.echo:
            echo = await start_process(
                [sys.executable, str(ROOT / "bench/echo_server.py"), str(args.port + 2)], env, "echo serving"
            )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{args.port}") as channel:
            account = await setup_account(Client(channel, secret))
        md = {"x-api-secret": secret, "api-version": "2021-07-28"}

        def body(data: dict[str, Any]) -> dict[str, Any]:
            return {k: (account if v == "{account}" else v) for k, v in data.items()}

        if args.profile:
            pathlib.Path(args.profile).mkdir(parents=True, exist_ok=True)
        # What the process spends with no call to serve (its worker, relay, scheduler, health checks).
        before = cpu_seconds(server.pid)
        await asyncio.sleep(5)
        idle = (cpu_seconds(server.pid) - before) / 5
        print(f"serve idle: {idle:.1%} of a core  load {load_average()}", flush=True)
        for _ in range(args.rounds):
            if echo is not None:
                await asyncio.to_thread(
                    measure,
                    "echo",
                    echo.pid,
                    args.port + 2,
                    "grpc.health.v1.Health.Check",
                    {},
                    {},
                    args,
                    None,
                )
            for name in args.rpc or tuple(RPCS):
                call, data, floor_name = RPCS[name]
                fcall, fdata = FLOORS[floor_name]
                slug = floor_name.replace(" ", "-")
                fout = f"{args.profile}/{slug}.txt" if args.profile else None
                out = f"{args.profile}/{name}.txt" if args.profile else None
                f = await asyncio.to_thread(
                    measure, floor_name, floor.pid, args.port + 1, fcall, body(fdata), md, args, fout
                )
                p = await asyncio.to_thread(
                    measure, name, server.pid, args.port, call, body(data), md, args, out
                )
                print(
                    f"  {name}: {p['rps'] / f['rps']:.0%} of the {floor_name} (rate),"
                    f" CPU/call {p['cpu_us_per_call'] / f['cpu_us_per_call']:.2f}x the floor's,"
                    f" p99 {p['p99_ms'] / f['p99_ms']:.2f}x the floor's",
                    flush=True,
                )
    finally:
        stop(server)
        for proc in (floor, worker, echo):
            if proc is not None:
                stop(proc)
        if os.environ.get("PROFILE_KEEP_DATABASE"):
            print(f"kept {url} (account {account})", flush=True)
        else:
            await drop_database(base.database_url, url)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
