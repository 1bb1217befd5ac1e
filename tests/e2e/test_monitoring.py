"""Monitoring (issue 12) end to end: scheduled refreshes through the real server, PostgreSQL and
Kafka, with the sandbox's clock and controls. Events are read back from Kafka."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from paylink.v1 import (
    account_pb2,
    job_pb2,
    link_pb2,
    monitoring_pb2,
    monitoring_pb2_grpc,
    sandbox_pb2,
)
from paylink.v1 import common_pb2 as c

from service import runtime
from service.worker import Worker
from tests.harness import (
    Client,
    EventLog,
    Received,
    error_reason,
    link_account,
    rpc_error,
    start_session,
    violation_fields,
    wait_account,
    wait_job,
)

STATUS_EVENT = "account.monitoring_status.updated"


def _monitoring(client: Client) -> monitoring_pb2_grpc.MonitoringServiceAsyncStub:
    return monitoring_pb2_grpc.MonitoringServiceStub(client.channel)


async def _trigger(client: Client, account_id: str, *names: c.JobName.ValueType) -> list[str]:
    reply = await client.sandbox.TriggerRefreshes(
        sandbox_pb2.TriggerRefreshesRequest(account_id=account_id, names=list(names)), metadata=client.md()
    )
    return list(reply.job_ids)


async def _account(client: Client, account_id: str) -> account_pb2.Account:
    return await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
    )


async def _all_events(app: runtime.Running, events: EventLog, account_id: str) -> list[Received]:
    """Every event the account has so far, read from Kafka: waits until each sequence up to the
    account's last one has arrived (sequences have no holes), so an absent event is really absent."""
    last = await app.deps.pool.fetchval(
        "SELECT sequence FROM account_event_sequences WHERE account_id = $1::uuid", account_id
    )
    await events.wait_for(lambda r: r.event.account_id == account_id and r.event.sequence == last, timeout=30)
    seen = {r.event.sequence: r for r in events.for_account(account_id)}
    missing = set(range(1, last + 1)) - set(seen)
    for _ in range(100):
        if not missing:
            break
        await asyncio.sleep(0.1)
        seen = {r.event.sequence: r for r in events.for_account(account_id)}
        missing = set(range(1, last + 1)) - set(seen)
    assert not missing, f"sequences {sorted(missing)} never arrived"
    return [seen[s] for s in sorted(seen)]


async def test_unchanged_data_moves_refreshed_at_and_publishes_nothing(
    client: Client, events: EventLog, app: runtime.Running
) -> None:
    _, session = await link_account(client, "user_good+unchanged", [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME])
    account_id = session.account_id
    before = await _account(client, account_id)
    # Every supported data type has a schedule, first due within the second half of its cadence.
    assert {s.name for s in before.schedules} == {
        c.JOB_NAME_IDENTITY,
        c.JOB_NAME_EMPLOYMENT,
        c.JOB_NAME_INCOME,
        c.JOB_NAME_PAYSTUBS,
        c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS,
    }
    assert all(
        s.active and s.next_refresh_at.ToDatetime() > before.created_at.ToDatetime() for s in before.schedules
    )
    assert before.monitoring_enabled and before.HasField("refreshed_at")

    job_ids = await _trigger(client, account_id, c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME)
    assert len(job_ids) == 2
    for job_id in job_ids:
        job = await wait_job(client, job_id)
        assert (job.status, job.origin, job.scheduled) == (c.JOB_STATUS_SUCCESS, c.JOB_ORIGIN_REFRESH, True)
    after = await _account(client, account_id)
    for field in ("identity", "income"):
        assert (
            getattr(after.data_refreshed_at, field).ToDatetime()
            > getattr(before.data_refreshed_at, field).ToDatetime()
        )
        assert getattr(after.data_updated_at, field) == getattr(before.data_updated_at, field)
    assert after.refreshed_at.ToDatetime() > before.refreshed_at.ToDatetime()
    # The schedule moved a cadence on.
    identity = next(s for s in after.schedules if s.name == c.JOB_NAME_IDENTITY)
    assert identity.next_refresh_at.ToDatetime() > after.refreshed_at.ToDatetime()

    everything = await _all_events(app, events, account_id)
    assert not [
        r for r in everything if r.event.WhichOneof("payload") == "job" and r.event.job.job_id in job_ids
    ]
    assert not [r for r in everything if r.event.event == "link_session.completed" and r.event.sequence > 4]
    assert [r.event.event for r in everything][:1] == ["account.added"]


