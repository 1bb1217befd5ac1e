"""Traces (OpenTelemetry) and request ids across RPCs, jobs and Kafka (docs/operations.md#tracing).

- `configure()` installs the SDK tracer provider once per process. Spans are always made, so trace
  context flows into jobs and events; they are exported only when the standard variables ask for it
  (`OTEL_TRACES_EXPORTER=otlp`, or an `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`): off by default.
  `OTEL_SDK_DISABLED=true` turns the SDK off (no spans: only a caller's own context is passed on).
- `server_span()` starts an RPC's span: a recorded SDK span when the provider has a span processor
  (an exporter, or a test's in-memory one), else a *pending* one: only the caller's metadata is
  kept, and the span (a new span id, in the caller's trace or a new one: what jobs, link tokens and
  events store) is made the first time something inside the call reads the trace context through
  this module (`traceparent()`, `current_span()`, a child `span()`), once. A call that reads none
  (GetAccount) makes no span at all. OpenTelemetry's own current context is not set by a pending
  span: trace context is read through this module's helpers, which surface it (nothing else in
  paylink reads `opentelemetry.context` directly; no instrumentation library is installed).
- A W3C `traceparent` string is how a trace context is stored (jobs, link tokens, outbox rows) and
  sent (Kafka header). `traceparent()` reads the current one; `continued(tp)` is the context to start
  a child span in.
- The request id of the current work (an RPC's `x-request-id`, or the one stored with a job) lives
  in a context variable, so the events written under it carry it.

Spans that record nothing are built in service/unrecorded_spans.py. No gRPC here: the API's server
interceptor is set up in service/api.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import re
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from service import unrecorded_spans

# What a caller's x-request-id may look like; anything else is replaced by a generated id.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("paylink_request_id", default="")
_state = {"configured": False}

tracer = trace.get_tracer("paylink")


def configure(service_name: str = "paylink") -> None:
    """Installs the tracer provider (and the OTLP exporter when configured). Idempotent."""
    if _state["configured"]:
        return
    _state["configured"] = True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return
    # The SDK is imported here, not at module load: CLI commands that serve nothing stay quick.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name

    class Provider(TracerProvider):
        """The SDK provider, knowing whether any span processor would see a span (server_span)."""

        processing = False

        def add_span_processor(self, span_processor: SpanProcessor) -> None:
            super().add_span_processor(span_processor)
            self.processing = True

    provider = Provider(resource=Resource.create({"service.name": name}))
    if exporting():
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def exporting() -> bool:
    """Whether the standard variables ask for OTLP export (the SDK's own default is not used)."""
    exporters = {e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    return "otlp" in exporters or bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def shutdown() -> None:
    """Flushes what the exporter holds (graceful shutdown)."""
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)  # the SDK's provider has it
    if flush is not None:
        flush(timeout_millis=5000)


def current_span() -> trace.Span:
    """The current span: a pending server span's (made now if it was not yet), else OpenTelemetry's."""
    pending = _pending.get()
    return trace.get_current_span() if pending is None else _made(pending)


def traceparent() -> str:
    """The current span's context as a W3C traceparent ('' when there is none): what the W3C
    propagator injects, without its carrier."""
    pending = _pending.get()
    if pending is not None:
        tp = pending[3]
        if tp is None:
            tp = pending[3] = _pending_traceparent(pending)
        return cast(str, tp)
    return unrecorded_spans.formatted(trace.get_current_span().get_span_context())


def _pending_traceparent(pending: list[Any]) -> str:
    """A pending server span's traceparent. On a new trace (no `traceparent` from the caller), with
    the span not yet made, only its ids are drawn (`_made` makes the span from them if it is asked
    for later): the flags a new trace's span has (sampled, random trace id: 03)."""
    if pending[1] is None and "traceparent" not in pending[0]:
        trace_id, span_id = (
            random.getrandbits(128) or unrecorded_spans.random_id(128),
            random.getrandbits(64) or unrecorded_spans.random_id(64),
        )
        return f"00-{trace_id:032x}-{span_id:016x}-03"
    return unrecorded_spans.formatted(_made(pending).get_span_context())


def server_span(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, AttributeValue], request_id: str = ""
) -> tuple[trace.Span | None, object]:
    """Starts an RPC's SERVER span, continuing the caller's trace context (`traceparent` in
    `carrier`, the call's metadata) or starting a new trace, and makes it current; returns it with
    the token `end_span` takes. Recorded when a span processor would see it (see the module's
    docstring), with `attributes` and `request_id` as `paylink.request_id`; else pending (None is
    returned for the span): made only if something inside the call reads the trace context, from
    `carrier` as it is now (the caller's metadata, not changed after)."""
    if not getattr(trace.get_tracer_provider(), "processing", True):
        # [the caller's metadata, the span once made, its parent context, its traceparent once read]:
        # one list per call, shared by the tasks the call starts (they copy the context variable),
        # so they all see one span.
        return None, _pending.set([carrier, None, None, None])
    # The caller's context, or a fresh one: never whatever context the server's loop happens to hold
    # (nor is that read: two calls into OpenTelemetry fewer per RPC).
    parent = propagate.extract(carrier) if "traceparent" in carrier else unrecorded_spans.EMPTY_CONTEXT
    if request_id:
        attributes = {**attributes, "paylink.request_id": request_id}
    span = tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes)
    return span, otel_context.attach(trace.set_span_in_context(span, parent))


