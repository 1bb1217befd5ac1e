"""Every sandbox username end to end: job outcomes through GetJob/ListJobs and the events read back
from Kafka."""

from __future__ import annotations

from paylink.v1 import account_pb2, data_pb2, event_pb2, job_pb2, link_pb2
from paylink.v1 import common_pb2 as c

from tests.harness import (
    ALL_JOBS,
    DATA_JOBS,
    JOB_EVENT_NAMES,
    TEST_ALLOCATION,
    Client,
    EventLog,
    link_account,
    list_all_jobs,
    start_session,
    unique_events,
    wait_account,
    wait_job,
)

S = link_pb2


async def final_event(events: EventLog, job: job_pb2.Job) -> event_pb2.Event:
    """The job's `<name>.added` event with its final outcome; checks it against the job row."""
    found = await events.wait_for(
        lambda r: (
            r.event.event == JOB_EVENT_NAMES[job.name]
            and r.event.job.job_id == job.id
            and r.event.job.outcome != c.JOB_OUTCOME_PENDING
        )
    )
    assert len({r.event.event_id for r in found}) == 1
    event = found[0].event
    payload = event.job
    assert event.account_id == payload.account_id == job.account_id
    assert (payload.name, payload.outcome, payload.error_type, payload.error_code) == (
        job.name,
        job.outcome,
        job.error_type,
        job.error_code,
    )
    assert payload.link_token_id == job.link_token_id and payload.origin == job.origin
    assert payload.link_session_id == job.link_session_id
    assert payload.params == job.params
    return event


async def session_jobs(client: Client, session: link_pb2.LinkSession) -> dict[int, job_pb2.Job]:
    """The session's jobs by name, read with GetJob, cross-checked with ListJobs."""
    jobs: dict[int, job_pb2.Job] = {}
    for item in session.jobs:
        job = await client.jobs.GetJob(job_pb2.GetJobRequest(job_id=item.job_id), metadata=client.md())
        jobs[job.name] = job
    listed = await list_all_jobs(client, link_token_id=session.link_token_id)
    assert {j.id: j for j in listed} == {j.id: j for j in jobs.values()}
    return jobs


async def settled_jobs(events: EventLog, account_id: str) -> list[tuple[int, int, int]]:
    settled = await events.settled(account_id)
    return sorted((j.name, j.outcome, j.error_code) for j in settled.event.link_session_completed.jobs)


