"""Monitoring benchmark (`make bench BENCH_ARGS="--only monitoring"`, or run this file directly).

1. Seeds --accounts monitored accounts (default 1,000,000) by COPY into a database of its own, each
   with a schedule per data job type (5 rows each), first due spread over the next day as the
   scheduler spreads them; --due of them (with real sandbox credentials) are due now.
2. Finding and claiming due refreshes: `schedules.claim` batches of --batch rows, each in a
   transaction rolled back (so every batch sees the same table), with the due rows' plan; and the
   claim when nothing is due (cost follows what is due, not the table).
3. Refresh throughput end to end: a `serve` process (API, workers with the scheduler, relay)
   against the seeded database queues the due refreshes and runs them against the sandbox platform
   until every one has an outcome; first round (new data: events), second round (same data: no
   product event, only refreshed_at moves).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated")]

from service import db, sealed
from service.config import Settings
from service.drivers.sandbox import Grant
from service.monitoring import rules, schedules
from service.runtime import build_vault
from tests.harness import create_test_database, drop_database

PLATFORMS = ("sandbox_adp", "sandbox_workday")


async def seed(conn: asyncpg.Connection, settings: Settings, accounts: int, due: int) -> dict[str, Any]:
    """COPY the accounts, their schedules and the due ones' sealed grants; returns timings."""
    workspace = uuid.uuid4()
    await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'bench-monitoring')", workspace)
    started = time.perf_counter()
    ids = [uuid.uuid4() for _ in range(accounts)]
    await conn.copy_records_to_table(
        "accounts",
        columns=["id", "workspace_id", "end_user_id", "platform_id", "link_token_id", "tags"],
        records=(
            (a, workspace, f"eu-{i}", PLATFORMS[i % len(PLATFORMS)], a, '{"cohort": "bench"}')
            for i, a in enumerate(ids)
        ),
    )
    copied_accounts = time.perf_counter() - started
    # Schedules: every data job type, first due spread over the next day (the first-refresh jitter
    # of a million accounts linked in one afternoon), in one INSERT ... SELECT; then the due ones now.
    names = list(rules.SCHEDULED_JOBS)
    cadences = rules.cadences({})
    started = time.perf_counter()
    # A bulk load: the secondary indexes and the foreign key are built once afterwards, as one would
    # load a table this size (the migration's definitions, recreated as they were).
    await conn.execute(
        "ALTER TABLE refresh_schedules DROP CONSTRAINT refresh_schedules_account_id_fkey;"
        " DROP INDEX refresh_schedules_due; DROP INDEX refresh_schedules_workspace"
    )
    await conn.execute(
        "INSERT INTO refresh_schedules (account_id, name, workspace_id, platform_id, cadence, next_refresh_at)"
        " SELECT a.id, n.name, a.workspace_id, a.platform_id, n.cadence,"
        "        now() + interval '1 minute' + random() * interval '1 day'"
        " FROM accounts a CROSS JOIN unnest($1::smallint[], $2::interval[]) AS n(name, cadence)"
        " WHERE a.workspace_id = $3",
        names,
        [cadences[n] for n in names],
        workspace,
    )
    await conn.execute(
        "CREATE INDEX refresh_schedules_due ON refresh_schedules (next_refresh_at) WHERE active;"
        " CREATE INDEX refresh_schedules_workspace ON refresh_schedules (workspace_id);"
        " ALTER TABLE refresh_schedules ADD CONSTRAINT refresh_schedules_account_id_fkey"
        " FOREIGN KEY (account_id) REFERENCES accounts (id)"
    )
    await conn.execute(
        "UPDATE refresh_schedules SET next_refresh_at = now() WHERE account_id = ANY($1::uuid[])", ids[:due]
    )
    copied_schedules = time.perf_counter() - started
    vault = build_vault(settings)
    started = time.perf_counter()

    def grants() -> Any:
        for i in range(due):
            a = ids[i]
            grant = (
                Grant(f"user_good+mon{i}", "pass_good", PLATFORMS[i % len(PLATFORMS)], "s").encode().secret
            )
            blob = vault.seal(grant, aad=sealed.ACCOUNT_GRANT.aad(a))
            yield (a, vault.key_id_of(blob), blob)

    await conn.copy_records_to_table(
        "account_credentials", columns=["account_id", "key_id", "sealed"], records=grants()
    )
    sealed_grants = time.perf_counter() - started
    await conn.execute("ANALYZE accounts")
    await conn.execute("ANALYZE refresh_schedules")
    size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('refresh_schedules'))")
    index = await conn.fetchval("SELECT pg_size_pretty(pg_relation_size('refresh_schedules_due'))")
    return {
        "accounts": accounts,
        "schedule_rows": accounts * len(names),
        "due_refreshes": due * len(names),
        "copy_accounts_s": round(copied_accounts, 1),
        "insert_schedules_s": round(copied_schedules, 1),
        "seal_and_copy_grants_s": round(sealed_grants, 1),
        "refresh_schedules_size": size,
        "due_index_size": index,
    }


