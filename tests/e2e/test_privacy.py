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
from typing import Any

import grpc
import pytest
from paylink.v1 import account_pb2, common_pb2, job_pb2, link_pb2, privacy_pb2, sandbox_pb2

from service import auth, erasure, runtime
from service.config import Settings
from tests.harness import (
    ALL_JOBS,
    RECORD_JOBS,
    Client,
    EventLog,
    base_settings,
    link_account,
    new_database,
    rpc_error,
    wait_event_ids,
    wait_job,
)
from tests.privacy_scan import dump, hits, opened, personal_messages, text_of

C = common_pb2
EVERY_JOB = [*ALL_JOBS, *RECORD_JOBS]
ERASED = "user_good+forget-me"  # hourly: has shifts
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
    async with new_database() as url:
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


async def _published(stack: Stack) -> None:
    """Waits until everything in the outbox was consumed back from Kafka."""
    rows = await stack.app.deps.pool.fetch("SELECT event_id::text AS id FROM outbox")
    await wait_event_ids(stack.events, {r["id"] for r in rows})


def _jobs(platform: str) -> list[int]:
    """Every job the platform supports (the sandbox Workday has no shifts)."""
    return [j for j in EVERY_JOB if platform != "sandbox_workday" or j != C.JOB_NAME_SHIFTS]


async def _link_person(client: Client, username: str, number: str, end_user: str) -> list[str]:
    """Two accounts of one person (two platforms), every job (shifts, tax forms and documents too),
    a switch to a full account number, and an idempotent link token; returns the account ids."""
    out = []
    for platform in ("sandbox_adp", "sandbox_workday"):
        _, session = await link_account(
            client,
            username,
            _jobs(platform),
            platform_id=platform,
            allocation=_allocation(number),
            end_user_id=end_user,
            request_id=f"token-{end_user}-{platform}",
        )
        out.append(session.account_id)
    return out


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
        ("shifts", "account_id = ANY($1::uuid[])", ids),
        ("tax_forms", "account_id = ANY($1::uuid[])", ids),
        ("documents", "account_id = ANY($1::uuid[])", ids),
        (
            "document_contents",
            "document_id IN (SELECT id FROM documents WHERE account_id = ANY($1::uuid[]))",
            ids,
        ),
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
    documents = [v for v in await _rows_of(stack, erased) if v[0] == "document_contents.content"]
    assert hits(documents, ERASED), "and in their documents' bytes, once opened"

    workspace = await _workspace_of(stack, erased[0])
    done = await client.privacy.EraseEndUser(
        privacy_pb2.EraseEndUserRequest(end_user_id="eu-erase"),
        metadata=[*client.md(), ("x-caller", "privacy-test")],
    )
    assert done.state == privacy_pb2.ERASURE_STATE_COMPLETED
    assert sorted(done.account_ids) == sorted(erased)
    assert (
        done.erased["job_results"] >= 2 * 4
        and done.erased["paystubs"] >= 2
        and done.erased["account_credentials"] == 2
        and done.erased["shifts"] >= 1
        and done.erased["tax_forms"] >= 2
        and done.erased["documents"] >= 2
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
    for table in ("job_results", "paystubs", "account_credentials", "shifts", "tax_forms", "documents"):
        assert (
            await pool.fetchval(f"SELECT count(*) FROM {table} WHERE account_id = ANY($1::uuid[])", erased)
            == 0
        )
    # Every document's bytes too: only the other users' documents keep parts.
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM document_contents c WHERE NOT EXISTS"
            " (SELECT 1 FROM documents d WHERE d.id = c.document_id AND d.account_id <> ALL($1::uuid[]))",
            erased,
        )
        == 0
    )
    # The skeleton stays: accounts, jobs with their outcomes.
    jobs = await pool.fetch(
        "SELECT status, params, params_sealed FROM jobs WHERE account_id = ANY($1::uuid[])", erased
    )
    assert len(jobs) == len(_jobs("sandbox_adp") + _jobs("sandbox_workday"))
    assert {j["status"] for j in jobs} == {"success"}
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
    again = await client.privacy.EraseEndUser(
        privacy_pb2.EraseEndUserRequest(end_user_id="eu-erase"), metadata=client.md()
    )
    assert again == done
    shown = await client.privacy.GetErasure(
        privacy_pb2.GetErasureRequest(erasure_id=done.id), metadata=client.md()
    )
    assert shown == done
    records = await client.privacy.ListAuditRecords(
        privacy_pb2.ListAuditRecordsRequest(action=privacy_pb2.AUDIT_ACTION_ERASE), metadata=client.md()
    )
    assert [(r.caller, r.erasure_id, r.end_user_id, r.resource) for r in records.records] == [
        ("privacy-test", done.id, "eu-erase", privacy_pb2.AUDIT_RESOURCE_END_USER)
    ]

    # Erasing the other workspace's copy leaves nothing of the person anywhere.
    await other_workspace.privacy.EraseEndUser(
        privacy_pb2.EraseEndUserRequest(end_user_id="eu-erase"), metadata=other_workspace.md()
    )
    assert hits(await dump(pool) + await opened(pool, vault), ERASED, ERASED_NUMBER) == []
    assert hits(await dump(pool) + await opened(pool, vault), KEPT, KEPT_NUMBER)


