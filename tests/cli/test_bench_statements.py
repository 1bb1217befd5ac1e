"""`make bench --statements` on a fresh machine: scripts/stack.sh with PAYLINK_PG_STATEMENTS=1 (what
bench/bench.sh sets for `--statements`) starts a cluster where the benchmark's role can reset and read
pg_stat_statements, planning included. Before it, `--statements` failed on any cluster the stack
started (pg_stat_statements was never preloaded nor created)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import asyncpg

from bench.common import StatementStats
from tests.faults.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / ".stack" / "test-bench-statements"


def _stack(command: str, port: int) -> str:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PAYLINK_DATABASE_URL", "PAYLINK_KAFKA_BOOTSTRAP")
    }
    env.update(
        PAYLINK_STACK_DIR=str(STACK),
        PAYLINK_PG_PORT=str(port),
        PAYLINK_PG_DURABLE="1",
        PAYLINK_PG_STATEMENTS="1",
        PAYLINK_STACK_SERVICES="postgres",
    )
    done = subprocess.run(
        [str(ROOT / "scripts" / "stack.sh"), command],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


async def test_the_bench_cluster_counts_statements_and_plans_per_job() -> None:
    port = free_port()
    shutil.rmtree(STACK, ignore_errors=True)
    try:
        _stack("up", port)
        url = next(
            line.split("=", 1)[1].strip("'\"")
            for line in _stack("env", port).splitlines()
            if line.startswith("export PAYLINK_DATABASE_URL=")
        )
        stats = await StatementStats.start(url)  # the reset: refused before (no such function)
        conn = await asyncpg.connect(url)
        try:
            for n in range(4):
                assert await conn.fetchval("SELECT 40 + $1::int", n) == 40 + n
        finally:
            await conn.close()
        rows = await stats.per_job(2)
        counted = [row for row in rows if row["query"] == "SELECT $2 + $1::int"]
        assert len(counted) == 1, rows
        assert counted[0]["calls_per_job"] == 2.0  # 4 calls over 2 units of work
        assert counted[0]["plans_per_job"] > 0  # track_planning is on
    finally:
        _stack("down", port)
        shutil.rmtree(STACK, ignore_errors=True)