async def test_a_new_paystub_is_published_with_it(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_good+newstub", [c.JOB_NAME_PAYSTUBS])
    account_id = session.account_id
    listed = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=client.md()
    )
    assert len(listed.paystubs) == 6
    moved = await client.sandbox.AdvanceClock(
        sandbox_pb2.AdvanceClockRequest(account_id=account_id, days=14), metadata=client.md()
    )
    assert moved.days_advanced == 14 and moved.platform_date
    # The daily schedule moved 14 days earlier with the clock: due now (the scheduler or the
    # trigger below queues it; either way one refresh).
    paystubs = next(s for s in moved.account.schedules if s.name == c.JOB_NAME_PAYSTUBS)
    assert paystubs.next_refresh_at.ToDatetime() < moved.account.created_at.ToDatetime()
    await _trigger(client, account_id, c.JOB_NAME_PAYSTUBS)

    found = await events.wait_for(
        lambda r: (
            r.event.account_id == account_id
            and r.event.event == "paystubs.added"
            and r.event.job.change.monitoring
        )
    )
    change = found[0].event.job.change
    assert (
        found[0].event.job.origin == c.JOB_ORIGIN_REFRESH
        and found[0].event.job.outcome == c.JOB_OUTCOME_SUCCESS
    )
    assert len(change.added_paystubs) == 1
    added = change.added_paystubs[0]
    assert added.pay_date > listed.paystubs[0].pay_date and added.account_id == account_id
    assert (
        not added.HasField("net_pay") and not added.HasField("gross_pay") and not added.earnings
    )  # no pay figures
    stored = await client.accounts.GetPaystub(
        account_pb2.GetPaystubRequest(account_id=account_id, paystub_id=added.id), metadata=client.md()
    )
    assert stored.pay_date == added.pay_date and stored.net_pay.amount_cents > 0
    now = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=client.md()
    )
    assert len(now.paystubs) == 7 and now.updated_at.ToDatetime() > listed.updated_at.ToDatetime()


async def test_an_allocation_changed_outside_paylink_is_published_with_counts_not_bank_details(
    client: Client, events: EventLog
) -> None:
    _, session = await link_account(client, "user_good+moved", [c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS])
    account_id = session.account_id
    before = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=client.md()
    )
    target = c.AllocationTarget(
        type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        routing_number="011000015",
        account_number="5550001234",
        name="Fraud Bank",
    )
    changed = await client.sandbox.ChangeAllocation(
        sandbox_pb2.ChangeAllocationRequest(account_id=account_id, target=target), metadata=client.md()
    )
    assert [a.target.account_number_last_four for a in changed.allocations.allocations] == ["1234"]
    (job_id,) = await _trigger(client, account_id, c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS)

    found = await events.wait_for(
        lambda r: r.event.event == "direct_deposit_allocations.added" and r.event.job.job_id == job_id
    )
    change = found[0].event.job.change
    assert change.monitoring
    assert (change.previous_allocation_count, change.allocation_count) == (
        len(before.allocations),
        len(changed.allocations.allocations),
    )
    # Counts, not bank details: the allocations are read with GetDirectDepositAllocations (audited).
    assert not change.HasField("previous_allocations") and not change.HasField("allocations")
    wire = found[0].event.SerializeToString()
    assert b"5550001234" not in wire and b"Fraud Bank" not in wire and b"011000015" not in wire
    after = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=client.md()
    )
    assert list(after.allocations) == list(changed.allocations.allocations)
    assert after.updated_at.ToDatetime() > before.updated_at.ToDatetime()

    bad = await rpc_error(
        client.sandbox.ChangeAllocation(
            sandbox_pb2.ChangeAllocationRequest(
                account_id=account_id,
                target=c.AllocationTarget(
                    type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING, routing_number="123", account_number="1"
                ),
            ),
            metadata=client.md(),
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(bad) == ["target.routing_number", "target.account_number"]


async def test_a_switch_made_through_paylink_is_no_change_to_the_next_refresh_but_a_later_move_is(
    client: Client, events: EventLog, app: runtime.Running
) -> None:
    """The sandbox platform keeps a switch paylink made, as a real one would: the next allocations
    refresh finds what the switch stored and publishes nothing; a move outside paylink afterwards
    is still reported."""
    target = c.AllocationTarget(
        type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        routing_number="021000021",
        account_number="123456789012",
        name="Pay",
    )
    allocation = c.Allocation(type=c.ALLOCATION_TYPE_AMOUNT, value=25_000, targets=[target])
    _, session = await link_account(
        client, "user_good+switchkept", [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], allocation=allocation
    )
    account_id = session.account_id
    switched = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=client.md()
    )
    assert switched.allocations[0].target.account_number_last_four == "9012"

    (job_id,) = await _trigger(client, account_id, c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS)
    assert (await wait_job(client, job_id)).status == c.JOB_STATUS_SUCCESS
    everything = await _all_events(app, events, account_id)
    assert not [
        r for r in everything if r.event.WhichOneof("payload") == "job" and r.event.job.job_id == job_id
    ]
    after = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=client.md()
    )
    assert list(after.allocations) == list(switched.allocations)
    assert after.updated_at == switched.updated_at  # refreshed, not changed

    moved = c.AllocationTarget(
        type=c.DEPOSIT_ACCOUNT_TYPE_SAVINGS,
        routing_number="011000015",
        account_number="5550004321",
        name="Away",
    )
    await client.sandbox.ChangeAllocation(
        sandbox_pb2.ChangeAllocationRequest(account_id=account_id, target=moved), metadata=client.md()
    )
    (moved_job,) = await _trigger(client, account_id, c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS)
    found = await events.wait_for(
        lambda r: r.event.event == "direct_deposit_allocations.added" and r.event.job.job_id == moved_job
    )
    assert found[0].event.job.change.monitoring
    assert found[0].event.job.change.allocation_count == 1


