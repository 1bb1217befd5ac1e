"""Spans that record nothing, made by hand (service/tracing.py uses them when no span processor would
see a span): each is only a new context — a new span id, in its parent's trace or a new one, with the
flags the SDK's default sampler would give it — at a fraction of the SDK's cost for the same
context (tests/unit/test_tracing_spans.py compares them with the SDK's and the W3C propagator's).
"""

from __future__ import annotations

import random
import re

from opentelemetry import context as otel_context
from opentelemetry import trace

TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
NEW_TRACE_FLAGS = trace.TraceFlags(trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID)
INHERITED_FLAGS = trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID
EMPTY_CONTEXT = otel_context.Context()


def formatted(context: trace.SpanContext) -> str:
    """A span context as a W3C traceparent ('' when it is not valid)."""
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def unrecorded(parent: otel_context.Context | None) -> trace.Span:
    """A span with a new span id (and a new trace id without a parent), recording nothing. Its flags
    are those the SDK's default sampler gives a span: the parent's sampled and random-trace-id bits,
    or both set on a new trace."""
    remote = trace.get_current_span(parent).get_span_context() if parent else None  # {}: no span in it
    if remote is not None and remote.is_valid:
        trace_id, state = remote.trace_id, remote.trace_state
        flags = trace.TraceFlags(
            remote.trace_flags & (trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID)
        )
    else:
        trace_id, state, flags = random.getrandbits(128) or random_id(128), None, NEW_TRACE_FLAGS
    context = trace.SpanContext(trace_id, random.getrandbits(64) or random_id(64), False, flags, state)
    return trace.NonRecordingSpan(context)


def random_id(bits: int) -> int:
    """A random trace (128 bits) or span (64 bits) id, never 0 (the SDK's RandomIdGenerator's way)."""
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


class UnrecordedBlock:
    """`tracing.span`'s block when nothing would record it: an unrecorded child span, current inside."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: otel_context.Context | None) -> None:
        self._context = context
        self._token: object = None

    def __enter__(self) -> trace.Span:
        context = self._context
        span = unrecorded(context if context is not None else otel_context.get_current())
        self._token = otel_context.attach(trace.set_span_in_context(span, context))
        return span

    def __exit__(self, *_: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]  # the token attach returned


class UnrecordedChild:
    """`tracing.continued_span`'s block when nothing would record it."""

    __slots__ = ("_token", "_tp")

    def __init__(self, tp: str) -> None:
        self._tp = tp
        self._token: object = None

    def __enter__(self) -> trace.Span:
        tp = self._tp
        base: otel_context.Context | None = EMPTY_CONTEXT
        if not tp or not TRACEPARENT.match(tp):  # tracing.continued refuses it: a child of the current
            span = unrecorded(otel_context.get_current())
            base = None
        else:
            trace_id = int(tp[3:35], 16)
            if tp[0:2] == "ff" or trace_id == 0 or int(tp[36:52], 16) == 0:  # nothing to continue
                trace_id, flags = random_id(128), NEW_TRACE_FLAGS
            else:
                flags = trace.TraceFlags(int(tp[53:55], 16) & INHERITED_FLAGS)
            context = trace.SpanContext(trace_id, random_id(64), False, flags)
            span = trace.NonRecordingSpan(context)
        self._token = otel_context.attach(trace.set_span_in_context(span, base))
        return span

    def __exit__(self, *_: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]  # the token attach returned
