"""LinkService: the session state machine (MFA, wrong passwords, locks), platform search, concurrent
logins, allocation choice, and re-linking an account whose stored credentials went stale."""

from __future__ import annotations

import asyncio

import grpc
from paylink.v1 import account_pb2, job_pb2, link_pb2, sandbox_pb2
from paylink.v1 import common_pb2 as c

from tests.harness import (
    TEST_TARGET,
    Client,
    EventLog,
    error_reason,
    link_account,
    rpc_error,
    start_session,
    violation_fields,
)

S = link_pb2
IDENTITY = [c.JOB_NAME_IDENTITY]


async def _credentials(
    client: Client,
    session_id: str,
    username: str,
    password: str = "pass_good",
    platform_id: str = "sandbox_adp",
) -> link_pb2.LinkSession:
    return await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session_id, platform_id=platform_id, username=username, password=password
        ),
        metadata=client.md(),
    )


async def _mfa(client: Client, session_id: str, answer: str) -> link_pb2.LinkSession:
    return await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=session_id, answer=answer), metadata=client.md()
    )


async def _accounts_of(client: Client, end_user_id: str) -> list[account_pb2.Account]:
    page = await client.accounts.ListAccounts(
        account_pb2.ListAccountsRequest(end_user_id=end_user_id), metadata=client.md()
    )
    return list(page.accounts)


async def test_mfa_code_at_first_login(client: Client) -> None:
    _token, session = await client.connect("user_mfa", IDENTITY)
    assert session.state == S.LINK_SESSION_STATE_MFA_REQUIRED
    assert session.mfa.type == "code" and session.mfa.prompt
    assert session.account_id == "" and list(session.jobs) == []
    ok = await _mfa(client, session.id, "mfa_code")
    assert ok.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    assert ok.account_id and not ok.HasField("mfa") and ok.last_error == c.JOB_ERROR_CODE_UNSPECIFIED
    assert [j.name for j in ok.jobs] == IDENTITY
    done = await client.wait_session(ok.id, S.LINK_SESSION_STATE_COMPLETED)
    assert done.jobs[0].outcome == c.JOB_OUTCOME_SUCCESS


async def test_always_mfa_platform_asks_a_security_question(client: Client) -> None:
    _, session = await client.connect("user_good", IDENTITY, platform_id="sandbox_mfa")
    assert session.state == S.LINK_SESSION_STATE_MFA_REQUIRED
    assert session.mfa.type == "security_question" and session.mfa.prompt.endswith("?")
    wrong = await _mfa(client, session.id, "mfa_code")  # a code is not the answer to the question
    assert wrong.state == S.LINK_SESSION_STATE_MFA_REQUIRED
    assert wrong.last_error == c.JOB_ERROR_CODE_MFA_FAILED and wrong.failed_attempts == 1
    assert wrong.mfa.type == "security_question"
    ok = await _mfa(client, session.id, "Pinwheel Drive")
    assert ok.state == S.LINK_SESSION_STATE_JOBS_RUNNING and ok.platform_id == "sandbox_mfa"
    await client.wait_session(ok.id, S.LINK_SESSION_STATE_COMPLETED)


async def test_wrong_password_counts_then_fails_after_five(client: Client) -> None:
    token = await client.token(IDENTITY)
    session = await start_session(client, token.token)
    for attempt in range(1, 5):
        session = await _credentials(client, session.id, "user_good", password=f"wrong-{attempt}")
        assert session.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
        assert session.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS
        assert session.failed_attempts == attempt
    session = await _credentials(client, session.id, "user_good", password="wrong-5")
    assert session.state == S.LINK_SESSION_STATE_FAILED
    assert session.failure_reason == S.LINK_SESSION_FAILURE_REASON_TOO_MANY_ATTEMPTS
    assert session.failed_attempts == 5 and session.account_id == ""
    # A failed session takes no more credentials, even the right ones.
    exc = await rpc_error(_credentials(client, session.id, "user_good"))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(exc) == "SESSION_STATE"
    assert await _accounts_of(client, token.end_user_id) == []


