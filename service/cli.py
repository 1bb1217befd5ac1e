"""`python -m service …`: the command line. Every command has --help; exit codes: 0 ok, 1 failed,
2 bad usage or configuration."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import pydantic
from aiokafka.errors import KafkaError

from service import auth, db, ids, logs, maintenance, migrate, outbox, runtime
from service.config import Settings
from service.vault import VaultError

_EPILOG = """\
configuration:
  Environment variables prefixed PAYLINK_ (PAYLINK_DATABASE_URL, PAYLINK_KAFKA_BOOTSTRAP,
  PAYLINK_GRPC_PORT, PAYLINK_VAULT_KEYS, ...), every one listed in docs/configuration.md.
  They are validated at start: a bad value exits 2 and names the variable.

exit codes:
  0 done   1 failed (a dependency is unreachable, or the command could not do it)
  2 bad usage or configuration   130 interrupted

examples:
  python -m service migrate
  python -m service workspace create my-team
  PAYLINK_METRICS_PORT=9464 python -m service serve
  python -m service events replay --since 2026-11-25T10:00:00Z --topic identity.added
Run `python -m service COMMAND --help` for the options of a command."""


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="paylink: payroll connectivity over gRPC (PostgreSQL + Kafka).",
        epilog=_EPILOG,
        formatter_class=raw,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=summary, description=f"{summary}.\n\n{details}".strip(), formatter_class=raw
        )
        return parser

    command(
        sub,
        "serve",
        "run the API server, job workers and the outbox relay in one process (local use)",
        "Applies pending migrations, listens on PAYLINK_GRPC_HOST:PAYLINK_GRPC_PORT and prints\n"
        "'paylink serving ...' once ready. SIGTERM or Ctrl-C drains RPCs, finishes or releases jobs\n"
        "and flushes the outbox, then exits 0. Metrics on PAYLINK_METRICS_PORT when it is not 0.",
    )
    command(
        sub,
        "api",
        "run only the gRPC API server (scale out: one per core or host)",
        "Applies pending migrations first (safe from several processes at once). Several api\n"
        "processes may share one port with PAYLINK_GRPC_REUSE_PORT=true. Stops on SIGTERM.",
    )
    command(
        sub,
        "worker",
        "run only a job worker (scale out: as many as the platforms allow)",
        "Claims jobs with FOR UPDATE SKIP LOCKED, so any number of workers share the queue.\n"
        "PAYLINK_WORKER_CONCURRENCY jobs at a time per process. Stops on SIGTERM.",
    )
    command(
        sub,
        "relay",
        "run only the outbox relay that publishes events to Kafka",
        "One relay leads (PostgreSQL advisory lock) and publishes; others wait as hot standbys\n"
        "and take over within PAYLINK_RELAY_POLL_SECONDS when the leader stops. Stops on SIGTERM.",
    )
    command(
        sub,
        "migrate",
        "apply pending database migrations (migrations/*.sql), then exit",
        "Idempotent and safe to run from several processes at once (advisory lock).",
    )

    ws = command(sub, "workspace", "create and list workspaces").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = command(
        ws,
        "create",
        "create a workspace and print its id, first API secret and the secret's key id",
        "The secret is shown once (only its hash is stored): send it as x-api-secret metadata.",
    )
    create.add_argument("name", help="a name for people, e.g. the owning team (1-100 chars)")
    create.add_argument("--production", action="store_true", help="a production workspace (default: sandbox)")
    command(ws, "list", "list workspaces: id, mode, active secrets, name")

    secret = command(sub, "secret", "create, list and revoke API secrets").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sc = command(secret, "create", "create another API secret for a workspace (for rotation)")
    sc.add_argument("workspace_id", help="UUID from `workspace create` or `workspace list`")
    sl = command(
        secret, "list", "list a workspace's secrets by key id (the secrets themselves are not stored)"
    )
    sl.add_argument("workspace_id", help="UUID of the workspace")
    sr = command(
        secret,
        "revoke",
        "revoke an API secret",
        "Every process stops accepting it within 5 seconds (the auth cache TTL).",
    )
    sr.add_argument("key_id", help="the key id (16 hex digits, from `secret list`) or the whole secret")

    vault = command(sub, "vault", "re-encrypt stored credentials after a key rotation").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    command(
        vault,
        "reencrypt",
        "re-seal every stored secret under the primary key, online",
        "Key rotation: add the new key to PAYLINK_VAULT_KEYS (keep the old ones), make it\n"
        "PAYLINK_VAULT_PRIMARY_KEY, restart the processes, run this, then drop the old key.\n"
        "Prints how many blobs of each table were re-sealed; running it again prints zeros.",
    )

    events = command(sub, "events", "replay Kafka events from the outbox").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    replay = command(
        events,
        "replay",
        "re-publish events from the outbox with their original event_ids",
        "Consumers that de-duplicate by event_id ignore what they already handled; the others\n"
        "catch up. Events keep their key (account_id), headers and per-account sequence.\n"
        "The outbox keeps every event (no retention here), so any time range can be replayed.",
    )
    replay.add_argument(
        "--since", required=True, metavar="TS", help="ISO timestamp, e.g. 2026-11-25T10:00:00Z"
    )
    replay.add_argument("--until", metavar="TS", help="ISO timestamp (exclusive); default: now")
    replay.add_argument(
        "--topic",
        help="only this topic: the full name (paylink.identity.added) or the event (identity.added)",
    )
    replay.add_argument("--account", metavar="ID", help="only this account (UUID)")

    jobs = command(sub, "jobs", "retry a job that ended in error").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    retry = command(
        jobs,
        "retry",
        "queue a job that ended in error again",
        "The job runs again from attempt 1 and publishes a new <job>.added event with its outcome.",
    )
    retry.add_argument("job_id", help="UUID of the job (JobService.GetJob / ListJobs)")
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
            if not 1 <= len(args.name) <= 100:
                return _fail("name must be 1 to 100 characters", 2)
            workspace, secret = await auth.create_workspace(pool, args.name, sandbox=not args.production)
            print(f"workspace_id={workspace.id}\napi_secret={secret}\nkey_id={ids.key_id_of_secret(secret)}")
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
                secret = await auth.create_secret(pool, workspace_id)
            except LookupError as exc:
                return _fail(str(exc))
            print(f"api_secret={secret}\nkey_id={ids.key_id_of_secret(secret)}")
            return 0

        return await _with_pool(settings, new_secret)
    if cmd == "secret" and action == "list":
        owner = _uuid(args.workspace_id)
        if owner is None:
            return _fail("workspace_id must be a UUID", 2)

        async def secrets(pool: db.Pool) -> int:
            if not await pool.fetchval("SELECT true FROM workspaces WHERE id = $1", owner):
                return _fail(f"workspace {owner} not found")
            for row in await pool.fetch(
                "SELECT key_id, created_at, revoked_at FROM api_secrets WHERE workspace_id = $1 ORDER BY created_at",
                owner,
            ):
                revoked = row["revoked_at"]
                state = f"revoked {revoked:%Y-%m-%dT%H:%M:%SZ}" if revoked else "active"
                print(f"{row['key_id']}  created {row['created_at']:%Y-%m-%dT%H:%M:%SZ}  {state}")
            return 0

        return await _with_pool(settings, secrets)
    if cmd == "secret" and action == "revoke":

        async def revoke(pool: db.Pool) -> int:
            if await auth.revoke_secret(pool, args.key_id):
                print("revoked (every process rejects it within 5 seconds)")
                return 0
            return _fail(
                "no active secret with that key id (see `python -m service secret list WORKSPACE_ID`)"
            )

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
        since, until = _timestamp(args.since), _timestamp(args.until) if args.until else None
        if since is None or (args.until and until is None):
            return _fail("--since/--until must be ISO timestamps such as 2026-11-25T10:00:00Z", 2)
        account = _uuid(args.account) if args.account else None
        if args.account and account is None:
            return _fail("--account must be a UUID", 2)
        topic = args.topic
        if topic and topic in outbox.ALL_EVENTS:
            topic = settings.topic_prefix + topic
        if topic and topic not in {settings.topic_prefix + name for name in outbox.ALL_EVENTS}:
            known = ", ".join(outbox.ALL_EVENTS)
            return _fail(
                f"--topic {topic!r} is not a paylink topic under {settings.topic_prefix!r}; events: {known}",
                2,
            )

        async def replay(pool: db.Pool) -> int:
            count = await maintenance.replay(settings, pool, since, topic, account, until=until)
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
                print(f"job {job_id} queued again")
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


def _timestamp(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# Values never echoed back in an error message.
_SECRET_SETTINGS = {"database_url", "vault_keys"}
# PAYLINK_* variables that belong to scripts (stack.sh, demo), not to the service.
_TOOL_VARIABLES = (
    "PAYLINK_PG_",
    "PAYLINK_KAFKA_PORT",
    "PAYLINK_KAFKA_CONTROLLER_PORT",
    "PAYLINK_KAFKA_HEAP",
    "PAYLINK_STACK_",
    "PAYLINK_DEMO_",
    "PAYLINK_FAULT_",  # fault-injection hooks of tests/faults
)


def config_errors(exc: pydantic.ValidationError) -> list[str]:
    """One line per invalid setting, naming its environment variable."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        shown = "" if field in _SECRET_SETTINGS else f" (got {error.get('input')!r})"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  PAYLINK_{field.upper()}: {message}{shown}")
    return lines


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """PAYLINK_* variables that are not settings (typos), to warn about."""
    known = {f"PAYLINK_{name.upper()}" for name in Settings.model_fields}
    return sorted(
        name
        for name in environ
        if name.startswith("PAYLINK_") and name not in known and not name.startswith(_TOOL_VARIABLES)
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except pydantic.ValidationError as exc:
        lines = "\n".join(config_errors(exc))
        return _fail(f"bad configuration (see docs/configuration.md):\n{lines}", 2)
    try:
        runtime.build_vault(settings)
    except ValueError as exc:
        return _fail(f"bad configuration: PAYLINK_VAULT_KEYS / PAYLINK_VAULT_PRIMARY_KEY: {exc}", 2)
    for name in unknown_variables(os.environ):
        print(
            f"warning: {name} is not a paylink setting and is ignored (see docs/configuration.md)",
            file=sys.stderr,
        )
    logs.setup(settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        return int(asyncio.run(_run(args, settings)))
    except asyncpg.UndefinedTableError as exc:
        return _fail(f"the database is not migrated ({exc}): run `python -m service migrate` first")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, OSError) and str(exc).startswith("cannot "):
            return _fail(str(exc))  # our own message (a port that cannot be bound, ...)
        where = _mask(settings.database_url)
        return _fail(f"PostgreSQL at {where} (PAYLINK_DATABASE_URL): {type(exc).__name__}: {exc}")
    except KafkaError as exc:
        return _fail(f"cannot use Kafka at {settings.kafka_bootstrap} (PAYLINK_KAFKA_BOOTSTRAP): {exc}")
    except VaultError as exc:
        return _fail(f"vault: {exc}")
    except KeyboardInterrupt:
        return 130


def _mask(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)
