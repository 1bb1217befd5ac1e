"""`python -m service …` as a person runs it: every command, its exit code and its output, against
the test run's database and Kafka topic prefix (subprocesses, not in-process calls)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime as dt
import io
import os
import pathlib
import time
import urllib.error
import urllib.request
import uuid

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paylink.v1 import account_pb2, link_pb2
from paylink.v1 import common_pb2 as c

from service import cli, cli_parser, migrate, runtime, sealed
from service.config import Settings
from tests.cli.util import fields, free_port, run, service_env, serving
from tests.harness import (
    RECORD_JOBS,
    RELEASE_FLOOR_OF_0174,
    TEST_ALLOCATION,
    Client,
    EventLog,
    get_ready,
    link_account,
    set_release_floor,
    wait_job,
)

COMMANDS = [
    "serve",
    "api",
    "worker",
    "relay",
    "migrate",
    "workspace",
    "secret",
    "vault",
    "events",
    "jobs",
    "erasure",
    "audit",
]


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return service_env(settings)


def help_of(words: list[str]) -> tuple[int, str, str]:
    """`python -m service *words --help` in this interpreter: the same `cli.main` a subprocess runs
    (the grammar prints the help and exits before any configuration is read)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        cli.main([*words, "--help"] if words else [])
    return int(exit_.value.code or 0), out.getvalue(), err.getvalue()


def grammar_leaves() -> set[tuple[str, str | None]]:
    """Every (command, action) the grammar accepts."""
    leaves: set[tuple[str, str | None]] = set()
    for action in cli_parser.build()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                leaves.update((name, child) for a in actions for child in a.choices)
                if not actions:
                    leaves.add((name, None))
    return leaves


async def test_help_lists_every_command_and_every_command_has_help(env: dict[str, str]) -> None:
    # One real interpreter: `python -m service --help` as a person runs it.
    top = await run(["--help"], env, within=120)
    assert top.code == 0, top.err
    listed = top.out.split("positional arguments:")[1].split("options:")[0]
    for command in COMMANDS:
        assert f"\n    {command}" in listed, command
    assert "PAYLINK_" in top.out and "exit codes" in top.out and "docs/configuration.md" in top.out

    # Every command the dispatch table runs is in the grammar and the other way round, and each
    # one's --help (rendered here, through the same entry point) describes it.
    assert grammar_leaves() == set(cli.COMMANDS)
    assert {command for command, _ in cli.COMMANDS} == set(COMMANDS)
    for command, action in sorted(cli.COMMANDS, key=str):
        words = [command] if action is None else [command, action]
        name = " ".join(words)
        code, out, err = help_of(words)
        assert code == 0, (name, err)
        assert out.startswith(f"usage: python -m service {name}"), (name, out)
        assert len(out.splitlines()) >= 4, (name, out)  # a description, not just usage
        if action is not None:  # the command alone lists its actions
            assert action in help_of([command])[1], name
    # No command at all, or an unknown one: usage error.
    missing, unknown = help_of([]), help_of(["frobnicate"])
    assert missing[0] == 2 and "required: COMMAND" in missing[2]
    assert unknown[0] == 2 and "invalid choice" in unknown[2]


async def test_bad_configuration_exits_2_naming_the_variable(settings: Settings, env: dict[str, str]) -> None:
    port, keys, level, several = await asyncio.gather(
        run(["workspace", "list"], {**env, "PAYLINK_GRPC_PORT": "abc"}),
        run(["workspace", "list"], {**env, "PAYLINK_VAULT_KEYS": "not-a-key-ring"}),
        run(["serve"], {**env, "PAYLINK_LOG_LEVEL": "chatty"}),
        run(["migrate"], {**env, "PAYLINK_DATABASE_URL": "mysql://x", "PAYLINK_KAFKA_BOOTSTRAP": "nohost"}),
    )
    assert port.code == 2 and port.out == ""
    assert "PAYLINK_GRPC_PORT" in port.err and "'abc'" in port.err and "valid integer" in port.err
    assert keys.code == 2 and "PAYLINK_VAULT_KEYS" in keys.err
    assert level.code == 2 and "PAYLINK_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR" in level.err
    assert several.code == 2
    assert "PAYLINK_DATABASE_URL" in several.err and "PAYLINK_KAFKA_BOOTSTRAP" in several.err
    assert "mysql://x" not in several.err  # a URL may hold a password: never echoed

    # A typo in a variable name is ignored with a warning.
    typo = await run(["workspace", "list"], {**env, "PAYLINK_GRPC_PROT": "1"})
    assert typo.code == 0 and "warning: PAYLINK_GRPC_PROT is not a paylink setting" in typo.err


