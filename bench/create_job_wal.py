"""WAL records and bytes per CreateJob: its grouped statement (`queue.enqueue_refreshes`, what
`Intake.enqueue` runs) over `--jobs` refreshes in batches of `--batch`, read back with pg_walinspect
and listed by relation and kind of record. Counts, not timings: one connection, nothing else writing
in the test database (autovacuum off on its tables), so the per-row records are exact and only the
index page splits vary a little between runs (random UUIDs).

    make up   # the local stack (its superuser on the unix socket reads the WAL: pg_walinspect)
    .venv/bin/python -m bench.create_job_wal [--jobs 2000] [--batch 8] [--label NAME]

Each run replaces its label's entry in bench/create_job_wal-results.json (the code's commit, the
totals and the table by relation and record kind, per job). bench/compare_checkouts.sh's way of
running older code applies: check out `service/` and `migrations/` of a commit and run with
`--label <commit>`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from bench.common import ROOT
from service import db, ids, queue
from service.config import Settings
from tests.harness import create_test_database, drop_database, insert_accounts

RESULTS = ROOT / "bench" / "create_job_wal-results.json"
TABLES = ("jobs", "job_queue", "accounts", "workspaces", "account_event_sequences")
_BLOCK = re.compile(r"rel (\d+)/(\d+)/(\d+)")


def admin_url(url: str) -> str:
    """The stack's superuser over its private unix socket (scripts/stack.sh `pg_admin_psql`)."""
    port = urllib.parse.urlsplit(url).port
    return f"postgresql://postgres@/postgres?host={ROOT / '.stack' / 'run'}&port={port}"


@contextlib.asynccontextmanager
async def wal_database() -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """(admin, conn): the stack's superuser with pg_walinspect, and a connection as the service opens
    one to a test database of its own at the newest migration, autovacuum off on TABLES (nothing else
    writes there); the database is dropped after."""
    base = Settings().database_url
    url = await create_test_database(base)
    admin = await asyncpg.connect(admin_url(base))
    conn = await db.connect(url)
    try:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        for table in TABLES:
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        yield admin, conn
    finally:
        await conn.close()
        await admin.close()
        await drop_database(base, url)


async def relation_names(conn: asyncpg.Connection) -> dict[str, str]:
    """relfilenode (as a WAL record's block reference names it) -> relation name."""
    return {
        str(r["relfilenode"]): r["relname"]
        for r in await conn.fetch("SELECT relname, relfilenode FROM pg_class WHERE relfilenode <> 0")
    }


async def flush_wal(admin: asyncpg.Connection) -> None:
    """pg_walinspect reads only flushed WAL (the stack may commit without waiting for the flush):
    a durable commit of a transaction that wrote WAL flushes everything before it."""
    async with admin.transaction():
        await admin.execute(
            "SET LOCAL synchronous_commit = on; SELECT pg_logical_emit_message(true, 'bench', 'flush')"
        )


def refreshes(workspace: Any, account_ids: list[Any], names: list[int]) -> list[queue.NewRefresh]:
    return [
        queue.NewRefresh(
            job_id=ids.new_id(),
            batch_id=ids.new_id(),
            workspace_id=workspace,
            account_id=account,
            platform_id="sandbox_adp",
            name=name,
            params=b"",
            api_version="v1",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            request_id="req-0123456789abcdef",
        )
        for account in account_ids
        for name in names
    ]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with wal_database() as (admin, conn):
        names = [2, 3, 4, 5][: args.per_account]  # data jobs: one refresh each in flight
        accounts_needed = -(-(args.jobs + args.warmup) // len(names))
        workspace, account_ids = await insert_accounts(conn, accounts_needed, name="wal")
        todo = refreshes(workspace, account_ids, names)
        warm, todo = todo[: args.warmup], todo[args.warmup : args.warmup + args.jobs]
        for i in range(0, len(warm), args.batch):
            await queue.enqueue_refreshes(conn, warm[i : i + args.batch])
        relations = await relation_names(conn)
        db_oid = str(await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()"))
        start = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
        inserted = 0
        for i in range(0, len(todo), args.batch):
            rows = await queue.enqueue_refreshes(conn, todo[i : i + args.batch])
            inserted += sum(row is not None for row in rows)
        end = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
        await flush_wal(admin)
        assert inserted == len(todo), f"{inserted} of {len(todo)} inserted"
        records = await admin.fetch(
            "SELECT resource_manager, record_type, record_length, fpi_length, block_ref"
            " FROM pg_get_wal_records_info($1, $2)",
            start,
            end,
        )
    n = len(todo)
    kinds: collections.Counter[tuple[str, str]] = collections.Counter()
    sizes: collections.Counter[tuple[str, str]] = collections.Counter()
    others = 0
    for r in records:
        refs = _BLOCK.findall(r["block_ref"] or "")
        if refs and refs[0][1] != db_oid:
            others += 1  # another database's (none expected)
            continue
        relation = relations.get(refs[0][2], f"relfilenode {refs[0][2]}") if refs else "-"
        key = (relation, f"{r['resource_manager']}/{r['record_type']}")
        kinds[key] += 1
        sizes[key] += r["record_length"] - r["fpi_length"]
    by_kind = [
        {
            "relation": rel,
            "record": kind,
            "per_job": round(count / n, 3),
            "bytes_per_job": round(sizes[(rel, kind)] / n, 1),
        }
        for (rel, kind), count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return {
        "label": args.label,
        "harness_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip(),
        "jobs": n,
        "batch": args.batch,
        "refreshes_per_account": len(names),
        "records_per_job": round(sum(kinds.values()) / n, 3),
        "bytes_per_job_without_fpi": round(sum(sizes.values()) / n, 1),
        "records_of_other_databases": others,
        "lsn_bytes_per_job": round(float(end - start) / n, 1),  # with full-page images and padding
        "by_relation_and_record": by_kind,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8, help="refreshes per statement")
    parser.add_argument("--warmup", type=int, default=400, help="refreshes queued before measuring")
    parser.add_argument(
        "--per-account", type=int, default=1, choices=(1, 2, 3, 4), help="refreshes per account (job names)"
    )
    parser.add_argument("--label", default="current")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    if not args.no_save:
        saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        saved[args.label] = result
        RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    print(
        f"{result['label']} (harness {result['harness_commit']}): {result['jobs']} jobs, batches of {result['batch']}:"
        f" {result['records_per_job']} WAL records and {result['bytes_per_job_without_fpi']} bytes"
        f" (without full-page images) per job; {result['lsn_bytes_per_job']} bytes of WAL position"
    )
    for row in result["by_relation_and_record"]:
        print(
            f"  {row['relation']:28s} {row['record']:28s} {row['per_job']:7.3f} {row['bytes_per_job']:8.1f} B"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
