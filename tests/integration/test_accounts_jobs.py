"""AccountService and JobService: keyset pagination (stable under inserts), list filters, paystub
paging, workspace isolation of every call, and authentication."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from paylink.v1 import account_pb2, job_pb2, link_pb2, link_token_pb2, sandbox_pb2
from paylink.v1 import common_pb2 as c

from tests.harness import (
    Client,
    link_account,
    list_all_jobs,
    rpc_error,
    start_session,
    violation_fields,
    wait_job,
)

IDENTITY = [c.JOB_NAME_IDENTITY]


async def _page(
    client: Client, end_user_id: str, size: int, token: str = ""
) -> account_pb2.ListAccountsResponse:
    return await client.accounts.ListAccounts(
        account_pb2.ListAccountsRequest(end_user_id=end_user_id, page_size=size, page_token=token),
        metadata=client.md(),
    )


async def test_list_accounts_pages_are_stable_under_inserts(client: Client) -> None:
    end_user = "eu-pages"
    linked = await asyncio.gather(
        *(client.connect(f"user_good+p{i}", IDENTITY, end_user_id=end_user) for i in range(7))
    )
    created = {session.account_id for _, session in linked}
    assert len(created) == 7 and all(created)
    # Another end user's account never shows up in this end user's list.
    await client.connect("user_good+other", IDENTITY, end_user_id="eu-someone-else")

    first = await _page(client, end_user, 3)
    assert len(first.accounts) == 3 and first.next_page_token
    # A new account created between pages lands before the cursor: it does not shift later pages.
    _, newer = await client.connect("user_good+p7", IDENTITY, end_user_id=end_user)
    second = await _page(client, end_user, 3, first.next_page_token)
    assert len(second.accounts) == 3 and second.next_page_token
    third = await _page(client, end_user, 3, second.next_page_token)
    assert len(third.accounts) == 1 and third.next_page_token == ""

    walked = [a.id for page in (first, second, third) for a in page.accounts]
    assert len(walked) == len(set(walked)) == 7
    assert set(walked) == created and newer.account_id not in walked
    times = [(a.created_at.ToDatetime(), a.id) for page in (first, second, third) for a in page.accounts]
    assert times == sorted(times, reverse=True)  # newest first
    assert all(a.end_user_id == end_user for page in (first, second, third) for a in page.accounts)

    fresh = await _page(client, end_user, 0)
    assert [a.id for a in fresh.accounts] == [newer.account_id, *walked]  # default page size 25
    assert fresh.next_page_token == ""
    everyone = await client.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=client.md())
    assert len(everyone.accounts) == 9


async def test_list_accounts_rejects_bad_page_arguments(client: Client) -> None:
    for size in (101, -1):
        exc = await rpc_error(_page(client, "eu", size))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["page_size"]
    await asyncio.gather(*(client.connect(f"user_good+f{i}", IDENTITY, end_user_id="eu-a") for i in range(2)))
    page = await _page(client, "eu-a", 1)
    assert page.next_page_token
    exc = await rpc_error(_page(client, "eu-b", 1, page.next_page_token))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["page_token"]
    exc = await rpc_error(_page(client, "eu-a", 1, "garbage!"))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["page_token"]
    following = await _page(client, "eu-a", 1, page.next_page_token)
    assert len(following.accounts) == 1 and following.accounts[0].id != page.accounts[0].id


async def test_list_jobs_filters_and_pages(client: Client) -> None:
    token_a, session_a = await link_account(
        client, "user_good+jobs", [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME, c.JOB_NAME_PAYSTUBS]
    )
    account_a = session_a.account_id
    refresh = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=account_a, name=c.JOB_NAME_IDENTITY), metadata=client.md()
    )
    refresh = await wait_job(client, refresh.id)
    assert refresh.status == c.JOB_STATUS_SUCCESS
    _, session_b = await link_account(
        client, "user_nodata+jobs", [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT]
    )
    account_b = session_b.account_id

    async def ids(**filters: object) -> set[str]:
        return {j.id for j in await list_all_jobs(client, **filters)}

    link_jobs_a = {j.job_id for j in session_a.jobs}
    error_jobs_b = {j.job_id for j in session_b.jobs}
    assert await ids() == link_jobs_a | error_jobs_b | {refresh.id}
    assert await ids(account_id=account_a) == link_jobs_a | {refresh.id}
    assert await ids(account_id=account_b) == error_jobs_b
    assert await ids(link_token_id=token_a.id) == link_jobs_a
    assert await ids(origin=c.JOB_ORIGIN_REFRESH) == {refresh.id}
    assert await ids(origin=c.JOB_ORIGIN_LINK, account_id=account_a) == link_jobs_a
    assert await ids(outcome=c.JOB_OUTCOME_ERROR) == error_jobs_b
    assert await ids(outcome=c.JOB_OUTCOME_SUCCESS) == link_jobs_a | {refresh.id}
    identity_jobs = await list_all_jobs(client, names=[c.JOB_NAME_IDENTITY])
    assert len(identity_jobs) == 3 and {j.name for j in identity_jobs} == {c.JOB_NAME_IDENTITY}
    both = await ids(names=[c.JOB_NAME_INCOME, c.JOB_NAME_EMPLOYMENT])
    assert len(both) == 2
    assert await ids(names=[c.JOB_NAME_IDENTITY], account_id=account_a, origin=c.JOB_ORIGIN_LINK) == {
        j.job_id for j in session_a.jobs if j.name == c.JOB_NAME_IDENTITY
    }
    after = await ids(created_after=refresh.created_at)
    assert after == error_jobs_b | {refresh.id}
    assert await ids(created_before=refresh.created_at) == link_jobs_a

    # Paging over all six jobs: 2 + 2 + 2, newest first, no duplicates, no gaps.
    seen: list[job_pb2.Job] = []
    page_token = ""
    pages = 0
    while True:
        page = await client.jobs.ListJobs(
            job_pb2.ListJobsRequest(page_size=2, page_token=page_token), metadata=client.md()
        )
        pages += 1
        seen += page.jobs
        page_token = page.next_page_token
        if not page_token:
            break
        assert len(page.jobs) == 2
    assert pages == 3 and len(seen) == 6 and len({j.id for j in seen}) == 6
    keys = [(j.created_at.ToDatetime(), j.id) for j in seen]
    assert keys == sorted(keys, reverse=True)

    first = await client.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=1), metadata=client.md())
    exc = await rpc_error(
        client.jobs.ListJobs(
            job_pb2.ListJobsRequest(page_size=1, page_token=first.next_page_token, origin=c.JOB_ORIGIN_LINK),
            metadata=client.md(),
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["page_token"]
    exc = await rpc_error(
        client.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=101, account_id="x"), metadata=client.md())
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    exc = await rpc_error(
        client.jobs.ListJobs(
            job_pb2.ListJobsRequest(account_id="x", names=[c.JobName.ValueType(99)]), metadata=client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violation_fields(exc)) == {"account_id", "names[0]"}


async def test_list_paystubs_pages(client: Client) -> None:
    _, session = await link_account(client, "user_good+stubs", [c.JOB_NAME_PAYSTUBS])
    account_id = session.account_id

    async def page(size: int, token: str = "", **filters: str) -> account_pb2.ListPaystubsResponse:
        return await client.accounts.ListPaystubs(
            account_pb2.ListPaystubsRequest(
                account_id=account_id, page_size=size, page_token=token, **filters
            ),
            metadata=client.md(),
        )

    everything = await page(0)
    assert len(everything.paystubs) == 6 and everything.next_page_token == ""
    assert everything.HasField("refreshed_at") and everything.HasField("updated_at")
    first = await page(4)
    assert len(first.paystubs) == 4 and first.next_page_token
    second = await page(4, first.next_page_token)
    assert len(second.paystubs) == 2 and second.next_page_token == ""
    walked = [p.id for p in [*first.paystubs, *second.paystubs]]
    assert walked == [p.id for p in everything.paystubs] and len(set(walked)) == 6
    dates = [p.pay_date for p in everything.paystubs]
    assert dates == sorted(dates, reverse=True)

    middle = dates[2]
    recent = await page(0, from_pay_date=middle)
    assert [p.pay_date for p in recent.paystubs] == dates[:3]
    older = await page(2, to_pay_date=middle)
    assert [p.pay_date for p in older.paystubs] == dates[2:4]
    exc = await rpc_error(page(2, older.next_page_token, to_pay_date=dates[0]))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["page_token"]
    exc = await rpc_error(page(2, from_pay_date="2026-13-01"))
    assert violation_fields(exc) == ["from_pay_date"]

    stub = await client.accounts.GetPaystub(
        account_pb2.GetPaystubRequest(account_id=account_id, paystub_id=walked[0]), metadata=client.md()
    )
    assert stub.id == walked[0] and stub.account_id == account_id and stub.pay_date == dates[0]
    exc = await rpc_error(
        client.accounts.GetPaystub(
            account_pb2.GetPaystubRequest(
                account_id=account_id, paystub_id="00000000-0000-0000-0000-000000000000"
            ),
            metadata=client.md(),
        )
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND


async def test_another_workspace_sees_nothing(client: Client, other_client: Client) -> None:
    allocation = c.Allocation(
        type=c.ALLOCATION_TYPE_AMOUNT,
        value=10_000,
        targets=[
            c.AllocationTarget(
                type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING, routing_number="021000021", account_number="55554444"
            ),
            c.AllocationTarget(
                type=c.DEPOSIT_ACCOUNT_TYPE_SAVINGS, routing_number="021000021", account_number="55553333"
            ),
        ],
    )
    token, session = await link_account(
        client,
        "user_good+iso",
        [
            c.JOB_NAME_IDENTITY,
            c.JOB_NAME_EMPLOYMENT,
            c.JOB_NAME_INCOME,
            c.JOB_NAME_PAYSTUBS,
            c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS,
        ],
    )
    account_id, session_id = session.account_id, session.id
    job_id = session.jobs[0].job_id
    stubs = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=client.md()
    )
    paystub_id = stubs.paystubs[0].id
    # A session of A still waiting for MFA, and one waiting for an allocation choice.
    _, mfa_session = await client.connect("user_mfa+iso", IDENTITY)
    assert mfa_session.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED
    _, choice = await client.connect(
        "user_good+iso2", [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], allocation=allocation
    )
    assert choice.state == link_pb2.LINK_SESSION_STATE_CONNECTED
    unused = await client.token(IDENTITY)

    b = other_client
    md = b.md()
    calls = {
        "GetAccount": b.accounts.GetAccount(
            account_pb2.GetAccountRequest(account_id=account_id), metadata=md
        ),
        "DisconnectAccount": b.accounts.DisconnectAccount(
            account_pb2.DisconnectAccountRequest(account_id=account_id), metadata=md
        ),
        "GetIdentity": b.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=account_id), metadata=md
        ),
        "GetEmployment": b.accounts.GetEmployment(
            account_pb2.GetEmploymentRequest(account_id=account_id), metadata=md
        ),
        "GetIncome": b.accounts.GetIncome(account_pb2.GetIncomeRequest(account_id=account_id), metadata=md),
        "ListPaystubs": b.accounts.ListPaystubs(
            account_pb2.ListPaystubsRequest(account_id=account_id), metadata=md
        ),
        "GetPaystub": b.accounts.GetPaystub(
            account_pb2.GetPaystubRequest(account_id=account_id, paystub_id=paystub_id), metadata=md
        ),
        "GetDirectDepositAllocations": b.accounts.GetDirectDepositAllocations(
            account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=md
        ),
        "GetJob": b.jobs.GetJob(job_pb2.GetJobRequest(job_id=job_id), metadata=md),
        "CreateJob": b.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_IDENTITY), metadata=md
        ),
        "GetLinkToken": b.tokens.GetLinkToken(
            link_token_pb2.GetLinkTokenRequest(link_token_id=token.id), metadata=md
        ),
        "CreateLinkToken(account_id)": b.tokens.CreateLinkToken(
            link_token_pb2.CreateLinkTokenRequest(org_name="Other Org", account_id=account_id), metadata=md
        ),
        "StartSession": b.link.StartSession(link_pb2.StartSessionRequest(token=unused.token), metadata=md),
        "GetSession": b.link.GetSession(link_pb2.GetSessionRequest(session_id=session_id), metadata=md),
        "SearchPlatforms": b.link.SearchPlatforms(
            link_pb2.SearchPlatformsRequest(session_id=session_id), metadata=md
        ),
        "SubmitCredentials": b.link.SubmitCredentials(
            link_pb2.SubmitCredentialsRequest(
                session_id=session_id, platform_id="sandbox_adp", username="user_good", password="pass_good"
            ),
            metadata=md,
        ),
        "SubmitMfa": b.link.SubmitMfa(
            link_pb2.SubmitMfaRequest(session_id=mfa_session.id, answer="mfa_code"), metadata=md
        ),
        "ChooseAllocation": b.link.ChooseAllocation(
            link_pb2.ChooseAllocationRequest(session_id=choice.id, target_index=1), metadata=md
        ),
        "SetMonitoringStatus": b.sandbox.SetMonitoringStatus(
            sandbox_pb2.SetMonitoringStatusRequest(
                account_id=account_id, status=c.MONITORING_STATUS_DEGRADED
            ),
            metadata=md,
        ),
        "ExpireCredentials": b.sandbox.ExpireCredentials(
            sandbox_pb2.ExpireCredentialsRequest(account_id=account_id), metadata=md
        ),
        "AddPaystub": b.sandbox.AddPaystub(sandbox_pb2.AddPaystubRequest(account_id=account_id), metadata=md),
    }
    codes = {}
    for name, call in calls.items():
        exc = await rpc_error(call)
        codes[name] = exc.code()
    assert codes == dict.fromkeys(calls, grpc.StatusCode.NOT_FOUND)

    assert (
        list((await b.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=md)).accounts) == []
    )
    assert (
        list(
            (
                await b.accounts.ListAccounts(
                    account_pb2.ListAccountsRequest(end_user_id=token.end_user_id), metadata=md
                )
            ).accounts
        )
        == []
    )
    assert list((await b.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=md)).jobs) == []
    assert (
        list((await b.jobs.ListJobs(job_pb2.ListJobsRequest(account_id=account_id), metadata=md)).jobs) == []
    )
    assert (
        list((await b.jobs.ListJobs(job_pb2.ListJobsRequest(link_token_id=token.id), metadata=md)).jobs) == []
    )

    # Nothing of A changed: still connected, MFA still pending, the choice still open, the token unused.
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
    )
    assert account.connected and account.monitoring_status == c.MONITORING_STATUS_ACTIVE
    pending = await client.link.GetSession(
        link_pb2.GetSessionRequest(session_id=mfa_session.id), metadata=client.md()
    )
    assert pending.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED and pending.failed_attempts == 0
    still = await client.link.GetSession(
        link_pb2.GetSessionRequest(session_id=choice.id), metadata=client.md()
    )
    assert still.state == link_pb2.LINK_SESSION_STATE_CONNECTED and still.allocation_choice_required
    assert (
        await start_session(client, unused.token)
    ).state == link_pb2.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    jobs = await list_all_jobs(client, account_id=account_id)
    assert len(jobs) == 5 and {j.origin for j in jobs} == {c.JOB_ORIGIN_LINK}


@pytest.mark.parametrize("secret", [None, "", "pl_nokey_wrong", "not-even-a-secret"])
async def test_missing_or_wrong_secret_is_unauthenticated(client: Client, secret: str | None) -> None:
    metadata = [("api-version", "2021-07-28")] + ([("x-api-secret", secret)] if secret is not None else [])
    calls = [
        client.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=metadata),
        client.tokens.CreateLinkToken(
            link_token_pb2.CreateLinkTokenRequest(
                org_name="Acme Bank", required_jobs=IDENTITY, end_user_id="eu"
            ),
            metadata=metadata,
        ),
        client.jobs.GetJob(
            job_pb2.GetJobRequest(job_id="00000000-0000-0000-0000-000000000000"), metadata=metadata
        ),
    ]
    for call in calls:
        exc = await rpc_error(call)
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    # A secret of a real key id with the wrong random part is refused too.
    forged = client.secret[:-4] + ("aaaa" if not client.secret.endswith("aaaa") else "bbbb")
    exc = await rpc_error(
        client.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=[("x-api-secret", forged)])
    )
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_account_id_in_upper_case_reads_the_same_account_and_stays_in_its_workspace(
    client: Client, other_client: Client
) -> None:
    """GetAccount hands the checked id text to PostgreSQL as it came (no uuid.UUID built,
    service/accounts.py `fetch`): every form the request check accepts still finds the account, and
    only in its own workspace."""
    _, session = await client.connect("user_good+upper", IDENTITY)
    account_id = session.account_id
    upper = account_id.upper()
    assert upper != account_id
    for asked in (account_id, upper):
        account = await client.accounts.GetAccount(
            account_pb2.GetAccountRequest(account_id=asked), metadata=client.md()
        )
        assert account.id == account_id  # the canonical form, as stored
    exc = await rpc_error(
        other_client.accounts.GetAccount(
            account_pb2.GetAccountRequest(account_id=upper), metadata=other_client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND
