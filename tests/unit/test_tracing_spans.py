"""An RPC's span when no span processor would see it (service/tracing.py::server_span): it records
nothing but is a real context — a new span id, in the caller's trace or a new one — so what jobs,
link tokens and events store (`traceparent()`) is the same as with a recorded span. The recorded
path is tests/e2e/test_tracing.py (a span processor on the process's provider)."""

from __future__ import annotations

import asyncio
import contextlib
import types

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service import tracing, unrecorded_spans
from service.drivers import traced as drivers_traced
from service.drivers.base import AccessGrant, Credentials, JobContext, JobPending, LoggedIn, PlatformError
from service.drivers.sandbox import SANDBOX_ADP, SandboxDriver
from service.drivers.traced import TracedDriver

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def no_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider with no span processor, as a process without an exporter has."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: types.SimpleNamespace(processing=False))


def test_a_call_without_a_traceparent_starts_a_new_sampled_trace() -> None:
    assert tracing.traceparent() == ""
    span, token = tracing.server_span("/paylink.v1.AccountService/GetAccount", {}, {"rpc.system": "grpc"})
    assert span is None  # pending: made when read
    try:
        made = tracing.current_span()
        context = made.get_span_context()
        assert not made.is_recording() and context.is_valid and context.trace_flags.sampled
        # Flags as the SDK's default sampler sets them on a new trace: sampled, random trace id.
        assert tracing.traceparent() == f"00-{context.trace_id:032x}-{context.span_id:016x}-03"
    finally:
        tracing.end_span(span, token, 0, None)
    assert tracing.traceparent() == ""
    other, token = tracing.server_span("/paylink.v1.AccountService/GetAccount", {}, {})
    try:
        other_context = tracing.current_span().get_span_context()
    finally:
        tracing.end_span(other, token, 5, "account not found")
    assert other_context.trace_id != context.trace_id


@pytest.mark.parametrize("flags", ["01", "00", "03"])
def test_a_callers_traceparent_is_continued_with_a_span_of_its_own(flags: str) -> None:
    carrier = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}", "tracestate": "vendor=x"}
    span, token = tracing.server_span("/paylink.v1.LinkTokenService/CreateLinkToken", carrier, {})
    try:
        context = tracing.current_span().get_span_context()
        version, trace_id, span_id, sent_flags = tracing.traceparent().split("-")
        assert (version, trace_id, sent_flags) == ("00", CALLER_TRACE, flags)
        assert span_id == f"{context.span_id:016x}" != CALLER_SPAN
        assert context.trace_state.get("vendor") == "x"
    finally:
        tracing.end_span(span, token, 0, None)
    assert tracing.traceparent() == ""


def test_a_server_span_starts_from_the_callers_context_not_the_one_current_in_the_server() -> None:
    """Without a traceparent the call's span is the only trace context of the call: a span current
    where the server runs is neither its parent nor what a child span inside continues, and a child
    block's context holds no other value of the server's; the caller's trace context is continued."""
    key = otel_context.create_key("ambient")
    ambient = trace.NonRecordingSpan(
        trace.SpanContext(int(CALLER_TRACE, 16), int(CALLER_SPAN, 16), False, trace.TraceFlags(1))
    )
    outer = otel_context.attach(otel_context.set_value(key, "x", trace.set_span_in_context(ambient)))
    try:
        span, token = tracing.server_span("/paylink.v1.AccountService/GetAccount", {}, {})
        try:
            assert tracing.traceparent().split("-")[1] != CALLER_TRACE  # a new trace
            assert tracing.current_span() is not ambient
            with tracing.span("inner") as inner:
                assert otel_context.get_value(key) is None
                assert trace.get_current_span() is inner
                assert inner.get_span_context().trace_id == tracing.current_span().get_span_context().trace_id
                assert inner.get_span_context().trace_id != int(CALLER_TRACE, 16)
        finally:
            tracing.end_span(span, token, 0, None)
        carrier = {"traceparent": f"00-{CALLER_TRACE}-{'1' * 16}-01"}
        span, token = tracing.server_span("/paylink.v1.AccountService/GetAccount", carrier, {})
        try:
            assert tracing.traceparent().split("-")[1] == CALLER_TRACE
            with tracing.span("inner"):
                assert otel_context.get_value(key) is None
        finally:
            tracing.end_span(span, token, 0, None)
        assert trace.get_current_span() is ambient  # and the server's own context is back
        assert tracing.current_span() is ambient
    finally:
        otel_context.detach(outer)


def test_a_malformed_traceparent_starts_a_new_trace() -> None:
    span, token = tracing.server_span("/paylink.v1.AccountService/GetAccount", {"traceparent": "zz"}, {})
    try:
        assert tracing.current_span().get_span_context().is_valid
        assert tracing.traceparent().split("-")[1] != "0" * 32
    finally:
        tracing.end_span(span, token, 0, None)


@pytest.mark.parametrize("flags", ["01", "00", "03"])
def test_traceparent_is_what_the_w3c_propagator_injects(flags: str) -> None:
    carrier = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"}
    span, token = tracing.server_span("/paylink.v1.JobService/CreateJob", carrier, {})
    try:
        injected: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(injected, trace.set_span_in_context(tracing.current_span()))
        assert tracing.traceparent() == injected["traceparent"]
    finally:
        tracing.end_span(span, token, 0, None)
    injected = {}
    TraceContextTextMapPropagator().inject(injected)
    assert tracing.traceparent() == "" and "traceparent" not in injected


def test_a_call_that_reads_no_trace_context_makes_no_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pending server span is made on its first read, once: every read in the call (and in a task
    the call starts) sees the same span; a call that reads none (GetAccount) makes none."""
    made: list[trace.Span] = []
    unrecorded = unrecorded_spans.unrecorded

    def counted(parent: otel_context.Context | None) -> trace.Span:
        made.append(unrecorded(parent))
        return made[-1]

    monkeypatch.setattr(unrecorded_spans, "unrecorded", counted)
    span, token = tracing.server_span("/paylink.v1.AccountService/GetAccount", {}, {})
    tracing.end_span(span, token, 0, None)
    assert made == []

    async def call() -> tuple[str, str, str]:
        span, token = tracing.server_span("/paylink.v1.JobService/CreateJob", {}, {})
        try:
            first = tracing.traceparent()
            in_task = await asyncio.create_task(_read())  # the task copies the call's context
            return first, tracing.traceparent(), in_task
        finally:
            tracing.end_span(span, token, 0, None)

    async def _read() -> str:
        return tracing.traceparent()

    async def two_calls() -> list[tuple[str, str, str]]:
        return list(await asyncio.gather(call(), call()))

    (a, a_again, a_task), (b, b_again, b_task) = asyncio.run(two_calls())
    assert a == a_again == a_task and b == b_again == b_task
    assert a != b
    assert made == []  # a new trace's traceparent needs only its ids, not the span
    assert tracing.traceparent() == ""


def test_a_new_traces_traceparent_read_first_is_its_spans() -> None:
    """Without a caller's traceparent, `traceparent()` draws the pending span's ids alone; the span
    made later from them (for a child span, or `current_span()`) is the same span context."""
    span, token = tracing.server_span("/paylink.v1.JobService/CreateJob", {}, {})
    try:
        tp = tracing.traceparent()
        assert tracing.traceparent() == tp and tp.endswith("-03")
        with tracing.span("job X") as child:
            assert child.get_span_context().trace_id == int(tp.split("-")[1], 16)
        made = tracing.current_span().get_span_context()
        assert not made.is_remote and made.trace_state == trace.TraceState()
        assert f"00-{made.trace_id:032x}-{made.span_id:016x}-{made.trace_flags:02x}" == tp
        assert made.trace_flags == trace.TraceFlags(3) and type(made.trace_flags) is trace.TraceFlags
    finally:
        tracing.end_span(span, token, 0, None)


def test_a_child_span_in_a_call_is_a_child_of_its_server_span() -> None:
    """A job's or platform call's span made inside a call (unrecorded, or recorded once a processor
    was added) continues the call's trace with a span id of its own, is what `traceparent()` reads
    inside its block, and leaves the call's span current after it."""
    carrier = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    span, token = tracing.server_span("/paylink.v1.JobService/CreateJob", carrier, {})
    try:
        call_tp = tracing.traceparent()
        with tracing.span("platform fetch_identity", kind=trace.SpanKind.CLIENT) as child:
            child_tp = tracing.traceparent()
            assert tracing.current_span() is child and trace.get_current_span() is child
        assert child_tp.split("-")[1] == CALLER_TRACE and child_tp.split("-")[2] != call_tp.split("-")[2]
        with tracing.continued_span("zz", "job X", kind=trace.SpanKind.CONSUMER):  # refused: a child
            assert tracing.traceparent().split("-")[1] == CALLER_TRACE
        with tracing.continued_span(f"00-{'2' * 32}-{'3' * 16}-01", "job X", kind=trace.SpanKind.CONSUMER):
            assert tracing.traceparent().split("-")[1] == "2" * 32
        assert tracing.traceparent() == call_tp
        assert trace.get_current_span() is trace.INVALID_SPAN  # OpenTelemetry's own context is back
    finally:
        tracing.end_span(span, token, 0, None)
    assert tracing.traceparent() == ""