async def test_unreachable_database_exits_1_without_the_password(env: dict[str, str]) -> None:
    result = await run(
        ["workspace", "list"], {**env, "PAYLINK_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"}
    )
    assert result.code == 1
    assert "PAYLINK_DATABASE_URL" in result.err and "hunter2" not in result.err
    assert "Traceback" not in result.err


async def test_migrate_is_idempotent(env: dict[str, str]) -> None:
    result = await run(["migrate"], env)
    assert result.code == 0, result.err
    assert result.out.strip() == "database is up to date"


async def test_workspace_create_and_list_then_the_secret_calls_rpcs(
    env: dict[str, str], channel: grpc.aio.Channel
) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    created = await run(["workspace", "create", name], env)
    assert created.code == 0, created.err
    out = fields(created.out)
    workspace_id, secret, key_id = out["workspace_id"], out["api_secret"], out["key_id"]
    assert uuid.UUID(workspace_id) and secret.startswith(f"pl_{key_id}_")

    client = Client(channel, secret)
    listed = await client.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=client.md())
    assert list(listed.accounts) == []

    production = await run(["workspace", "create", f"{name}-prod", "--production"], env)
    assert production.code == 0, production.err
    listing = await run(["workspace", "list"], env)
    assert listing.code == 0
    lines = {line.split()[0]: line for line in listing.out.splitlines()}
    assert lines[workspace_id].split()[1:] == [
        "sandbox",
        "active",
        "secrets=1",
        "accounts=0",
        "connected=0",
        "jobs=0",
        name,
    ]
    assert lines[fields(production.out)["workspace_id"]].split()[1] == "production"

    too_long = await run(["workspace", "create", "x" * 101], env)
    assert too_long.code == 2 and "1 to 100 characters" in too_long.err

    # A second secret for the same workspace works as well, and both are listed by key id.
    second = await run(["secret", "create", workspace_id], env)
    assert second.code == 0, second.err
    other = Client(channel, fields(second.out)["api_secret"])
    await other.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=other.md())
    secrets = await run(["secret", "list", workspace_id], env)
    assert secrets.code == 0
    assert sorted(line.split()[0] for line in secrets.out.splitlines()) == sorted(
        [key_id, fields(second.out)["key_id"]]
    )
    assert all(line.endswith("active") for line in secrets.out.splitlines())

    unknown, malformed = await asyncio.gather(
        run(["secret", "create", str(uuid.uuid4())], env), run(["secret", "list", "nope"], env)
    )
    assert unknown.code == 1 and "not found" in unknown.err
    assert malformed.code == 2 and "must be a UUID" in malformed.err


async def test_secret_revoke_takes_effect_within_the_auth_cache_ttl(
    env: dict[str, str], channel: grpc.aio.Channel
) -> None:
    created = fields((await run(["workspace", "create", "cli-revoke"], env)).out)
    client = Client(channel, created["api_secret"])
    request = account_pb2.ListAccountsRequest()
    await client.accounts.ListAccounts(request, metadata=client.md())  # now cached by the server

    revoked = await run(["secret", "revoke", created["key_id"]], env)
    assert revoked.code == 0 and revoked.out.startswith("revoked"), revoked.err
    started = time.monotonic()
    while True:
        try:
            await client.accounts.ListAccounts(request, metadata=client.md())
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() - started < 8, "the revoked secret still works after the 5 s cache TTL"
        await asyncio.sleep(0.25)
    listing = await run(["secret", "list", created["workspace_id"]], env)
    assert "revoked" in listing.out

    again = await run(["secret", "revoke", created["key_id"]], env)
    assert again.code == 1 and "no active secret" in again.err


