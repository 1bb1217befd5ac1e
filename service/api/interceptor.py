"""The call pipeline around every RPC: one layer, built once per method when the server is assembled.

`Pipeline.wrap` wraps each method's handler when it is registered (service/api/server.py), not as a
grpc interceptor: interceptors run for every call and build new handlers each time. For each
paylink.v1 call, in order:

- a request that is not a readable message, holds a NUL character or a malformed id answers
  INVALID_ARGUMENT before anything else (service/api/decoding.py swapped its deserializer);
- the SERVER span starts, continuing the caller's `traceparent` (service/tracing.py; without a span
  processor it is pending, made only if the call stores its context);
- the caller's `x-request-id`, or a generated one, is made current and returned in the trailing
  metadata, which goes out with the status (on errors too), so it costs no write of its own; a
  server stream also sends it in its initial metadata, at its start;
- `x-api-secret` is authenticated (UNAUTHENTICATED), `api-version` and `x-caller` parsed
  (INVALID_ARGUMENT), and the CallContext set; the handler runs within the caller's deadline;
- what it raised is mapped to a status: a domain error (service/errors.py) -> its code and
  google.rpc details (api/status.py); a lost database -> UNAVAILABLE; a write the database's release
  guard refuses (SQLSTATE PL001: a newer release migrated it) -> UNAVAILABLE `RELEASE_REFUSED`, one
  WARNING line, and the process's `release_guard.Guard` marked refused; a deadline, or a statement
  PostgreSQL cancelled at the pool's statement timeout (service/db.py) -> DEADLINE_EXCEEDED;
  anything else INTERNAL, quoting the request id. The call is counted in the RPC metrics before it
  is answered.

Health and reflection stay open: only their unreadable requests are refused.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import asyncpg
import grpc
from grpc_status import rpc_status

from service import db, errors, metrics, release_guard, tracing
from service.api import context, decoding, status
from service.api.callers import Callers
from service.auth import Authenticator

log = logging.getLogger("paylink.rpc")

_PREFIX = "/paylink.v1."
REQUEST_ID = "x-request-id"  # metadata: accepted from the caller, returned in the trailing metadata
Handler: TypeAlias = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Any]]
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

_UNAVAILABLE_ERRORS = db.UNAVAILABLE  # a lost, restarting or failing-over database
_BAD_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)
# 57014: PostgreSQL cancelled the statement (the pool's statement_timeout, service/db.py)
_STATEMENT_CANCELLED = asyncpg.exceptions.QueryCanceledError


class _Expiry:
    """Cancels a call's task at its deadline (what `asyncio.timeout` does, without its context
    manager's own coroutines and state machine: this runs on every call)."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