def test_a_recorded_child_of_a_pending_server_span_has_it_as_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    span, token = tracing.server_span("/paylink.v1.JobService/CreateJob", {}, {})
    try:
        call_context = tracing.current_span().get_span_context()
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
        monkeypatch.setattr(tracing, "tracer", provider.get_tracer("test"))
        with tracing.span("job X") as child:
            assert child.is_recording()
            assert tracing.traceparent().split("-")[2] == f"{child.get_span_context().span_id:016x}"
        assert tracing.current_span().get_span_context() == call_context
    finally:
        tracing.end_span(span, token, 0, None)
    (finished,) = exporter.get_finished_spans()
    assert finished.parent == call_context


def test_a_span_without_a_processor_is_a_child_of_the_current_one_and_ends_with_its_block() -> None:
    """`tracing.span` (a job's span, its platform calls'): unrecorded, but a real child context."""
    carrier = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    with tracing.span("job JOB_NAME_IDENTITY", context=tracing.continued(carrier["traceparent"])) as job:
        job_tp = tracing.traceparent()
        assert not job.is_recording()
        assert job_tp.split("-")[1] == CALLER_TRACE and job_tp.split("-")[2] not in (CALLER_SPAN, "0" * 16)
        with tracing.span("platform fetch_identity", kind=trace.SpanKind.CLIENT) as call:
            assert call.get_span_context().trace_id == job.get_span_context().trace_id
            assert call.get_span_context().span_id != job.get_span_context().span_id
            assert tracing.traceparent().split("-")[1] == CALLER_TRACE
        assert tracing.traceparent() == job_tp  # the platform call's span ended with its block
    assert tracing.traceparent() == ""
    with tracing.span("job JOB_NAME_IDENTITY") as fresh:  # no stored context, none current: a new trace
        assert fresh.get_span_context().is_valid and fresh.get_span_context().trace_id != int(
            CALLER_TRACE, 16
        )
    assert tracing.traceparent() == ""


@pytest.mark.parametrize(
    "tp",
    [
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-00",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-03",
        f"01-{CALLER_TRACE}-{CALLER_SPAN}-01",  # a later version, read as 00
        f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",  # the forbidden version
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # zero trace id
        f"00-{CALLER_TRACE}-{'0' * 16}-01",  # zero span id
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-01\n",
        f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-01-extra",
        "zz",
        "",
    ],
)
def test_a_stored_traceparent_is_continued_as_the_w3c_propagator_reads_it(tp: str) -> None:
    # A job's span continues the traceparent stored with it (service/worker.py): `continued` reads it
    # itself, to the same context the propagator extracts (None where our own check refuses it).
    ours = tracing.continued(tp)
    if ours is None:
        assert tp == "" or unrecorded_spans.TRACEPARENT.match(tp) is None
        return
    theirs = TraceContextTextMapPropagator().extract({"traceparent": tp})
    assert ours.keys() == theirs.keys()  # the spans themselves compare by identity: below
    mine, propagated = trace.get_current_span(ours), trace.get_current_span(theirs)
    assert mine.get_span_context() == propagated.get_span_context()
    assert type(mine) is type(propagated)


def test_a_span_without_a_processor_ends_with_its_block_when_the_block_raises() -> None:
    with pytest.raises(LookupError), tracing.request("rid-1"), tracing.span("job X"):
        assert tracing.traceparent() != "" and tracing.request_id() == "rid-1"
        raise LookupError
    assert tracing.traceparent() == "" and tracing.request_id() == ""


