"""docs/golden-events: every committed example decodes with the generated classes, round-trips
byte for byte, and matches its decoded form and Kafka headers. That they are what the publishing
code produces is tests/e2e/test_golden_events_real.py's job (a real story against a real server)."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest
from google.protobuf import json_format
from paylink.v1 import event_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "docs" / "golden-events"
NAMES = sorted(p.stem for p in GOLDEN.glob("*.json"))


def test_there_are_examples_of_every_payload_kind() -> None:
    assert len(NAMES) >= 5
    kinds = {
        event_pb2.Event.FromString((GOLDEN / f"{name}.bin").read_bytes()).WhichOneof("payload")
        for name in NAMES
    }
    assert kinds == {
        "account_added",
        "monitoring_status_updated",
        "job",
        "link_session_completed",
        "link_session_failed",
    }


@pytest.mark.parametrize("name", NAMES)
def test_golden_event_decodes_and_round_trips(name: str) -> None:
    value = (GOLDEN / f"{name}.bin").read_bytes()
    described = json.loads((GOLDEN / f"{name}.json").read_text())
    assert base64.b64decode(described["value_base64"]) == value
    assert bytes.fromhex(described["value_hex"]) == value

    event = event_pb2.Event.FromString(value)
    assert event.SerializeToString(deterministic=True) == value
    assert json_format.MessageToDict(event, preserving_proto_field_name=True) == described["event"]
    assert json_format.ParseDict(described["event"], event_pb2.Event()) == event

    assert described["topic"] == "paylink." + event.event
    assert described["key"] == (event.account_id or event.link_session_failed.link_session_id)
    headers = dict(described["headers"])
    traceparent = headers.pop("traceparent")
    assert traceparent.startswith("00-") and len(traceparent.split("-")) == 4
    assert headers == {
        "event-id": event.event_id,
        "event-type": event.event,
        "workspace-id": event.workspace_id,
        "content-type": "application/x-protobuf",
        "x-request-id": event.request_id,
    }
    assert event.sequence >= 1 and event.HasField("created_at") and event.WhichOneof("payload")
    # Never in an event: a full deposit account number.
    for target in event.job.params.direct_deposit_switch.allocation.targets:
        assert target.account_number == "" and len(target.account_number_last_four) == 4


def test_sequences_tell_one_accounts_story() -> None:
    events = [event_pb2.Event.FromString((GOLDEN / f"{name}.bin").read_bytes()) for name in NAMES]
    story = [e for e in events if e.account_id]
    assert [e.sequence for e in story] == list(range(1, len(story) + 1))
    assert len({e.account_id for e in story}) == 1 and len({e.event_id for e in events}) == len(events)
    # A session that failed before any account existed: its one event, keyed by the session.
    alone = [e for e in events if not e.account_id]
    assert alone and all(e.event == "link_session.failed" and e.sequence == 1 for e in alone)
