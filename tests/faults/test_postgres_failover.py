"""PostgreSQL failover under load: a durable primary with a synchronous streaming standby
(`scripts/stack.sh` with PAYLINK_PG_STANDBY=1), paylink given the multi-host DSN
`postgresql://...@primary,standby/paylink?target_session_attrs=read-write`. The primary crashes
(`pg_ctl stop -m immediate`), the standby is promoted (`pg_ctl promote`), and:
- paylink reconnects by itself: no process is restarted;
- every RPC answers OK or UNAVAILABLE (never INTERNAL, UNKNOWN or a deadline);
- no acknowledged change is lost: every link token, session and linked account a client was told
  about is stored on the new primary, and everything stored that no client was told about belongs
  to a call that answered UNAVAILABLE; every stored change's events are in Kafka, exactly once by
  event_id;
- the time from the crash to the first OK answer is measured."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2, link_token_pb2

from tests.faults.cluster import (
    Deployment,
    FaultStack,
    assert_delivery,
    assert_one_outcome_per_job,
    deployment_on,
    read_log,
    wait_until,
)
from tests.faults.fleet import PostgresPair
from tests.harness import Client, create_test_database

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

DEADLINE = 5.0
NO_PRIMARY_SECONDS = 3.0
JOBS = [c.JOB_NAME_IDENTITY]


@pytest.fixture(scope="module")
async def pg_pair(fault_stack: FaultStack) -> AsyncIterator[PostgresPair]:
    pair = PostgresPair()
    await pair.destroy()  # a pair left over from a cut-short run may be failed over already
    await pair.up()
    try:
        yield pair
    finally:
        await pair.destroy()  # failed over: the old primary is out of date, start afresh next time


@pytest.fixture
async def on_pair(pg_pair: PostgresPair, request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    url = await create_test_database(pg_pair.admin_url)
    async with deployment_on(pg_pair, url, request) as dep:  # type: ignore[arg-type]  # the database goes with the pair
        yield dep


@dataclasses.dataclass
class Call:
    at: float
    method: str
    code: grpc.StatusCode
    key: str  # what the call was about: end_user_id, token id or session id


class Load:
    """Clients linking accounts; records every answer and what each acknowledged change was."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls: list[Call] = []
        self.tokens: dict[str, str] = {}  # end_user_id -> token id, acknowledged
        self.sessions: dict[str, str] = {}  # token id -> session id, acknowledged
        self.accounts: dict[str, str] = {}  # session id -> account id, acknowledged (linked)
        self.stop = asyncio.Event()

    async def rpc(
        self, method: str, key: str, call: Callable[..., Awaitable[object]], request: object
    ) -> object | None:
        started = time.monotonic()
        try:
            reply = await call(request, metadata=self.client.md(), timeout=DEADLINE)
        except grpc.aio.AioRpcError as exc:
            self.calls.append(Call(started, method, exc.code(), key))
            return None
        self.calls.append(Call(started, method, grpc.StatusCode.OK, key))
        return reply

    async def linker(self, n: int) -> None:
        client = self.client
        while not self.stop.is_set():
            user = f"user-{n}-{uuid.uuid4().hex[:8]}"
            token = await self.rpc(
                "CreateLinkToken",
                user,
                client.tokens.CreateLinkToken,
                link_token_pb2.CreateLinkTokenRequest(org_name="Acme", required_jobs=JOBS, end_user_id=user),
            )
            if isinstance(token, link_token_pb2.LinkToken):
                self.tokens[user] = token.id
                session = await self.rpc(
                    "StartSession",
                    token.id,
                    client.link.StartSession,
                    link_pb2.StartSessionRequest(token=token.token),
                )
                if isinstance(session, link_pb2.LinkSession):
                    self.sessions[token.id] = session.id
                    linked = await self.rpc(
                        "SubmitCredentials",
                        session.id,
                        client.link.SubmitCredentials,
                        link_pb2.SubmitCredentialsRequest(
                            session_id=session.id,
                            platform_id="sandbox_adp",
                            username=f"user_good+{user}",
                            password="pass_good",
                        ),
                    )
                    if isinstance(linked, link_pb2.LinkSession) and linked.account_id:
                        self.accounts[session.id] = linked.account_id
            await asyncio.sleep(0.05)


