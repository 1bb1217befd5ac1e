"""The gRPC server: paylink.v1 services, health (grpc.health.v1) and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from paylink.v1 import (
    account_pb2,
    account_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    link_pb2,
    link_pb2_grpc,
    link_token_pb2,
    link_token_pb2_grpc,
    sandbox_pb2,
    sandbox_pb2_grpc,
)

from service.api.account_api import AccountServicer
from service.api.catalog_api import CatalogServicer
from service.api.interceptor import ApiInterceptor
from service.api.job_api import JobServicer
from service.api.link_api import LinkServicer
from service.api.link_token_api import LinkTokenServicer
from service.api.reflection import add_reflection
from service.api.sandbox_api import SandboxServicer
from service.auth import Authenticator
from service.deps import Deps

SERVICE_NAMES = (
    link_token_pb2.DESCRIPTOR.services_by_name["LinkTokenService"].full_name,
    link_pb2.DESCRIPTOR.services_by_name["LinkService"].full_name,
    account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    job_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
)


class ApiServer:
    """Owns the grpc.aio server and its health status."""

    def __init__(self, deps: Deps) -> None:
        settings = deps.settings
        limit = settings.grpc_max_message_bytes
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[ApiInterceptor(Authenticator(deps.pool))],
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", 1 if settings.grpc_reuse_port else 0),
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 4 * limit),
            ],
        )
        link_token_pb2_grpc.add_LinkTokenServiceServicer_to_server(LinkTokenServicer(deps), self.server)
        link_pb2_grpc.add_LinkServiceServicer_to_server(LinkServicer(deps), self.server)
        account_pb2_grpc.add_AccountServiceServicer_to_server(AccountServicer(deps), self.server)
        job_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(deps), self.server)
        sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(SandboxServicer(deps), self.server)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(deps), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # Reflection serves the .proto files with their comments (grpcurl describe shows them).
        add_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind": port taken or host not local
            self.port = 0
        if self.port == 0:
            raise OSError(
                f"cannot listen on {address} (PAYLINK_GRPC_HOST, PAYLINK_GRPC_PORT): address in use or"
                " not local; PAYLINK_GRPC_REUSE_PORT=true lets several api processes share a port"
            )

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, then drains in-flight RPCs for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
