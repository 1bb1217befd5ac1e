"""`python -m service …`: the command line. Every command has --help; exit codes: 0 ok, 1 failed,
2 bad usage or configuration."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pydantic

from service import auth, db, logs, maintenance, migrate, runtime
from service.config import Settings
from service.vault import VaultError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service", description="paylink: payroll connectivity over gRPC."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run API server, workers and relay in one process (local use)")
    sub.add_parser("api", help="run only the gRPC API server")
    sub.add_parser("worker", help="run only a job worker")
    sub.add_parser("relay", help="run only the outbox relay (one leader at a time)")
    sub.add_parser("migrate", help="apply database migrations")

    ws = sub.add_parser("workspace", help="manage workspaces").add_subparsers(dest="action", required=True)
    create = ws.add_parser("create", help="create a workspace and print its id and first API secret")
    create.add_argument("name")
    create.add_argument("--production", action="store_true", help="a production (not sandbox) workspace")
    ws.add_parser("list", help="list workspaces")

    secret = sub.add_parser("secret", help="manage API secrets").add_subparsers(dest="action", required=True)
    sc = secret.add_parser("create", help="create another API secret for a workspace")
    sc.add_argument("workspace_id")
    sr = secret.add_parser("revoke", help="revoke an API secret (by key id or the secret itself)")
    sr.add_argument("key_id")

    vault = sub.add_parser("vault", help="credential vault").add_subparsers(dest="action", required=True)
    vault.add_parser("reencrypt", help="re-seal every stored secret under the primary key (online)")

    events = sub.add_parser("events", help="Kafka events").add_subparsers(dest="action", required=True)
    replay = events.add_parser("replay", help="re-publish outbox events with their original event_ids")
    replay.add_argument("--since", required=True, help="ISO timestamp, e.g. 2026-11-25T10:00:00Z")
    replay.add_argument("--topic", help="only this topic (full name, e.g. paylink.identity.added)")
    replay.add_argument("--account", help="only this account id")

    jobs = sub.add_parser("jobs", help="jobs").add_subparsers(dest="action", required=True)
    retry = jobs.add_parser("retry", help="queue a job that ended in error again")
    retry.add_argument("job_id")
    return p


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


async def _with_pool(settings: Settings, fn: Callable[[asyncpg.Pool], Awaitable[int]]) -> int:
    pool = await db.create_pool(settings, size=2)
    try:
        return await fn(pool)
    finally:
        await pool.close()


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    cmd, action = args.command, getattr(args, "action", None)
    if cmd in ("serve", "api", "worker", "relay"):
        only = {
            "serve": (True, True, True),
            "api": (True, False, False),
            "worker": (False, True, False),
            "relay": (False, False, True),
        }[cmd]
        await runtime.serve(settings, api=only[0], worker=only[1], relay=only[2])
        return 0
    if cmd == "migrate":
        applied = await migrate.migrate(settings.database_url)
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
        return 0
    if cmd == "workspace" and action == "create":

        async def create(pool: db.Pool) -> int:
            workspace, secret = await auth.create_workspace(pool, args.name, sandbox=not args.production)
            print(f"workspace_id={workspace.id}\napi_secret={secret}")
            return 0

        return await _with_pool(settings, create)
    if cmd == "workspace" and action == "list":

        async def listing(pool: db.Pool) -> int:
            for row in await auth.list_workspaces(pool):
                mode = "sandbox" if row["sandbox"] else "production"
                print(f"{row['id']}  {mode:10}  secrets={row['active_secrets']}  {row['name']}")
            return 0

        return await _with_pool(settings, listing)
    if cmd == "secret" and action == "create":
        workspace_id = _uuid(args.workspace_id)
        if workspace_id is None:
            return _fail("workspace_id must be a UUID", 2)

        async def new_secret(pool: db.Pool) -> int:
            try:
                print(f"api_secret={await auth.create_secret(pool, workspace_id)}")
            except LookupError as exc:
                return _fail(str(exc))
            return 0

        return await _with_pool(settings, new_secret)
    if cmd == "secret" and action == "revoke":

        async def revoke(pool: db.Pool) -> int:
            if await auth.revoke_secret(pool, args.key_id):
                print("revoked")
                return 0
            return _fail("no active secret with that key id")

        return await _with_pool(settings, revoke)
    if cmd == "vault":
        vault = runtime.build_vault(settings)

        async def reencrypt(pool: db.Pool) -> int:
            counts = await maintenance.reencrypt(pool, vault)
            for name, count in counts.items():
                print(f"{name}: {count} re-encrypted")
            return 0

        return await _with_pool(settings, reencrypt)
    if cmd == "events":
        try:
            since = dt.datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            return _fail("--since must be an ISO timestamp such as 2026-11-25T10:00:00Z", 2)
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        account = _uuid(args.account) if args.account else None
        if args.account and account is None:
            return _fail("--account must be a UUID", 2)

        async def replay(pool: db.Pool) -> int:
            count = await maintenance.replay(settings, pool, since, args.topic, account)
            print(f"replayed {count} events")
            return 0

        return await _with_pool(settings, replay)
    if cmd == "jobs":
        job_id = _uuid(args.job_id)
        if job_id is None:
            return _fail("job_id must be a UUID", 2)

        async def retry(pool: db.Pool) -> int:
            result = await maintenance.retry_job(pool, job_id)
            if result == "queued":
                print("queued")
                return 0
            if result == "not_found":
                return _fail(f"job {job_id} not found")
            return _fail(f"job {job_id} is {result}; only jobs that ended in error can be retried")

        return await _with_pool(settings, retry)
    return _fail(f"unknown command {cmd}", 2)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        runtime.build_vault(settings)
    except (pydantic.ValidationError, ValueError) as exc:
        return _fail(f"bad configuration (PAYLINK_* environment variables):\n{exc}", 2)
    logs.setup(settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        return int(asyncio.run(_run(args, settings)))
    except (OSError, asyncpg.PostgresError) as exc:
        return _fail(f"cannot reach a dependency: {exc}")
    except VaultError as exc:
        return _fail(f"vault: {exc}")
    except KeyboardInterrupt:
        return 130