def _failure(
    exc: Exception, method: str, request_id: str, guard: release_guard.Guard | None = None
) -> status.ApiError:
    """The status a call that raised `exc` is answered with (`guard`: the process's, marked refused
    when the database's release guard refused the call's write)."""
    if isinstance(exc, errors.DomainError):
        return status.from_domain(exc)
    if isinstance(exc, status.ApiError):
        return exc
    if isinstance(exc, TimeoutError):
        return status.ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran out of time")
    if isinstance(exc, _STATEMENT_CANCELLED):
        log.warning("statement cancelled", extra={"method": method, "request_id": request_id})
        return status.ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the database did not answer in time")
    if isinstance(exc, _BAD_TEXT):  # a NUL character in a request string (PostgreSQL text cannot hold it)
        return status.from_domain(
            errors.invalid_field("request", "text fields must not contain NUL characters")
        )
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        log.warning("dependency unavailable", extra={"method": method, "error": type(exc).__name__})
        return status.from_domain(errors.unavailable("database unavailable, retry"))
    if release_guard.refused(exc):  # the transaction rolled back: the caller retries elsewhere
        if guard is not None:
            guard.refuse(exc)
        log.warning(
            "release refused by the database's release guard",
            extra={"method": method, "request_id": request_id, "sqlstate": release_guard.SQLSTATE},
        )
        return status.from_domain(errors.release_refused())
    log.error("unhandled error", exc_info=exc, extra={"method": method, "request_id": request_id})
    return status.ApiError(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")


async def _refuse(method: str, request: decoding.Refused, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Answers a refused request INVALID_ARGUMENT (an open method's; paylink.v1's go through `Pipeline._unary`)."""
    if request.unreadable:
        log.debug("unreadable request", extra={"method": method, "reason": request.error.message})
    metrics.RPC_LATENCY.labels(method, grpc.StatusCode.INVALID_ARGUMENT.name).observe(0.0)
    await _abort(ctx, status.from_domain(request.error), ())


async def _abort(
    ctx: grpc.aio.ServicerContext[Any, Any], failure: status.ApiError, trailing: tuple[Any, ...]
) -> None:
    answer = rpc_status.to_status(failure.to_status())
    await ctx.abort(answer.code, answer.details, (*answer.trailing_metadata, *trailing))


# A call's metadata by key (the last value of a repeated key), built by `dict` itself (no Python
# frame per call). Only `-bin` keys hold bytes, and none is read: every key the pipeline and the
# handlers read (the secret, api-version, x-caller, x-request-id, traceparent) is text.
_by_key: Callable[[Any], dict[str, str]] = dict

_OK = grpc.StatusCode.OK.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


class _Counted:
    """One method's calls in the RPC latency histogram (`paylink_rpc_seconds`), and its access log
    line at DEBUG. A code's series appears with its first call; the OK child is kept at hand."""

    __slots__ = ("_children", "_method", "_ok")

    def __init__(self, method: str, children: dict[tuple[str, grpc.StatusCode], Any]) -> None:
        self._method = method
        self._children = children  # the Pipeline's, by (method, code)
        self._ok: Any = None

    def ok(self, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        latency = self._ok
        if latency is None:
            latency = self._ok = self._child(grpc.StatusCode.OK)
        latency.observe(elapsed)
        if log.isEnabledFor(logging.DEBUG):
            self._log(grpc.StatusCode.OK, elapsed, request_id)

    def failed(self, code: grpc.StatusCode, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        self._child(code).observe(elapsed)
        if log.isEnabledFor(logging.DEBUG):
            self._log(code, elapsed, request_id)

    def _child(self, code: grpc.StatusCode) -> Any:
        key = (self._method, code)
        latency = self._children.get(key)
        if latency is None:
            latency = self._children[key] = metrics.RPC_LATENCY.labels(self._method, code.name)
        return latency

    def _log(self, code: grpc.StatusCode, elapsed: float, request_id: str) -> None:
        """An access log line with PAYLINK_LOG_LEVEL=DEBUG."""
        extra = {"method": self._method, "code": code.name, "ms": round(elapsed * 1000, 2)}
        log.debug("rpc", extra={**extra, "request_id": request_id})


class Pipeline:
    """Wraps method handlers (once each) in the call pipeline; counts and times the calls."""

    def __init__(self, authenticator: Authenticator, guard: release_guard.Guard | None = None) -> None:
        self._callers = Callers(authenticator)
        self._guard = guard  # the process's (Deps.release_guard): marked by refused writes
        self._wrapped: dict[str, MethodHandler] = {}
        self._latency: dict[tuple[str, grpc.StatusCode], Any] = {}  # the histogram's children

    def wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        """The handler that serves `method` (its full name, `/package.Service/Method`)."""
        found = self._wrapped.get(method)
        if found is None:
            found = self._wrapped[method] = self._build(method, handler)
        return found

    def _build(self, method: str, handler: MethodHandler) -> MethodHandler:
        read = decoding.safe(handler.request_deserializer, decoding.type_name(handler.request_deserializer))
        name = method.rsplit("/", 1)[-1]
        write = handler.response_serializer
        open_method = not method.startswith(_PREFIX)
        if handler.unary_unary is not None:
            inner = cast(Handler, handler.unary_unary)  # the typing stubs know only sync handlers
            unary = _open_unary(name, inner) if open_method else self._unary(method, inner)
            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=read, response_serializer=write
            )
        if handler.unary_stream is not None:
            stream = (
                _open_stream(name, handler.unary_stream)
                if open_method
                else self._stream(method, handler.unary_stream)
            )
            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=read, response_serializer=write
            )
        return handler

    # long: it holds the one coroutine every call runs (`call`, below)
    def _unary(self, method: str, inner: Handler, *, stream: bool = False) -> Handler:
        name = method.rsplit("/", 1)[-1]
        attributes = {"rpc.system": "grpc", "rpc.service": method[1:].split("/", 1)[0], "rpc.method": name}
        callers, guard = self._callers, self._guard
        counted = _Counted(name, self._latency)

        # long: one coroutine per call around the handler's, on purpose: each level of coroutine a
        # call passes through is entered again every time it resumes (bench/NOTES.md, "rpc (session 30)").
        async def call(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            # The caller's metadata by key. Only `-bin` keys hold bytes; every key read here is text.
            metadata = _by_key(ctx.invocation_metadata() or ())
            request_id = tracing.accepted_request_id(metadata.get(REQUEST_ID))
            reply = ((REQUEST_ID, request_id),)
            ctx.set_trailing_metadata(reply)  # sent with the status, whatever it is
            if stream:
                await ctx.send_initial_metadata(reply)
            span, span_token = tracing.server_span(method, metadata, attributes, request_id)
            rid_token = tracing.set_request_id(request_id)
            # CANCELLED unless the call gets as far as an answer
            code, response, failure = _CANCELLED, None, None
            try:
                if type(request) is decoding.Refused:
                    if request.unreadable:
                        log.debug(
                            "unreadable request", extra={"method": name, "reason": request.error.message}
                        )
                    failure = status.from_domain(request.error)
                else:
                    # The handler, authenticated and within the caller's deadline: every database and
                    # platform call (authentication's too) is bounded by it; DEADLINE_EXCEEDED when
                    # it passes.
                    timer, expiry, cancelling, deadline, call_token = None, None, 0, None, None
                    try:
                        remaining = ctx.time_remaining()
                        if remaining is not None:
                            loop = asyncio.get_running_loop()
                            task = asyncio.current_task(loop)
                            assert task is not None  # a grpc.aio handler always runs in its call's task
                            cancelling = task.cancelling()
                            expiry = _Expiry(task)
                            timer = loop.call_at(loop.time() + remaining, expiry)
                            deadline = time.monotonic() + remaining
                        who = callers.cached(metadata) or await callers.of(metadata)
                        call_token = context.set_current(
                            context.CallContext(
                                who.workspace, who.api_version, request_id, deadline, who.caller, who.key_id
                            )
                        )
                        response = await inner(request, ctx)
                    except grpc.aio.AbortError:
                        raise
                    except asyncio.CancelledError:
                        if expiry is None or not expiry.fired or expiry.task.uncancel() > cancelling:
                            raise
                        failure = _failure(TimeoutError(), name, request_id, guard)
                    except Exception as exc:
                        failure = _failure(exc, name, request_id, guard)
                    finally:
                        if call_token is not None:
                            context.reset(call_token)
                        if timer is not None:
                            timer.cancel()
                # The success path uses the OK code's number and histogram child as they are: no
                # enum attribute or hash of a StatusCode (Python code in `enum`) on most calls.
                if failure is None:
                    code = _OK
                    counted.ok(started, request_id)
                else:
                    code = failure.code.value[0]
                    counted.failed(failure.code, started, request_id)
            finally:
                tracing.reset_request_id(rid_token)
                if span is None:  # pending: made or not, nothing to end
                    tracing.end_pending(span_token)
                else:
                    tracing.end_span(span, span_token, code, failure.message if failure else None)
            if failure is not None:
                await _abort(ctx, failure, reply)
            return response

        return call

    def _stream(self, method: str, inner: Any) -> Any:
        """A server stream: everything up to its first message (authentication, validation, the
        first read) runs through the unary pipeline, so errors get the same statuses; later
        messages are streamed as they come, and a lost database mid-stream is UNAVAILABLE."""

        async def first(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            stream = inner(request, ctx)
            try:
                return (await anext(stream), stream)
            except StopAsyncIteration:
                return (None, stream)

        head = self._unary(method, first, stream=True)

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


def _open_unary(method: str, inner: Handler) -> Handler:
    async def call(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if type(request) is decoding.Refused:
            await _refuse(method, request, ctx)
        return await inner(request, ctx)

    return call


def _open_stream(method: str, inner: Any) -> Any:
    if inspect.iscoroutinefunction(inner):  # a stream that writes with ctx.write() (health Watch)

        async def written(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
            if type(request) is decoding.Refused:
                await _refuse(method, request, ctx)
            await inner(request, ctx)

        return written

    async def generated(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if type(request) is decoding.Refused:
            await _refuse(method, request, ctx)
        async for message in inner(request, ctx):
            yield message

    return generated
