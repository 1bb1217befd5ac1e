"""paylink.v1.SandboxService: changes simulated platform state (sandbox workspaces only)."""

from __future__ import annotations

import asyncpg
from paylink.v1 import account_pb2, sandbox_pb2, sandbox_pb2_grpc

from service import accounts, db, errors, versions
from service.api import context
from service.deps import Deps
from service.drivers.base import AccessGrant
from service.drivers.sandbox import Grant, SandboxDriver


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _call(self) -> context.CallContext:
        call = context.current()
        if not call.workspace.sandbox:
            raise errors.permission_denied(
                "SANDBOX_ONLY", "SandboxService is only available in sandbox workspaces"
            )
        return call

    async def SetMonitoringStatus(  # noqa: N802 - gRPC method name
        self, request: sandbox_pb2.SetMonitoringStatusRequest, ctx: context.Ctx
    ) -> account_pb2.Account:
        call = self._call()
        status = accounts.MONITORING_NAMES.get(request.status)
        if status is None:
            raise errors.invalid_field("status", "must be a monitoring status other than UNSPECIFIED")
        async with self.deps.pool.acquire() as conn, conn.transaction():
            row = await accounts.fetch(conn, call.workspace.id, request.account_id, lock=True)
            await accounts.set_monitoring(
                conn,
                row,
                status,
                "sandbox",
                topic_prefix=self.deps.settings.topic_prefix,
                api_version=versions.label(call.api_version),
            )
            return accounts.to_proto(
                await accounts.fetch(conn, call.workspace.id, request.account_id, data_times=True),
                self.deps.drivers,
            )

    async def ExpireCredentials(  # noqa: N802
        self, request: sandbox_pb2.ExpireCredentialsRequest, ctx: context.Ctx
    ) -> account_pb2.Account:
        call = self._call()
        async with self.deps.pool.acquire() as conn, conn.transaction():
            row = await accounts.fetch(
                conn, call.workspace.id, request.account_id, lock=True, data_times=True
            )
            driver, grant = await self._sandbox_grant(conn, row)
            await accounts.store_grant(self.deps, conn, row["id"], driver.expire_grant(grant).secret)
            return accounts.to_proto(row, self.deps.drivers)

    async def AddPaystub(  # noqa: N802
        self, request: sandbox_pb2.AddPaystubRequest, ctx: context.Ctx
    ) -> sandbox_pb2.AddPaystubResponse:
        call = self._call()
        async with self.deps.pool.acquire() as conn, conn.transaction():
            row = await accounts.fetch(conn, call.workspace.id, request.account_id, lock=True)
            driver, grant = await self._sandbox_grant(conn, row)
            new_grant, fetched = driver.add_paystub(grant)
            await accounts.store_grant(self.deps, conn, row["id"], new_grant.secret)
            added = Grant.decode(new_grant.secret).extra_paystubs
        return sandbox_pb2.AddPaystubResponse(added_paystubs=added, newest_paystub=fetched.paystub)

    async def _sandbox_grant(
        self, conn: db.Conn, account: asyncpg.Record
    ) -> tuple[SandboxDriver, AccessGrant]:
        driver = self.deps.drivers.driver_for(account["platform_id"])
        if not isinstance(driver, SandboxDriver):
            raise errors.failed_precondition(
                "NOT_SANDBOX_PLATFORM", "the account is not on a sandbox platform"
            )
        grant = await accounts.load_grant(self.deps, conn, account["id"])
        if grant is None:
            raise errors.failed_precondition("ACCOUNT_DISCONNECTED", "the account has no stored credentials")
        return driver, AccessGrant(grant)
