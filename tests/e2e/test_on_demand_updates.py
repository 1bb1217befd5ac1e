"""The seed scenario end to end: identity link, match, then a deposit switch on the same account
with no credentials; and the same with MFA on re-access. Events are read back from Kafka."""

from __future__ import annotations

from paylink.v1 import account_pb2, job_pb2, link_pb2
from paylink.v1 import common_pb2 as c

from tests.harness import Client, EventLog

TARGET = c.AllocationTarget(
    type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING,
    routing_number="021000021",
    account_number="123456789012",
    name="Everyday Checking",
)
SWITCH_ALLOCATION = c.Allocation(type=c.ALLOCATION_TYPE_AMOUNT, value=25_000, targets=[TARGET])


async def test_identity_then_switch_without_credentials(client: Client, events: EventLog) -> None:
    _, session = await client.connect("user_good", [c.JOB_NAME_IDENTITY])
    assert session.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    account_id = session.account_id
    settled = await events.settled(account_id)
    assert [j.outcome for j in settled.event.link_session_completed.jobs] == [c.JOB_OUTCOME_SUCCESS]

    identity = await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=account_id), metadata=client.md()
    )
    assert identity.full_name and len(identity.last_four_ssn) == 4 and identity.date_of_birth
    assert identity.account_id == account_id and identity.HasField("updated_at")

    second = await client.token(
        [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], account_id=account_id, allocation=SWITCH_ALLOCATION
    )
    assert second.bound_account_id == account_id
    session2 = await client.link.StartSession(
        link_pb2.StartSessionRequest(token=second.token), metadata=client.md()
    )
    # No credential screen: re-access with the stored grant connected it straight away.
    assert session2.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    assert session2.account_id == account_id and session2.on_demand_update
    done = await client.wait_session(session2.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    assert done.jobs[0].outcome == c.JOB_OUTCOME_SUCCESS

    switch = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "direct_deposit_switch.added"
    )
    allocations = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "direct_deposit_allocations.added"
    )
    assert (
        switch[0].event.job.params.direct_deposit_switch.allocation.targets[0].account_number_last_four
        == "9012"
    )
    assert switch[0].event.job.params.direct_deposit_switch.allocation.targets[0].account_number == ""
    assert allocations[0].topic.endswith("direct_deposit_allocations.added")
    stored = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=client.md()
    )
    assert any(a.target.account_number_last_four == "9012" for a in stored.allocations)

    # Every event of the account: key, headers, and a gap-free sequence from 1.
    await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "link_session.completed", count=2
    )
    received = events.for_account(account_id)
    unique = {r.event.event_id: r for r in received}
    sequences = sorted(r.event.sequence for r in unique.values())
    assert sequences == list(range(1, len(sequences) + 1))
    for r in received:
        assert r.key == account_id
        assert r.headers["event-id"] == r.event.event_id
        assert r.headers["event-type"] == r.event.event
        assert r.headers["content-type"] == "application/x-protobuf"
        assert r.event.api_version == "2021-07-28"
    names = [r.event.event for r in sorted(unique.values(), key=lambda r: r.event.sequence)]
    assert names[0] == "account.added"

    jobs = await client.jobs.ListJobs(job_pb2.ListJobsRequest(account_id=account_id), metadata=client.md())
    assert sorted(j.name for j in jobs.jobs) == [c.JOB_NAME_IDENTITY, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH]


async def test_mfa_on_reaccess(client: Client, events: EventLog) -> None:
    _, session = await client.connect("user_reauth_mfa", [c.JOB_NAME_IDENTITY])
    assert session.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING  # first login: no MFA
    account_id = session.account_id
    await events.settled(account_id)
    token = await client.token(
        [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], account_id=account_id, allocation=SWITCH_ALLOCATION
    )
    session = await client.link.StartSession(
        link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
    )
    assert session.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED
    assert session.mfa.prompt and session.account_id == account_id
    wrong = await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=session.id, answer="nope"), metadata=client.md()
    )
    assert wrong.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED
    assert wrong.last_error == c.JOB_ERROR_CODE_MFA_FAILED and wrong.failed_attempts == 1
    ok = await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=session.id, answer="mfa_code"), metadata=client.md()
    )
    assert ok.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING and ok.account_id == account_id
    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    switch = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "direct_deposit_switch.added"
    )
    assert switch[0].event.job.outcome == c.JOB_OUTCOME_SUCCESS
