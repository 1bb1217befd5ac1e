"""What a batch of outcomes' sequence bump costs PostgreSQL: on the account row (main before 0178) or
on the outbox's narrow row (`account_event_sequences`, migration 0178), alternated in one run.

On a fresh database (the local stack's cluster by default) with `accounts` accounts (tags as the
pipeline benchmark's), ANALYZEd, each round runs `batches` transactions on one connection of this
release, on cached generic plans, each what the completer's transaction does for its accounts'
sequences (service/job_outcomes.py, `GENERIC_PLANS`): lock `size` random
accounts with their sequences (service/queue.py's lock of accounts, in its form before 0178 or
after), then write each account's sequence two higher in one statement (service/outbox.py's bump,
`UPDATE ... FROM unnest(...)`, on `accounts.event_sequence` or on `account_event_sequences`),
COMMIT. The events' INSERT, the same in both, is left out. Rounds alternate the variants; per batch:
the backend's CPU time (utime + stime from /proc: the server must run on this host), the WAL bytes
written (`pg_current_wal_lsn`), and the share of the bumped rows updated HOT
(`pg_stat_get_xact_tuples_hot_updated`, read in each transaction). Medians per variant.

    .venv/bin/python bench/event_sequence_bump.py [--accounts 2000] [--batches 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import random
import statistics
import sys
import time

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent)]

from service import db, queue
from service.job_outcomes import GENERIC_PLANS
from tests.harness import insert_accounts, new_database

_TICK = os.sysconf("SC_CLK_TCK")
TAGS = json.dumps({"team": "payroll-bench", "region": "us-east-1", "customer": "bench-customer-0001"})

VARIANTS = {
    "accounts": (
        """SELECT id, end_user_id, monitoring_status, connected, event_sequence, tags, refresh_failures
FROM accounts WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE""",
        """UPDATE accounts SET event_sequence = s.q FROM unnest($1::uuid[], $2::bigint[]) AS s(a, q)
WHERE accounts.id = s.a""",
        "accounts",
    ),
    "account_event_sequences": (
        queue._LOCK_ACCOUNTS,
        """UPDATE account_event_sequences SET sequence = ($2::bigint[])[array_position($1::uuid[], account_id)]
WHERE account_id = ANY($1::uuid[])""",
        "account_event_sequences",
    ),
}


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _round(
    conn: db.Conn, pid: int, variant: str, accounts: list[object], args: argparse.Namespace
) -> dict[str, float]:
    lock, bump, table = VARIANTS[variant]
    rng = random.Random(7)
    hot = updated = 0
    wal_before = await conn.fetchval("SELECT pg_current_wal_lsn()")
    cpu_before, started = _cpu_seconds(pid), time.perf_counter()
    for _ in range(args.batches):
        picked = rng.sample(accounts, args.size)
        async with conn.transaction():
            rows = await conn.fetch(lock, picked)
            await conn.execute(bump, [r["id"] for r in rows], [r["event_sequence"] + 2 for r in rows])
            stats = await conn.fetchrow(
                "SELECT pg_stat_get_xact_tuples_updated($1::text::regclass), pg_stat_get_xact_tuples_hot_updated($1::text::regclass)",
                table,
            )
            assert stats is not None
            updated, hot = stats[0], stats[1]  # cumulative in the backend until reported: the last wins
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu_before
    wal = await conn.fetchval("SELECT pg_current_wal_lsn()") - wal_before  # asyncpg reads pg_lsn as int
    return {
        "cpu_us_per_batch": cpu / args.batches * 1e6,
        "wall_us_per_batch": wall / args.batches * 1e6,
        "wal_bytes_per_batch": float(wal) / args.batches,
        "hot_share_last": hot / updated if updated else 0.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--size", type=int, default=8, help="accounts per batch")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    async with new_database() as url:
        conn = await db.connect(url)
        try:
            _, accounts = await insert_accounts(conn, args.accounts, tags=TAGS)
            await conn.execute("ANALYZE")
            await conn.execute(GENERIC_PLANS.replace("SET LOCAL", "SET"))  # as the completer's transaction
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
            for n in range(args.rounds):
                order = list(VARIANTS) if n % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    figures = await _round(conn, pid, variant, list(accounts), args)
                    results[variant].append(figures)
                    load = os.getloadavg()[0]
                    shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
                    print(f"round {n} {variant} (load {load:.1f}): {shown}", flush=True)
            for variant, rounds in results.items():
                medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
                print(
                    f"median {variant}: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()), flush=True
                )
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
