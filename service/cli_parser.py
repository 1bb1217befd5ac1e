"""The command line's grammar: every command, its arguments and its --help text."""

from __future__ import annotations

import argparse
from typing import Any

_RAW = argparse.RawDescriptionHelpFormatter

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


def build() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="paylink: payroll connectivity over gRPC (PostgreSQL + Kafka).",
        epilog=_EPILOG,
        formatter_class=_RAW,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_processes, _workspace, _secret, _vault, _events, _jobs, _erasure, _audit):
        add(sub)
    return p


def command(parent: Any, name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = parent.add_parser(
        name, help=summary, description=f"{summary}.\n\n{details}".strip(), formatter_class=_RAW
    )
    return parser


def _processes(sub: Any) -> None:
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


def _workspace(sub: Any) -> None:
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


def _secret(sub: Any) -> None:
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


def _vault(sub: Any) -> None:
    vault = command(sub, "vault", "re-encrypt stored credentials after a key rotation").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    command(
        vault,
        "reencrypt",
        "re-seal every stored secret and all personal data under the primary key, online",
        "Key rotation: add the new key to PAYLINK_VAULT_KEYS (keep the old ones), make it\n"
        "PAYLINK_VAULT_PRIMARY_KEY, restart the processes, run this, then drop the old key.\n"
        "Also seals personal data stored before it was sealed (docs/privacy.md), in batches.\n"
        "Prints how many values of each column it changed; running it again prints zeros.",
    )


def _events(sub: Any) -> None:
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


def _jobs(sub: Any) -> None:
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


def _erasure(sub: Any) -> None:
    erasure = command(sub, "erasure", "erase an end user's personal data (docs/privacy.md)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    erase = command(
        erasure,
        "erase",
        "erase one end user of a workspace, or resume or show that erasure",
        "Runs the erasure's steps (fence, wait for jobs, data, history, idempotency, finish) as far\n"
        "as they go now, and prints its id, state and what it erased. Idempotent: run it again to\n"
        "resume an interrupted erasure. WAITING_FOR_JOBS: a job of the user is still running; the\n"
        "relay processes finish the erasure once it is over. Audited with --caller.",
    )
    erase.add_argument("workspace_id", help="UUID of the workspace")
    erase.add_argument("end_user_id", help="the end_user_id the workspace gave the user")
    erase.add_argument("--caller", default="cli", help="who asks, for the audit trail (default: cli)")
    show = command(erasure, "show", "show an erasure: state, accounts and what it erased")
    show.add_argument("workspace_id", help="UUID of the workspace")
    show.add_argument("erasure_id", help="UUID of the erasure")


def _audit(sub: Any) -> None:
    audit = command(sub, "audit", "read the audit trail of who read whose personal data").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = command(
        audit,
        "list",
        "list a workspace's audit records, newest first",
        "One line per record: time, caller, key id, action, resource, account, end user, method,\n"
        "request id. Filters combine.",
    )
    listing.add_argument("workspace_id", help="UUID of the workspace")
    listing.add_argument("--account", metavar="ID", help="only this account (UUID)")
    listing.add_argument("--end-user", metavar="ID", help="only this end user")
    listing.add_argument("--caller", help="only this caller (x-caller, or key:<key id>)")
    listing.add_argument("--since", metavar="TS", help="ISO timestamp, e.g. 2026-11-25T10:00:00Z")
    listing.add_argument("--until", metavar="TS", help="ISO timestamp (exclusive)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many records (default 100)")