async def test_wrong_password_then_right_one_connects(client: Client) -> None:
    token = await client.token(IDENTITY)
    session = await start_session(client, token.token)
    session = await _credentials(client, session.id, "user_good", password="nope")
    assert session.failed_attempts == 1 and session.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS
    unknown_user = await _credentials(client, session.id, "someone_else")
    assert (
        unknown_user.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED and unknown_user.failed_attempts == 2
    )
    ok = await _credentials(client, session.id, "user_good")
    assert ok.state == S.LINK_SESSION_STATE_JOBS_RUNNING and ok.last_error == c.JOB_ERROR_CODE_UNSPECIFIED


async def test_locked_user_fails_the_session(client: Client) -> None:
    token, session = await client.connect("user_locked", IDENTITY, password="anything")
    assert session.state == S.LINK_SESSION_STATE_FAILED
    assert session.failure_reason == S.LINK_SESSION_FAILURE_REASON_ACCOUNT_LOCKED
    assert session.last_error == c.JOB_ERROR_CODE_ACCOUNT_LOCKED
    assert await _accounts_of(client, token.end_user_id) == []


async def test_submit_mfa_in_the_wrong_state(client: Client) -> None:
    token = await client.token(IDENTITY)
    session = await start_session(client, token.token)
    exc = await rpc_error(_mfa(client, session.id, "mfa_code"))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(exc) == "SESSION_STATE"
    connected = await _credentials(client, session.id, "user_good")
    assert connected.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    exc = await rpc_error(_mfa(client, session.id, "mfa_code"))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    exc = await rpc_error(_mfa(client, session.id, ""))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["answer"]


async def test_search_platforms_filters_by_required_jobs_and_query(client: Client) -> None:
    deposit = await client.token([c.JOB_NAME_IDENTITY, c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS])
    session = await start_session(client, deposit.token)
    found = await client.link.SearchPlatforms(
        link_pb2.SearchPlatformsRequest(session_id=session.id), metadata=client.md()
    )
    ids = {p.id for p in found.platforms}
    assert ids == {"sandbox_adp", "sandbox_workday", "sandbox_mfa", "sandbox_slow"}
    assert "sandbox_gig" not in ids
    assert next(p for p in found.platforms if p.id == "sandbox_mfa").always_mfa

    income = await start_session(client, (await client.token([c.JOB_NAME_INCOME])).token)
    found = await client.link.SearchPlatforms(
        link_pb2.SearchPlatformsRequest(session_id=income.id), metadata=client.md()
    )
    assert "sandbox_gig" in {p.id for p in found.platforms} and len(found.platforms) == 5
    found = await client.link.SearchPlatforms(
        link_pb2.SearchPlatformsRequest(session_id=income.id, query="GIG"), metadata=client.md()
    )
    assert [p.id for p in found.platforms] == ["sandbox_gig"]
    assert c.JOB_NAME_DIRECT_DEPOSIT_SWITCH not in found.platforms[0].supported_jobs
    found = await client.link.SearchPlatforms(
        link_pb2.SearchPlatformsRequest(session_id=income.id, query="workday"), metadata=client.md()
    )
    assert [p.name for p in found.platforms] == ["Workday (Sandbox)"]
    found = await client.link.SearchPlatforms(
        link_pb2.SearchPlatformsRequest(session_id=income.id, query="no such payroll"), metadata=client.md()
    )
    assert list(found.platforms) == []

    # Logging in to a platform without every required job is refused.
    exc = await rpc_error(_credentials(client, session.id, "user_good", platform_id="sandbox_gig"))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["platform_id"]