async def test_user_good_every_job_succeeds(client: Client, events: EventLog) -> None:
    token, session = await link_account(client, "user_good", ALL_JOBS, allocation=TEST_ALLOCATION)
    account_id = session.account_id
    jobs = await session_jobs(client, session)
    assert sorted(jobs) == sorted(ALL_JOBS)
    for job in jobs.values():
        assert (job.status, job.outcome, job.error_type, job.error_code) == (
            c.JOB_STATUS_SUCCESS,
            c.JOB_OUTCOME_SUCCESS,
            c.JOB_ERROR_TYPE_UNSPECIFIED,
            c.JOB_ERROR_CODE_UNSPECIFIED,
        )
        assert job.origin == c.JOB_ORIGIN_LINK and job.link_token_id == token.id and job.attempts == 1
        assert job.HasField("completed_at") and job.link_session_id == session.id
        event = await final_event(events, job)
        assert event.job.platform_id == "sandbox_adp" and event.job.end_user_id == token.end_user_id
    switch = jobs[c.JOB_NAME_DIRECT_DEPOSIT_SWITCH].params.direct_deposit_switch
    assert (
        switch.action == c.SWITCH_ACTION_PARTIAL
        and switch.allocation.targets[0].account_number_last_four == "9012"
    )
    # The switch also publishes the allocations it set (under the switch job's id).
    from_switch = await events.wait_for(
        lambda r: (
            r.event.event == "direct_deposit_allocations.added"
            and r.event.job.job_id == jobs[c.JOB_NAME_DIRECT_DEPOSIT_SWITCH].id
        )
    )
    assert from_switch[0].event.job.outcome == c.JOB_OUTCOME_SUCCESS
    added = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.added"
    )
    assert added[0].event.account_added.link_token_id == token.id
    assert added[0].event.account_added.platform_name == "ADP (Sandbox)" and added[0].event.sequence == 1
    assert await settled_jobs(events, account_id) == [
        (name, c.JOB_OUTCOME_SUCCESS, 0) for name in sorted(ALL_JOBS)
    ]

    md = client.md()
    identity = await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=account_id), metadata=md
    )
    assert identity.full_name == f"{identity.first_name} {identity.last_name}"
    assert len(identity.last_four_ssn) == 4 and identity.last_four_ssn.isdigit()
    assert len(identity.date_of_birth) == 10 and identity.emails and identity.address.country == "US"
    employment = await client.accounts.GetEmployment(
        account_pb2.GetEmploymentRequest(account_id=account_id), metadata=md
    )
    assert employment.employer.name and employment.title and employment.start_date
    assert employment.status in (data_pb2.EMPLOYMENT_STATUS_EMPLOYED, data_pb2.EMPLOYMENT_STATUS_TERMINATED)
    income = await client.accounts.GetIncome(account_pb2.GetIncomeRequest(account_id=account_id), metadata=md)
    assert income.compensation_amount_cents > 0 and income.currency == "USD"
    assert income.HasField("refreshed_at") and income.HasField("updated_at")
    stubs = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=md
    )
    assert len(stubs.paystubs) >= 6
    for stub in stubs.paystubs:
        gross = stub.gross_pay.amount_cents
        assert gross == sum(e.amount.amount_cents for e in stub.earnings) > 0
        withheld = sum(d.amount.amount_cents for d in stub.deductions) + sum(
            t.amount.amount_cents for t in stub.taxes
        )
        assert stub.net_pay.amount_cents == gross - withheld > 0
        assert stub.gross_pay.currency == stub.net_pay.currency == "USD"
        assert stub.pay_period_start < stub.pay_period_end < stub.pay_date
    one = await client.accounts.GetPaystub(
        account_pb2.GetPaystubRequest(account_id=account_id, paystub_id=stubs.paystubs[0].id), metadata=md
    )
    assert one == stubs.paystubs[0]
    allocations = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=md
    )
    assert allocations.allocations and all(
        len(a.target.account_number_last_four) == 4 for a in allocations.allocations
    )
    assert allocations.allocations[-1].type == c.ALLOCATION_TYPE_REMAINDER
    # The allocations job of the batch waited for the switch: what is stored shows the switch.
    assert any(a.target.account_number_last_four == "9012" for a in allocations.allocations)
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=md
    )
    assert account.connected and account.monitoring_status == c.MONITORING_STATUS_ACTIVE
    for field in ("identity", "employment", "income", "paystubs", "direct_deposit_allocations"):
        assert account.data_refreshed_at.HasField(field) and account.data_updated_at.HasField(field)


async def test_user_error_jobs_end_in_platform_errors(client: Client, events: EventLog) -> None:
    _, session = await link_account(
        client,
        "user_error",
        [c.JOB_NAME_IDENTITY, c.JOB_NAME_PAYSTUBS, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
        allocation=TEST_ALLOCATION,
    )
    jobs = await session_jobs(client, session)
    for name in (c.JOB_NAME_IDENTITY, c.JOB_NAME_PAYSTUBS):
        job = jobs[name]
        assert (job.status, job.outcome, job.error_type, job.error_code) == (
            c.JOB_STATUS_ERROR,
            c.JOB_OUTCOME_ERROR,
            c.JOB_ERROR_TYPE_PLATFORM,
            c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE,
        )
        assert job.error_message and job.HasField("completed_at")
        await final_event(events, job)
    switch = jobs[c.JOB_NAME_DIRECT_DEPOSIT_SWITCH]
    assert (switch.status, switch.error_type, switch.error_code) == (
        c.JOB_STATUS_ERROR,
        c.JOB_ERROR_TYPE_PLATFORM,
        c.JOB_ERROR_CODE_ALLOCATION_REJECTED,
    )
    assert "blocked" in switch.error_message
    event = await final_event(events, switch)
    assert event.job.error_message == switch.error_message
    assert await settled_jobs(events, session.account_id) == [
        (c.JOB_NAME_IDENTITY, c.JOB_OUTCOME_ERROR, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE),
        (c.JOB_NAME_PAYSTUBS, c.JOB_OUTCOME_ERROR, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE),
        (c.JOB_NAME_DIRECT_DEPOSIT_SWITCH, c.JOB_OUTCOME_ERROR, c.JOB_ERROR_CODE_ALLOCATION_REJECTED),
    ]
    exc_account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=session.account_id), metadata=client.md()
    )
    assert exc_account.monitoring_status == c.MONITORING_STATUS_DEGRADED
    assert not exc_account.data_refreshed_at.HasField("identity")