# The current call's pending server span (`server_span` without a span processor), or None.
_pending: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "paylink_pending_server_span", default=None
)
# `end_span` of a pending server span (None), as the context variable's own method: no Python frame.
end_pending: Callable[[Any], None] = _pending.reset


def _made(pending: list[Any]) -> trace.Span:
    """A pending server span, made the first time it is asked for: the span `server_span` made
    before spans were lazy (an unrecorded child of the caller's context, or a new trace)."""
    span = pending[1]
    if span is None:
        carrier, tp = pending[0], pending[3]
        if "traceparent" in carrier:
            parent = propagate.extract(carrier)
            span = unrecorded_spans.unrecorded(parent)
        elif tp is not None:  # a new trace whose ids `traceparent()` drew already
            parent = unrecorded_spans.EMPTY_CONTEXT
            span = trace.NonRecordingSpan(
                trace.SpanContext(
                    int(tp[3:35], 16), int(tp[36:52], 16), False, unrecorded_spans.NEW_TRACE_FLAGS
                )
            )
        else:
            parent = unrecorded_spans.EMPTY_CONTEXT
            span = unrecorded_spans.unrecorded(parent)
        pending[1], pending[2] = span, parent
    return cast(trace.Span, span)


class _Surfaced:
    """A span's block inside a call whose server span is pending: for the block, that span is made
    and current in OpenTelemetry's context (so the block's span is its child, and any reader of
    OpenTelemetry's context inside sees it) and no longer pending (so `traceparent()` reads the
    block's span)."""

    __slots__ = ("_block", "_pending", "_tokens")

    def __init__(self, block: contextlib.AbstractContextManager[trace.Span], pending: list[Any]) -> None:
        self._block = block
        self._pending = pending
        self._tokens: tuple[contextvars.Token[list[Any] | None], object] | None = None

    def __enter__(self) -> trace.Span:
        pending = self._pending
        span = _made(pending)
        surfaced = otel_context.attach(trace.set_span_in_context(span, pending[2]))
        self._tokens = (_pending.set(None), surfaced)
        try:
            return self._block.__enter__()
        except BaseException:
            self._restore()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return self._block.__exit__(kind, exc, tb)
        finally:
            self._restore()

    def _restore(self) -> None:
        tokens = self._tokens
        assert tokens is not None
        self._tokens = None
        otel_context.detach(tokens[1])  # type: ignore[arg-type]  # the token attach returned
        _pending.reset(tokens[0])


def recording() -> bool:
    """Whether a span made now would be recorded: the provider has a span processor (an exporter, or
    a test's in-memory one). Else spans only carry context, and one whose context nothing inside
    stores (a platform call's) need not be made at all."""
    return bool(getattr(trace.get_tracer_provider(), "processing", True))


