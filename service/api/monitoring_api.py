"""paylink.v1.MonitoringService."""

from __future__ import annotations

from paylink.v1 import account_pb2, monitoring_pb2, monitoring_pb2_grpc

from service.api import context
from service.deps import Deps
from service.monitoring import controls


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def EnableMonitoring(  # noqa: N802 - gRPC method name
        self, request: monitoring_pb2.EnableMonitoringRequest, ctx: context.Ctx
    ) -> account_pb2.Account:
        return await controls.set_account_monitoring(self.deps, context.current(), request.account_id, True)

    async def DisableMonitoring(  # noqa: N802
        self, request: monitoring_pb2.DisableMonitoringRequest, ctx: context.Ctx
    ) -> account_pb2.Account:
        return await controls.set_account_monitoring(self.deps, context.current(), request.account_id, False)

    async def GetMonitoringSettings(  # noqa: N802
        self, request: monitoring_pb2.GetMonitoringSettingsRequest, ctx: context.Ctx
    ) -> monitoring_pb2.MonitoringSettings:
        return await controls.get_settings(self.deps, context.current())

    async def UpdateMonitoringSettings(  # noqa: N802
        self, request: monitoring_pb2.UpdateMonitoringSettingsRequest, ctx: context.Ctx
    ) -> monitoring_pb2.MonitoringSettings:
        return await controls.update_settings(self.deps, context.current(), request)