async def test_user_pending_reports_pending_then_timeout(client: Client, events: EventLog) -> None:
    _, session = await client.connect("user_pending", [c.JOB_NAME_IDENTITY])
    assert session.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    job_id = session.jobs[0].job_id
    pending = await wait_job(client, job_id, until=lambda j: j.status == c.JOB_STATUS_PENDING)
    assert pending.outcome == c.JOB_OUTCOME_PENDING and not pending.HasField("completed_at")
    running = await client.link.GetSession(
        link_pb2.GetSessionRequest(session_id=session.id), metadata=client.md()
    )
    assert running.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    first = await events.wait_for(
        lambda r: r.event.event == "identity.added" and r.event.job.job_id == job_id
    )
    assert first[0].event.job.outcome == c.JOB_OUTCOME_PENDING
    assert first[0].event.job.error_code == c.JOB_ERROR_CODE_UNSPECIFIED

    final = await wait_job(client, job_id)
    assert (final.status, final.outcome, final.error_type, final.error_code) == (
        c.JOB_STATUS_ERROR,
        c.JOB_OUTCOME_ERROR,
        c.JOB_ERROR_TYPE_PLATFORM,
        c.JOB_ERROR_CODE_TIMEOUT,
    )
    last = await final_event(events, final)
    both = unique_events(
        [r for r in events.items if r.event.event == "identity.added" and r.event.job.job_id == job_id]
    )
    assert len(both) == 2
    assert [e.event.job.outcome for e in sorted(both.values(), key=lambda r: r.event.sequence)] == [
        c.JOB_OUTCOME_PENDING,
        c.JOB_OUTCOME_ERROR,
    ]
    assert first[0].event.event_id != last.event_id and first[0].event.sequence < last.sequence
    assert await settled_jobs(events, session.account_id) == [
        (c.JOB_NAME_IDENTITY, c.JOB_OUTCOME_ERROR, c.JOB_ERROR_CODE_TIMEOUT)
    ]
    await client.wait_session(session.id, S.LINK_SESSION_STATE_COMPLETED)


async def test_user_flaky_succeeds_on_the_third_attempt(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_flaky", [c.JOB_NAME_INCOME])
    job = (await session_jobs(client, session))[c.JOB_NAME_INCOME]
    assert (job.status, job.outcome, job.attempts) == (c.JOB_STATUS_SUCCESS, c.JOB_OUTCOME_SUCCESS, 3)
    assert job.error_code == c.JOB_ERROR_CODE_UNSPECIFIED and job.error_message == ""
    await final_event(events, job)
    # Retries publish nothing: one income.added for the job.
    assert await settled_jobs(events, session.account_id) == [(c.JOB_NAME_INCOME, c.JOB_OUTCOME_SUCCESS, 0)]
    assert len(unique_events([r for r in events.items if r.event.job.job_id == job.id])) == 1


async def test_user_nodata_reports_no_data(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_nodata", DATA_JOBS)
    jobs = await session_jobs(client, session)
    for job in jobs.values():
        # docs/spec.md §6: data jobs end `error` with `no_data`.
        assert (job.status, job.outcome, job.error_type, job.error_code) == (
            c.JOB_STATUS_ERROR,
            c.JOB_OUTCOME_ERROR,
            c.JOB_ERROR_TYPE_NO_DATA,
            c.JOB_ERROR_CODE_NO_DATA,
        )
        assert job.attempts == 1
        await final_event(events, job)
    assert {code for _, _, code in await settled_jobs(events, session.account_id)} == {
        c.JOB_ERROR_CODE_NO_DATA
    }
    # No data is not a platform failure: monitoring stays active.
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=session.account_id), metadata=client.md()
    )
    assert account.monitoring_status == c.MONITORING_STATUS_ACTIVE


