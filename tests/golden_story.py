"""The golden events (docs/golden-events/) are real events: one account's story is told through the
gRPC API of a running paylink, and what the relay put on Kafka for that account is written out with
its ids and times replaced by fixed ones (first-seen order), so the files are deterministic and
still exactly what the publishing code produces. Used by scripts/golden_events.py (writes the
files) and tests/e2e/test_golden_events_real.py (fails when real events drift from them)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
import uuid
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from paylink.v1 import common_pb2 as c
from paylink.v1 import event_pb2, job_pb2, link_pb2

from service import db
from tests.harness import TEST_ALLOCATION, Client, EventLog, Received, start_session, unique_events, wait_job

PREFIX = "paylink."  # the default PAYLINK_TOPIC_PREFIX
END_USER = "customer-42"
START = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def tell(client: Client, events: EventLog, pool: db.Pool) -> list[Received]:
    """Links an account (identity), switches its direct deposit through an On Demand Updates session
    that asks for MFA, then refreshes income server-side, which needs MFA (an error, and the account
    needs the user), then a bound session whose user gets the MFA answer wrong too often
    (link_session.failed of an account); returns what Kafka received for the account, once each, in
    sequence order, then the link_session.failed of a new user's session that failed before any
    account existed (keyed by the session)."""
    # Shifts, tax forms and documents (issue 13) join the story once the worker runs them.
    token = await client.token([c.JOB_NAME_IDENTITY], end_user_id=END_USER)
    session = await start_session(client, token.token)
    session = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session.id,
            platform_id="sandbox_adp",
            username=f"user_reauth_mfa+golden{uuid.uuid4().hex[:8]}",
            password="pass_good",
        ),
        metadata=client.md(),
    )
    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    account_id = session.account_id

    switch = await client.token(
        [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], account_id=account_id, allocation=TEST_ALLOCATION
    )
    started = await start_session(client, switch.token)
    assert started.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED, started
    await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=started.id, answer="mfa_code"), metadata=client.md()
    )
    await client.wait_session(started.id, link_pb2.LINK_SESSION_STATE_COMPLETED)

    refresh = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_INCOME), metadata=client.md()
    )
    await wait_job(client, refresh.id)
    await _too_many_mfa_answers(client, account_id)
    last = await pool.fetchval(
        "SELECT sequence FROM account_event_sequences WHERE account_id = $1::uuid", account_id
    )
    # Every sequence 1..last (topics are consumed independently: the last one may come first).
    for sequence in range(1, last + 1):

        def numbered(r: Received, s: int = sequence) -> bool:
            return bool(r.event.account_id == account_id and r.event.sequence == s)

        await events.wait_for(numbered, timeout=60)
    mine = unique_events([r for r in events.items if r.event.account_id == account_id])
    locked = await _locked_out(client)
    alone = await events.wait_for(lambda r: r.event.link_session_failed.link_session_id == locked, timeout=60)
    return [*sorted(mine.values(), key=lambda r: r.event.sequence), alone[0]]


async def _too_many_mfa_answers(client: Client, account_id: str) -> None:
    """A bound session whose re-access asks for MFA, answered wrong until it fails TOO_MANY_ATTEMPTS."""
    token = await client.token([c.JOB_NAME_IDENTITY], account_id=account_id)
    session = await start_session(client, token.token)
    while session.state != link_pb2.LINK_SESSION_STATE_FAILED:
        await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_MFA_REQUIRED)
        session = await client.link.SubmitMfa(
            link_pb2.SubmitMfaRequest(session_id=session.id, answer="wrong_code"), metadata=client.md()
        )
    assert session.failure_reason == link_pb2.LINK_SESSION_FAILURE_REASON_TOO_MANY_ATTEMPTS, session


async def _locked_out(client: Client) -> str:
    """A new user's session that fails at once (a locked platform account): no account exists."""
    token = await client.token([c.JOB_NAME_IDENTITY], end_user_id=END_USER)
    session = await start_session(client, token.token)
    failed = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session.id, platform_id="sandbox_adp", username="user_locked", password="pass_good"
        ),
        metadata=client.md(),
    )
    assert failed.failure_reason == link_pb2.LINK_SESSION_FAILURE_REASON_ACCOUNT_LOCKED, failed
    return session.id


