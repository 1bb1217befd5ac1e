"""paylink.v1.LinkService."""

from __future__ import annotations

from paylink.v1 import link_pb2, link_pb2_grpc

from service import sessions
from service.api import context
from service.api.ratelimit import RateLimiter
from service.deps import Deps


class LinkServicer(link_pb2_grpc.LinkServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.logins = RateLimiter("login attempts", deps.settings.rate_logins_per_minute)

    async def StartSession(  # noqa: N802 - gRPC method name
        self, request: link_pb2.StartSessionRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        return await sessions.start(self.deps, context.current().workspace.id, request.token)

    async def GetSession(  # noqa: N802
        self, request: link_pb2.GetSessionRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        return await sessions.get(self.deps, context.current().workspace.id, request.session_id)

    async def SearchPlatforms(  # noqa: N802
        self, request: link_pb2.SearchPlatformsRequest, ctx: context.Ctx
    ) -> link_pb2.SearchPlatformsResponse:
        return await sessions.search_platforms(self.deps, context.current().workspace.id, request)

    async def SubmitCredentials(  # noqa: N802
        self, request: link_pb2.SubmitCredentialsRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        workspace = context.current().workspace
        self.logins.check(workspace.id)
        return await sessions.submit_credentials(self.deps, workspace.id, request)

    async def SubmitMfa(  # noqa: N802
        self, request: link_pb2.SubmitMfaRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        workspace = context.current().workspace
        self.logins.check(workspace.id)
        return await sessions.submit_mfa(self.deps, workspace.id, request)

    async def ChooseAllocation(  # noqa: N802
        self, request: link_pb2.ChooseAllocationRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        return await sessions.choose_allocation(self.deps, context.current().workspace.id, request)
