"""paylink.v1.SandboxService: changes simulated platform state (sandbox workspaces only)."""

from __future__ import annotations

from paylink.v1 import account_pb2, sandbox_pb2, sandbox_pb2_grpc

from service import sandbox_controls
from service.api import context
from service.deps import Deps


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def SetMonitoringStatus(  # noqa: N802 - gRPC method name
        self, request: sandbox_pb2.SetMonitoringStatusRequest, ctx: context.Ctx
    ) -> account_pb2.Account:
        return await sandbox_controls.set_monitoring_status(self.deps, context.current(), request)

    async def ExpireCredentials(  # noqa: N802
        self, request: sandbox_pb2.ExpireCredentialsRequest, ctx: context.Ctx
    ) -> account_pb2.Account:
        return await sandbox_controls.expire_credentials(self.deps, context.current(), request)

    async def AddPaystub(  # noqa: N802
        self, request: sandbox_pb2.AddPaystubRequest, ctx: context.Ctx
    ) -> sandbox_pb2.AddPaystubResponse:
        return await sandbox_controls.add_paystub(self.deps, context.current(), request)

    async def AdvanceClock(  # noqa: N802
        self, request: sandbox_pb2.AdvanceClockRequest, ctx: context.Ctx
    ) -> sandbox_pb2.AdvanceClockResponse:
        return await sandbox_controls.advance_clock(self.deps, context.current(), request)

    async def TriggerRefreshes(  # noqa: N802
        self, request: sandbox_pb2.TriggerRefreshesRequest, ctx: context.Ctx
    ) -> sandbox_pb2.TriggerRefreshesResponse:
        return await sandbox_controls.trigger_refreshes(self.deps, context.current(), request)

    async def ChangeAllocation(  # noqa: N802
        self, request: sandbox_pb2.ChangeAllocationRequest, ctx: context.Ctx
    ) -> sandbox_pb2.ChangeAllocationResponse:
        return await sandbox_controls.change_allocation(self.deps, context.current(), request)