async def test_events_replay_republishes_with_the_original_event_ids(
    client: Client, events: EventLog, env: dict[str, str], app: runtime.Running
) -> None:
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)).isoformat()
    _, session = await client.connect("user_good", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    await events.settled(account_id)
    rows = await app.deps.pool.fetch(
        "SELECT event_id, event_type FROM outbox WHERE account_id = $1", uuid.UUID(account_id)
    )
    original = {str(r["event_id"]) for r in rows}
    assert {r.event.event_id for r in events.for_account(account_id)} == original
    before = {r.event.event_id: r for r in events.for_account(account_id)}
    before_counts = collections.Counter(r.event.event_id for r in events.for_account(account_id))

    one = await run(
        ["events", "replay", "--since", since, "--account", account_id, "--topic", "identity.added"], env
    )
    assert one.code == 0, one.err
    assert one.out.strip() == "replayed 1 events"
    everything = await run(["events", "replay", "--since", since, "--account", account_id], env)
    assert everything.code == 0, everything.err
    assert everything.out.strip() == f"replayed {len(original)} events"

    # Every event arrives again with the same event_id, key, headers and bytes: once more per replay
    # that covered it (identity.added twice). Counted against what had arrived before, since the
    # relay itself may already have delivered an event twice (at least once).
    identity_id = next(str(r["event_id"]) for r in rows if r["event_type"] == "identity.added")
    prior = collections.Counter(before_counts)
    wanted = {e: prior[e] + (2 if e == identity_id else 1) for e in original}
    deadline = time.monotonic() + 30
    while True:
        found = events.for_account(account_id)
        counts = collections.Counter(r.event.event_id for r in found)
        if all(counts[e] >= n for e, n in wanted.items()):
            break
        assert time.monotonic() < deadline, f"replayed events missing: {counts} < {wanted}"
        await asyncio.sleep(0.1)
    assert set(counts) == original
    assert counts[identity_id] - prior[identity_id] >= 2
    for r in found:
        first = before[r.event.event_id]
        assert (r.topic, r.key, r.headers, r.event) == (first.topic, first.key, first.headers, first.event)

    none = await run(["events", "replay", "--since", "2999-01-01T00:00:00Z"], env)
    assert none.code == 0 and none.out.strip() == "replayed 0 events"
    bad_topic, bad_since, bad_account = await asyncio.gather(
        run(["events", "replay", "--since", since, "--topic", "identity.removed"], env),
        run(["events", "replay", "--since", "yesterday"], env),
        run(["events", "replay", "--since", since, "--account", "42"], env),
    )
    assert bad_topic.code == 2 and "identity.added" in bad_topic.err  # lists the real ones
    assert bad_since.code == 2 and "ISO timestamp" in bad_since.err
    assert bad_account.code == 2 and "UUID" in bad_account.err


async def test_jobs_retry_runs_an_errored_job_again(
    client: Client, events: EventLog, env: dict[str, str]
) -> None:
    _, session = await client.connect("user_error", [c.JOB_NAME_IDENTITY])
    done = await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    job_id = done.jobs[0].job_id
    failed = await wait_job(client, job_id)
    assert failed.status == c.JOB_STATUS_ERROR
    await events.wait_for(lambda r: r.event.event == "identity.added" and r.event.job.job_id == job_id)

    result = await run(["jobs", "retry", job_id], env)
    assert result.code == 0, result.err
    assert result.out.strip() == f"job {job_id} queued again"
    again = await wait_job(
        client,
        job_id,
        until=lambda j: j.status == c.JOB_STATUS_ERROR and j.completed_at != failed.completed_at,
    )
    assert again.error_code == failed.error_code
    # The new outcome is published too: a second identity.added for the same job.
    outcomes = await events.wait_for(
        lambda r: r.event.event == "identity.added" and r.event.job.job_id == job_id, count=2
    )
    assert len({r.event.event_id for r in outcomes}) == 2

    _, good = await link_account(client, "user_good")
    success_job = good.jobs[0].job_id
    not_error, unknown, malformed = await asyncio.gather(
        run(["jobs", "retry", success_job], env),
        run(["jobs", "retry", str(uuid.uuid4())], env),
        run(["jobs", "retry", "not-a-job"], env),
    )
    assert not_error.code == 1 and "is success; only jobs that ended in error" in not_error.err
    assert unknown.code == 1 and "not found" in unknown.err
    assert malformed.code == 2 and "must be a UUID" in malformed.err


@pytest.mark.parametrize("command", ["serve", "api", "worker", "relay"])
async def test_process_commands_start_and_stop_on_sigterm(
    command: str, env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    port, metrics_port = free_port(), free_port()
    proc_env = {**env, "PAYLINK_GRPC_PORT": str(port), "PAYLINK_METRICS_PORT": str(metrics_port)}
    async with serving(command, proc_env, tmp_path) as server:
        parts = {"serve": "api+worker+relay"}.get(command, command)
        assert server.banner.startswith(f"paylink serving {parts}")
        assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in server.banner
        metrics = await asyncio.to_thread(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            )
        )
        assert 'paylink_dependency_up{dependency="database"} 1.0' in metrics
        status, ready = await asyncio.to_thread(get_ready, metrics_port)  # every process, api or not
        assert (status, ready["ready"], ready["database"]) == (200, True, True), ready
        if command in ("serve", "api"):
            assert f"127.0.0.1:{port}" in server.banner
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        if command in ("serve", "worker", "relay"):
            assert "paylink_job_queue_depth" in metrics and "paylink_outbox_unpublished" in metrics
    assert '"shutting down"' in server.stderr()


async def test_a_worker_process_serves_ready_that_follows_the_release_guard(
    settings: Settings, fresh_database: str, tmp_path: pathlib.Path
) -> None:
    """`python -m service worker` has no gRPC port: GET /ready on its metrics port is its readiness.
    200 while the database answers and the release guard accepts it; 503 with the reason (and the
    fix) once a newer release's floor refuses it; 200 again once the floor is lowered."""
    metrics_port = free_port()
    env = service_env(
        settings,
        PAYLINK_DATABASE_URL=fresh_database,
        PAYLINK_METRICS_PORT=str(metrics_port),
        PAYLINK_HEALTH_CHECK_SECONDS="0.5",
        PAYLINK_MONITORING_SCHEDULER="false",
    )

    async def answers(status: int, within: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + within
        while True:
            got, body = await asyncio.to_thread(get_ready, metrics_port)
            if got == status:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"/ready answered {got} {body}, not {status}")
            await asyncio.sleep(0.1)

    async with serving("worker", env, tmp_path) as server:
        assert f"readiness on http://127.0.0.1:{metrics_port}/ready" in server.banner
        ready = await answers(200)
        assert ready == {
            "ready": True,
            "reason": "",
            "database": True,
            "kafka": True,
            "kafka_required": False,
            "release_refused": False,
        }
        await set_release_floor(fresh_database, migrate.newest() + 1)
        try:
            refused = await answers(503)
            assert refused["ready"] is False and refused["release_refused"] is True and refused["database"]
            assert "stop this process and run the newer release" in str(refused["reason"])
        finally:
            await set_release_floor(fresh_database, RELEASE_FLOOR_OF_0174)
        assert (await answers(200))["release_refused"] is False


@pytest.mark.parametrize(
    ("command", "publishes"), [("relay", True), ("serve", True), ("worker", False), ("api", False)]
)
async def test_ready_requires_kafka_exactly_in_a_process_that_publishes_events(
    command: str, publishes: bool, settings: Settings, fresh_database: str, tmp_path: pathlib.Path
) -> None:
    """Each process pointed at a Kafka broker that is not there (a free port nobody listens on): a
    process that runs the relay (`relay`, `serve`) cannot do its work, publishing the outbox, so
    GET /ready answers 503 saying Kafka does not answer; an `api` or a `worker` writes its events to
    the outbox, which waits for the broker, so it stays ready (200), Kafka reported down but not
    required. The gRPC health of `serve` keeps its paylink.v1 services SERVING (RPCs work; their
    events wait in the outbox) and "" NOT_SERVING. (On the code before: 200 in every process.)"""
    metrics_port, grpc_port, dead = free_port(), free_port(), free_port()
    env = service_env(
        settings,
        PAYLINK_DATABASE_URL=fresh_database,
        PAYLINK_KAFKA_BOOTSTRAP=f"127.0.0.1:{dead}",
        PAYLINK_METRICS_PORT=str(metrics_port),
        PAYLINK_GRPC_PORT=str(grpc_port),
        PAYLINK_HEALTH_CHECK_SECONDS="0.5",
        PAYLINK_MONITORING_SCHEDULER="false",
        PAYLINK_SHUTDOWN_GRACE_SECONDS="1",
    )
    async with serving(command, env, tmp_path) as server:
        assert server.banner.startswith("paylink serving")
        status, ready = await asyncio.to_thread(
            get_ready, metrics_port
        )  # the first check ran before the banner
        assert (ready["database"], ready["kafka"], ready["kafka_required"]) == (True, False, publishes), ready
        if publishes:
            assert (status, ready["ready"]) == (503, False), ready
            assert ready["reason"] == "Kafka does not answer: this process publishes events (relay)"
        else:
            assert (status, ready["ready"], ready["reason"]) == (200, True, ""), ready
        if command == "serve":
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING
                name = "paylink.v1.LinkTokenService"
                service = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert service.status == health_pb2.HealthCheckResponse.SERVING


async def test_api_on_a_taken_port_exits_1_with_a_message(env: dict[str, str], app: runtime.Running) -> None:
    assert app.api is not None
    result = await run(["api"], {**env, "PAYLINK_GRPC_PORT": str(app.api.port)})
    assert result.code == 1
    assert f"cannot listen on 127.0.0.1:{app.api.port} (PAYLINK_GRPC_HOST, PAYLINK_GRPC_PORT)" in result.err
    assert "Traceback" not in result.err


async def test_vault_reencrypt_reseals_under_the_new_primary_key(
    settings: Settings, fresh_database: str, tmp_path: pathlib.Path
) -> None:
    """On a database of its own: re-encrypting under a new key must not touch the shared one."""
    old_ring = settings.vault_keys
    new_key = "k" + uuid.uuid4().hex[:8]
    new_spec = f"{new_key}:{base64.b64encode(os.urandom(32)).decode()}"
    prefix = f"vault{uuid.uuid4().hex[:6]}."
    env = service_env(settings, PAYLINK_DATABASE_URL=fresh_database, PAYLINK_TOPIC_PREFIX=prefix)
    secret = fields((await run(["workspace", "create", "vault-test"], env)).out)["api_secret"]
    port = free_port()

    # Connect an account (credentials sealed under the old key) and start a deposit switch token.
    async with (
        serving("serve", {**env, "PAYLINK_GRPC_PORT": str(port)}, tmp_path),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        client = Client(ch, secret)
        _, session = await link_account(
            client, "user_good", [c.JOB_NAME_IDENTITY, c.JOB_NAME_PAYSTUBS, *RECORD_JOBS]
        )
        identity = await client.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=session.account_id), metadata=client.md()
        )
        await client.token(
            [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], account_id=session.account_id, allocation=TEST_ALLOCATION
        )
    conn = await asyncpg.connect(fresh_database)
    try:
        old_ids = {r["key_id"] for r in await conn.fetch("SELECT key_id FROM account_credentials")}
        assert old_ids and new_key not in old_ids

        rotated = {"PAYLINK_VAULT_KEYS": f"{old_ring},{new_spec}", "PAYLINK_VAULT_PRIMARY_KEY": new_key}
        result = await run(["vault", "reencrypt"], {**env, **rotated})
        assert result.code == 0, result.err
        counts = {line.split(":")[0]: int(line.split()[1]) for line in result.out.splitlines()}
        assert counts["account_credentials.sealed"] == 1
        assert counts["link_tokens.allocation_sealed"] == 1  # the switch token's full account number
        # Every column of personal data re-sealed, and nothing left under the old key.
        assert {col.name: counts[col.name] > 0 for col in sealed.PERSONAL_DATA} == {
            col.name: True for col in sealed.PERSONAL_DATA
        }
        for col in sealed.PERSONAL_DATA:
            blobs = [
                bytes(r["v"])
                for r in await conn.fetch(
                    f"SELECT {col.column} AS v FROM {col.table} WHERE {col.column} IS NOT NULL"
                )
            ]
            assert blobs and {b[2 : 2 + b[1]].decode() for b in blobs} == {new_key}, col.name
        again = await run(["vault", "reencrypt"], {**env, **rotated})
        assert again.code == 0 and all(line.endswith(": 0 re-encrypted") for line in again.out.splitlines())

        assert {r["key_id"] for r in await conn.fetch("SELECT key_id FROM account_credentials")} == {new_key}
        blob = await conn.fetchval("SELECT sealed FROM account_credentials")
        assert bytes(blob[2 : 2 + blob[1]]).decode() == new_key  # the blob header names the new key
    finally:
        await conn.close()

    # Only the new key from now on: stored data still reads, and re-access opens the credentials.
    only_new = {"PAYLINK_VAULT_KEYS": new_spec, "PAYLINK_GRPC_PORT": str(port)}
    async with (
        serving("serve", {**env, **only_new}, tmp_path),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        client = Client(ch, secret)
        same = await client.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=session.account_id), metadata=client.md()
        )
        assert same.full_name == identity.full_name
        shifts = await client.accounts.ListShifts(
            account_pb2.ListShiftsRequest(account_id=session.account_id), metadata=client.md()
        )
        docs = await client.accounts.ListDocuments(
            account_pb2.ListDocumentsRequest(account_id=session.account_id), metadata=client.md()
        )
        assert shifts.shifts and docs.documents
        chunks = client.accounts.DownloadDocument(
            account_pb2.DownloadDocumentRequest(
                account_id=session.account_id, document_id=docs.documents[0].id
            ),
            metadata=client.md(),
        )
        assert len(b"".join([chunk.data async for chunk in chunks])) == docs.documents[0].size_bytes
        token = await client.token(
            [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], account_id=session.account_id, allocation=TEST_ALLOCATION
        )
        bound = await client.link.StartSession(
            link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
        )
        assert bound.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING  # no credential screen
        done = await client.wait_session(bound.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
        assert [j.outcome for j in done.jobs] == [c.JOB_OUTCOME_SUCCESS]
