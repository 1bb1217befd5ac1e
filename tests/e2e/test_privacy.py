"""Privacy acceptance (issue 17), on a database of its own so that every row in it belongs to the
people these tests create:

- after full sandbox flows no table holds a sandbox user's name, birth date, SSN digits, e-mail,
  phone, address or full deposit account number in clear, and no Kafka message does either;
- erasing an end user removes every byte of their data (also from inside the sealed values),
  publishes end_user.erased, leaves other users untouched, waits for a running job, and is resumed
  after the process that ran it was killed halfway.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from paylink.v1 import account_pb2, common_pb2, job_pb2, privacy_pb2

from service import audit, auth, erasure, runtime
from service.config import Settings
from tests.harness import (
    ALL_JOBS,
    Client,
    EventLog,
    base_settings,
    create_test_database,
    drop_database,
    link_account,
    rpc_error,
    wait_event_ids,
)
from tests.privacy_scan import dump, hits, opened, text_of

C = common_pb2
ERASED = "user_good+erase-me"
KEPT = "user_good+keep-me"
ERASED_NUMBER = "40417332905861"  # the erased user's full deposit account number
KEPT_NUMBER = "55018862337104"


def _allocation(number: str) -> C.Allocation:
    target = C.AllocationTarget(
        type=C.DEPOSIT_ACCOUNT_TYPE_CHECKING, routing_number="021000021", account_number=number, name="Pay"
    )
    return C.Allocation(type=C.ALLOCATION_TYPE_AMOUNT, value=20_000, targets=[target])


class Stack:
    def __init__(self, settings: Settings, app: runtime.Running, channel: grpc.aio.Channel, events: EventLog):
        self.settings, self.app, self.channel, self.events = settings, app, channel, events

    async def client(self) -> Client:
        _, secret = await auth.create_workspace(self.app.deps.pool, f"ws-{uuid.uuid4().hex[:6]}")
        return Client(self.channel, secret)


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    admin = base_settings().database_url
    url = await create_test_database(admin)
    settings = base_settings().model_copy(
        update={
            "database_url": url,
            "topic_prefix": f"priv{uuid.uuid4().hex[:8]}.",
            "grpc_port": 0,
            "sandbox_pending_delay_seconds": 2.0,
            "worker_poll_seconds": 0.5,
            "relay_poll_seconds": 0.5,
            "erasure_sweep_seconds": 3600.0,  # the tests resume erasures themselves
            "shutdown_grace_seconds": 2.0,
        }
    )
    app = await runtime.start(settings)
    events = EventLog(settings.kafka_bootstrap, settings.topic_prefix)
    await events.start()
    assert app.api is not None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.api.port}") as channel:
            yield Stack(settings, app, channel, events)
    finally:
        await events.stop()
        await app.stop()
        await drop_database(admin, url)


async def _published(stack: Stack) -> None:
    """Waits until everything in the outbox was consumed back from Kafka."""
    rows = await stack.app.deps.pool.fetch("SELECT event_id::text AS id FROM outbox")
    await wait_event_ids(stack.events, {r["id"] for r in rows})


async def _link_person(client: Client, username: str, number: str, end_user: str) -> list[str]:
    """Two accounts of one person (two platforms), every job, a switch to a full account number,
    and an idempotent link token; returns the account ids."""
    out = []
    for platform in ("sandbox_adp", "sandbox_workday"):
        _, session = await link_account(
            client,
            username,
            ALL_JOBS,
            platform_id=platform,
            allocation=_allocation(number),
            end_user_id=end_user,
            request_id=f"token-{end_user}-{platform}",
        )
        out.append(session.account_id)
    return out


def _who(workspace: uuid.UUID) -> audit.Who:
    return audit.Who(workspace, "privacy-test", "", "EraseEndUser", f"req-{uuid.uuid4().hex[:6]}")


async def _workspace_of(stack: Stack, account_id: str) -> uuid.UUID:
    return await stack.app.deps.pool.fetchval(  # type: ignore[no-any-return]
        "SELECT workspace_id FROM accounts WHERE id = $1", uuid.UUID(account_id)
    )


async def _rows_of(stack: Stack, account_ids: list[str]) -> list[tuple[str, str]]:
    """Every value of every row that belongs to these accounts, their link tokens, sessions and
    jobs, and their workspace's idempotency records, with sealed values opened."""
    pool, vault = stack.app.deps.pool, stack.app.deps.vault
    ids = [uuid.UUID(a) for a in account_ids]
    workspace = await pool.fetchval("SELECT workspace_id FROM accounts WHERE id = $1", ids[0])
    token_ids = [
        r["id"]
        for r in await pool.fetch(
            "SELECT t.id FROM link_tokens t JOIN accounts a ON a.workspace_id = t.workspace_id"
            " AND a.end_user_id = t.end_user_id WHERE a.id = ANY($1::uuid[])",
            ids,
        )
    ]
    keys = set(ids) | set(token_ids)
    out: list[tuple[str, str]] = []
    for table, where, args in [
        ("accounts", "id = ANY($1::uuid[])", ids),
        ("jobs", "account_id = ANY($1::uuid[])", ids),
        ("link_tokens", "id = ANY($1::uuid[])", token_ids),
        ("link_sessions", "link_token_id = ANY($1::uuid[])", token_ids),
        ("job_results", "account_id = ANY($1::uuid[])", ids),
        ("paystubs", "account_id = ANY($1::uuid[])", ids),
        ("account_credentials", "account_id = ANY($1::uuid[])", ids),
        ("outbox", "account_id = ANY($1::uuid[])", ids),
    ]:
        for row in await pool.fetch(f"SELECT * FROM {table} WHERE {where}", args):
            keys |= {v for c, v in row.items() if c == "id" and isinstance(v, uuid.UUID)}
            out += [(f"{table}.{c}", text_of(v)) for c, v in row.items() if v is not None]
    return out + await opened(pool, vault, keys, workspace)


