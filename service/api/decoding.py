"""Requests that are not readable messages answer INVALID_ARGUMENT, not UNKNOWN; so do strings
holding NUL characters, named by their real field.

grpc calls a method's request deserializer before any interceptor code runs; protobuf raises
DecodeError on a truncated message or a string field that is not UTF-8, and grpc then answers
`UNKNOWN: Unexpected <class 'DecodeError'>` and logs a traceback at ERROR. This interceptor
(outermost, so it sees every unary handler) swaps the deserializer for one that returns an
`Unreadable` marker instead of raising, and answers the marker with INVALID_ARGUMENT naming the
message type, before authentication or any other work. Nothing is logged above DEBUG: a caller's
bad bytes are not a server error.

A NUL character is valid UTF-8 and protobuf accepts it, but PostgreSQL text cannot hold it: every
string of a readable request (nested messages, repeated fields and maps included) is checked here,
once for every RPC, and each one holding NUL is reported by its path (`org_name`,
`tags[team]`, `allocation.targets[0].name`). Resource ids follow one rule, checked here for every
request too (service/validation.py: not a UUID, or required and empty -> INVALID_ARGUMENT).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from service import errors, metrics, validation
from service.api import status

log = logging.getLogger("paylink.rpc")

Deserializer = Callable[[bytes], Any]
Handler = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Any]]
StreamHandler = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], AsyncIterator[Any] | Awaitable[None]]


class Unreadable:
    """What a request deserializer returns for bytes that are not a message of its type."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def safe(deserializer: Deserializer | None, type_name: str) -> Deserializer | None:
    if deserializer is None:
        return None

    def read(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, UnicodeDecodeError, ValueError):
            return Unreadable(
                f"is not a readable {type_name} message (truncated, malformed, or a string that is not UTF-8)"
            )

    return read


def nul_fields(message: Message, prefix: str = "") -> list[str]:
    """Paths of the string fields (at any depth) that hold a NUL character."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                where = f"{path}[{str(key).replace(chr(0), '')[:64]}]"
                if isinstance(key, str) and "\0" in key:
                    found.append(where)
                if value_field.message_type is not None:
                    found += nul_fields(item, f"{where}.")
                elif isinstance(item, str) and "\0" in item:
                    found.append(where)
        elif field.is_repeated:
            for i, item in enumerate(value):
                if isinstance(item, Message):
                    found += nul_fields(item, f"{path}[{i}].")
                elif isinstance(item, str) and "\0" in item:
                    found.append(f"{path}[{i}]")
        elif isinstance(value, Message):
            found += nul_fields(value, f"{path}.")
        elif isinstance(value, str) and "\0" in value:
            found.append(path)
    return sorted(set(found), key=found.index)


def _type_name(deserializer: Deserializer | None) -> str:
    owner = getattr(deserializer, "__self__", None)  # Message.FromString is a bound classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


class DecodeInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        method: str = handler_call_details.method.rsplit("/", 1)[-1]
        deserializer = safe(handler.request_deserializer, _type_name(handler.request_deserializer))
        if handler.unary_stream is not None:
            inner_stream = cast(StreamHandler, handler.unary_stream)

            async def stream(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await _refuse_unreadable(method, request, ctx)
                produced = inner_stream(request, ctx)
                if inspect.isawaitable(produced):  # a stream that writes with ctx.write() (health Watch)
                    await produced
                    return
                async for message in produced:
                    yield message

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=deserializer, response_serializer=handler.response_serializer
            )
        inner = cast(Handler, handler.unary_unary)

        async def call(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await _refuse_unreadable(method, request, ctx)
            return await inner(request, ctx)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )


async def _refuse_unreadable(method: str, request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Aborts with INVALID_ARGUMENT for unreadable bytes, NUL characters and malformed ids (unary
    methods and server streams alike)."""
    if isinstance(request, Unreadable):
        log.debug("unreadable request", extra={"method": method, "reason": request.reason})
        metrics.RPC_LATENCY.labels(method, grpc.StatusCode.INVALID_ARGUMENT.name).observe(0.0)
        failure = errors.invalid_field("request", request.reason)
        await ctx.abort_with_status(rpc_status.to_status(status.from_domain(failure).to_status()))
    if isinstance(request, Message):
        violations = [(f, "must not contain NUL characters") for f in nul_fields(request)]
        violations += [v for v in validation.id_violations(request) if v[0] not in dict(violations)]
        if violations:
            failure = errors.invalid_argument(violations)
            await ctx.abort_with_status(rpc_status.to_status(status.from_domain(failure).to_status()))
