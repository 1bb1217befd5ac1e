"""Server-side refresh (JobService.CreateJob), data timestamps, monitoring status, disconnecting,
and SandboxService availability."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from paylink.v1 import account_pb2, job_pb2, sandbox_pb2
from paylink.v1 import common_pb2 as c

from service import runtime
from tests.conftest import new_client
from tests.harness import (
    Client,
    EventLog,
    Received,
    error_reason,
    link_account,
    rpc_error,
    violation_fields,
    wait_account,
    wait_job,
)


async def _refresh(client: Client, account_id: str, name: c.JobName.ValueType, **fields: Any) -> job_pb2.Job:
    job = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=account_id, name=name, **fields), metadata=client.md()
    )
    assert job.origin == c.JOB_ORIGIN_REFRESH and job.link_token_id == "" and job.link_session_id == ""
    assert job.status in (c.JOB_STATUS_QUEUED, c.JOB_STATUS_RUNNING, c.JOB_STATUS_SUCCESS)
    return await wait_job(client, job.id)


def _completed_for(job_id: str) -> Callable[[Received], bool]:
    return lambda r: (
        r.event.event == "link_session.completed"
        and any(j.job_id == job_id for j in r.event.link_session_completed.jobs)
    )


async def test_refresh_identity_without_a_user(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_good+refresh", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    before = await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=account_id), metadata=client.md()
    )

    job = await _refresh(client, account_id, c.JOB_NAME_IDENTITY)
    assert (job.status, job.outcome, job.origin, job.link_token_id) == (
        c.JOB_STATUS_SUCCESS,
        c.JOB_OUTCOME_SUCCESS,
        c.JOB_ORIGIN_REFRESH,
        "",
    )
    added = await events.wait_for(
        lambda r: r.event.event == "identity.added" and r.event.job.job_id == job.id
    )
    assert added[0].event.job.origin == c.JOB_ORIGIN_REFRESH and added[0].event.job.link_token_id == ""
    assert added[0].event.job.outcome == c.JOB_OUTCOME_SUCCESS
    completed = (await events.wait_for(_completed_for(job.id)))[0].event.link_session_completed
    assert completed.origin == c.JOB_ORIGIN_REFRESH
    assert completed.link_session_id == "" and completed.link_token_id == ""
    assert [(j.job_id, j.outcome) for j in completed.jobs] == [(job.id, c.JOB_OUTCOME_SUCCESS)]

    after = await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=account_id), metadata=client.md()
    )
    assert after.full_name == before.full_name
    assert after.refreshed_at.ToDatetime() > before.refreshed_at.ToDatetime()
    assert after.updated_at == before.updated_at  # same data: updated_at stays

    second = await _refresh(client, account_id, c.JOB_NAME_IDENTITY)
    assert second.status == c.JOB_STATUS_SUCCESS and second.id != job.id
    again = await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=account_id), metadata=client.md()
    )
    assert again.refreshed_at.ToDatetime() > after.refreshed_at.ToDatetime()
    assert again.updated_at == before.updated_at
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
    )
    assert account.data_refreshed_at.identity == again.refreshed_at
    assert account.data_updated_at.identity == before.updated_at

    # CreateJob is idempotent with request_id.
    one = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_INCOME, request_id="refresh-1"),
        metadata=client.md(),
    )
    two = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_INCOME, request_id="refresh-1"),
        metadata=client.md(),
    )
    assert one.id == two.id
    await wait_job(client, one.id)


async def test_new_paystub_moves_updated_at(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_good+stub", [c.JOB_NAME_PAYSTUBS])
    account_id = session.account_id
    listed = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=client.md()
    )
    assert len(listed.paystubs) == 6

    added = await client.sandbox.AddPaystub(
        sandbox_pb2.AddPaystubRequest(account_id=account_id), metadata=client.md()
    )
    assert added.added_paystubs == 1
    assert added.newest_paystub.pay_date > listed.paystubs[0].pay_date
    # Not stored until a refresh.
    unchanged = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=client.md()
    )
    assert len(unchanged.paystubs) == 6

    job = await _refresh(client, account_id, c.JOB_NAME_PAYSTUBS)
    assert job.status == c.JOB_STATUS_SUCCESS
    refreshed = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=client.md()
    )
    assert len(refreshed.paystubs) == 7
    assert refreshed.paystubs[0].pay_date == added.newest_paystub.pay_date
    assert refreshed.paystubs[0].net_pay == added.newest_paystub.net_pay
    assert refreshed.updated_at.ToDatetime() > listed.updated_at.ToDatetime()
    assert refreshed.refreshed_at.ToDatetime() > listed.refreshed_at.ToDatetime()
    assert {p.id for p in listed.paystubs} < {p.id for p in refreshed.paystubs}  # old ones keep their ids

    # A refresh with nothing new: refreshed_at moves, updated_at stays.
    await _refresh(client, account_id, c.JOB_NAME_PAYSTUBS)
    same = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=account_id), metadata=client.md()
    )
    assert len(same.paystubs) == 7 and same.updated_at == refreshed.updated_at
    assert same.refreshed_at.ToDatetime() > refreshed.refreshed_at.ToDatetime()

    # Paystub parameters of a refresh are recorded on the job.
    limited = await _refresh(client, account_id, c.JOB_NAME_PAYSTUBS, paystubs=c.PaystubsParams(count=2))
    assert limited.status == c.JOB_STATUS_SUCCESS and limited.params.paystubs.count == 2
    event = await events.wait_for(
        lambda r: r.event.event == "paystubs.added" and r.event.job.job_id == limited.id
    )
    assert event[0].event.job.params.paystubs.count == 2


async def _monitoring_rows(app: runtime.Running, account_id: str) -> int:
    rows: int = await app.deps.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE account_id = $1::uuid AND event_type = 'account.monitoring_status.updated'",
        account_id,
    )
    return rows


async def test_refresh_that_needs_mfa_ends_user_action_required(
    client: Client, events: EventLog, app: runtime.Running
) -> None:
    _, session = await link_account(client, "user_reauth_mfa+refresh", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    job = await _refresh(client, account_id, c.JOB_NAME_EMPLOYMENT)
    assert (job.status, job.outcome, job.error_type, job.error_code) == (
        c.JOB_STATUS_ERROR,
        c.JOB_OUTCOME_ERROR,
        c.JOB_ERROR_TYPE_USER_ACTION,
        c.JOB_ERROR_CODE_USER_ACTION_REQUIRED,
    )
    account = await wait_account(
        client, account_id, lambda a: a.monitoring_status == c.MONITORING_STATUS_USER_ACTION_REQUIRED
    )
    assert account.connected
    updated = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.monitoring_status.updated"
    )
    payload = updated[0].event.monitoring_status_updated
    assert (payload.previous_status, payload.monitoring_status, payload.reason) == (
        c.MONITORING_STATUS_ACTIVE,
        c.MONITORING_STATUS_USER_ACTION_REQUIRED,
        "mfa_required",
    )
    event = await events.wait_for(
        lambda r: r.event.event == "employment.added" and r.event.job.job_id == job.id
    )
    assert event[0].event.job.error_code == c.JOB_ERROR_CODE_USER_ACTION_REQUIRED
    completed = (await events.wait_for(_completed_for(job.id)))[0].event.link_session_completed
    assert completed.origin == c.JOB_ORIGIN_REFRESH
    assert [(j.outcome, j.error_code) for j in completed.jobs] == [
        (c.JOB_OUTCOME_ERROR, c.JOB_ERROR_CODE_USER_ACTION_REQUIRED)
    ]

    # A second failing refresh does not publish the same status again.
    again = await _refresh(client, account_id, c.JOB_NAME_EMPLOYMENT)
    assert again.error_code == c.JOB_ERROR_CODE_USER_ACTION_REQUIRED
    await events.wait_for(_completed_for(again.id))
    assert await _monitoring_rows(app, account_id) == 1


async def test_create_job_preconditions(client: Client) -> None:
    _, session = await link_account(client, "user_good+pre", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    exc = await rpc_error(
        client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_DIRECT_DEPOSIT_SWITCH),
            metadata=client.md(),
        )
    )
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(exc) == "USER_REQUIRED"
    exc = await rpc_error(
        client.jobs.CreateJob(job_pb2.CreateJobRequest(account_id=account_id), metadata=client.md())
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["name"]
    exc = await rpc_error(
        client.jobs.CreateJob(
            job_pb2.CreateJobRequest(
                account_id=account_id, name=c.JOB_NAME_IDENTITY, paystubs=c.PaystubsParams(count=1)
            ),
            metadata=client.md(),
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["paystubs"]
    exc = await rpc_error(
        client.jobs.CreateJob(
            job_pb2.CreateJobRequest(
                account_id="2b1a3c4d-0000-4000-8000-000000000000", name=c.JOB_NAME_IDENTITY
            ),
            metadata=client.md(),
        )
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND

    # The gig platform has no employment job.
    _, gig = await link_account(client, "user_good+gig", [c.JOB_NAME_IDENTITY], platform_id="sandbox_gig")
    exc = await rpc_error(
        client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=gig.account_id, name=c.JOB_NAME_EMPLOYMENT),
            metadata=client.md(),
        )
    )
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(exc) == "JOB_NOT_SUPPORTED"


async def test_disconnect_account(client: Client, events: EventLog, app: runtime.Running) -> None:
    _, session = await link_account(client, "user_good+bye", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    account = await client.accounts.DisconnectAccount(
        account_pb2.DisconnectAccountRequest(account_id=account_id, request_id="bye-1"), metadata=client.md()
    )
    assert not account.connected and account.monitoring_status == c.MONITORING_STATUS_CUSTOMER_DISABLED
    updated = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.monitoring_status.updated"
    )
    payload = updated[0].event.monitoring_status_updated
    assert (payload.previous_status, payload.monitoring_status, payload.reason) == (
        c.MONITORING_STATUS_ACTIVE,
        c.MONITORING_STATUS_CUSTOMER_DISABLED,
        "customer_disconnected",
    )

    # Idempotent: disconnecting again changes nothing and publishes nothing.
    again = await client.accounts.DisconnectAccount(
        account_pb2.DisconnectAccountRequest(account_id=account_id), metadata=client.md()
    )
    assert not again.connected and again.monitoring_status == c.MONITORING_STATUS_CUSTOMER_DISABLED
    # Stored data stays readable.
    identity = await client.accounts.GetIdentity(
        account_pb2.GetIdentityRequest(account_id=account_id), metadata=client.md()
    )
    assert identity.full_name

    exc = await rpc_error(
        client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_IDENTITY), metadata=client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(exc) == "ACCOUNT_DISCONNECTED"
    exc = await rpc_error(
        client.sandbox.AddPaystub(sandbox_pb2.AddPaystubRequest(account_id=account_id), metadata=client.md())
    )
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The second disconnect published nothing: one monitoring update in the outbox.
    assert await _monitoring_rows(app, account_id) == 1


async def test_set_monitoring_status_publishes(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_good+mon", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    account = await client.sandbox.SetMonitoringStatus(
        sandbox_pb2.SetMonitoringStatusRequest(
            account_id=account_id, status=c.MONITORING_STATUS_USER_ACTION_REQUIRED
        ),
        metadata=client.md(),
    )
    assert account.monitoring_status == c.MONITORING_STATUS_USER_ACTION_REQUIRED
    updated = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.monitoring_status.updated"
    )
    assert updated[0].event.monitoring_status_updated.reason == "sandbox"
    # A successful refresh re-activates monitoring.
    job = await _refresh(client, account_id, c.JOB_NAME_IDENTITY)
    assert job.status == c.JOB_STATUS_SUCCESS
    await wait_account(client, account_id, lambda a: a.monitoring_status == c.MONITORING_STATUS_ACTIVE)
    back = await events.wait_for(
        lambda r: r.event.account_id == account_id and r.event.event == "account.monitoring_status.updated",
        count=2,
    )
    reasons = {r.event.monitoring_status_updated.reason for r in back}
    assert reasons == {"sandbox", "reaccess_succeeded"}
    exc = await rpc_error(
        client.sandbox.SetMonitoringStatus(
            sandbox_pb2.SetMonitoringStatusRequest(account_id=account_id), metadata=client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["status"]


async def test_sandbox_service_is_denied_in_production(
    app: runtime.Running, channel: grpc.aio.Channel, client: Client
) -> None:
    production = await new_client(app, channel, sandbox=False)
    _, session = await link_account(client, "user_good+prod", [c.JOB_NAME_IDENTITY])
    md = production.md()
    for call in (
        production.sandbox.SetMonitoringStatus(
            sandbox_pb2.SetMonitoringStatusRequest(
                account_id=session.account_id, status=c.MONITORING_STATUS_DEGRADED
            ),
            metadata=md,
        ),
        production.sandbox.ExpireCredentials(
            sandbox_pb2.ExpireCredentialsRequest(account_id=session.account_id), metadata=md
        ),
        production.sandbox.AddPaystub(
            sandbox_pb2.AddPaystubRequest(account_id=session.account_id), metadata=md
        ),
    ):
        exc = await rpc_error(call)
        assert exc.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(exc) == "SANDBOX_ONLY"
    token = await production.token([c.JOB_NAME_IDENTITY])
    assert token.mode == 2  # WORKSPACE_MODE_PRODUCTION