async def test_user_locked_never_connects(client: Client) -> None:
    token, session = await client.connect("user_locked", DATA_JOBS, password="pass_good")
    assert session.state == S.LINK_SESSION_STATE_FAILED
    assert session.failure_reason == S.LINK_SESSION_FAILURE_REASON_ACCOUNT_LOCKED
    assert session.account_id == "" and list(session.jobs) == []
    assert await list_all_jobs(client, link_token_id=token.id) == []
    accounts = await client.accounts.ListAccounts(
        account_pb2.ListAccountsRequest(end_user_id=token.end_user_id), metadata=client.md()
    )
    assert list(accounts.accounts) == []


async def test_user_mfa_connects_after_the_code(client: Client, events: EventLog) -> None:
    token, session = await client.connect(
        "user_mfa", [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT], mfa_answer="mfa_code"
    )
    assert session.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    done = await client.wait_session(session.id, S.LINK_SESSION_STATE_COMPLETED)
    for job in (await session_jobs(client, done)).values():
        assert job.status == c.JOB_STATUS_SUCCESS
        await final_event(events, job)
    added = await events.wait_for(
        lambda r: r.event.account_id == done.account_id and r.event.event == "account.added"
    )
    assert added[0].event.account_added.end_user_id == token.end_user_id


async def test_user_reauth_mfa_asks_mfa_only_on_reaccess(client: Client, events: EventLog) -> None:
    _, first = await link_account(client, "user_reauth_mfa", [c.JOB_NAME_IDENTITY])
    account_id = first.account_id
    bound = await client.token([c.JOB_NAME_INCOME], account_id=account_id)
    session = await start_session(client, bound.token)
    assert session.state == S.LINK_SESSION_STATE_MFA_REQUIRED and session.mfa.type == "code"
    assert session.account_id == account_id and list(session.jobs) == []
    ok = await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=session.id, answer="mfa_code"), metadata=client.md()
    )
    assert ok.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    done = await client.wait_session(session.id, S.LINK_SESSION_STATE_COMPLETED)
    job = (await session_jobs(client, done))[c.JOB_NAME_INCOME]
    assert (
        job.status == c.JOB_STATUS_SUCCESS and job.link_token_id == bound.id and job.account_id == account_id
    )
    event = await final_event(events, job)
    assert event.job.link_token_id == bound.id


async def test_user_expired_needs_credentials_again(client: Client, events: EventLog) -> None:
    _, first = await link_account(client, "user_expired", [c.JOB_NAME_IDENTITY])
    account_id = first.account_id
    job = (await session_jobs(client, first))[c.JOB_NAME_IDENTITY]
    assert job.status == c.JOB_STATUS_SUCCESS  # the first login works
    await final_event(events, job)
    bound = await client.token([c.JOB_NAME_EMPLOYMENT], account_id=account_id)
    session = await start_session(client, bound.token)
    assert session.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED and session.account_id == account_id
    assert session.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS
    await wait_account(
        client, account_id, lambda a: a.monitoring_status == c.MONITORING_STATUS_USER_ACTION_REQUIRED
    )
    expired = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.monitoring_status.updated"
    )
    assert expired[0].event.monitoring_status_updated.reason == "credentials_expired"

    relinked = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session.id, username="user_expired", password="pass_good"
        ),
        metadata=client.md(),
    )
    assert relinked.state == S.LINK_SESSION_STATE_JOBS_RUNNING and relinked.account_id == account_id
    done = await client.wait_session(session.id, S.LINK_SESSION_STATE_COMPLETED)
    job = (await session_jobs(client, done))[c.JOB_NAME_EMPLOYMENT]
    assert job.status == c.JOB_STATUS_SUCCESS
    await final_event(events, job)
    back = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.monitoring_status.updated",
        count=2,
    )
    reasons = [
        r.event.monitoring_status_updated.reason
        for r in sorted(unique_events(back).values(), key=lambda r: r.event.sequence)
    ]
    assert reasons == ["credentials_expired", "reaccess_succeeded"]
