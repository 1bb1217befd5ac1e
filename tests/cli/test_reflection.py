"""Server reflection exposes every service, with the .proto comments, and resolves method symbols
(what `grpcurl list` / `grpcurl describe` use), without an API secret."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.api.server import SERVICE_NAMES


async def _ask(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([request]))
    async for response in call:
        return response
    raise AssertionError("no reflection response")


def _comments(proto: descriptor_pb2.FileDescriptorProto) -> list[str]:
    return [loc.leading_comments.strip() for loc in proto.source_code_info.location if loc.leading_comments]


async def test_reflection_lists_every_service(channel: grpc.aio.Channel) -> None:
    reply = await _ask(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in reply.list_services_response.service}
    assert set(SERVICE_NAMES) <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_reflection_serves_the_proto_comments(channel: grpc.aio.Channel) -> None:
    for service in SERVICE_NAMES:
        reply = await _ask(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        own = next(f for f in files if any(f"{f.package}.{s.name}" == service for s in f.service))
        comments = _comments(own)
        assert len(comments) > 10, service
        service_path = next(i for i, s in enumerate(own.service) if f"{own.package}.{s.name}" == service)
        # The service's own doc comment (path 6 = FileDescriptorProto.service).
        assert any(
            list(loc.path) == [6, service_path] and loc.leading_comments.strip()
            for loc in own.source_code_info.location
        ), service


async def test_reflection_resolves_a_method_symbol(channel: grpc.aio.Channel) -> None:
    reply = await _ask(
        channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="paylink.v1.LinkService.StartSession"),
    )
    assert not reply.HasField("error_response")
    names = [
        descriptor_pb2.FileDescriptorProto.FromString(raw).name
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert "paylink/v1/link.proto" in names
    unknown = await _ask(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="paylink.v1.Nope")
    )
    assert unknown.HasField("error_response")