async def test_erasure_removes_every_byte_of_one_end_user_and_nothing_else(stack: Stack) -> None:
    pool, vault = stack.app.deps.pool, stack.app.deps.vault
    client, other_workspace = await stack.client(), await stack.client()
    erased = await _link_person(client, ERASED, ERASED_NUMBER, "eu-erase")
    kept = await _link_person(client, KEPT, KEPT_NUMBER, "eu-keep")
    elsewhere = await _link_person(
        other_workspace, ERASED, ERASED_NUMBER, "eu-erase"
    )  # same id, other workspace
    before = {
        a: await client.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=a), metadata=client.md()
        )
        for a in kept
    }
    everything = await dump(pool) + await opened(pool, vault)
    assert hits(everything, ERASED, ERASED_NUMBER), "the scan must see the person before the erasure"

    workspace = await _workspace_of(stack, erased[0])
    row = await erasure.request(stack.app.deps, _who(workspace), "eu-erase")
    done = erasure.to_proto(row)
    assert done.state == privacy_pb2.ERASURE_STATE_COMPLETED
    assert sorted(done.account_ids) == sorted(erased)
    assert (
        done.erased["job_results"] >= 2 * 4
        and done.erased["paystubs"] >= 2
        and done.erased["account_credentials"] == 2
    )

    # end_user.erased for each erased account, keyed by it.
    found = await stack.events.wait_for(lambda r: r.event.event == "end_user.erased", count=2)
    assert {r.key for r in found} == set(erased)
    assert {r.event.end_user_erased.erasure_id for r in found} == {done.id}
    assert all(sorted(r.event.end_user_erased.account_ids) == sorted(erased) for r in found)

    # Not a byte of the person left, in clear or sealed, except in the other workspace's copy.
    await _published(stack)
    everything = await dump(pool) + await opened(pool, vault)
    assert hits(everything, ERASED, ERASED_NUMBER), "the other workspace's copy of the same person stays"
    mine = [(where, text) for where, text in await _rows_of(stack, erased)]
    assert hits(mine, ERASED, ERASED_NUMBER) == []
    for table in ("job_results", "paystubs", "account_credentials"):
        assert (
            await pool.fetchval(f"SELECT count(*) FROM {table} WHERE account_id = ANY($1::uuid[])", erased)
            == 0
        )
    # The skeleton stays: accounts, jobs with their outcomes.
    jobs = await pool.fetch(
        "SELECT status, params, params_sealed FROM jobs WHERE account_id = ANY($1::uuid[])", erased
    )
    assert len(jobs) == 2 * len(ALL_JOBS) and {j["status"] for j in jobs} == {"success"}
    assert all(bytes(j["params"]) == b"" and j["params_sealed"] is None for j in jobs)
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=erased[0]), metadata=client.md()
    )
    assert not account.connected and account.monitoring_status == C.MONITORING_STATUS_CUSTOMER_DISABLED
    error = await rpc_error(
        client.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=erased[0]), metadata=client.md()
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await rpc_error(
        client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=erased[0], name=C.JOB_NAME_IDENTITY), metadata=client.md()
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Other users untouched: same workspace, and the same end user id in another workspace.
    for a in kept:
        now = await client.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=a), metadata=client.md()
        )
        assert now == before[a]
    for a in elsewhere:
        person = await other_workspace.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=a), metadata=other_workspace.md()
        )
        assert person.full_name
    keys = {
        r["request_id"]
        for r in await pool.fetch(
            "SELECT request_id FROM idempotency_keys WHERE workspace_id = $1", workspace
        )
    }
    assert keys == {"token-eu-keep-sandbox_adp", "token-eu-keep-sandbox_workday"}

    # Idempotent: asking again returns the same, completed erasure; and it was audited once.
    again = erasure.to_proto(await erasure.request(stack.app.deps, _who(workspace), "eu-erase"))
    assert again.id == done.id and again.state == done.state
    records = await pool.fetch(
        "SELECT caller, erasure_id FROM audit_records WHERE action = $1 AND workspace_id = $2",
        audit.ERASE,
        workspace,
    )
    assert [(r["caller"], str(r["erasure_id"])) for r in records] == [("privacy-test", done.id)]

    # Erasing the other workspace's copy leaves nothing of the person anywhere.
    await erasure.request(stack.app.deps, _who(await _workspace_of(stack, elsewhere[0])), "eu-erase")
    assert hits(await dump(pool) + await opened(pool, vault), ERASED, ERASED_NUMBER) == []
    assert hits(await dump(pool) + await opened(pool, vault), KEPT, KEPT_NUMBER)


