"""The audited read alone (one statement, its own durable commit: main before issue 14's group commit)
against the same statement group-committed (service/audit_commit.py), back to back in one process,
alternating, at each concurrency: reads/s, p50/p99 latency and durable commits (WAL flushes) per read.

The statement is a GetIdentity-shaped read that records itself (`audit.attach`: a SELECT, the
INSERT into audit_records and into audit_unexported), on a fresh database of the cluster at
PAYLINK_DATABASE_URL — run it on the durable bench cluster:

    PAYLINK_BENCH_KEEP=1 bench/bench.sh --only relay   # (any part) starts the durable cluster and keeps it
    PAYLINK_DATABASE_URL=postgresql://paylink:paylink@127.0.0.1:$PAYLINK_BENCH_PG_PORT/paylink \\
        .venv/bin/python bench/audit_commit_bench.py --seconds 4 --concurrency 16,64 --rounds 2

`--baseline REV` adds `REV/<k>`: service/audit_commit.py as it was at commit REV (its module loaded
from git), in the same rounds, alternating: a change to the group commit measured against its
baseline in one process, back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from service import audit, audit_commit, db
from tests.harness import create_test_database, drop_database

_READ = audit.attach(
    "SELECT $1::uuid AS account_id, 'eu-bench'::text AS end_user_id, $2::int AS n",
    2,
    subject="SELECT account_id, end_user_id FROM target",
)


def _args(workspace: uuid.UUID, n: int) -> tuple[object, ...]:
    who = audit.Who(workspace, "bench", "0123456789abcdef", "GetIdentity", f"req-{n}")
    return (uuid.uuid4(), n, *audit.Record(who, audit.READ, 1).args(from_subject=True))


def _module_at(rev: str) -> types.ModuleType:
    """service/audit_commit.py as it was at commit `rev` (it imports today's service package)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:service/audit_commit.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"audit_commit_at_{rev}")
    module.__file__ = f"{rev}:service/audit_commit.py"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # our own history
    return module


async def _flushes(pool: db.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT wal_sync FROM pg_stat_wal) AS syncs,"
        " (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits"
    )
    assert row is not None
    return int(row["syncs"]), int(row["commits"])


async def _load(
    read: Callable[[int], Awaitable[object]], concurrency: int, seconds: float
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def client() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            await read(next(counter))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies), latencies


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=8, help="PAYLINK_DATABASE_POOL_SIZE's default")
    parser.add_argument("--in-flight", default=str(audit_commit.IN_FLIGHT), help="batches at once, e.g. 2,4")
    parser.add_argument("--baseline", help="also the group commit as it was at this commit (e.g. main)")
    args = parser.parse_args()
    admin = os.environ["PAYLINK_DATABASE_URL"]
    url = await create_test_database(admin)
    pool: db.Pool = await asyncpg.create_pool(url, min_size=args.pool_size, max_size=args.pool_size)
    try:
        workspace = uuid.uuid4()

        async def alone(n: int) -> object:
            return await pool.fetchrow(_READ, *_args(workspace, n))

        def grouped(
            commit: audit_commit.GroupCommit,
        ) -> Callable[[int], Awaitable[object]]:  # or its baseline's
            async def read(n: int) -> object:
                return await commit.fetchrow(_READ, *_args(workspace, n))

            return read

        variants: list[tuple[str, Callable[[int], Awaitable[object]]]] = [("alone", alone)]
        for k in (int(x) for x in args.in_flight.split(",")):
            variants.append((f"grouped/{k}", grouped(audit_commit.GroupCommit(pool, in_flight=k))))
            if args.baseline:
                before = _module_at(args.baseline)
                variants.append((f"{args.baseline}/{k}", grouped(before.GroupCommit(pool, in_flight=k))))
        for conc in (int(c) for c in args.concurrency.split(",")):
            for round_ in range(args.rounds):
                for name, read in variants:
                    load = os.getloadavg()[0]
                    syncs, commits = await _flushes(pool)
                    started, cpu = time.monotonic(), time.process_time()
                    count, latencies = await _load(read, conc, args.seconds)
                    elapsed = time.monotonic() - started
                    cpu_per_read = (time.process_time() - cpu) / count  # this process: the client side
                    syncs2, commits2 = await _flushes(pool)
                    q = statistics.quantiles(latencies, n=100, method="inclusive")
                    print(
                        f"c={conc:<3} round {round_ + 1} {name:12} {count / elapsed:7.0f} reads/s"
                        f"  p50 {q[49] * 1000:6.2f} ms  p99 {q[98] * 1000:6.2f} ms"
                        f"  WAL flushes/read {(syncs2 - syncs) / count:.2f}"
                        f"  commits/read {(commits2 - commits) / count:.2f}"
                        f"  CPU/read {cpu_per_read * 1e6:5.0f} us  load {load:.1f}",
                        flush=True,
                    )
        recorded = await pool.fetchval(
            "SELECT count(*) FROM audit_records WHERE workspace_id = $1", workspace
        )
        print(f"audit records written: {recorded}")
    finally:
        await pool.close()
        await drop_database(admin, url)


if __name__ == "__main__":
    asyncio.run(main())
