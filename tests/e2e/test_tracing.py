"""Traces and request ids across gRPC, the job queue and Kafka (service/tracing.py, docs/operations.md).

With an in-memory exporter on the process's tracer provider: a caller's W3C traceparent on
CreateLinkToken is continued by the server span, by the job the token's Link session creates, by
the platform call of that job, and reaches the Kafka headers of the job's event, read back from the
real broker; the caller's x-request-id comes back in the response's trailing metadata and rides on
the event.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from paylink.v1 import account_pb2, job_pb2, link_pb2, link_token_pb2
from paylink.v1 import common_pb2 as c

from service import runtime
from tests.harness import Client, EventLog


@pytest.fixture(scope="module")
def spans(app: runtime.Running) -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "runtime.start installs the SDK provider"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def _span(
    spans: InMemorySpanExporter, match: Callable[[ReadableSpan], bool], timeout: float = 30
) -> ReadableSpan:
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in spans.get_finished_spans() if match(s)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "span never finished"
        await asyncio.sleep(0.05)


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent}-01", trace_id, parent


async def test_one_trace_from_create_link_token_through_the_job_to_the_kafka_headers(
    client: Client, events: EventLog, spans: InMemorySpanExporter
) -> None:
    tp, trace_id, parent = _traceparent()
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    call = client.tokens.CreateLinkToken(
        link_token_pb2.CreateLinkTokenRequest(
            org_name="Traced", end_user_id="traced-user", required_jobs=[c.JOB_NAME_IDENTITY]
        ),
        metadata=[*client.md(), ("traceparent", tp), ("x-request-id", request_id)],
    )
    token = await call
    # Returned with the status (trailing metadata): no write of its own (docs/spec.md, Metadata).
    assert dict(await call.trailing_metadata())["x-request-id"] == request_id
    assert "x-request-id" not in dict(await call.initial_metadata())

    # The server span continues the caller's trace.
    server = await _span(
        spans,
        lambda s: (
            s.name == "/paylink.v1.LinkTokenService/CreateLinkToken"
            and format(s.context.trace_id, "032x") == trace_id
        ),
    )
    assert server.kind == SpanKind.SERVER and server.parent is not None
    assert format(server.parent.span_id, "016x") == parent
    assert server.attributes is not None and server.attributes["paylink.request_id"] == request_id

    # The Link front end's own calls carry no trace of the caller's: the session's jobs still
    # continue the token's trace.
    session = await client.link.StartSession(
        link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
    )
    session = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session.id, platform_id="sandbox_adp", username="user_good", password="pass_good"
        ),
        metadata=client.md(),
    )
    (received,) = await events.wait_for(
        lambda r: r.event.account_id == session.account_id and r.event.event == "identity.added"
    )
    header = received.headers["traceparent"]
    version, header_trace, header_span, flags = header.split("-")
    assert (version, header_trace, flags) == ("00", trace_id, "01")
    assert received.headers["x-request-id"] == request_id
    assert received.event.request_id == request_id

    # The job ran as a span of that trace, and the header names that span: a consumer's span
    # continues it. The platform call is a child of the job.
    job = await _span(
        spans, lambda s: s.name == "job JOB_NAME_IDENTITY" and format(s.context.trace_id, "032x") == trace_id
    )
    assert job.kind == SpanKind.CONSUMER and format(job.context.span_id, "016x") == header_span
    assert job.parent is not None and job.parent.span_id == server.context.span_id
    platform = await _span(
        spans, lambda s: s.name == "platform fetch_identity" and s.context.trace_id == job.context.trace_id
    )
    assert platform.kind == SpanKind.CLIENT and platform.parent is not None
    assert platform.parent.span_id == job.context.span_id
    assert platform.attributes is not None and platform.attributes["paylink.platform_id"] == "sandbox_adp"

    # link_session.completed settles in the same job's transaction: same trace, same request id.
    (completed,) = await events.wait_for(
        lambda r: r.event.account_id == session.account_id and r.event.event == "link_session.completed"
    )
    assert completed.headers["traceparent"].split("-")[1] == trace_id
    assert completed.event.request_id == request_id


async def test_a_refresh_continues_the_create_job_call(
    client: Client, events: EventLog, spans: InMemorySpanExporter
) -> None:
    _, session = await client.connect("user_good", [c.JOB_NAME_INCOME])
    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    tp, trace_id, _ = _traceparent()
    job = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=session.account_id, name=c.JOB_NAME_IDENTITY),
        metadata=[*client.md(), ("traceparent", tp), ("x-request-id", "refresh-1")],
    )
    (received,) = await events.wait_for(
        lambda r: r.event.event == "identity.added" and r.event.job.job_id == job.id
    )
    assert received.headers["traceparent"].split("-")[1] == trace_id
    assert received.headers["x-request-id"] == received.event.request_id == "refresh-1"


async def test_request_id_is_generated_when_absent_and_returned_on_errors(client: Client) -> None:
    call = client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=str(uuid.uuid4())), metadata=client.md()
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    generated = dict(await call.trailing_metadata())["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    # A value that is not a plain token (too long, spaces) is replaced, not echoed.
    odd = client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=str(uuid.uuid4())),
        metadata=[*client.md(), ("x-request-id", "two words " + "x" * 200)],
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await odd
    replaced = dict(await odd.trailing_metadata())["x-request-id"]
    assert len(replaced) == 32 and " " not in replaced


async def test_request_id_is_returned_with_every_kind_of_failure(client: Client) -> None:
    """Refused before authentication (a malformed id), unauthenticated, and a domain error: each
    answer carries the caller's request id in its trailing metadata, beside the google.rpc details."""
    cases: tuple[tuple[account_pb2.GetAccountRequest, list[tuple[str, str]], grpc.StatusCode], ...] = (
        (
            account_pb2.GetAccountRequest(account_id="not-a-uuid"),
            client.md(),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (account_pb2.GetAccountRequest(account_id=str(uuid.uuid4())), [], grpc.StatusCode.UNAUTHENTICATED),
        (account_pb2.GetAccountRequest(account_id=str(uuid.uuid4())), client.md(), grpc.StatusCode.NOT_FOUND),
    )
    for i, (request, metadata, code) in enumerate(cases):
        call = client.accounts.GetAccount(request, metadata=[*metadata, ("x-request-id", f"failing-{i}")])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == code
        trailing = dict(await call.trailing_metadata())
        assert trailing["x-request-id"] == f"failing-{i}"
        assert "grpc-status-details-bin" in trailing, "the google.rpc details are still there"