@pytest.mark.parametrize("recorded", [False, True])
async def test_platform_call_spans_note_how_the_call_ended(
    monkeypatch: pytest.MonkeyPatch, recorded: bool
) -> None:
    """drivers/traced.py: each call is a CLIENT span `platform <method>`, a child of the job's;
    a PlatformError sets its code, transience and an ERROR status, a JobPending `paylink.pending`,
    another exception an ERROR status named after it. Unrecorded, the same blocks only carry context."""
    exporter = InMemorySpanExporter()
    if recorded:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
        monkeypatch.setattr(tracing, "tracer", provider.get_tracer("test"))
    driver = TracedDriver(SandboxDriver(slow_latency=0.0))
    good = await driver.login(SANDBOX_ADP, Credentials("user_good", "pass_good"))
    assert isinstance(good, LoggedIn)

    def context(grant: AccessGrant, attempt: int = 1) -> JobContext:
        return JobContext(account_id="a", platform_id=SANDBOX_ADP, grant=grant, attempt=attempt)

    def grant_of(username: str) -> AccessGrant:
        return AccessGrant(good.grant.secret.replace(b'"user_good"', f'"{username}"'.encode()))

    tp = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with tracing.span("job JOB_NAME_IDENTITY", context=tracing.continued(tp)):
        assert (await driver.fetch_identity(context(good.grant))).full_name
        with pytest.raises(PlatformError):
            await driver.fetch_identity(context(grant_of("user_flaky")))
        with pytest.raises(JobPending):
            await driver.fetch_identity(context(grant_of("user_pending")))
        with (
            pytest.raises(asyncio.CancelledError),
            tracing.span("inner"),
            drivers_traced._span("fetch_income", SANDBOX_ADP),
        ):
            raise asyncio.CancelledError
        assert tracing.traceparent().split("-")[1] == CALLER_TRACE
    assert tracing.traceparent() == ""
    finished = {s.name: s for s in exporter.get_finished_spans()}
    if not recorded:
        assert finished == {}
        return
    ok, flaky, pending = [s for s in exporter.get_finished_spans() if s.name == "platform fetch_identity"]
    assert ok.kind == trace.SpanKind.CLIENT and ok.status.status_code == trace.StatusCode.UNSET
    assert ok.attributes == {"paylink.platform_id": SANDBOX_ADP}
    assert (
        ok.context.trace_id == int(CALLER_TRACE, 16)
        and ok.parent == finished["job JOB_NAME_IDENTITY"].context
    )
    assert flaky.attributes is not None and flaky.attributes["paylink.transient"] is True
    assert flaky.attributes["paylink.error_code"] == "JOB_ERROR_CODE_PLATFORM_UNAVAILABLE"
    assert flaky.status.status_code == trace.StatusCode.ERROR
    assert pending.attributes is not None and pending.attributes["paylink.pending"] is True
    assert pending.status.status_code == trace.StatusCode.UNSET
    cancelled = finished["platform fetch_income"]
    assert cancelled.status.status_code == trace.StatusCode.ERROR
    assert cancelled.status.description == "CancelledError"
    assert cancelled.parent == finished["inner"].context


@pytest.mark.parametrize(
    "tp",
    [
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-00",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-03",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-ff",
        f"01-{CALLER_TRACE}-{CALLER_SPAN}-01",
        f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",
        f"00-{'0' * 32}-{CALLER_SPAN}-01",
        f"00-{CALLER_TRACE}-{'0' * 16}-01",
        f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01",
        "zz",
        "",
    ],
)
@pytest.mark.parametrize("inside", [False, True])
def test_a_jobs_continued_span_is_the_span_of_its_continued_context(tp: str, inside: bool) -> None:
    """`continued_span(tp, ...)` (a job's span, service/worker.py) is `span(..., context=continued(tp))`
    made in one step when unrecorded: the same trace, flags, state and context keys, a span id of its
    own; where `continued` refuses `tp`, a child of the current span (`inside` one) as `span` makes."""
    outer = tracing.span("rpc") if inside else contextlib.nullcontext()
    with outer:
        with tracing.span("job X", context=tracing.continued(tp)) as theirs:
            their_tp, their_keys = tracing.traceparent(), otel_context.get_current().keys()
        with tracing.continued_span(tp, "job X", kind=trace.SpanKind.CONSUMER) as mine:
            my_tp, my_keys = tracing.traceparent(), otel_context.get_current().keys()
            assert not mine.is_recording()
        outside = tracing.traceparent()
    a, b = theirs.get_span_context(), mine.get_span_context()
    assert (b.is_valid, b.is_remote, b.trace_state) == (a.is_valid, a.is_remote, a.trace_state)
    assert b.trace_flags == a.trace_flags and type(b.trace_flags) is type(a.trace_flags)
    continued = tracing.continued(tp)  # None: refused (a child of the current span); empty: a new trace
    assert (b.trace_id == a.trace_id) == (bool(continued) or (continued is None and inside))
    assert b.span_id != a.span_id and my_tp.split("-")[2] == f"{b.span_id:016x}"
    assert (my_tp.split("-")[0], my_tp.split("-")[3]) == (their_tp.split("-")[0], their_tp.split("-")[3])
    assert my_keys == their_keys
    assert outside == ("" if not inside else outside) and tracing.traceparent() == ""


async def test_an_unrecorded_platform_call_makes_no_span() -> None:
    """drivers/traced.py: with nothing to record it, a platform call runs in its job's span (nothing
    inside a call stores a context), so it costs no span of its own."""
    driver = TracedDriver(SandboxDriver(slow_latency=0.0))
    with tracing.continued_span(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "job X", kind=trace.SpanKind.CONSUMER):
        job_tp = tracing.traceparent()
        with drivers_traced._span("fetch_identity", SANDBOX_ADP):
            assert tracing.traceparent() == job_tp
        good = await driver.login(SANDBOX_ADP, Credentials("user_good", "pass_good"))
        assert isinstance(good, LoggedIn) and tracing.traceparent() == job_tp
