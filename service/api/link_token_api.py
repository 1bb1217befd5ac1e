"""paylink.v1.LinkTokenService."""

from __future__ import annotations

from paylink.v1 import link_token_pb2, link_token_pb2_grpc

from service import link_tokens
from service.api import context
from service.api.ratelimit import RateLimiter
from service.deps import Deps


class LinkTokenServicer(link_token_pb2_grpc.LinkTokenServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.limit = RateLimiter("link tokens", deps.settings.rate_link_tokens_per_minute)

    async def CreateLinkToken(  # noqa: N802 - gRPC method name
        self, request: link_token_pb2.CreateLinkTokenRequest, ctx: context.Ctx
    ) -> link_token_pb2.LinkToken:
        call = context.current()
        self.limit.check(call.workspace.id)
        return await link_tokens.create(self.deps, call, request)

    async def GetLinkToken(  # noqa: N802
        self, request: link_token_pb2.GetLinkTokenRequest, ctx: context.Ctx
    ) -> link_token_pb2.LinkToken:
        return await link_tokens.get(self.deps, context.current().workspace.id, request.link_token_id)