async def test_expired_credentials_stop_refreshes_until_a_bound_link_token_restores_active(
    client: Client, events: EventLog, app: runtime.Running
) -> None:
    _, session = await link_account(client, "user_good+expiry", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    await client.sandbox.ExpireCredentials(
        sandbox_pb2.ExpireCredentialsRequest(account_id=account_id), metadata=client.md()
    )
    (job_id,) = await _trigger(client, account_id, c.JOB_NAME_IDENTITY)
    job = await wait_job(client, job_id)
    assert job.error_code == c.JOB_ERROR_CODE_INVALID_CREDENTIALS
    account = await wait_account(
        client, account_id, lambda a: a.monitoring_status == c.MONITORING_STATUS_USER_ACTION_REQUIRED
    )
    status = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == STATUS_EVENT
    )
    payload = status[0].event.monitoring_status_updated
    assert (payload.previous_status, payload.monitoring_status, payload.reason) == (
        c.MONITORING_STATUS_ACTIVE,
        c.MONITORING_STATUS_USER_ACTION_REQUIRED,
        "credentials_expired",
    )
    # Refreshes stop: nothing is scheduled while the user must act.
    assert not any(s.active for s in account.schedules)
    assert await _trigger(client, account_id) == []
    needing_user = await client.accounts.ListAccounts(
        account_pb2.ListAccountsRequest(
            monitoring_status=c.MONITORING_STATUS_USER_ACTION_REQUIRED, connected=True
        ),
        metadata=client.md(),
    )
    assert [a.id for a in needing_user.accounts] == [account_id]

    # On Demand Updates: a token bound to the account; the user logs in again.
    bound = await client.token([c.JOB_NAME_EMPLOYMENT], account_id=account_id)
    relink = await start_session(client, bound.token)
    assert relink.state == link_pb2.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    relinked = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=relink.id, username="user_good+expiry", password="pass_good"
        ),
        metadata=client.md(),
    )
    assert relinked.account_id == account_id
    account = await wait_account(
        client, account_id, lambda a: a.monitoring_status == c.MONITORING_STATUS_ACTIVE
    )
    assert all(s.active for s in account.schedules)
    back = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == STATUS_EVENT, count=2
    )
    assert {r.event.monitoring_status_updated.reason for r in back} == {
        "credentials_expired",
        "reaccess_succeeded",
    }
    # Refreshes resume (queued by the trigger, or by the scheduler if it came first).
    await _trigger(client, account_id, c.JOB_NAME_IDENTITY)
    for _ in range(300):
        done = await app.deps.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE account_id = $1::uuid AND scheduled AND status = 'success'",
            account_id,
        )
        if done:
            break
        await asyncio.sleep(0.1)
    assert done


