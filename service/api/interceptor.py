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
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import grpc
from grpc_status import rpc_status

from service import audit, db, errors, ids, metrics, versions
from service.api import context, status
from service.auth import Authenticator

log = logging.getLogger("paylink.rpc")

_PREFIX = "/paylink.v1."
Handler = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Any]]

_UNAVAILABLE_ERRORS = db.UNAVAILABLE  # a lost, restarting or failing-over database


async def _call_context(
    auth: Authenticator, metadata: dict[str, str], request_id: str, deadline: float | None
) -> context.CallContext:
    """Authenticates `x-api-secret`, parses `api-version`, and names the caller for the audit
    trail (`x-caller`, else the secret's key id; docs/privacy.md)."""
    secret = metadata.get("x-api-secret")
    workspace = await auth.authenticate(secret)
    try:
        version = versions.parse(metadata.get("api-version"))
    except versions.UnknownVersion as exc:
        raise errors.invalid_field("api-version", str(exc)) from exc
    key_id = ids.key_id_of_secret(secret or "") or ""
    try:
        caller = audit.caller_of(metadata.get(audit.X_CALLER), key_id)
    except ValueError as exc:
        raise errors.invalid_field(audit.X_CALLER, str(exc)) from exc
    return context.CallContext(workspace, version, request_id, deadline, caller, key_id)


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
        if handler is not None and method.startswith(_PREFIX) and handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method.rsplit("/", 1)[-1], handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler is None or not method.startswith(_PREFIX) or handler.unary_unary is None:
            return handler
        wrapped = self._wrap(method.rsplit("/", 1)[-1], cast(Handler, handler.unary_unary))
        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(self, method: str, inner: Any) -> Any:
        """A server stream: everything up to its first message (authentication, validation, the
        first read) runs through the unary wrapper, so errors get the same statuses; later
        messages are streamed as they come, and a lost database mid-stream is UNAVAILABLE."""

        async def first(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            stream = inner(request, ctx)
            try:
                return (await anext(stream), stream)
            except StopAsyncIteration:
                return (None, stream)

        head = self._wrap(method, first)

        async def call(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            message, stream = await head(request, ctx)
            if message is None:
                return
            yield message
            try:
                async for message in stream:
                    yield message
            except _UNAVAILABLE_ERRORS:
                await ctx.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable, retry")

        return call

    def _wrap(self, method: str, inner: Handler) -> Handler:
        auth = self._auth

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
                    call = await _call_context(auth, metadata, request_id, deadline)
                    token = context.set_current(call)
                    response = await inner(request, ctx)
            except errors.DomainError as exc:
                failure = status.from_domain(exc)
            except status.ApiError as exc:
                failure = exc
            except TimeoutError:
                failure = status.ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran out of time")
            except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
                # A NUL character in a request string (PostgreSQL text cannot hold it): bad input.
                failure = status.from_domain(
                    errors.invalid_field("request", "text fields must not contain NUL characters")
                )
            except _UNAVAILABLE_ERRORS as exc:
                log.warning("dependency unavailable", extra={"method": method, "error": type(exc).__name__})
                failure = status.from_domain(errors.unavailable("database unavailable, retry"))
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error", extra={"method": method, "request_id": request_id})
                failure = status.ApiError(
                    grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
                )
            finally:
                if token is not None:
                    context.reset(token)
            # Count the call before answering: whoever reads the metrics after the answer sees it.
            code = failure.code if failure else grpc.StatusCode.OK
            elapsed = time.perf_counter() - started
            metrics.RPC_LATENCY.labels(method, code.name).observe(elapsed)
            if log.isEnabledFor(logging.DEBUG):  # an access log with PAYLINK_LOG_LEVEL=DEBUG
                extra = {"method": method, "code": code.name, "ms": round(elapsed * 1000, 2)}
                log.debug("rpc", extra={**extra, "request_id": request_id})
            if failure is not None:
                await ctx.abort_with_status(rpc_status.to_status(failure.to_status()))
            return response

        return call
