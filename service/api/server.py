"""The gRPC server: paylink.v1 services, health (grpc.health.v1) and reflection."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import cast

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
    monitoring_pb2,
    monitoring_pb2_grpc,
    privacy_pb2,
    privacy_pb2_grpc,
    sandbox_pb2,
    sandbox_pb2_grpc,
)

from service.api.account_api import AccountServicer
from service.api.catalog_api import CatalogServicer
from service.api.interceptor import MethodHandler, Pipeline
from service.api.job_api import JobServicer
from service.api.link_api import LinkServicer
from service.api.link_token_api import LinkTokenServicer
from service.api.monitoring_api import MonitoringServicer
from service.api.privacy_api import PrivacyServicer
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
    privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name,
    monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
)


# The collector's thresholds once startup's heap is frozen (gen 0 allocations, gen 1 and gen 2 passes).
GC_THRESHOLDS = (5_000, 10, 10)


class _Wrapping:
    """What the generated `add_*_to_server` functions register a service with, in place of the
    server: each method's handler is wrapped in the call pipeline (service/api/interceptor.py) once,
    here, rather than by interceptors on every call.

    The methods the generated code would register (`add_registered_method_handlers`) are served as
    unregistered ones, through one table (`_Methods`, the server's first generic handler): grpc.aio's
    server keeps one pending request-call task per *registered* method and waits on all of them
    (`asyncio.wait` over the set) for every call it accepts, so each call paid a loop over paylink's
    ~47 methods (~45 µs against ~11 µs for the one generic request; bench/NOTES.md, "rpc (session
    25)"). Unregistered, every call comes through the one generic request and is found with one dict
    lookup; core matches the method the same way and reads the request the same way."""

    def __init__(self, server: grpc.aio.Server, pipeline: Pipeline) -> None:
        self._server = server
        self._pipeline = pipeline
        self.methods = _Methods()
        server.add_generic_rpc_handlers([self.methods])  # first: consulted before any other

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_Wrapped(h, self._pipeline) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, MethodHandler]) -> None:
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self.methods.handlers[method] = self._pipeline.wrap(method, handler)


class _Methods(grpc.GenericRpcHandler):
    """The wrapped handlers of every method a service registered, by full method name."""

    def __init__(self) -> None:
        self.handlers: dict[str, MethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> MethodHandler | None:
        return self.handlers.get(handler_call_details.method)


class _Wrapped(grpc.GenericRpcHandler):
    """A generic handler whose methods are served through the pipeline."""

    def __init__(self, inner: grpc.GenericRpcHandler, pipeline: Pipeline) -> None:
        self._inner = inner
        self._pipeline = pipeline

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> MethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._pipeline.wrap(handler_call_details.method, handler)


class ApiServer:
    """Owns the grpc.aio server and its health status."""

    def __init__(self, deps: Deps) -> None:
        settings = deps.settings
        limit = settings.grpc_max_message_bytes
        self.health = health.aio.HealthServicer()
        # No interceptors: every method is wrapped once, when registered through `_Wrapping`.
        self.server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", 1 if settings.grpc_reuse_port else 0),
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 4 * limit),
            ],
        )
        server = cast(
            grpc.aio.Server, _Wrapping(self.server, Pipeline(Authenticator(deps.pool), deps.release_guard))
        )
        link_token_pb2_grpc.add_LinkTokenServiceServicer_to_server(LinkTokenServicer(deps), server)
        self.link = LinkServicer(deps)
        link_pb2_grpc.add_LinkServiceServicer_to_server(self.link, server)
        account_pb2_grpc.add_AccountServiceServicer_to_server(AccountServicer(deps), server)
        job_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(deps), server)
        sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(SandboxServicer(deps), server)
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(PrivacyServicer(deps), server)
        monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server(MonitoringServicer(deps), server)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(deps), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # Reflection serves the .proto files with their comments (grpcurl describe shows them).
        add_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
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
        # What the process built to start (modules, protobuf descriptors, settings, pools) lives as
        # long as it does: frozen out of the collector's view, the full collections that calls'
        # allocations trigger walk only what came after (on serve's heap one took ~15 ms, a stall
        # of every call in flight; bench/NOTES.md, "rpc").
        gc.collect()
        gc.freeze()
        # After the freeze the young generation holds only calls' objects, most alive until their
        # call ends: at the default 700 allocations a pass, a gen-0 collection every ~30 calls walked
        # the objects of every call in flight (~11 µs of the collector a call at c=64); at 5,000 it
        # is ~6 µs a call, in passes of ~2 ms instead of ~0.4 ms (bench/NOTES.md, "rpc (session 23)").
        gc.set_threshold(*GC_THRESHOLDS)

    async def stop(self, grace: float, drain: float = 0.0) -> None:
        """Reports NOT_SERVING and keeps serving for `drain` seconds, so that clients watching health
        (examples/grpc_service_config.json) and load balancers send new calls elsewhere; then stops
        taking calls and drains in-flight RPCs for up to `grace` seconds, then lets the logins in
        flight finish within the same grace (a login cut short ends by its lease). Without the
        drain, a call that races the stop is answered CANCELLED (docs/reliability.md, Known limits)."""
        await self.health.enter_graceful_shutdown()
        if drain:
            await asyncio.sleep(drain)
        started = asyncio.get_running_loop().time()
        await self.server.stop(grace)
        await self.link.runner.drain(max(0.0, grace - (asyncio.get_running_loop().time() - started)))
        await self.link.watcher.stop()
