"""WAL records per job of the claim and of the completion (`queue.claim`, `queue.complete` with
SUCCESS), by relation and record kind: refreshes queued as bench/create_job_wal.py queues them, then
all claimed 16 at a time, then completed 8 to a transaction, each step read back with pg_walinspect.
Counts, not timings (one connection, autovacuum off on the tables), like bench/create_job_wal.py.

    make up && .venv/bin/python -m bench.complete_wal [--jobs 2400]

Prints the two tables (no results file: bench/NOTES.md, queue session 29, quotes them with the code's
commit; older code runs as bench/create_job_wal.py describes).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import sys

import asyncpg

from bench.create_job_wal import _BLOCK, flush_wal, refreshes, relation_names, wal_database
from service import queue
from tests.harness import insert_accounts


async def _records(
    admin: asyncpg.Connection, relations: dict[str, str], start: int
) -> collections.Counter[str]:
    end = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
    await flush_wal(admin)
    counts: collections.Counter[str] = collections.Counter()
    for r in await admin.fetch(
        "SELECT resource_manager, record_type, block_ref FROM pg_get_wal_records_info($1, $2)", start, end
    ):
        refs = _BLOCK.findall(r["block_ref"] or "")
        relation = relations.get(refs[0][2], refs[0][2]) if refs else "-"
        counts[f"{relation:24s} {r['resource_manager']}/{r['record_type']}"] += 1
    return counts


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2400)
    args = parser.parse_args()
    async with wal_database() as (admin, conn):
        workspace, account_ids = await insert_accounts(conn, args.jobs, name="wal")
        todo = refreshes(workspace, account_ids, [2])
        for i in range(0, len(todo), 8):
            await queue.enqueue_refreshes(conn, todo[i : i + 8])
        relations = await relation_names(conn)
        start = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
        claimed: list[queue.ClaimedJob] = []
        while len(claimed) < len(todo):
            claimed += await queue.claim(conn, "bench", dt.timedelta(minutes=5), 16, [])
        steps = {"claim": await _records(admin, relations, start)}
        start = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
        at = dt.datetime.now(dt.UTC)
        for i in range(0, len(claimed), 8):
            async with conn.transaction():
                await queue.complete(
                    conn,
                    [
                        queue.Completion(j.id, queue.JobStatus.SUCCESS, at, outcome=1)
                        for j in claimed[i : i + 8]
                    ],
                )
        steps["complete"] = await _records(admin, relations, start)
    for step, counts in steps.items():
        print(f"{step}: {sum(counts.values()) / len(todo):.3f} WAL records a job ({len(todo)} jobs)")
        for kind, n in counts.most_common():
            if n / len(todo) >= 0.01:
                print(f"  {kind:50s} {n / len(todo):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
