"""The call pipeline around every paylink.v1 RPC.

For each unary call: authenticate `x-api-secret` (UNAUTHENTICATED), parse `api-version`
(INVALID_ARGUMENT), set the CallContext, run the handler, and map what it raised to a status:
a domain error (service/errors.py) -> its code and google.rpc details (api/status.py); a lost
database -> UNAVAILABLE; a deadline -> DEADLINE_EXCEEDED. Health and reflection are not wrapped (they stay open).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
import grpc
from grpc_status import rpc_status

from service import errors, metrics, versions
from service.api import context, status
from service.auth import Authenticator

log = logging.getLogger("paylink.rpc")

_PREFIX = "/paylink.v1."
Handler = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Any]]
StreamHandler = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], AsyncIterator[Any]]

_UNAVAILABLE_ERRORS = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    # A server shutting down terminates every session (57P01/57P02); a pooled connection it just
    # terminated can also fail with asyncpg's InternalClientError before the pool notices.
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.InternalClientError,
)


class ApiInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(_PREFIX):
            return handler
        name = method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(name, cast(Handler, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(name, cast(StreamHandler, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _call_context(
        self, metadata: dict[str, str], request_id: str, deadline: float | None
    ) -> context.CallContext:
        workspace = await self._auth.authenticate(metadata.get("x-api-secret"))
        try:
            version = versions.parse(metadata.get("api-version"))
        except versions.UnknownVersion as exc:
            raise errors.invalid_field("api-version", str(exc)) from exc
        return context.CallContext(workspace, version, request_id, deadline)

    def _wrap(self, method: str, inner: Handler) -> Handler:
        async def call(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = {k: v for k, v in (ctx.invocation_metadata() or ()) if isinstance(v, str)}
            request_id = metadata.get("x-request-id") or uuid.uuid4().hex
            token = None
            failure: status.ApiError | None = None
            response: Any = None
            try:
                # Bound every database and platform call by the caller's deadline.
                remaining = ctx.time_remaining()
                deadline = None if remaining is None else time.monotonic() + remaining
                async with asyncio.timeout(remaining):
                    token = context.set_current(await self._call_context(metadata, request_id, deadline))
                    response = await inner(request, ctx)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                failure = _failure(exc, method, request_id)
            finally:
                if token is not None:
                    context.reset(token)
            await _answer(ctx, method, request_id, started, failure)
            return response

        return call

    def _wrap_stream(self, method: str, inner: StreamHandler) -> StreamHandler:
        """The same pipeline for a server-streaming call (its deadline is grpc's to enforce)."""

        async def call(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            metadata = {k: v for k, v in (ctx.invocation_metadata() or ()) if isinstance(v, str)}
            request_id = metadata.get("x-request-id") or uuid.uuid4().hex
            token = None
            failure: status.ApiError | None = None
            try:
                remaining = ctx.time_remaining()
                deadline = None if remaining is None else time.monotonic() + remaining
                token = context.set_current(await self._call_context(metadata, request_id, deadline))
                async for item in inner(request, ctx):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                failure = _failure(exc, method, request_id)
            finally:
                if token is not None:
                    context.reset(token)
            await _answer(ctx, method, request_id, started, failure)

        return call


def _failure(exc: Exception, method: str, request_id: str) -> status.ApiError:
    """What an exception of a handler is answered with."""
    if isinstance(exc, errors.DomainError):
        return status.from_domain(exc)
    if isinstance(exc, status.ApiError):
        return exc
    if isinstance(exc, TimeoutError):
        return status.ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran out of time")
    if isinstance(exc, (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)):
        # A NUL character in a request string (PostgreSQL text cannot hold it): bad input.
        return status.from_domain(
            errors.invalid_field("request", "text fields must not contain NUL characters")
        )
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        log.warning("dependency unavailable", extra={"method": method, "error": type(exc).__name__})
        return status.from_domain(errors.unavailable("database unavailable, retry"))
    log.exception("unhandled error", extra={"method": method, "request_id": request_id}, exc_info=exc)
    return status.ApiError(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")


async def _answer(
    ctx: grpc.aio.ServicerContext[Any, Any],
    method: str,
    request_id: str,
    started: float,
    failure: status.ApiError | None,
) -> None:
    """Counts the call (before answering: whoever reads the metrics after the answer sees it), then
    aborts with the failure's status, if any."""
    code = failure.code if failure else grpc.StatusCode.OK
    elapsed = time.perf_counter() - started
    metrics.RPC_LATENCY.labels(method, code.name).observe(elapsed)
    if log.isEnabledFor(logging.DEBUG):  # an access log with PAYLINK_LOG_LEVEL=DEBUG
        extra = {"method": method, "code": code.name, "ms": round(elapsed * 1000, 2)}
        log.debug("rpc", extra={**extra, "request_id": request_id})
    if failure is not None:
        await ctx.abort_with_status(rpc_status.to_status(failure.to_status()))
