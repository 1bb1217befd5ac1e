"""`outbox.Events.add` keeps the Event it is given and fills in its envelope in place: no copy of the
payload (every caller builds the Event for that one call; two events per job in the pipeline)."""

from __future__ import annotations

import datetime as dt
import uuid

from paylink.v1 import event_pb2

from service import outbox, tracing


def _events(*, without_account: bool = False) -> outbox.Events:
    return outbox.Events(
        topic_prefix="t.",
        workspace_id=uuid.UUID(int=1),
        account_id=uuid.UUID(int=2),
        locked_sequence=4,
        tags={"team": "payroll"},
        without_account=without_account,
    )


def test_an_added_event_is_the_one_given_with_its_envelope_filled_in() -> None:
    events = _events()
    given = event_pb2.Event()
    given.job.job_id = "job-1"
    given.job.params.SetInParent()
    payload = given.job.SerializeToString()
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=dt.UTC)
    token = tracing.set_request_id("req-1")
    try:
        added = events.add(outbox.JOB_EVENTS[1], "2024-01-01", given, at)
    finally:
        tracing._request_id.reset(token)

    assert added is given and events.pending == [given]
    assert str(uuid.UUID(given.event_id)) == given.event_id  # a fresh id
    assert (given.event, given.workspace_id, given.account_id, given.api_version, given.request_id) == (
        "identity.added",
        str(uuid.UUID(int=1)),
        str(uuid.UUID(int=2)),
        "2024-01-01",
        "req-1",
    )
    assert given.created_at.ToDatetime(tzinfo=dt.UTC) == at
    assert given.WhichOneof("payload") == "job" and given.job.SerializeToString() == payload
    assert events.traceparents == [""] and len(events.contexts) == 1


def test_events_without_an_account_leave_its_id_empty_and_each_added_event_stays_its_own() -> None:
    events = _events(without_account=True)
    first, second = event_pb2.Event(), event_pb2.Event()
    first.link_session_failed.link_session_id = "s-1"
    second.link_session_failed.link_session_id = "s-2"
    events.add(outbox.LINK_SESSION_FAILED, "2024-01-01", first)
    events.add(outbox.LINK_SESSION_FAILED, "2024-01-01", second)
    assert events.pending == [first, second] and events.pending[0] is first
    assert first.account_id == "" and first.event_id != second.event_id
    assert [e.link_session_failed.link_session_id for e in events.pending] == ["s-1", "s-2"]