async def test_disabled_monitoring_is_customer_disabled_and_refreshes_nothing(
    client: Client, events: EventLog, app: runtime.Running
) -> None:
    _, session = await link_account(client, "user_good+off", [c.JOB_NAME_IDENTITY])
    _, witness = await link_account(client, "user_good+witness", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    monitoring = _monitoring(client)
    off = await monitoring.DisableMonitoring(
        monitoring_pb2.DisableMonitoringRequest(account_id=account_id), metadata=client.md()
    )
    assert off.monitoring_status == c.MONITORING_STATUS_CUSTOMER_DISABLED and not off.monitoring_enabled
    assert off.connected and not any(s.active for s in off.schedules)
    status = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == STATUS_EVENT
    )
    assert status[0].event.monitoring_status_updated.reason == "monitoring_disabled"
    again = await monitoring.DisableMonitoring(
        monitoring_pb2.DisableMonitoringRequest(account_id=account_id), metadata=client.md()
    )
    assert again.monitoring_status == c.MONITORING_STATUS_CUSTOMER_DISABLED  # idempotent
    assert await _trigger(client, account_id) == []

    # A month passes for both accounts: the scheduler refreshes the witness, not the disabled one.
    for which in (account_id, witness.account_id):
        await client.sandbox.AdvanceClock(
            sandbox_pb2.AdvanceClockRequest(account_id=which, days=31), metadata=client.md()
        )
    scheduled = await _wait_scheduled(app, witness.account_id, 5)
    assert len(scheduled) == 5
    assert await _scheduled_jobs(app, account_id) == []

    on = await monitoring.EnableMonitoring(
        monitoring_pb2.EnableMonitoringRequest(account_id=account_id), metadata=client.md()
    )
    assert on.monitoring_status == c.MONITORING_STATUS_ACTIVE and on.monitoring_enabled
    assert len(await _wait_scheduled(app, account_id, 5)) == 5  # what fell due meanwhile runs now
    reasons = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == STATUS_EVENT, count=2
    )
    assert {r.event.monitoring_status_updated.reason for r in reasons} == {
        "monitoring_disabled",
        "monitoring_enabled",
    }

    missing = str(uuid.uuid4())
    exc = await rpc_error(
        monitoring.DisableMonitoring(
            monitoring_pb2.DisableMonitoringRequest(account_id=missing), metadata=client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    await client.accounts.DisconnectAccount(
        account_pb2.DisconnectAccountRequest(account_id=witness.account_id), metadata=client.md()
    )
    exc = await rpc_error(
        monitoring.EnableMonitoring(
            monitoring_pb2.EnableMonitoringRequest(account_id=witness.account_id), metadata=client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(exc) == "ACCOUNT_DISCONNECTED"


async def _scheduled_jobs(app: runtime.Running, account_id: str) -> list[int]:
    rows = await app.deps.pool.fetch(
        "SELECT name FROM jobs WHERE account_id = $1::uuid AND scheduled ORDER BY name", account_id
    )
    return [r["name"] for r in rows]


async def _wait_scheduled(app: runtime.Running, account_id: str, count: int) -> list[int]:
    for _ in range(300):
        found = await _scheduled_jobs(app, account_id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"the scheduler queued {await _scheduled_jobs(app, account_id)} for {account_id}")


async def test_workspace_settings(client: Client) -> None:
    monitoring = _monitoring(client)
    settings = await monitoring.GetMonitoringSettings(
        monitoring_pb2.GetMonitoringSettingsRequest(), metadata=client.md()
    )
    assert settings.enabled and len(settings.cadences) == 5 and all(x.is_default for x in settings.cadences)
    daily = {x.name: x.cadence.seconds for x in settings.cadences}
    assert daily[c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS] == 86400 and daily[c.JOB_NAME_IDENTITY] == 30 * 86400
    request = monitoring_pb2.UpdateMonitoringSettingsRequest(
        cadences=[monitoring_pb2.RefreshCadence(name=c.JOB_NAME_IDENTITY)]
    )
    request.cadences[0].cadence.seconds = 6 * 3600
    updated = await monitoring.UpdateMonitoringSettings(request, metadata=client.md())
    identity = next(x for x in updated.cadences if x.name == c.JOB_NAME_IDENTITY)
    assert identity.cadence.seconds == 6 * 3600 and not identity.is_default
    _, session = await link_account(client, "user_good+cadence", [c.JOB_NAME_IDENTITY])
    account = await _account(client, session.account_id)
    assert next(s for s in account.schedules if s.name == c.JOB_NAME_IDENTITY).cadence.seconds == 6 * 3600

    paused = await monitoring.UpdateMonitoringSettings(
        monitoring_pb2.UpdateMonitoringSettingsRequest(enabled=False), metadata=client.md()
    )
    assert not paused.enabled
    account = await _account(client, session.account_id)
    assert (
        not any(s.active for s in account.schedules)
        and account.monitoring_status == c.MONITORING_STATUS_ACTIVE
    )
    assert await _trigger(client, session.account_id) == []
    await monitoring.UpdateMonitoringSettings(
        monitoring_pb2.UpdateMonitoringSettingsRequest(enabled=True), metadata=client.md()
    )
    assert all(s.active for s in (await _account(client, session.account_id)).schedules)

    bad = monitoring_pb2.UpdateMonitoringSettingsRequest(
        cadences=[
            monitoring_pb2.RefreshCadence(name=c.JOB_NAME_DIRECT_DEPOSIT_SWITCH),
            monitoring_pb2.RefreshCadence(name=c.JOB_NAME_PAYSTUBS),
        ]
    )
    bad.cadences[1].cadence.seconds = 60
    exc = await rpc_error(monitoring.UpdateMonitoringSettings(bad, metadata=client.md()))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(exc) == ["cadences[0].name", "cadences[1].cadence"]


async def test_two_workers_never_run_the_same_refresh(client: Client, app: runtime.Running) -> None:
    """A second worker process's worth of claims beside the app's: still one refresh per account
    and job type in flight, whoever asks (CreateJob calls, the schedule)."""
    extra = Worker(app.deps, worker_id="second-worker")
    task = asyncio.create_task(extra.run())
    try:
        _, session = await link_account(
            client, "user_good+race", [c.JOB_NAME_IDENTITY], platform_id="sandbox_slow"
        )
        account_id = session.account_id
        calls = [
            client.jobs.CreateJob(
                job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_INCOME), metadata=client.md()
            )
            for _ in range(10)
        ]
        created = await asyncio.gather(*calls)
        triggered = await _trigger(client, account_id, c.JOB_NAME_INCOME)
        # All ten calls got the one refresh in flight (sandbox_slow keeps it running for a while),
        # and the schedule found it covered.
        assert len({j.id for j in created}) == 1 and triggered == []
        job = await wait_job(client, created[0].id)
        assert job.status == c.JOB_STATUS_SUCCESS and job.attempts == 1
        count = await app.deps.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE account_id = $1::uuid AND name = $2 AND origin = $3",
            account_id,
            c.JOB_NAME_INCOME,
            c.JOB_ORIGIN_REFRESH,
        )
        assert count == 1
        # Once it finished, the next one is a new refresh.
        (after,) = await _trigger(client, account_id, c.JOB_NAME_INCOME)
        assert after != created[0].id
        await wait_job(client, after)
    finally:
        extra.stop()
        await task


async def test_tags_reach_the_account_its_jobs_and_its_events(client: Client, events: EventLog) -> None:
    tags = {"team": "risk", "cohort": "2026-11"}
    _, session = await link_account(client, "user_good+tags", [c.JOB_NAME_IDENTITY], tags=tags)
    account_id = session.account_id
    account = await _account(client, account_id)
    assert dict(account.tags) == tags
    link_job = await client.jobs.GetJob(
        job_pb2.GetJobRequest(job_id=session.jobs[0].job_id), metadata=client.md()
    )
    assert dict(link_job.tags) == tags
    refresh = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_EMPLOYMENT), metadata=client.md()
    )
    assert dict(refresh.tags) == tags
    (scheduled,) = await _trigger(client, account_id, c.JOB_NAME_INCOME)
    assert dict((await wait_job(client, scheduled)).tags) == tags
    await wait_job(client, refresh.id)
    names = {"account.added", "identity.added", "link_session.completed", "employment.added", "income.added"}
    for name in names:
        await events.wait_for(lambda r, n=name: r.event.account_id == account_id and r.event.event == n)  # type: ignore[misc]
    found = [r for r in events.for_account(account_id) if r.event.event in names]
    assert all(dict(r.event.tags) == tags for r in found)
    listed = await client.jobs.ListJobs(job_pb2.ListJobsRequest(account_id=account_id), metadata=client.md())
    assert listed.jobs and all(dict(j.tags) == tags for j in listed.jobs)


async def test_a_bound_session_keeps_monitoring_off_when_the_customer_turned_it_off(client: Client) -> None:
    _, session = await link_account(client, "user_good+keepoff", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    await _monitoring(client).DisableMonitoring(
        monitoring_pb2.DisableMonitoringRequest(account_id=account_id), metadata=client.md()
    )
    bound = await client.token([c.JOB_NAME_EMPLOYMENT], account_id=account_id)
    relink = await start_session(client, bound.token)
    assert relink.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING  # re-access worked
    await client.wait_session(relink.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    account = await _account(client, account_id)
    assert (
        account.monitoring_status == c.MONITORING_STATUS_CUSTOMER_DISABLED and not account.monitoring_enabled
    )
    assert not any(s.active for s in account.schedules)
