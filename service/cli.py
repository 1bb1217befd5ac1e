"""`python -m service …`: the command line. Every command has --help; exit codes: 0 ok, 1 failed,
2 bad usage or configuration. This module reads the configuration, dispatches (`COMMANDS`) to the
commands of `service/cli_commands.py` and turns failures into a message and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Mapping

import asyncpg
import pydantic
from aiokafka.errors import KafkaError

from service import cli_commands as commands
from service import cli_parser, errors, logs, runtime
from service.config import Settings
from service.vault import VaultError

# (command, action) -> what runs it. Each calls the module that owns what it changes.
COMMANDS: dict[tuple[str, str | None], commands.Command] = {
    ("serve", None): commands.process(api=True, worker=True, relay=True),
    ("api", None): commands.process(api=True, worker=False, relay=False),
    ("worker", None): commands.process(api=False, worker=True, relay=False),
    ("relay", None): commands.process(api=False, worker=False, relay=True),
    ("migrate", None): commands.migrate_database,
    ("workspace", "create"): commands.workspace_create,
    ("workspace", "list"): commands.workspace_list,
    ("workspace", "delete"): commands.workspace_delete,
    ("secret", "create"): commands.secret_create,
    ("secret", "list"): commands.secret_list,
    ("secret", "revoke"): commands.secret_revoke,
    ("vault", "reencrypt"): commands.vault_reencrypt,
    ("events", "replay"): commands.events_replay,
    ("jobs", "retry"): commands.jobs_retry,
    ("erasure", "erase"): commands.erasure_erase,
    ("erasure", "show"): commands.erasure_show,
    ("audit", "list"): commands.audit_list,
}


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    command = COMMANDS.get((args.command, getattr(args, "action", None)))
    if command is None:
        return commands.fail(f"unknown command {args.command}", 2)
    try:
        return await command(args, settings)
    except commands.Usage as exc:
        return commands.fail(str(exc), 2)
    except errors.DomainError as exc:  # the owning module refused: its message, exit 1
        return commands.fail(exc.message)


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
        return commands.fail(f"bad configuration (see docs/configuration.md):\n{lines}", 2)
    try:
        runtime.build_vault(settings)
    except ValueError as exc:
        return commands.fail(f"bad configuration: PAYLINK_VAULT_KEYS / PAYLINK_VAULT_PRIMARY_KEY: {exc}", 2)
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
        return commands.fail(f"the database is not migrated ({exc}): run `python -m service migrate` first")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, OSError) and str(exc).startswith("cannot "):
            return commands.fail(str(exc))  # our own message (a port that cannot be bound, ...)
        where = _mask(settings.database_url)
        return commands.fail(f"PostgreSQL at {where} (PAYLINK_DATABASE_URL): {type(exc).__name__}: {exc}")
    except KafkaError as exc:
        return commands.fail(
            f"cannot use Kafka at {settings.kafka_bootstrap} (PAYLINK_KAFKA_BOOTSTRAP): {exc}"
        )
    except VaultError as exc:
        return commands.fail(f"vault: {exc}")
    except KeyboardInterrupt:
        return 130


def _mask(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)