def continued_span(
    tp: str, name: str, *, kind: trace.SpanKind, attributes: Mapping[str, AttributeValue] | None = None
) -> contextlib.AbstractContextManager[trace.Span]:
    """`span(name, context=continued(tp), ...)`: a span current for the block, continuing the stored
    traceparent `tp` (a job's). Unrecorded, the child's context is made from `tp` at once, without
    the remote parent's span and context that `continued` builds for it (the same context:
    tests/unit/test_tracing_spans.py)."""
    if recording():
        return span(name, context=continued(tp), kind=kind, attributes=attributes)
    block = unrecorded_spans.UnrecordedChild(tp)
    pending = _pending.get()  # inline, not a function: a job makes one of these
    return block if pending is None else _Surfaced(block, pending)


def span(
    name: str,
    *,
    context: otel_context.Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    record_exception: bool = True,
    set_status_on_exception: bool = True,
) -> contextlib.AbstractContextManager[trace.Span]:
    """A span current for the block, a child of `context` (default: the current one): recorded, as
    `tracer.start_as_current_span` makes it, when a span processor would see it, else a span that
    only carries its new context (as `server_span`: what the work inside stores is the same, at a
    fraction of the cost: a job's span and its platform calls' were a fifth of a worker's CPU). The
    unrecorded one is a plain object, not a generator's context manager (a job makes three)."""
    block: contextlib.AbstractContextManager[trace.Span]
    if getattr(trace.get_tracer_provider(), "processing", True):
        block = tracer.start_as_current_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )
    else:
        block = unrecorded_spans.UnrecordedBlock(context)
    pending = _pending.get()  # a block inside a call whose server span is pending: surfaces it
    return block if pending is None else _Surfaced(block, pending)


def end_span(span: trace.Span | None, token: object, code: int, error: str | None) -> None:
    """Ends a server span with its gRPC status code (`error`: the message of a failed call); a
    pending one (None) is no longer current, made or not."""
    if span is None:
        _pending.reset(token)  # type: ignore[arg-type]  # the token server_span's set returned
        return
    if type(span) is not trace.NonRecordingSpan and span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code)
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        span.end()
    otel_context.detach(token)  # type: ignore[arg-type]  # the token attach returned


def continued(tp: str) -> otel_context.Context | None:
    """The context to start a child span of a stored traceparent in (None: a new trace): the
    context the W3C propagator extracts from it (a traceparent alone, no tracestate), read without
    the propagator's carrier and second parse (tests/unit/test_tracing_spans.py)."""
    if not tp or not unrecorded_spans.TRACEPARENT.match(tp):
        return None
    version, trace_id, span_id = tp[0:2], tp[3:35], tp[36:52]
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
        return otel_context.Context()  # what the propagator answers: nothing to continue
    parent = trace.SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(tp[53:55], 16)),
        trace_state=None,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), otel_context.Context())


def accepted_request_id(value: str | None) -> str:
    """The caller's x-request-id when it is a sensible token, else a generated one."""
    if value and _REQUEST_ID.match(value):
        return value
    # 32 hex digits. A request id names a call in logs and traces and is no secret, so it comes
    # from the `random` module as trace and span ids do (the SDK's RandomIdGenerator's way; the
    # module reseeds in a forked child): 0.5 µs against os.urandom's 1.4 (a system call) on every
    # call without one (bench/NOTES.md, "rpc (session 28)").
    return f"{random.getrandbits(128):032x}"


def request_id() -> str:
    """The request id of the current work ('' outside any)."""
    return _request_id.get()


# Makes `rid` the current request id, and puts the previous one back (the context variable's own
# methods: no Python frame of ours around them on every RPC).
set_request_id: Callable[[str], contextvars.Token[str]] = _request_id.set
reset_request_id: Callable[[contextvars.Token[str]], None] = _request_id.reset


class request:  # noqa: N801 - a block, named as the function it was
    """Runs the block under a request id (events written in it carry it)."""

    __slots__ = ("_rid", "_token")

    def __init__(self, rid: str) -> None:
        self._rid = rid

    def __enter__(self) -> None:
        self._token = _request_id.set(self._rid)

    def __exit__(self, *_: object) -> None:
        _request_id.reset(self._token)
