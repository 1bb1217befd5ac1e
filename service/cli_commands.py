"""What each command of `python -m service …` does: one small function per command, each calling the
module that owns what it changes. `service/cli.py` dispatches to them (its `COMMANDS` table) and
`service/cli_parser.py` holds their grammar and --help."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from collections.abc import Awaitable, Callable

from paylink.v1 import privacy_pb2

from service import audit, auth, db, erasure, ids, maintenance, migrate, outbox, runtime, workspaces
from service.config import Settings
from service.deps import Deps

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class Usage(Exception):
    """Bad arguments: exit 2 with this message."""


async def _with_pool(settings: Settings, fn: Callable[[db.Pool], Awaitable[int]]) -> int:
    pool = await db.create_pool(settings, size=2)
    try:
        return await fn(pool)
    finally:
        await pool.close()


async def _with_deps(settings: Settings, fn: Callable[[Deps], Awaitable[int]]) -> int:
    deps = await runtime.build_deps(settings.model_copy(update={"database_pool_size": 2}))
    try:
        return await fn(deps)
    finally:
        await deps.pool.close()


def _uuid_arg(value: str, what: str) -> uuid.UUID:
    parsed = _uuid(value)
    if parsed is None:
        raise Usage(f"{what} must be a UUID")
    return parsed


def process(api: bool, worker: bool, relay: bool) -> Command:
    async def run(args: argparse.Namespace, settings: Settings) -> int:
        await runtime.serve(settings, api=api, worker=worker, relay=relay)
        return 0

    return run


async def migrate_database(args: argparse.Namespace, settings: Settings) -> int:
    applied = await migrate.migrate(settings.database_url)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


async def workspace_create(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= len(args.name) <= 100:
        raise Usage("name must be 1 to 100 characters")

    async def create(pool: db.Pool) -> int:
        workspace, secret = await auth.create_workspace(pool, args.name, sandbox=not args.production)
        print(f"workspace_id={workspace.id}\napi_secret={secret}\nkey_id={ids.key_id_of_secret(secret)}")
        return 0

    return await _with_pool(settings, create)


async def workspace_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing(deps: Deps) -> int:
        for w in await workspaces.usage(deps):
            mode = "sandbox" if w.sandbox else "production"
            state = "deleted" if w.deleted else "active"
            print(
                f"{w.id}  {mode:10}  {state:7}  secrets={w.secrets}  accounts={w.accounts}"
                f"  connected={w.connected}  jobs={w.jobs}  {w.name}"
            )
        return 0

    return await _with_deps(settings, listing)


async def workspace_delete(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")

    async def delete(deps: Deps) -> int:
        done = await workspaces.delete(deps, workspace_id, force=args.force)
        print(
            f"deleted workspace {workspace_id} ({done.usage.name})\n"
            f"secrets_revoked={done.secrets_revoked}\naccounts_disconnected={done.accounts_disconnected}\n"
            f"sealed_values_erased={done.secrets_erased}\n"
            f"kept: accounts={done.usage.accounts} jobs={done.usage.jobs} (history, stored data, events)"
        )
        return 0

    return await _with_deps(settings, delete)


async def secret_create(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")

    async def create(pool: db.Pool) -> int:
        secret = await auth.create_secret(pool, workspace_id)
        print(f"api_secret={secret}\nkey_id={ids.key_id_of_secret(secret)}")
        return 0

    return await _with_pool(settings, create)


async def secret_list(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")

    async def listing(pool: db.Pool) -> int:
        for secret in await auth.list_secrets(pool, workspace_id):
            revoked = secret.revoked_at
            state = f"revoked {revoked:%Y-%m-%dT%H:%M:%SZ}" if revoked else "active"
            print(f"{secret.key_id}  created {secret.created_at:%Y-%m-%dT%H:%M:%SZ}  {state}")
        return 0

    return await _with_pool(settings, listing)


async def secret_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke(pool: db.Pool) -> int:
        if await auth.revoke_secret(pool, args.key_id):
            print("revoked (every process rejects it within 5 seconds)")
            return 0
        return fail("no active secret with that key id (see `python -m service secret list WORKSPACE_ID`)")

    return await _with_pool(settings, revoke)


async def vault_reencrypt(args: argparse.Namespace, settings: Settings) -> int:
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
        raise Usage(
            f"--topic {topic!r} is not a paylink topic under {settings.topic_prefix!r}; events: {known}"
        )
    return topic


async def events_replay(args: argparse.Namespace, settings: Settings) -> int:
    since, until = _timestamp(args.since), _timestamp(args.until) if args.until else None
    if since is None or (args.until and until is None):
        raise Usage("--since/--until must be ISO timestamps such as 2026-11-25T10:00:00Z")
    account = _uuid_arg(args.account, "--account") if args.account else None
    topic = _replay_topic(settings, args.topic)

    async def replay(pool: db.Pool) -> int:
        count = await maintenance.replay(settings, pool, since, topic, account, until=until)
        print(f"replayed {count} events")
        return 0

    return await _with_pool(settings, replay)


async def jobs_retry(args: argparse.Namespace, settings: Settings) -> int:
    job_id = _uuid_arg(args.job_id, "job_id")

    async def retry(pool: db.Pool) -> int:
        result = await maintenance.retry_job(pool, job_id)
        if result == "queued":
            print(f"job {job_id} queued again")
            return 0
        if result == "not_found":
            return fail(f"job {job_id} not found")
        return fail(f"job {job_id} is {result}; only jobs that ended in error can be retried")

    return await _with_pool(settings, retry)


async def erasure_erase(args: argparse.Namespace, settings: Settings) -> int:
    workspace_id = _uuid_arg(args.workspace_id, "workspace_id")
    deps = await runtime.build_deps(settings)
    try:
        who = audit.Who(workspace_id, args.caller, "", "cli erasure erase", uuid.uuid4().hex)
        _print_erasure(erasure.to_proto(await erasure.request(deps, who, args.end_user_id)))
    finally:
        await deps.pool.close()
    return 0


async def erasure_show(args: argparse.Namespace, settings: Settings) -> int:
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


async def audit_list(args: argparse.Namespace, settings: Settings) -> int:
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
                raise Usage(f"{flag} must be an ISO timestamp such as 2026-11-25T10:00:00Z")
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