_ERASE_IN_A_PROCESS = """
import asyncio, sys, uuid
from service import audit, erasure, runtime
from service.config import Settings

async def main() -> None:
    deps = await runtime.build_deps(Settings())
    who = audit.Who(uuid.UUID(sys.argv[1]), "privacy-test", "", "EraseEndUser", "crash")
    row = await erasure.request(deps, who, sys.argv[2])
    print(row["state"])

asyncio.run(main())
"""


def _erase_in_a_process(
    stack: Stack, workspace: uuid.UUID, end_user: str, crash_after: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PAYLINK_DATABASE_URL": stack.settings.database_url,
        "PAYLINK_TOPIC_PREFIX": stack.settings.topic_prefix,
        "PYTHONPATH": os.pathsep.join([".", "generated"]),
    }
    if crash_after:
        env["PAYLINK_FAULT_ERASURE_EXIT_AFTER_STEP"] = crash_after
    return subprocess.run(
        [sys.executable, "-c", _ERASE_IN_A_PROCESS, str(workspace), end_user],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_erasure_killed_halfway_is_resumed(stack: Stack) -> None:
    pool = stack.app.deps.pool
    client = await stack.client()
    number = "73920184466150"
    accounts = await _link_person(client, "user_good+crash", number, "eu-crash")
    workspace = await _workspace_of(stack, accounts[0])

    died = await asyncio.to_thread(_erase_in_a_process, stack, workspace, "eu-crash", "data")
    assert died.returncode == 137, died.stderr[-2000:]
    # Killed right after the data step committed: the record says what is left, nothing more.
    plan = await pool.fetchrow("SELECT state, step, account_ids FROM erasures WHERE end_user_id = 'eu-crash'")
    assert plan is not None and (plan["state"], plan["step"]) == ("in_progress", 3)
    assert sorted(str(a) for a in plan["account_ids"]) == sorted(accounts)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM job_results WHERE account_id = ANY($1::uuid[])", plan["account_ids"]
        )
        == 0
    )
    assert hits(await _rows_of(stack, accounts), "user_good+crash", number), "history is not erased yet"
    assert not await pool.fetchval(
        "SELECT true FROM outbox WHERE event_type = 'end_user.erased' AND account_id = ANY($1::uuid[])",
        plan["account_ids"],
    )

    resumed = await asyncio.to_thread(_erase_in_a_process, stack, workspace, "eu-crash")
    assert resumed.returncode == 0 and resumed.stdout.strip() == "completed", resumed.stderr[-2000:]
    assert hits(await _rows_of(stack, accounts), "user_good+crash", number) == []
    assert await pool.fetchval("SELECT count(*) FROM erasures WHERE end_user_id = 'eu-crash'") == 1
    found = await stack.events.wait_for(
        lambda r: r.event.event == "end_user.erased" and r.event.end_user_erased.end_user_id == "eu-crash",
        count=2,
    )
    assert {r.key for r in found} == set(accounts)


async def test_an_erasure_waits_for_a_running_job_then_completes(stack: Stack) -> None:
    pool = stack.app.deps.pool
    client = await stack.client()
    _, session = await client.connect("user_pending+wait", [C.JOB_NAME_IDENTITY], end_user_id="eu-wait")
    account = session.account_id
    workspace = await _workspace_of(stack, account)
    row = await erasure.request(stack.app.deps, _who(workspace), "eu-wait")
    assert row["state"] == "waiting_for_jobs"
    # Fenced already: disconnected, no credentials.
    assert not await pool.fetchval("SELECT connected FROM accounts WHERE id = $1", uuid.UUID(account))
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM account_credentials WHERE account_id = $1", uuid.UUID(account)
        )
        == 0
    )
    sweeper = erasure.Sweeper(stack.app.deps, 0.2)
    task = asyncio.create_task(sweeper.run())
    try:
        deadline = time.monotonic() + 60
        while (
            state := await pool.fetchval("SELECT state FROM erasures WHERE id = $1", row["id"])
        ) != "completed":
            assert time.monotonic() < deadline, f"erasure still {state}"
            await asyncio.sleep(0.1)
    finally:
        sweeper.stop()
        await task
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE account_id = $1 AND status IN ('queued', 'running', 'pending')",
            uuid.UUID(account),
        )
        == 0
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM job_results WHERE account_id = $1", uuid.UUID(account)) == 0
    )
