"""Server reflection that includes the .proto comments, so `grpcurl describe` documents every RPC.

The generated Python modules carry descriptors without source info. `make generate` also writes
`generated/paylink/v1/descriptor_set.binpb` (protoc --include_source_info); the reflection service
answers with those file descriptors, comments included. A file whose descriptor differs from the
compiled module (a stale descriptor set) is served as compiled, without comments.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

log = logging.getLogger("paylink.reflection")

DESCRIPTOR_SET = "descriptor_set.binpb"


def _normalized(proto: descriptor_pb2.FileDescriptorProto) -> bytes:
    """The descriptor without what only one of the two sources has (source info, json names)."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(proto)
    copy.ClearField("source_code_info")
    messages = list(copy.message_type)
    while messages:
        message = messages.pop()
        for field in (*message.field, *message.extension):
            field.ClearField("json_name")
        messages.extend(message.nested_type)
    for field in copy.extension:
        field.ClearField("json_name")
    return copy.SerializeToString(deterministic=True)


def commented_files(pool: Any = None) -> dict[str, bytes]:
    """Serialized FileDescriptorProtos with comments, by file name, for files matching `pool`."""
    pool = pool or descriptor_pool.Default()
    try:
        raw = importlib.resources.files("paylink.v1").joinpath(DESCRIPTOR_SET).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        log.warning(f"{DESCRIPTOR_SET} not found: reflection serves descriptors without comments")
        return {}
    out: dict[str, bytes] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(raw).file:
        compiled = descriptor_pb2.FileDescriptorProto()
        try:
            pool.FindFileByName(file.name).CopyToProto(compiled)
        except KeyError:
            continue
        if _normalized(compiled) == _normalized(file):
            out[file.name] = file.SerializeToString()
        else:
            log.warning(
                f"{DESCRIPTOR_SET} is stale for {file.name} (run make generate): served without comments"
            )
    return out


class CommentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """grpc_reflection's servicer, answering file requests with the commented descriptors."""

    def __init__(self, service_names: Iterable[str], files: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self._commented = files

    def _with_comments(self, response: Any) -> Any:
        if response.HasField("file_descriptor_response"):
            protos = response.file_descriptor_response.file_descriptor_proto
            for i, raw in enumerate(protos):
                name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                if name in self._commented:
                    protos[i] = self._commented[name]
        return response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response"):
            # The Python pool does not index methods (`grpcurl describe pkg.Service.Method`):
            # answer with the file of the service.
            try:
                self._pool.FindMethodByName(fully_qualified_name)
            except KeyError:
                return response
            service = fully_qualified_name.rpartition(".")[0]
            response = super()._file_containing_symbol(request, service)
        return self._with_comments(response)

    def _file_containing_extension(self, request: Any, containing_type: str, extension_number: int) -> Any:
        return self._with_comments(
            super()._file_containing_extension(request, containing_type, extension_number)
        )


def add_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    servicer = CommentedReflectionServicer(service_names, commented_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
