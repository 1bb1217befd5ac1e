"""Money-safe allocations, the username oracle on bound sessions, CreateJob limits and link token
replays (issue #11, findings 1, 7, 3 and 9): each as the review found it, through the API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2, link_pb2, link_token_pb2, sandbox_pb2

from service import auth, runtime
from service.config import Settings
from tests.harness import (
    TEST_TARGET,
    Client,
    EventLog,
    link_account,
    rpc_error,
    start_session,
    status_details,
    violation_fields,
    wait_job,
)

S = link_pb2


def _switch_token(client: Client, **allocation: Any) -> Coroutine[Any, Any, link_token_pb2.LinkToken]:
    alloc = c.Allocation(targets=[TEST_TARGET], **allocation)
    return client.token([c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], allocation=alloc)


async def _choose(client: Client, session_id: str, **fields: Any) -> link_pb2.LinkSession:
    request = link_pb2.ChooseAllocationRequest(session_id=session_id, target_index=0, **fields)
    return await client.link.ChooseAllocation(request, metadata=client.md())


async def _switch_params(client: Client, session: link_pb2.LinkSession) -> c.SwitchParams:
    switch = next(j for j in session.jobs if j.name == c.JOB_NAME_DIRECT_DEPOSIT_SWITCH)
    job = await wait_job(client, switch.job_id)
    assert job.status == c.JOB_STATUS_SUCCESS, job
    return job.params.direct_deposit_switch


async def test_a_one_dollar_token_never_switches_the_whole_paycheck(client: Client) -> None:
    token = await _switch_token(client, type=c.ALLOCATION_TYPE_AMOUNT, value=100)
    session = await start_session(client, token.token)
    for fields in (
        {"type": c.ALLOCATION_TYPE_PERCENTAGE},
        {"type": c.ALLOCATION_TYPE_PERCENTAGE, "value": 60},
    ):
        exc = await rpc_error(_choose(client, session.id, **fields))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["type"], fields
    exc = await rpc_error(_choose(client, session.id, value=101))  # no bounds: the value is fixed
    assert violation_fields(exc) == ["value"]
    await _choose(client, session.id)  # the token's own unit and value
    linked = await client.link.SubmitCredentials(
        S.SubmitCredentialsRequest(
            session_id=session.id, platform_id="sandbox_adp", username="user_good", password="pass_good"
        ),
        metadata=client.md(),
    )
    params = await _switch_params(client, linked)
    assert params.action == c.SWITCH_ACTION_PARTIAL
    assert (params.allocation.type, params.allocation.value) == (c.ALLOCATION_TYPE_AMOUNT, 100)


async def test_values_are_bounded(client: Client) -> None:
    exc = await rpc_error(
        _switch_token(client, type=c.ALLOCATION_TYPE_AMOUNT, value=500, max_value=2**63 - 1)
    )
    assert violation_fields(exc) == ["allocation.max_value"]
    token = await _switch_token(client, type=c.ALLOCATION_TYPE_AMOUNT, value=500, min_value=100)
    session = await start_session(client, token.token)
    for value in (2**63 - 1, 501, 99):
        exc = await rpc_error(_choose(client, session.id, value=value))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["value"], value
    chosen = await _choose(client, session.id, value=250)
    assert chosen.id == session.id


async def test_a_unit_change_needs_the_tokens_alternative_and_a_value_in_its_bounds(client: Client) -> None:
    alternative = c.AllocationAlternative(type=c.ALLOCATION_TYPE_PERCENTAGE, min_value=5, max_value=20)
    token = await _switch_token(client, type=c.ALLOCATION_TYPE_AMOUNT, value=100, alternative=alternative)
    session = await start_session(client, token.token)
    exc = await rpc_error(_choose(client, session.id, type=c.ALLOCATION_TYPE_PERCENTAGE))
    assert violation_fields(exc) == ["value"]  # no value is never a percentage
    exc = await rpc_error(_choose(client, session.id, type=c.ALLOCATION_TYPE_PERCENTAGE, value=100))
    assert violation_fields(exc) == ["value"]
    await _choose(client, session.id, type=c.ALLOCATION_TYPE_PERCENTAGE, value=20)
    linked = await client.link.SubmitCredentials(
        S.SubmitCredentialsRequest(
            session_id=session.id, platform_id="sandbox_adp", username="user_good", password="pass_good"
        ),
        metadata=client.md(),
    )
    params = await _switch_params(client, linked)
    assert params.action == c.SWITCH_ACTION_PARTIAL
    assert (params.allocation.type, params.allocation.value) == (c.ALLOCATION_TYPE_PERCENTAGE, 20)


async def test_a_wrong_username_on_a_bound_session_is_a_wrong_password(
    client: Client, events: EventLog
) -> None:
    """No username oracle: another login and a wrong password answer alike and both count; the
    other login still never takes over the bound account."""
    _, first = await link_account(client, "user_good+oracle")
    account_id = first.account_id
    await events.settled(account_id)
    await client.sandbox.ExpireCredentials(
        sandbox_pb2.ExpireCredentialsRequest(account_id=account_id), metadata=client.md()
    )
    bound = await client.token([c.JOB_NAME_INCOME], account_id=account_id)
    session = await start_session(client, bound.token)
    assert session.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED

    def submit(username: str, password: str) -> Awaitable[link_pb2.LinkSession]:
        return client.link.SubmitCredentials(
            S.SubmitCredentialsRequest(session_id=session.id, username=username, password=password),
            metadata=client.md(),
        )

    wrong_password = await submit("user_good+oracle", "wrong")
    wrong_username = await submit("user_good+someone_else", "wrong")
    other_login = await submit("user_good+someone_else", "pass_good")  # a real, different login
    for answer in (wrong_password, wrong_username, other_login):
        assert answer.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
        assert answer.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS
        assert answer.account_id == account_id
    assert [a.failed_attempts for a in (wrong_password, wrong_username, other_login)] == [1, 2, 3]
    relinked = await submit("user_good+oracle", "pass_good")
    assert relinked.state == S.LINK_SESSION_STATE_JOBS_RUNNING and relinked.account_id == account_id


async def test_create_job_returns_the_job_already_queued_or_running(
    client: Client, app: runtime.Running
) -> None:
    _, session = await link_account(client, "user_good+dup")
    request = job_pb2.CreateJobRequest(account_id=session.account_id, name=c.JOB_NAME_INCOME)
    # Holding the account row keeps the first job in flight: its outcome waits for the account lock
    # (a key-share lock, which CreateJob's insert needs, is still granted).
    async with app.deps.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM accounts WHERE id = $1::uuid FOR NO KEY UPDATE", session.account_id)
        first, *others = await asyncio.gather(
            *(client.jobs.CreateJob(request, metadata=client.md()) for _ in range(10))
        )
        assert {j.id for j in others} == {first.id}
        count = await app.deps.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE account_id = $1::uuid AND name = $2 AND origin = $3",
            session.account_id,
            c.JOB_NAME_INCOME,
            c.JOB_ORIGIN_REFRESH,
        )
        assert count == 1
    await wait_job(client, first.id)
    after = await client.jobs.CreateJob(request, metadata=client.md())  # the first one ended: a new job
    assert after.id != first.id
    other_name = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=session.account_id, name=c.JOB_NAME_IDENTITY),
        metadata=client.md(),
    )
    assert other_name.id not in (first.id, after.id)


async def test_create_job_is_rate_limited_per_workspace(settings: Settings) -> None:
    tight = settings.model_copy(update={"rate_create_jobs_per_minute": 12.0})
    running = await runtime.start(tight, relay=False, run_migrations=False)
    try:
        assert running.api is not None
        _, secret = await auth.create_workspace(running.deps.pool, "jobs-limited")
        _, other_secret = await auth.create_workspace(running.deps.pool, "jobs-neighbour")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.api.port}") as channel:
            client, neighbour = Client(channel, secret), Client(channel, other_secret)
            _, session = await link_account(client, "user_good+rate")
            _, theirs = await link_account(neighbour, "user_good+rate2")
            names = [c.JOB_NAME_INCOME, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_PAYSTUBS]
            codes = []
            for name in names:  # burst 2 (12/min): the third is refused
                try:
                    await client.jobs.CreateJob(
                        job_pb2.CreateJobRequest(account_id=session.account_id, name=name),
                        metadata=client.md(),
                    )
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
                    assert any(d.type_url.endswith("google.rpc.RetryInfo") for d in status_details(exc))
            assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
            job = await neighbour.jobs.CreateJob(
                job_pb2.CreateJobRequest(account_id=theirs.account_id, name=c.JOB_NAME_INCOME),
                metadata=neighbour.md(),
            )
            assert job.id
    finally:
        await running.stop()


async def test_a_replayed_link_token_does_not_return_a_used_token(client: Client) -> None:
    request = link_token_pb2.CreateLinkTokenRequest(
        org_name="Acme Bank",
        end_user_id="replay-user",
        required_jobs=[c.JOB_NAME_IDENTITY],
        request_id="replay-1",
    )
    first = await client.tokens.CreateLinkToken(request, metadata=client.md())
    again = await client.tokens.CreateLinkToken(request, metadata=client.md())
    assert again.token == first.token and again.id == first.id  # unused: a lost answer can be retried
    await start_session(client, first.token)
    used = await client.tokens.CreateLinkToken(request, metadata=client.md())
    assert used.id == first.id and used.token == "" and used.HasField("used_at")


pytestmark = pytest.mark.timeout(180)