async def claim_cost(conn: asyncpg.Connection, batch: int, rounds: int) -> dict[str, Any]:
    limits = schedules.Limits(batch=batch, platform_concurrency=10**9, daily_budget=0)
    plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + schedules._DUE.format(account=""), batch, [])
    times = []
    for _ in range(rounds):
        tx = conn.transaction()
        await tx.start()
        started = time.perf_counter()
        claimed = await schedules.claim(conn, limits)
        times.append(time.perf_counter() - started)
        await tx.rollback()
        assert len(claimed.job_ids) == batch, claimed
    # Nothing due: what a tick costs on a quiet million. Everything due within the next hour moves a
    # day on (the seed spreads first refreshes over a day, so rows keep falling due meanwhile); then
    # only the accounts with credentials are made due again, for the rounds below.
    await conn.execute(
        "UPDATE refresh_schedules SET next_refresh_at = next_refresh_at + interval '1 day'"
        " WHERE next_refresh_at <= now() + interval '1 hour'"
    )
    empty = []
    for _ in range(rounds):
        started = time.perf_counter()
        async with conn.transaction():
            nothing = await schedules.claim(conn, limits)
        empty.append(time.perf_counter() - started)
        assert nothing.due == 0, nothing
    await conn.execute(
        "UPDATE refresh_schedules SET next_refresh_at = now() WHERE account_id IN"
        " (SELECT account_id FROM account_credentials)"
    )
    median = statistics.median(times)
    return {
        "batch": batch,
        "claim_ms_median": round(median * 1000, 1),
        "claim_ms_max": round(max(times) * 1000, 1),
        "claimed_per_s": round(batch / median),
        "empty_claim_ms_median": round(statistics.median(empty) * 1000, 2),
        "due_query_plan": [r[0] for r in plan if "Index" in r[0] or "Execution" in r[0] or "Limit" in r[0]],
    }


async def run_round(url: str, env: dict[str, str], expected: int, label: str) -> dict[str, Any]:
    """Starts serve, waits until `expected` scheduled refreshes have a final outcome, stops it."""
    conn = await asyncpg.connect(url)
    before = await conn.fetchval(
        "SELECT count(*) FROM jobs WHERE scheduled AND status IN ('success', 'error')"
    )
    events_before = await conn.fetchval("SELECT count(*) FROM outbox")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "paylink serving ..."
        started = time.perf_counter()
        done = before
        while done - before < expected:
            await asyncio.sleep(0.5)
            done = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE scheduled AND status IN ('success', 'error')"
            )
            if time.perf_counter() - started > 1800:
                raise RuntimeError(f"{label}: only {done - before} of {expected} refreshes finished")
        elapsed = time.perf_counter() - started
        errors = await conn.fetchval("SELECT count(*) FROM jobs WHERE scheduled AND status = 'error'")
        events = await conn.fetchval("SELECT count(*) FROM outbox") - events_before
    finally:
        proc.terminate()
        proc.wait(30)
        await conn.close()
    return {
        "refreshes": expected,
        "seconds": round(elapsed, 1),
        "refreshes_per_s": round(expected / elapsed, 1),
        "errors": errors,
        "events_written": events,
    }


async def bench(
    accounts: int, due: int, batch: int, rounds: int, reuse: str = "", seeded: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`reuse`: a database this script seeded before (and `seeded`: what its seed reported)."""
    base = Settings()
    url = reuse or await create_test_database(base.database_url)
    try:
        conn = await db.connect(url)  # schedules.claim queues jobs: a connection of this release
        try:
            if reuse:
                results: dict[str, Any] = {"seed": seeded or {}}
                due = await conn.fetchval("SELECT count(*) FROM account_credentials")
            else:
                results = {"seed": await seed(conn, base, accounts, due)}
            print(f"monitoring seed: {results['seed']}", flush=True)
            results["claim"] = await claim_cost(conn, min(batch, due * len(rules.SCHEDULED_JOBS)), rounds)
            print(f"monitoring claim: {results['claim']}", flush=True)
        finally:
            await conn.close()
        env = {
            **os.environ,
            "PAYLINK_DATABASE_URL": url,
            "PAYLINK_TOPIC_PREFIX": f"benchmon{uuid.uuid4().hex[:6]}.",
            "PAYLINK_GRPC_PORT": "0",
            "PAYLINK_LOG_LEVEL": "WARNING",
            "PAYLINK_WORKER_CONCURRENCY": "64",
            "PAYLINK_PLATFORM_CONCURRENCY": "64",
            "PAYLINK_MONITORING_PLATFORM_CONCURRENCY": "128",
            "PAYLINK_MONITORING_TICK_SECONDS": "0.2",
            "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
        }
        total = due * len(rules.SCHEDULED_JOBS)
        results["first_round"] = await run_round(url, env, total, "first round")
        print(f"monitoring first round (new data): {results['first_round']}", flush=True)
        conn = await asyncpg.connect(url)
        await conn.execute(
            "UPDATE refresh_schedules SET next_refresh_at = now() WHERE account_id IN"
            " (SELECT account_id FROM account_credentials)"
        )
        await conn.close()
        results["second_round"] = await run_round(url, env, total, "second round")
        print(f"monitoring second round (unchanged data): {results['second_round']}", flush=True)
        return results
    finally:
        try:
            await drop_database(base.database_url, url)
        except asyncpg.PostgresError as exc:  # e.g. an autovacuum worker still on it
            print(f"could not drop {url.rsplit('/', 1)[-1]}: {exc}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=2_000, help="accounts due now (x5 refreshes)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--reuse", default="", help="URL of a database seeded by an earlier run")
    parser.add_argument("--seeded", default="", help="that run's seed figures (JSON)")
    args = parser.parse_args()
    seeded = json.loads(args.seeded) if args.seeded else None
    results = asyncio.run(bench(args.accounts, args.due, args.batch, args.rounds, args.reuse, seeded))
    print(json.dumps(results, indent=2))
    record(results, "python bench/monitoring.py " + " ".join(sys.argv[1:]))
    return 0


def record(results: dict[str, Any], command: str) -> None:
    """Keeps the figures for BENCHMARKS.md (bench/report.py renders them)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    out = {
        **results,
        "command": command,
        "commit": commit.stdout.strip(),
        "ran_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench/monitoring-results.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
