"""paylink.v1.LinkService."""

from __future__ import annotations

from typing import Any, cast

from paylink.v1 import link_pb2, link_pb2_grpc

from service import errors, sessions
from service.api import context
from service.deps import Deps
from service.ratelimit import RateLimiter


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
        if len(request.query) > 100:
            raise errors.invalid_field("query", "must be at most 100 characters")
        session = await sessions.get(self.deps, context.current().workspace.id, request.session_id)
        needed = set(session.required_jobs)
        query = request.query.strip().lower()
        return link_pb2.SearchPlatformsResponse(
            platforms=[
                link_pb2.Platform(
                    **cast(
                        dict[str, Any],
                        {
                            "id": p.id,
                            "name": p.name,
                            "supported_jobs": sorted(p.supported_jobs),
                            "always_mfa": p.always_mfa,
                        },
                    )
                )
                for p in self.deps.drivers.platforms()
                if needed <= p.supported_jobs
                and (query in p.name.lower() or query in p.id)
                and (not session.on_demand_update or p.id == session.platform_id)
            ]
        )

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
