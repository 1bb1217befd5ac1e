"""CPU per CreateJob account read: one `accounts.fetch` per call (before) against the grouped reads
of `Intake.account` (service/job_intake.py), alternated in one process on the durable bench cluster.

64 callers loop like the pipeline's CreateJobs: read an account, then wait 0-4 ms (`--think-ms`: the
rest of the call), so the grouped reads gather what arrives while one is in flight, not all 64 at once. CPU is
this process's (`time.process_time`) plus the cluster's (its postmaster's children, from /proc),
divided by the reads. Each read's latency (its call to its answer) is recorded too: p50 / p99 / max
per round, so the tail a caller sees waiting for a grouped read in flight is measured beside the CPU
it saves (`--in-flight 2,8`: grouped reads with that many statements in flight, each a variant).

    PAYLINK_BENCH_KEEP=1 bench/bench.sh --only none   # or any run that leaves the cluster up
    PAYLINK_DATABASE_URL=postgresql://paylink:paylink@127.0.0.1:$PAYLINK_BENCH_PG_PORT/paylink \\
        .venv/bin/python bench/create_job_reads.py [--reads 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable

import asyncpg

from bench.common import cpu_seconds_by_component, load_average, postmaster_pid
from service import accounts
from service.config import Settings
from service.job_intake import STATEMENTS, Intake
from tests.harness import create_test_database, drop_database, insert_accounts

CALLERS = 64


async def _round(
    read: Callable[[str], Awaitable[asyncpg.Record]], ids: list[str], reads: int, think: float
) -> list[float]:
    """Runs `reads` reads; returns their latencies (ms), sorted."""
    left = reads
    latencies: list[float] = []

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            row = await read(random.choice(ids))
            latencies.append((time.perf_counter() - start) * 1000)
            assert row["connected"]
            await asyncio.sleep(random.uniform(0, think))

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return sorted(latencies)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--think-ms", type=float, default=4.0, help="each caller waits 0 to this between reads"
    )
    parser.add_argument(
        "--in-flight",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[STATEMENTS],
        help="grouped-read variants: statements in flight for each, e.g. 2,8",
    )
    args = parser.parse_args()
    base = Settings()
    port = urllib.parse.urlsplit(base.database_url).port
    assert port is not None and postmaster_pid(port) is not None, "no cluster found on that port"
    url = await create_test_database(base.database_url)
    pool = await asyncpg.create_pool(url, min_size=8, max_size=8)
    try:
        workspace, account_ids = await insert_accounts(pool, 2000, name="reads")
        ids = [str(a) for a in account_ids]
        intakes = {n: Intake(statements=n) for n in args.in_flight}

        async def one(account_id: str) -> asyncpg.Record:
            return await accounts.fetch(pool, workspace, account_id)

        def grouped(intake: Intake) -> Callable[[str], Awaitable[asyncpg.Record]]:
            async def read(account_id: str) -> asyncpg.Record:
                return await intake.account(pool, workspace, account_id)

            return read

        variants: list[tuple[str, Callable[[str], Awaitable[asyncpg.Record]], Intake | None]] = [
            ("one read per call", one, None)
        ]
        variants += [(f"grouped, {n} in flight", grouped(i), i) for n, i in intakes.items()]
        print(f"load average at start: {load_average()}", flush=True)
        for _ in range(args.rounds):
            for label, read, intake in variants:
                before_reads = intake.reads if intake else 0
                pg = "PostgreSQL (the benchmark's cluster)"
                cpu0, pg0, wall0 = (
                    time.process_time(),
                    cpu_seconds_by_component(None, port)[pg],
                    time.monotonic(),
                )
                lat = await _round(read, ids, args.reads, args.think_ms / 1000)
                cpu1, pg1, wall1 = (
                    time.process_time(),
                    cpu_seconds_by_component(None, port)[pg],
                    time.monotonic(),
                )
                statements = intake.reads - before_reads if intake else args.reads
                p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                print(
                    f"{label:22s} {args.reads / (wall1 - wall0):7.0f} reads/s"
                    f"  client {1e6 * (cpu1 - cpu0) / args.reads:6.1f} µs/read"
                    f"  PostgreSQL {1e6 * (pg1 - pg0) / args.reads:6.1f} µs/read"
                    f"  {args.reads / statements:5.2f} reads/statement"
                    f"  latency p50 {p50:5.2f} p99 {p99:6.2f} max {lat[-1]:6.1f} ms"
                    f"  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        await pool.close()
        await drop_database(base.database_url, url)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
