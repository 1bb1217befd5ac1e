"""What SandboxService changes: simulated platform state of sandbox accounts (sandbox workspaces only)."""

from __future__ import annotations

import uuid

import asyncpg
from paylink.v1 import account_pb2, common_pb2, data_pb2, privacy_pb2, sandbox_pb2

from service import accounts, audit, db, errors, grants, uow, validation
from service.context import CallContext
from service.deps import Deps
from service.drivers import sandbox_profile
from service.drivers.base import AccessGrant
from service.drivers.sandbox import Grant, SandboxDriver
from service.monitoring import controls as monitoring_controls


def check_sandbox(call: CallContext) -> None:
    if not call.workspace.sandbox:
        raise errors.permission_denied(
            "SANDBOX_ONLY", "SandboxService is only available in sandbox workspaces"
        )


async def set_monitoring_status(
    deps: Deps, call: CallContext, request: sandbox_pb2.SetMonitoringStatusRequest
) -> account_pb2.Account:
    check_sandbox(call)
    status = accounts.MONITORING_NAMES.get(request.status)
    if status is None:
        raise errors.invalid_field("status", "must be a monitoring status other than UNSPECIFIED")
    async with uow.begin(deps) as work:
        row = await accounts.fetch(work.conn, call.workspace.id, request.account_id, lock=True)
        await accounts.set_monitoring(work, row, status, "sandbox", api_version=call.version_label)
        updated = await accounts.fetch(work.conn, call.workspace.id, request.account_id, data_times=True)
        return accounts.to_proto(updated, deps.drivers)


async def expire_credentials(
    deps: Deps, call: CallContext, request: sandbox_pb2.ExpireCredentialsRequest
) -> account_pb2.Account:
    check_sandbox(call)
    async with uow.begin(deps) as work:
        row = await accounts.fetch(
            work.conn, call.workspace.id, request.account_id, lock=True, data_times=True
        )
        driver, grant = await _sandbox_grant(deps, work.conn, row)
        await grants.store(deps, work.conn, row["id"], driver.expire_grant(grant).secret)
        return accounts.to_proto(row, deps.drivers)


async def add_paystub(
    deps: Deps, call: CallContext, request: sandbox_pb2.AddPaystubRequest
) -> sandbox_pb2.AddPaystubResponse:
    check_sandbox(call)
    async with uow.begin(deps) as work:
        row = await accounts.fetch(work.conn, call.workspace.id, request.account_id, lock=True)
        driver, grant = await _sandbox_grant(deps, work.conn, row)
        new_grant, fetched = driver.add_paystub(grant)
        await grants.store(deps, work.conn, row["id"], new_grant.secret)
        await _audit(work.conn, call, "AddPaystub", privacy_pb2.AUDIT_RESOURCE_PAYSTUBS, row)
        added = Grant.decode(new_grant.secret).extra_paystubs
    return sandbox_pb2.AddPaystubResponse(added_paystubs=added, newest_paystub=fetched.paystub)


async def _audit(
    conn: db.Conn, call: CallContext, method: str, resource: int, account: asyncpg.Record
) -> None:
    """A control that changes the end user's data at the platform (and returns it) is audited like a
    read of it: one record, in the change's transaction (docs/privacy.md#audit-trail)."""
    record = audit.Record(
        audit.who(call, method),
        audit.CHANGE,
        resource,
        account_id=account["id"],
        end_user_id=account["end_user_id"],
    )
    await audit.write(conn, record)


async def _sandbox_grant(
    deps: Deps, conn: db.Conn, account: asyncpg.Record
) -> tuple[SandboxDriver, AccessGrant]:
    driver = deps.drivers.implementation(account["platform_id"])
    if not isinstance(driver, SandboxDriver):
        raise errors.failed_precondition("NOT_SANDBOX_PLATFORM", "the account is not on a sandbox platform")
    account_id: uuid.UUID = account["id"]
    grant = await grants.load(deps, conn, account_id)
    if grant is None:
        raise errors.failed_precondition("ACCOUNT_DISCONNECTED", "the account has no stored credentials")
    return driver, AccessGrant(grant)


async def advance_clock(
    deps: Deps, call: CallContext, request: sandbox_pb2.AdvanceClockRequest
) -> sandbox_pb2.AdvanceClockResponse:
    """Moves the account's sandbox clock (its platform data ages) and its monitoring schedule."""
    check_sandbox(call)
    if not 1 <= request.days <= 3650:
        raise errors.invalid_field("days", "must be between 1 and 3650")
    async with uow.begin(deps) as work:
        row = await accounts.fetch(work.conn, call.workspace.id, request.account_id, lock=True)
        driver, grant = await _sandbox_grant(deps, work.conn, row)
        new_grant, total = driver.advance_clock(grant, request.days)
        await grants.store(deps, work.conn, row["id"], new_grant.secret)
        await monitoring_controls.advance(work, row["id"], request.days)
        updated = await accounts.fetch(work.conn, call.workspace.id, request.account_id, data_times=True)
        return sandbox_pb2.AdvanceClockResponse(
            days_advanced=total,
            platform_date=sandbox_profile.platform_date(total).isoformat(),
            account=accounts.to_proto(updated, deps.drivers),
        )


async def trigger_refreshes(
    deps: Deps, call: CallContext, request: sandbox_pb2.TriggerRefreshesRequest
) -> sandbox_pb2.TriggerRefreshesResponse:
    check_sandbox(call)
    job_ids = await monitoring_controls.trigger(deps, call, request.account_id, list(request.names))
    return sandbox_pb2.TriggerRefreshesResponse(job_ids=[str(i) for i in job_ids])


async def change_allocation(
    deps: Deps, call: CallContext, request: sandbox_pb2.ChangeAllocationRequest
) -> sandbox_pb2.ChangeAllocationResponse:
    """The user moves the whole pay to another bank account at the platform, outside paylink."""
    check_sandbox(call)
    v = errors.Violations()
    if not request.HasField("target"):
        v.add("target", "is required")
    else:
        validation.deposit_target(v, "target", request.target)
    v.raise_if_any()
    target = data_pb2.DepositTarget(
        name=request.target.name
        or ("Checking" if request.target.type == common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING else "Savings"),
        type=request.target.type,
        routing_number=request.target.routing_number,
        account_number_last_four=request.target.account_number[-4:],
    )
    async with uow.begin(deps) as work:
        row = await accounts.fetch(work.conn, call.workspace.id, request.account_id, lock=True)
        driver, grant = await _sandbox_grant(deps, work.conn, row)
        new_grant, shown = driver.change_allocation(grant, target)
        await grants.store(deps, work.conn, row["id"], new_grant.secret)
        await _audit(
            work.conn, call, "ChangeAllocation", privacy_pb2.AUDIT_RESOURCE_DIRECT_DEPOSIT_ALLOCATIONS, row
        )
    return sandbox_pb2.ChangeAllocationResponse(allocations=shown)