def _walk(message: Message, ids: dict[str, str], at: dt.datetime) -> None:
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.full_name == Timestamp.DESCRIPTOR.full_name:
            if field.is_repeated:
                continue
            value.FromDatetime(at.replace(tzinfo=None))
        elif field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                _walk(item, ids, at)
        elif isinstance(value, str) and _UUID.fullmatch(value):
            setattr(message, field.name, _fixed(value, ids))


def _fixed(value: str, ids: dict[str, str]) -> str:
    if value not in ids:
        n = len(ids) + 1
        ids[value] = f"{n:08x}-0000-4000-8000-{n:012x}"
    return ids[value]


def _fixed_hex(value: str, ids: dict[str, str], width: int) -> str:
    """A fixed stand-in of `width` hex digits for a random token (request id, trace or span id)."""
    if value not in ids:
        ids[value] = f"{len(ids) + 1:0{width}x}"
    return ids[value]


def _header(name: str, value: str, ids: dict[str, str]) -> str:
    """Header values with their random parts fixed: ids, the request id, the W3C traceparent."""
    if _UUID.fullmatch(value):
        return _fixed(value, ids)
    if name == "x-request-id":
        return _fixed_hex(value, ids, 32)
    if name == "traceparent" and value.count("-") == 3:
        version, trace, span, flags = value.split("-")
        return "-".join((version, _fixed_hex(trace, ids, 32), _fixed_hex(span, ids, 16), flags))
    return value


def _canonical(story: list[Received]) -> list[Received]:
    """The story in a fixed order where the real one races: the outcome events of one session's
    jobs (which finish in any order) sorted by job name, their sequences given in that order; the
    settled jobs of a link_session.completed sorted by name."""
    ordered = sorted((r for r in story if r.event.account_id), key=lambda r: r.event.sequence)
    runs: list[list[Received]] = []
    for received in ordered:
        event = received.event
        key = event.job.link_session_id if event.WhichOneof("payload") == "job" else None
        last = runs[-1][-1].event if runs else None
        same = last is not None and last.WhichOneof("payload") == "job" and last.job.link_session_id == key
        if key and same:
            runs[-1].append(received)
        else:
            runs.append([received])
    out: list[Received] = []
    for run in runs:
        out += sorted(run, key=lambda r: r.event.job.name) if len(run) > 1 else run
    fixed = []
    for sequence, received in enumerate(out, start=1):
        event = event_pb2.Event()
        event.CopyFrom(received.event)
        event.sequence = sequence
        if event.WhichOneof("payload") == "link_session_completed":
            jobs = sorted(event.link_session_completed.jobs, key=lambda j: j.name)
            del event.link_session_completed.jobs[:]
            event.link_session_completed.jobs.extend(jobs)
        fixed.append(dataclasses.replace(received, event=event))
    return fixed + [r for r in story if not r.event.account_id]  # keyed by a session: sequence 1


def normalized(story: list[Received]) -> list[tuple[str, event_pb2.Event, dict[str, str], str]]:
    """(file stem, event, headers, Kafka key) with fixed ids (first-seen order) and times (one
    minute apart). The account's events are numbered by their sequence, then the events keyed by a
    session (no account) follow."""
    ids: dict[str, str] = {}
    out = []
    for i, received in enumerate(_canonical(story)):
        event = event_pb2.Event()
        event.CopyFrom(received.event)
        _walk(event, ids, START + dt.timedelta(minutes=i))
        if event.request_id:
            event.request_id = _fixed_hex(event.request_id, ids, 32)
        headers = {k: _header(k, v, ids) for k, v in received.headers.items()}
        suffix = (
            "-error"
            if event.WhichOneof("payload") == "job" and event.job.outcome == c.JOB_OUTCOME_ERROR
            else ("" if event.account_id else "-no-account")
        )
        out.append((f"{i + 1:02d}-{event.event}{suffix}", event, headers, _fixed(received.key, ids)))
    return out


def render(story: list[Received]) -> dict[str, bytes]:
    """File name -> content of every file in docs/golden-events/."""
    files: dict[str, bytes] = {}
    for stem, event, headers, key in normalized(story):
        value = event.SerializeToString(deterministic=True)
        description: dict[str, Any] = {
            "topic": PREFIX + event.event,
            "key": key,
            "headers": headers,
            "value_base64": base64.b64encode(value).decode(),
            "value_hex": value.hex(),
            "event": json_format.MessageToDict(event, preserving_proto_field_name=True),
        }
        files[f"{stem}.bin"] = value
        files[f"{stem}.json"] = (json.dumps(description, indent=2) + "\n").encode()
    return files