def _cli(stack: Stack, *args: str, crash_after: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m service ARGS` against the stack's database, in a process of its own."""
    env = {
        **os.environ,
        "PAYLINK_DATABASE_URL": stack.settings.database_url,
        "PAYLINK_TOPIC_PREFIX": stack.settings.topic_prefix,
    }
    if crash_after:  # the process dies like a SIGKILL right after this step committed
        env["PAYLINK_FAULT_ERASURE_EXIT_AFTER_STEP"] = crash_after
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_an_erasure_killed_halfway_is_resumed(stack: Stack) -> None:
    pool = stack.app.deps.pool
    client = await stack.client()
    number = "73920184466150"
    accounts = await _link_person(client, "user_good+crash", number, "eu-crash")
    workspace = str(await _workspace_of(stack, accounts[0]))

    died = await asyncio.to_thread(_cli, stack, "erasure", "erase", workspace, "eu-crash", crash_after="data")
    assert died.returncode == 137, died.stderr[-2000:]
    # Killed right after the data step committed: the record says what is left, nothing more.
    plan = await pool.fetchrow(
        "SELECT id, state, step, account_ids FROM erasures WHERE end_user_id = 'eu-crash'"
    )
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
    shown = await asyncio.to_thread(_cli, stack, "erasure", "show", workspace, str(plan["id"]))
    assert "state=IN_PROGRESS" in shown.stdout, shown.stderr[-2000:]

    resumed = await asyncio.to_thread(_cli, stack, "erasure", "erase", workspace, "eu-crash")
    assert resumed.returncode == 0 and "state=COMPLETED" in resumed.stdout, resumed.stderr[-2000:]
    assert f"erasure_id={plan['id']}" in resumed.stdout
    assert hits(await _rows_of(stack, accounts), "user_good+crash", number) == []
    assert await pool.fetchval("SELECT count(*) FROM erasures WHERE end_user_id = 'eu-crash'") == 1
    found = await stack.events.wait_for(
        lambda r: r.event.event == "end_user.erased" and r.event.end_user_erased.end_user_id == "eu-crash",
        count=2,
    )
    assert {r.key for r in found} == set(accounts)
    listed = await asyncio.to_thread(_cli, stack, "audit", "list", workspace, "--end-user", "eu-crash")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1, (
        listed.stdout + listed.stderr[-2000:]
    )
    assert "  cli  -  ERASE  END_USER  -  eu-crash  cli erasure erase  " in listed.stdout


async def test_an_erasure_waits_for_a_running_job_then_completes(stack: Stack) -> None:
    pool = stack.app.deps.pool
    client = await stack.client()
    _, session = await client.connect("user_pending+wait", [C.JOB_NAME_IDENTITY], end_user_id="eu-wait")
    account = uuid.UUID(session.account_id)
    waiting = await client.privacy.EraseEndUser(
        privacy_pb2.EraseEndUserRequest(end_user_id="eu-wait"), metadata=client.md()
    )
    assert waiting.state == privacy_pb2.ERASURE_STATE_WAITING_FOR_JOBS
    # Fenced already: disconnected, no credentials; the pending job is not over yet.
    assert not await pool.fetchval("SELECT connected FROM accounts WHERE id = $1", account)
    assert await pool.fetchval("SELECT count(*) FROM account_credentials WHERE account_id = $1", account) == 0
    sweeper = erasure.Sweeper(stack.app.deps, 0.2)
    task = asyncio.create_task(sweeper.run())
    try:
        deadline = time.monotonic() + 60
        while True:
            now = await client.privacy.GetErasure(
                privacy_pb2.GetErasureRequest(erasure_id=waiting.id), metadata=client.md()
            )
            if now.state == privacy_pb2.ERASURE_STATE_COMPLETED:
                break
            assert time.monotonic() < deadline, f"erasure still {now.state}"
            await asyncio.sleep(0.1)
    finally:
        sweeper.stop()
        await task
    job = await pool.fetchrow("SELECT status, outcome FROM jobs WHERE account_id = $1", account)
    assert job is not None and job["status"] == "error"  # the job ended before the data step ran
    assert await pool.fetchval("SELECT count(*) FROM job_results WHERE account_id = $1", account) == 0


CHANGED_BANK = "Privacy Test Credit Union"


async def _monitoring_changes(client: Client, account_id: str) -> None:
    """A scheduled refresh that finds a new paystub and allocations changed at the platform: the
    events that would carry data (DataChange). The allocation changes first: advancing the clock
    also makes the account's scheduled refreshes due, and a scheduled allocations refresh claimed
    before the change would run on the old platform state (and be the refresh in flight that
    TriggerRefreshes answers with)."""
    target = C.AllocationTarget(
        type=C.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        routing_number="011000015",
        account_number="5550009876",
        name=CHANGED_BANK,
    )
    await client.sandbox.ChangeAllocation(
        sandbox_pb2.ChangeAllocationRequest(account_id=account_id, target=target), metadata=client.md()
    )
    await client.sandbox.AdvanceClock(
        sandbox_pb2.AdvanceClockRequest(account_id=account_id, days=14), metadata=client.md()
    )
    reply = await client.sandbox.TriggerRefreshes(
        sandbox_pb2.TriggerRefreshesRequest(
            account_id=account_id, names=[C.JOB_NAME_PAYSTUBS, C.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS]
        ),
        metadata=client.md(),
    )
    for job_id in reply.job_ids:
        await wait_job(client, job_id)


async def test_no_personal_data_in_clear_in_any_table_or_message(stack: Stack) -> None:
    """Full sandbox flows (every job incl. shifts, tax forms and documents, a switch to a full
    account number, MFA, a refresh, scheduled refreshes that find a new paystub and changed
    allocations); then every value of every table and every Kafka message: none of the users'
    personal data in clear, and no event holds personal data messages at all."""
    client = await stack.client()
    users = {"user_good+clear2": "61820054937216", "user_mfa+clear": "", "user_good+refresh": ""}
    accounts = await _link_person(client, "user_good+clear2", users["user_good+clear2"], "eu-clear")
    _, mfa = await client.connect("user_mfa+clear", ALL_JOBS[:5], mfa_answer="mfa_code", end_user_id="eu-mfa")
    await client.wait_session(mfa.id, link_pb2.LINK_SESSION_STATE_COMPLETED, timeout=60)
    _, refreshed = await link_account(client, "user_good+refresh", ALL_JOBS[:5], end_user_id="eu-refresh")
    job = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(
            account_id=refreshed.account_id, name=C.JOB_NAME_IDENTITY, request_id="clear-refresh"
        ),
        metadata=client.md(),
    )
    await wait_job(client, job.id)
    await _monitoring_changes(client, refreshed.account_id)
    identity = await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=accounts[0]), metadata=client.md()
    )
    assert identity.full_name and identity.date_of_birth  # readable through the API...
    # The employer and a pay figure as the paystub PDF prints it: in no table or message in clear either.
    employment = await client.accounts.GetEmployment(
        account_pb2.GetEmploymentRequest(account_id=accounts[0]), metadata=client.md()
    )
    stubs = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=accounts[0]), metadata=client.md()
    )
    cents = stubs.paystubs[0].gross_pay.amount_cents
    work_and_pay = [employment.employer.name, f"${cents // 100:,}.{cents % 100:02d}"]
    assert all(work_and_pay) and "," in work_and_pay[1], work_and_pay
    await _published(stack)
    pool, vault = stack.app.deps.pool, stack.app.deps.vault
    tables = await dump(pool)
    kafka = [
        (f"kafka {r.topic}", text_of(r.event.SerializeToString()) + repr(r.headers) + r.key)
        for r in stack.events.items
    ]
    assert len(tables) > 300 and len(kafka) > 20
    changes = [
        r
        for r in stack.events.items
        if r.event.WhichOneof("payload") == "job" and r.event.job.HasField("change")
    ]
    assert {r.event.event for r in changes if r.event.job.change.monitoring} >= {
        "paystubs.added",
        "direct_deposit_allocations.added",
    }, "the flow must publish monitoring changes of paystubs and allocations"
    # No event holds pay figures, identity, addresses, allocations or records, at any depth; nor
    # the bank the allocation was moved to.
    assert [(r.event.event, p) for r in stack.events.items for p in personal_messages(r.event)] == []
    assert [
        r.event.event for r in stack.events.items if CHANGED_BANK.encode() in r.event.SerializeToString()
    ] == []
    opened_values = await opened(pool, vault)
    for column in ("tax_forms.data", "document_contents.content"):  # the W-2s and the PDFs name the person
        mine = [v for v in opened_values if v[0] == column]
        assert hits(mine, "user_good+clear2"), f"the scan must see the person in {column} once opened"
    assert [v for v in opened_values if v[0] == "shifts.data"], "the flow stored shifts"
    for needle in work_and_pay:
        assert [w for w, text in opened_values if needle in text], f"the scan must see {needle!r} once opened"
        assert [w for w, text in tables + kafka if needle in text] == [], needle
    for username, number in users.items():
        assert hits(opened_values, username, number), f"the scan must see {username} once opened"
        assert hits(tables, username, number) == [], username  # ...but not in any table in clear
        assert hits(kafka, username, number) == [], username  # ...nor in any Kafka message


async def test_reading_an_identity_writes_exactly_one_audit_record_with_the_caller(stack: Stack) -> None:
    client = await stack.client()
    _, session = await link_account(
        client, "user_good+audit", [C.JOB_NAME_IDENTITY, C.JOB_NAME_INCOME], end_user_id="eu-audit"
    )
    account = session.account_id
    key_id = client.secret.split("_")[1]
    request = account_pb2.GetIdentityRequest(account_id=account)
    md = [*client.md(), ("x-caller", "underwriting-svc"), ("x-request-id", "req-audit-1")]
    identity = await client.accounts.GetIdentity(request, metadata=md)
    assert identity.full_name

    def listing(**filters: Any) -> privacy_pb2.ListAuditRecordsRequest:
        return privacy_pb2.ListAuditRecordsRequest(account_id=account, **filters)

    records = (await client.privacy.ListAuditRecords(listing(), metadata=client.md())).records
    assert len(records) == 1
    (record,) = records
    assert (record.caller, record.key_id, record.action, record.resource) == (
        "underwriting-svc",
        key_id,
        privacy_pb2.AUDIT_ACTION_READ,
        privacy_pb2.AUDIT_RESOURCE_IDENTITY,
    )
    assert (record.account_id, record.end_user_id, record.method, record.request_id) == (
        account,
        "eu-audit",
        "GetIdentity",
        "req-audit-1",
    )
    # Exported for the SIEM on its own topic, once acknowledged.
    (exported,) = {
        r.event.event_id: r for r in await stack.events.wait_for(lambda r: r.event.event_id == record.id)
    }.values()
    assert exported.topic == stack.settings.topic_prefix + "audit.recorded"
    assert exported.event.audit_recorded == record

    # A read that released nothing records nothing; a caller without x-caller is its key id; a
    # malformed x-caller is refused.
    error = await rpc_error(
        client.accounts.GetEmployment(
            account_pb2.GetEmploymentRequest(account_id=account), metadata=client.md()
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    await client.accounts.GetIncome(account_pb2.GetIncomeRequest(account_id=account), metadata=client.md())
    records = (await client.privacy.ListAuditRecords(listing(), metadata=client.md())).records
    assert [(r.caller, r.resource) for r in records] == [
        (f"key:{key_id}", privacy_pb2.AUDIT_RESOURCE_INCOME),
        ("underwriting-svc", privacy_pb2.AUDIT_RESOURCE_IDENTITY),
    ]
    error = await rpc_error(
        client.accounts.GetIdentity(request, metadata=[*client.md(), ("x-caller", "no spaces")])
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "x-caller" in (error.details() or "")
    only = await client.privacy.ListAuditRecords(listing(caller="underwriting-svc"), metadata=client.md())
    assert [r.id for r in only.records] == [record.id]
    other = await stack.client()  # another workspace sees none of them
    assert not (await other.privacy.ListAuditRecords(listing(), metadata=other.md())).records


async def test_every_read_of_personal_data_writes_exactly_one_audit_record(stack: Stack) -> None:
    """Each of the eleven reads of personal data: one record with the caller, the request id and
    the account; a read that found nothing records nothing."""
    client = await stack.client()
    _, session = await link_account(
        client,
        "user_good+erase-1",
        [j for j in _jobs("sandbox_adp") if j != C.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
        end_user_id="eu-reads",
    )
    account = session.account_id

    def md(method: str) -> list[tuple[str, str]]:
        return [*client.md(), ("x-caller", "reader-svc"), ("x-request-id", f"req-{method}")]

    stubs = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account), metadata=md("ListPaystubs")
    )
    docs = await client.accounts.ListDocuments(
        account_pb2.ListDocumentsRequest(account_id=account), metadata=md("ListDocuments")
    )
    assert stubs.paystubs and docs.documents
    doc = docs.documents[0].id
    await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=account), metadata=md("GetIdentity")
    )
    await client.accounts.GetEmployment(
        account_pb2.GetEmploymentRequest(account_id=account), metadata=md("GetEmployment")
    )
    await client.accounts.GetIncome(
        account_pb2.GetIncomeRequest(account_id=account), metadata=md("GetIncome")
    )
    await client.accounts.GetPaystub(
        account_pb2.GetPaystubRequest(account_id=account, paystub_id=stubs.paystubs[0].id),
        metadata=md("GetPaystub"),
    )
    await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account),
        metadata=md("GetDirectDepositAllocations"),
    )
    shifts = await client.accounts.ListShifts(
        account_pb2.ListShiftsRequest(account_id=account), metadata=md("ListShifts")
    )
    forms = await client.accounts.ListTaxForms(
        account_pb2.ListTaxFormsRequest(account_id=account), metadata=md("ListTaxForms")
    )
    assert shifts.shifts and forms.tax_forms
    await client.accounts.GetDocument(
        account_pb2.GetDocumentRequest(account_id=account, document_id=doc), metadata=md("GetDocument")
    )
    chunks = [
        c
        async for c in client.accounts.DownloadDocument(
            account_pb2.DownloadDocumentRequest(account_id=account, document_id=doc, chunk_size=512),
            metadata=md("DownloadDocument"),
        )
    ]
    assert len(chunks) > 1  # one record for the whole download, not one per chunk
    missing = await rpc_error(
        client.accounts.GetDocument(
            account_pb2.GetDocumentRequest(account_id=account, document_id=str(uuid.uuid4())),
            metadata=md("Missing"),
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    expected = {
        "GetIdentity": privacy_pb2.AUDIT_RESOURCE_IDENTITY,
        "GetEmployment": privacy_pb2.AUDIT_RESOURCE_EMPLOYMENT,
        "GetIncome": privacy_pb2.AUDIT_RESOURCE_INCOME,
        "ListPaystubs": privacy_pb2.AUDIT_RESOURCE_PAYSTUBS,
        "GetPaystub": privacy_pb2.AUDIT_RESOURCE_PAYSTUBS,
        "GetDirectDepositAllocations": privacy_pb2.AUDIT_RESOURCE_DIRECT_DEPOSIT_ALLOCATIONS,
        "ListShifts": privacy_pb2.AUDIT_RESOURCE_SHIFTS,
        "ListTaxForms": privacy_pb2.AUDIT_RESOURCE_TAX_FORMS,
        "ListDocuments": privacy_pb2.AUDIT_RESOURCE_DOCUMENTS,
        "GetDocument": privacy_pb2.AUDIT_RESOURCE_DOCUMENTS,
        "DownloadDocument": privacy_pb2.AUDIT_RESOURCE_DOCUMENTS,
    }
    listed = await client.privacy.ListAuditRecords(
        privacy_pb2.ListAuditRecordsRequest(account_id=account, page_size=100), metadata=client.md()
    )
    got = sorted(
        (r.method, r.resource, r.caller, r.request_id, r.account_id, r.end_user_id, r.action)
        for r in listed.records
    )
    assert got == sorted(
        (m, res, "reader-svc", f"req-{m}", account, "eu-reads", privacy_pb2.AUDIT_ACTION_READ)
        for m, res in expected.items()
    )


async def test_sandbox_controls_that_change_personal_data_write_one_audit_record_each(stack: Stack) -> None:
    """AddPaystub (a new paystub at the platform, returned) and ChangeAllocation (the pay moved to
    another bank account, the allocations returned) change and reveal the end user's data: one
    CHANGE record each, with the caller, the request id and the account, exported like the others;
    a refused call records nothing."""
    client = await stack.client()
    _, session = await link_account(
        client, "user_good+audit-ctl", [C.JOB_NAME_IDENTITY], end_user_id="eu-ctl"
    )
    account = session.account_id

    def md(method: str) -> list[tuple[str, str]]:
        return [*client.md(), ("x-caller", "qa-svc"), ("x-request-id", f"req-{method}")]

    added = await client.sandbox.AddPaystub(
        sandbox_pb2.AddPaystubRequest(account_id=account), metadata=md("AddPaystub")
    )
    assert added.newest_paystub.net_pay.amount_cents > 0
    target = C.AllocationTarget(
        type=C.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        routing_number="011000015",
        account_number="5550001234",
        name="X",
    )
    await client.sandbox.ChangeAllocation(
        sandbox_pb2.ChangeAllocationRequest(account_id=account, target=target),
        metadata=md("ChangeAllocation"),
    )
    refused = await rpc_error(
        client.sandbox.ChangeAllocation(
            sandbox_pb2.ChangeAllocationRequest(
                account_id=account,
                target=C.AllocationTarget(
                    type=C.DEPOSIT_ACCOUNT_TYPE_CHECKING, routing_number="1", account_number="1"
                ),
            ),
            metadata=md("Refused"),
        )
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT

    listed = await client.privacy.ListAuditRecords(
        privacy_pb2.ListAuditRecordsRequest(account_id=account), metadata=client.md()
    )
    got = sorted(
        (r.method, r.action, r.resource, r.caller, r.request_id, r.account_id, r.end_user_id)
        for r in listed.records
    )
    assert got == [
        (
            "AddPaystub",
            privacy_pb2.AUDIT_ACTION_CHANGE,
            privacy_pb2.AUDIT_RESOURCE_PAYSTUBS,
            "qa-svc",
            "req-AddPaystub",
            account,
            "eu-ctl",
        ),
        (
            "ChangeAllocation",
            privacy_pb2.AUDIT_ACTION_CHANGE,
            privacy_pb2.AUDIT_RESOURCE_DIRECT_DEPOSIT_ALLOCATIONS,
            "qa-svc",
            "req-ChangeAllocation",
            account,
            "eu-ctl",
        ),
    ]
    only = await client.privacy.ListAuditRecords(
        privacy_pb2.ListAuditRecordsRequest(account_id=account, action=privacy_pb2.AUDIT_ACTION_CHANGE),
        metadata=client.md(),
    )
    assert len(only.records) == 2
    exported = await stack.events.wait_for(
        lambda r: r.event.event_id in {record.id for record in listed.records}, count=2
    )
    assert {r.event.audit_recorded.action for r in exported} == {privacy_pb2.AUDIT_ACTION_CHANGE}
