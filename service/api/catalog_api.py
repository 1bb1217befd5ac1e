"""paylink.v1.CatalogService: platforms and employers, usable without a Link session."""

from __future__ import annotations

from paylink.v1 import catalog_pb2, catalog_pb2_grpc, link_pb2

from service import catalog
from service.api import context
from service.deps import Deps


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def ListPlatforms(  # noqa: N802 - gRPC method name
        self, request: catalog_pb2.ListPlatformsRequest, ctx: context.Ctx
    ) -> catalog_pb2.ListPlatformsResponse:
        return catalog.list_platforms(self.deps.drivers, request)

    async def GetPlatform(  # noqa: N802
        self, request: catalog_pb2.GetPlatformRequest, ctx: context.Ctx
    ) -> link_pb2.Platform:
        return catalog.get_platform(self.deps.drivers, request.platform_id)

    async def SearchEmployers(  # noqa: N802
        self, request: catalog_pb2.SearchEmployersRequest, ctx: context.Ctx
    ) -> catalog_pb2.SearchEmployersResponse:
        return catalog.search_employers(self.deps.drivers, request)

    async def GetEmployer(  # noqa: N802
        self, request: catalog_pb2.GetEmployerRequest, ctx: context.Ctx
    ) -> catalog_pb2.CatalogEmployer:
        return catalog.get_employer(self.deps.drivers, request.employer_id)

    async def LookupEmployer(  # noqa: N802
        self, request: catalog_pb2.LookupEmployerRequest, ctx: context.Ctx
    ) -> catalog_pb2.CatalogEmployer:
        return catalog.lookup_employer(self.deps.drivers, request.ein)