async def test_concurrent_credentials_make_one_account(client: Client, events: EventLog) -> None:
    token = await client.token([c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME])
    session = await start_session(client, token.token)
    results = await asyncio.gather(
        *(_credentials(client, session.id, "user_good+race") for _ in range(5)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, link_pb2.LinkSession)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(failed) == 4
    assert {e.code() for e in failed} == {grpc.StatusCode.FAILED_PRECONDITION}
    account_id = ok[0].account_id
    accounts = await _accounts_of(client, token.end_user_id)
    assert [a.id for a in accounts] == [account_id]
    done = await client.wait_session(session.id, S.LINK_SESSION_STATE_COMPLETED)
    assert sorted(j.name for j in done.jobs) == [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME]
    jobs = await client.jobs.ListJobs(job_pb2.ListJobsRequest(account_id=account_id), metadata=client.md())
    assert len(jobs.jobs) == 2
    await events.settled(account_id)
    added = [r for r in events.for_account(account_id) if r.event.event == "account.added"]
    assert len({r.event.event_id for r in added}) == 1


async def test_choose_allocation_between_two_targets(client: Client, events: EventLog) -> None:
    savings = c.AllocationTarget(
        type=c.DEPOSIT_ACCOUNT_TYPE_SAVINGS,
        routing_number="011000015",
        account_number="98765432",
        name="Rainy Day",
    )
    allocation = c.Allocation(type=c.ALLOCATION_TYPE_AMOUNT, value=20_000, targets=[TEST_TARGET, savings])
    _token, session = await client.connect(
        "user_good+choice", [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], allocation=allocation
    )
    assert session.state == S.LINK_SESSION_STATE_CONNECTED
    assert session.allocation_choice_required and session.account_id and list(session.jobs) == []
    again = await client.link.GetSession(
        link_pb2.GetSessionRequest(session_id=session.id), metadata=client.md()
    )
    assert again.state == S.LINK_SESSION_STATE_CONNECTED and again.allocation_choice_required

    exc = await rpc_error(
        client.link.ChooseAllocation(
            link_pb2.ChooseAllocationRequest(session_id=session.id, target_index=2), metadata=client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(exc) == ["target_index"]
    exc = await rpc_error(
        client.link.ChooseAllocation(
            link_pb2.ChooseAllocationRequest(session_id=session.id, target_index=-1), metadata=client.md()
        )
    )
    assert violation_fields(exc) == ["target_index"]

    chosen = await client.link.ChooseAllocation(
        link_pb2.ChooseAllocationRequest(session_id=session.id, target_index=1), metadata=client.md()
    )
    assert chosen.state == S.LINK_SESSION_STATE_JOBS_RUNNING and not chosen.allocation_choice_required
    assert [j.name for j in chosen.jobs] == [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH]
    done = await client.wait_session(session.id, S.LINK_SESSION_STATE_COMPLETED)
    job = await client.jobs.GetJob(job_pb2.GetJobRequest(job_id=done.jobs[0].job_id), metadata=client.md())
    assert job.status == c.JOB_STATUS_SUCCESS
    switch = job.params.direct_deposit_switch
    assert switch.action == c.SWITCH_ACTION_PARTIAL
    assert switch.allocation.type == c.ALLOCATION_TYPE_AMOUNT and switch.allocation.value == 20_000
    assert [t.account_number_last_four for t in switch.allocation.targets] == ["5432"]
    assert switch.allocation.targets[0].account_number == ""
    assert switch.allocation.targets[0].type == c.DEPOSIT_ACCOUNT_TYPE_SAVINGS

    event = (
        await events.wait_for(
            lambda r: r.event.account_id == done.account_id and r.event.event == "direct_deposit_switch.added"
        )
    )[0]
    assert (
        event.event.job.params.direct_deposit_switch.allocation.targets[0].account_number_last_four == "5432"
    )
    stored = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=done.account_id), metadata=client.md()
    )
    assert stored.allocations[0].target.account_number_last_four == "5432"
    assert stored.allocations[0].value == 20_000 and stored.allocations[0].priority == 1

    exc = await rpc_error(
        client.link.ChooseAllocation(
            link_pb2.ChooseAllocationRequest(session_id=session.id, target_index=0), metadata=client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_expired_credentials_relink_the_same_account(client: Client, events: EventLog) -> None:
    token, first = await link_account(client, "user_good+stale")
    account_id = first.account_id
    await events.settled(account_id)
    await client.sandbox.ExpireCredentials(
        sandbox_pb2.ExpireCredentialsRequest(account_id=account_id), metadata=client.md()
    )

    bound = await client.token([c.JOB_NAME_INCOME], account_id=account_id)
    session = await start_session(client, bound.token)
    assert session.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    assert session.account_id == account_id and session.on_demand_update
    assert session.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS and session.failed_attempts == 0
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
    )
    assert account.monitoring_status == c.MONITORING_STATUS_USER_ACTION_REQUIRED

    # Someone else's login cannot take over this account id: it is answered as a wrong password
    # (no username oracle) and counts; the session stays open for the right one.
    other = await _credentials(client, session.id, "user_good+someone_else", platform_id="")
    assert other.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED and other.account_id == account_id
    assert other.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS and other.failed_attempts == 1

    relinked = await _credentials(client, session.id, "user_good+stale", platform_id="")
    assert relinked.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    assert relinked.account_id == account_id
    done = await client.wait_session(session.id, S.LINK_SESSION_STATE_COMPLETED)
    assert done.account_id == account_id and done.jobs[0].outcome == c.JOB_OUTCOME_SUCCESS

    await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "link_session.completed", count=2
    )
    # Events of different topics reach the consumer in any order: wait for each kind asserted on.
    await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.monitoring_status.updated",
        count=2,
    )
    unique = {r.event.event_id: r.event for r in events.for_account(account_id)}
    assert [e.event for e in unique.values()].count("account.added") == 1
    monitoring = sorted(
        (e for e in unique.values() if e.event == "account.monitoring_status.updated"),
        key=lambda e: e.sequence,
    )
    assert [
        (e.monitoring_status_updated.monitoring_status, e.monitoring_status_updated.reason)
        for e in monitoring
    ] == [
        (c.MONITORING_STATUS_USER_ACTION_REQUIRED, "credentials_expired"),
        (c.MONITORING_STATUS_ACTIVE, "reaccess_succeeded"),
    ]
    assert [a.id for a in await _accounts_of(client, token.end_user_id)] == [account_id]
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
    )
    assert account.monitoring_status == c.MONITORING_STATUS_ACTIVE and account.connected