async def test_primary_crash_promote_standby_nothing_acknowledged_lost(
    pg_pair: PostgresPair, on_pair: Deployment, figures: Callable[..., None]
) -> None:
    dep = on_pair
    # The pair is durable and synchronous (what makes "acknowledged" mean "on the standby too").
    settings = {
        r["name"]: r["setting"]
        for r in await dep.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["fsync", "full_page_writes", "synchronous_commit", "synchronous_standby_names"],
        )
    }
    assert settings == {
        "fsync": "on",
        "full_page_writes": "on",
        "synchronous_commit": "on",
        "synchronous_standby_names": "paylink_standby",
    }, settings
    assert await pg_pair.sync_state() == "sync"

    procs = [await dep.spawn(role) for role in ("api", "worker", "relay")]
    client = await dep.new_client()
    load = Load(client)
    tasks = [asyncio.create_task(load.linker(n)) for n in range(3)]
    try:

        async def working() -> bool:
            return len(load.accounts) >= 15 and await dep.unpublished() < 30

        await wait_until(working, 90, "accounts linked before the crash")
        crashed_at = time.monotonic()
        await pg_pair.crash_primary()

        async def refused() -> bool:
            return (
                sum(1 for call in load.calls if call.code != grpc.StatusCode.OK and call.at >= crashed_at)
                >= 10
            )

        await wait_until(refused, 30, "calls refused while no primary exists")
        # A failover manager takes a moment to decide: keep the cluster without a primary a while
        # (the only deliberate wait), so connections also meet the standby before its promotion.
        await asyncio.sleep(max(0.0, NO_PRIMARY_SECONDS - (time.monotonic() - crashed_at)))
        promote_at = time.monotonic()
        await pg_pair.promote_standby()
        promoted_at = time.monotonic()

        async def recovered() -> bool:
            return any(call.code == grpc.StatusCode.OK and call.at >= promoted_at for call in load.calls)

        await wait_until(recovered, 60, "an RPC succeeds on the promoted standby")
        first_ok = min(c.at for c in load.calls if c.code == grpc.StatusCode.OK and c.at >= promoted_at)
        accounts_then = len(load.accounts)

        async def more() -> bool:
            return len(load.accounts) >= accounts_then + 10

        await wait_until(more, 60, "more accounts linked after the failover")
    finally:
        load.stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task

    assert all(proc.returncode is None for proc in procs), "a paylink process died"
    codes = collections.Counter(call.code.name for call in load.calls)
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes

    # What clients were told vs what the new primary stores.
    failed = collections.defaultdict(set)
    for call in load.calls:
        if call.code != grpc.StatusCode.OK:
            failed[call.method].add(call.key)
    stored_tokens = {
        r["end_user_id"]: str(r["id"]) for r in await dep.fetch("SELECT id, end_user_id FROM link_tokens")
    }
    assert set(load.tokens.items()) <= set(stored_tokens.items()), "an acknowledged link token was lost"
    assert set(stored_tokens) - set(load.tokens) <= failed["CreateLinkToken"]
    stored_sessions = {
        str(r["link_token_id"]): (str(r["id"]), r["state"], str(r["account_id"]) if r["account_id"] else "")
        for r in await dep.fetch("SELECT id, link_token_id, state, account_id FROM link_sessions")
    }
    for token_id, session_id in load.sessions.items():
        assert stored_sessions.get(token_id, ("",))[0] == session_id, "an acknowledged session was lost"
    assert set(stored_sessions) - set(load.sessions) <= failed["StartSession"]
    by_session = {sid: account for sid, _, account in stored_sessions.values()}
    for session_id, account_id in load.accounts.items():
        assert by_session.get(session_id) == account_id, "an acknowledged linked account was lost"
    stored_accounts = {str(r["id"]) for r in await dep.fetch("SELECT id FROM accounts")}
    assert set(load.accounts.values()) <= stored_accounts
    unacknowledged = stored_accounts - set(load.accounts.values())
    assert {s for s, a in by_session.items() if a in unacknowledged} <= failed["SubmitCredentials"]

    # Every stored change's events reached Kafka.
    jobs = await dep.jobs()
    await dep.wait_all_jobs_final(len(jobs), within=90)
    await dep.wait_outbox_published(within=90)
    jobs = await dep.jobs()
    outbox = await dep.outbox()
    assert_one_outcome_per_job(jobs, outbox)
    expected = {e.event_id for e in outbox}

    async def in_kafka() -> bool:
        return expected <= {r.event.event_id for r in await read_log(dep.stack.bootstrap, dep.prefix)}

    await wait_until(in_kafka, 90, "every outbox event in Kafka", interval=1.0)
    delivery = assert_delivery(await read_log(dep.stack.bootstrap, dep.prefix), outbox)
    assert delivery.distinct == len(outbox)
    figures(
        seconds_without_primary=round(promote_at - crashed_at, 1),
        promote_seconds=round(promoted_at - promote_at, 1),
        seconds_crash_to_first_ok=round(first_ok - crashed_at, 2),
        seconds_promoted_to_first_ok=round(first_ok - promoted_at, 2),
        rpcs=len(load.calls),
        codes=dict(codes),
        acknowledged_tokens=len(load.tokens),
        stored_tokens=len(stored_tokens),
        acknowledged_accounts=len(load.accounts),
        stored_accounts=len(stored_accounts),
        stored_but_unacknowledged_accounts=len(unacknowledged),
        jobs=len(jobs),
        events_expected=len(outbox),
        events_consumed_distinct=delivery.distinct,
        redelivered=delivery.redelivered,
        processes_restarted=0,
    )
