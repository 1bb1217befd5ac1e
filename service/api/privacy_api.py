"""paylink.v1.PrivacyService: end-user erasure and the audit trail (docs/privacy.md)."""

from __future__ import annotations

from paylink.v1 import privacy_pb2, privacy_pb2_grpc

from service import audit, erasure
from service.api import context
from service.deps import Deps


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def EraseEndUser(  # noqa: N802 - gRPC method name
        self, request: privacy_pb2.EraseEndUserRequest, ctx: context.Ctx
    ) -> privacy_pb2.Erasure:
        who = audit.who(context.current(), "EraseEndUser")
        return erasure.to_proto(await erasure.request(self.deps, who, request.end_user_id))

    async def GetErasure(  # noqa: N802
        self, request: privacy_pb2.GetErasureRequest, ctx: context.Ctx
    ) -> privacy_pb2.Erasure:
        return erasure.to_proto(
            await erasure.get(self.deps, context.current().workspace.id, request.erasure_id)
        )

    async def ListAuditRecords(  # noqa: N802
        self, request: privacy_pb2.ListAuditRecordsRequest, ctx: context.Ctx
    ) -> privacy_pb2.ListAuditRecordsResponse:
        return await audit.list_page(self.deps.pool, context.current().workspace.id, request)
