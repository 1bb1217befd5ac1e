"""paylink.v1.LinkService."""

from __future__ import annotations

from collections.abc import AsyncIterator

from paylink.v1 import link_pb2, link_pb2_grpc

from service import sessions
from service.api import context
from service.api.ratelimit import RateLimiter
from service.deps import Deps
from service.logins import LoginRunner
from service.session_watch import SessionWatcher


class LinkServicer(link_pb2_grpc.LinkServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.logins = RateLimiter("login attempts", deps.settings.rate_logins_per_minute)
        self.runner = LoginRunner(deps, sessions.to_proto)  # this process's platform logins in flight
        self.watcher = SessionWatcher(deps.settings)  # one LISTEN connection for every WatchSession

    async def StartSession(  # noqa: N802 - gRPC method name
        self, request: link_pb2.StartSessionRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        return await sessions.start(self.deps, self.runner, context.current(), request.token)

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
        call = context.current()
        self.logins.check(call.workspace.id)
        return await sessions.submit_credentials(self.deps, self.runner, call, request)

    async def SubmitMfa(  # noqa: N802
        self, request: link_pb2.SubmitMfaRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        call = context.current()
        self.logins.check(call.workspace.id)
        return await sessions.submit_mfa(self.deps, self.runner, call, request)

    async def ChooseAllocation(  # noqa: N802
        self, request: link_pb2.ChooseAllocationRequest, ctx: context.Ctx
    ) -> link_pb2.LinkSession:
        return await sessions.choose_allocation(self.deps, context.current().workspace.id, request)

    async def WatchSession(  # noqa: N802
        self, request: link_pb2.WatchSessionRequest, ctx: context.Ctx
    ) -> AsyncIterator[link_pb2.LinkSession]:
        async for session in sessions.watch(
            self.deps, self.watcher, context.current().workspace.id, request.session_id
        ):
            yield session