async def test_user_expired_asks_for_credentials_on_reaccess(client: Client) -> None:
    _, first = await link_account(client, "user_expired+s")
    bound = await client.token([c.JOB_NAME_IDENTITY], account_id=first.account_id)
    session = await start_session(client, bound.token)
    assert session.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    assert session.account_id == first.account_id
    assert session.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS
    # The bound session logs in to its account's platform only.
    exc = await rpc_error(_credentials(client, session.id, "user_expired+s", platform_id="sandbox_workday"))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["platform_id"]


async def test_wrong_mfa_answers_count_towards_the_limit(client: Client) -> None:
    token = await client.token(IDENTITY)
    session = await start_session(client, token.token)
    session = await _credentials(client, session.id, "user_mfa", password="bad")  # 1 failed login
    session = await _credentials(client, session.id, "user_mfa")
    assert session.state == S.LINK_SESSION_STATE_MFA_REQUIRED and session.failed_attempts == 1
    for attempt in range(2, 5):
        session = await _mfa(client, session.id, f"guess-{attempt}")
        assert session.state == S.LINK_SESSION_STATE_MFA_REQUIRED
        assert session.failed_attempts == attempt and session.last_error == c.JOB_ERROR_CODE_MFA_FAILED
    session = await _mfa(client, session.id, "guess-5")
    assert session.state == S.LINK_SESSION_STATE_FAILED
    assert session.failure_reason == S.LINK_SESSION_FAILURE_REASON_TOO_MANY_ATTEMPTS
    assert session.failed_attempts == 5 and not session.HasField("mfa")
    exc = await rpc_error(_mfa(client, session.id, "mfa_code"))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await _accounts_of(client, token.end_user_id) == []
