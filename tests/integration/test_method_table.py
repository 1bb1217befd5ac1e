"""How the API server takes calls (service/api/server.py): every method is served through one table
of unregistered methods, so grpc.aio waits for new calls with one pending request, not with one per
registered method (its accept loop waits on all of them for every call it takes); and every method of
every service is still found, through the call pipeline."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paylink.v1 import (
    account_pb2,
    catalog_pb2,
    job_pb2,
    link_pb2,
    link_token_pb2,
    monitoring_pb2,
    privacy_pb2,
    sandbox_pb2,
)

from service import runtime
from service.api import server

_FILES = (
    account_pb2,
    catalog_pb2,
    job_pb2,
    link_pb2,
    link_token_pb2,
    monitoring_pb2,
    privacy_pb2,
    sandbox_pb2,
)


def _pending_requests() -> dict[str, int]:
    """The running loop's tasks by the name of their coroutine."""
    counts: dict[str, int] = {}
    for task in asyncio.all_tasks():
        name = str(getattr(task.get_coro(), "__qualname__", ""))
        counts[name] = counts.get(name, 0) + 1
    return counts


async def test_the_server_waits_for_new_calls_with_one_request_not_one_per_method(
    app: runtime.Running,
) -> None:
    assert app.api is not None
    tasks = _pending_requests()
    assert tasks.get("AioServer._request_registered_call", 0) == 0
    assert tasks.get("AioServer._request_call", 0) == 1


async def test_every_method_of_every_service_is_served_through_the_pipeline(
    app: runtime.Running, channel: grpc.aio.Channel
) -> None:
    methods = [
        (f"/{service.full_name}/{method.name}", method.server_streaming)
        for module in _FILES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert {name.split("/")[1] for name, _ in methods} == set(server.SERVICE_NAMES)
    for name, streaming in methods:
        # An empty request and no API secret: the pipeline answers (a required id missing, or no
        # secret), never UNIMPLEMENTED.
        code = await _code(channel, name, streaming=streaming)
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT), (name, code)
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=server.SERVICE_NAMES[0]))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    unknown = await _code(channel, "/paylink.v1.AccountService/NoSuchMethod", streaming=False)
    assert unknown == grpc.StatusCode.UNIMPLEMENTED


async def _code(channel: grpc.aio.Channel, name: str, *, streaming: bool) -> grpc.StatusCode:
    """The status of one call of `name` with an empty request (the whole stream, for a stream)."""
    try:
        if streaming:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(name)
            async for _ in stream(b""):
                pass
        else:
            unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(name)
            await unary(b"")
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
