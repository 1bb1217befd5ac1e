"""Requests that are not readable messages answer INVALID_ARGUMENT, not UNKNOWN.

grpc calls a method's request deserializer before any interceptor code runs; protobuf raises
DecodeError on a truncated message or a string field that is not UTF-8, and grpc then answers
`UNKNOWN: Unexpected <class 'DecodeError'>` and logs a traceback at ERROR. This interceptor
(outermost, so it sees every unary handler) swaps the deserializer for one that returns an
`Unreadable` marker instead of raising, and answers the marker with INVALID_ARGUMENT naming the
message type, before authentication or any other work. Nothing is logged above DEBUG: a caller's
bad bytes are not a server error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from service import errors, metrics

log = logging.getLogger("paylink.rpc")

Deserializer = Callable[[bytes], Any]
Handler = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Any]]


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
        if handler is None or handler.unary_unary is None:
            return handler
        inner = cast(Handler, handler.unary_unary)
        method: str = handler_call_details.method.rsplit("/", 1)[-1]

        async def call(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Unreadable):
                log.debug("unreadable request", extra={"method": method, "reason": request.reason})
                metrics.RPC_LATENCY.labels(method, grpc.StatusCode.INVALID_ARGUMENT.name).observe(0.0)
                failure = errors.invalid_field("request", request.reason)
                await ctx.abort_with_status(rpc_status.to_status(failure.to_status()))
            return await inner(request, ctx)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=safe(handler.request_deserializer, _type_name(handler.request_deserializer)),
            response_serializer=handler.response_serializer,
        )
