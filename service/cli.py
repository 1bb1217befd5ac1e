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

import asyncpg
import pydantic
from aiokafka.errors import KafkaError
from paylink.v1 import privacy_pb2

from service import (
    audit,
    auth,
    cli_parser,
    db,
    erasure,
    errors,
    ids,
    logs,
    maintenance,
    migrate,
    outbox,
    runtime,
)
from service.config import Settings
from service.vault import VaultError

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class _Usage(Exception):
    """Bad arguments: exit 2 with this message."""


async def _with_pool(settings: Settings, fn: Callable[[db.Pool], Awaitable[int]]) -> int:
    pool = await db.create_pool(settings, size=2)
    try:
        return await fn(pool)
    finally:
        await pool.close()


def _uuid_arg(value: str, what: str) -> uuid.UUID:
    parsed = _uuid(value)
    if parsed is None:
        raise _Usage(f"{what} must be a UUID")
    return parsed


def _process(api: bool, worker: bool, relay: bool) -> Command:
    async def run(args: argparse.Namespace, settings: Settings) -> int:
        await runtime.serve(settings, api=api, worker=worker, relay=relay)
        return 0

    return run


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = await migrate.migrate(settings.database_url)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


async def _workspace_create(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= len(args.name) <= 100:
        raise _Usage("name must be 1 to 100 characters")

    async def create(pool: db.Pool) -> int:
        workspace, secret = await auth.create_workspace(pool, args.name, sandbox=not args.production)
        print(f"workspace_id={workspace.id}\napi_secret={secret}\nkey_id={ids.key_id_of_secret(secret)}")
        return 0

    return await _with_pool(settings, create)


async def _workspace_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing(pool: db.Pool) -> int:
        for row in await auth.list_workspaces(pool):
            mode = "sandbox" if row["sandbox"] else "production"
            print(f"{row['id']}  {mode:10}  secrets={row['active_secrets']}  {row['name']}")
        return 0

    return await _with_pool(settings, listing)


async def _secret_create(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")

    async def create(pool: db.Pool) -> int:
        secret = await auth.create_secret(pool, workspace_id)
        print(f"api_secret={secret}\nkey_id={ids.key_id_of_secret(secret)}")
        return 0

    return await _with_pool(settings, create)


async def _secret_list(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")

    async def listing(pool: db.Pool) -> int:
        for secret in await auth.list_secrets(pool, workspace_id):
            revoked = secret.revoked_at
            state = f"revoked {revoked:%Y-%m-%dT%H:%M:%SZ}" if revoked else "active"
            print(f"{secret.key_id}  created {secret.created_at:%Y-%m-%dT%H:%M:%SZ}  {state}")
        return 0

    return await _with_pool(settings, listing)


async def _secret_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke(pool: db.Pool) -> int:
        if await auth.revoke_secret(pool, args.key_id):
            print("revoked (every process rejects it within 5 seconds)")
            return 0
        return _fail("no active secret with that key id (see `python -m service secret list WORKSPACE_ID`)")

    return await _with_pool(settings, revoke)


async def _vault_reencrypt(args: argparse.Namespace, settings: Settings) -> int:
    vault = runtime.build_vault(settings)

    async def reencrypt(pool: db.Pool) -> int:
        for name, count in (await maintenance.reencrypt(pool, vault)).items():
            print(f"{name}: {count} re-encrypted")
        return 0

    return await _with_pool(settings, reencrypt)


def _replay_topic(settings: Settings, topic: str | None) -> str | None:
    if topic and topic in outbox.ALL_EVENTS:
        topic = settings.topic_prefix + topic
    if topic and topic not in {settings.topic_prefix + name for name in outbox.ALL_EVENTS}:
        known = ", ".join(outbox.ALL_EVENTS)
        raise _Usage(
            f"--topic {topic!r} is not a paylink topic under {settings.topic_prefix!r}; events: {known}"
        )
    return topic


async def _events_replay(args: argparse.Namespace, settings: Settings) -> int:
    since, until = _timestamp(args.since), _timestamp(args.until) if args.until else None
    if since is None or (args.until and until is None):
        raise _Usage("--since/--until must be ISO timestamps such as 2026-11-25T10:00:00Z")
    account = _uuid_arg(args.account, "--account") if args.account else None
    topic = _replay_topic(settings, args.topic)

    async def replay(pool: db.Pool) -> int:
        count = await maintenance.replay(settings, pool, since, topic, account, until=until)
        print(f"replayed {count} events")
        return 0

    return await _with_pool(settings, replay)


async def _jobs_retry(args: argparse.Namespace, settings: Settings) -> int:
    job_id = _uuid_arg(args.job_id, "job_id")

    async def retry(pool: db.Pool) -> int:
        result = await maintenance.retry_job(pool, job_id)
        if result == "queued":
            print(f"job {job_id} queued again")
            return 0
        if result == "not_found":
            return _fail(f"job {job_id} not found")
        return _fail(f"job {job_id} is {result}; only jobs that ended in error can be retried")

    return await _with_pool(settings, retry)


async def _erasure_erase(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")
    deps = await runtime.build_deps(settings)
    try:
        who = audit.Who(workspace_id, args.caller, "", "cli erasure erase", uuid.uuid4().hex)
        _print_erasure(erasure.to_proto(await erasure.request(deps, who, args.end_user_id)))
    finally:
        await deps.pool.close()
    return 0


async def _erasure_show(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")
    deps = await runtime.build_deps(settings)
    try:
        _print_erasure(erasure.to_proto(await erasure.get(deps, workspace_id, args.erasure_id)))
    finally:
        await deps.pool.close()
    return 0


def _print_erasure(out: privacy_pb2.Erasure) -> None:
    state = privacy_pb2.ErasureState.Name(out.state).removeprefix("ERASURE_STATE_")
    print(f"erasure_id={out.id}\nstate={state}\naccounts={','.join(out.account_ids)}")
    for table, count in sorted(out.erased.items()):
        print(f"erased {table}={count}")


async def _audit_list(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")
    request = privacy_pb2.ListAuditRecordsRequest(
        account_id=args.account or "",
        end_user_id=args.end_user or "",
        caller=args.caller or "",
        page_size=100,
    )
    for flag, value, field in (("--since", args.since, "from_time"), ("--until", args.until, "to_time")):
        if value:
            when = _timestamp(value)
            if when is None:
                raise _Usage(f"{flag} must be an ISO timestamp such as 2026-11-25T10:00:00Z")
            getattr(request, field).FromDatetime(when)

    async def listing(pool: db.Pool) -> int:
        shown = 0
        while shown < args.limit:
            page = await audit.list_page(pool, workspace_id, request)
            for r in page.records[: args.limit - shown]:
                action = privacy_pb2.AuditAction.Name(r.action).removeprefix("AUDIT_ACTION_")
                resource = privacy_pb2.AuditResource.Name(r.resource).removeprefix("AUDIT_RESOURCE_")
                when = r.recorded_at.ToDatetime().isoformat(timespec="milliseconds")
                print(
                    f"{when}Z  {r.caller}  {r.key_id or '-'}  {action}  {resource}  {r.account_id or '-'}"
                    f"  {r.end_user_id or '-'}  {r.method}  {r.request_id}"
                )
                shown += 1
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        return 0

    return await _with_pool(settings, listing)


# (command, action) -> what runs it. Each calls the module that owns what it changes.
COMMANDS: dict[tuple[str, str | None], Command] = {
    ("serve", None): _process(api=True, worker=True, relay=True),
    ("api", None): _process(api=True, worker=False, relay=False),
    ("worker", None): _process(api=False, worker=True, relay=False),
    ("relay", None): _process(api=False, worker=False, relay=True),
    ("migrate", None): _migrate,
    ("workspace", "create"): _workspace_create,
    ("workspace", "list"): _workspace_list,
    ("secret", "create"): _secret_create,
    ("secret", "list"): _secret_list,
    ("secret", "revoke"): _secret_revoke,
    ("vault", "reencrypt"): _vault_reencrypt,
    ("events", "replay"): _events_replay,
    ("jobs", "retry"): _jobs_retry,
    ("erasure", "erase"): _erasure_erase,
    ("erasure", "show"): _erasure_show,
    ("audit", "list"): _audit_list,
}


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    command = COMMANDS.get((args.command, getattr(args, "action", None)))
    if command is None:
        return _fail(f"unknown command {args.command}", 2)
    try:
        return await command(args, settings)
    except _Usage as exc:
        return _fail(str(exc), 2)
    except errors.DomainError as exc:  # the owning module refused: its message, exit 1
        return _fail(exc.message)


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
    args = cli_parser.build().parse_args(argv)
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
