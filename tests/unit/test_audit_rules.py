"""Audit trail rules (service/audit.py) and the erasure's response matcher: no I/O."""

from __future__ import annotations

import re
import uuid

import pytest
from google.protobuf import timestamp_pb2
from paylink.v1 import account_pb2, link_token_pb2, privacy_pb2

from service import audit, errors, idempotency


def test_caller_is_x_caller_or_the_key_id() -> None:
    assert audit.caller_of("underwriting-svc", "0123456789abcdef") == "underwriting-svc"
    assert audit.caller_of(None, "0123456789abcdef") == "key:0123456789abcdef"
    assert audit.caller_of("", "0123456789abcdef") == "key:0123456789abcdef"
    assert audit.caller_of("svc/verify@eu-1", "k") == "svc/verify@eu-1"
    for bad in ("-starts-with-dash", "has space", "x" * 101, "tab\there", "ünïcode"):
        with pytest.raises(ValueError, match="1 to 100 characters"):
            audit.caller_of(bad, "k")


def _params(sql: str) -> set[int]:
    return {int(n) for n in re.findall(r"\$(\d+)", sql)}


def test_attach_numbers_the_record_after_the_query_and_uses_every_parameter() -> None:
    who = audit.Who(uuid.uuid4(), "svc", "k", "GetIdentity", "req-1")
    record = audit.Record(who, audit.READ, privacy_pb2.AUDIT_RESOURCE_IDENTITY, account_id=uuid.uuid4())
    given = audit.attach("SELECT $1::int AS a, $2::int AS b", 2)
    assert _params(given) == set(range(1, 3 + len(record.args())))
    found = audit.attach(
        "SELECT $1::uuid AS account_id, 'u'::text AS end_user_id, $2::int AS b",
        2,
        subject="SELECT account_id, end_user_id FROM target WHERE b IS NOT NULL",
    )
    # account_id and end_user_id come from the row found, so two parameters fewer.
    assert _params(found) == set(range(1, 3 + len(record.args(from_subject=True))))
    assert len(record.args(from_subject=True)) == len(record.args()) - 2
    assert "INSERT INTO audit_unexported" in found and found.endswith("SELECT * FROM target")


def test_list_filters_are_validated_field_by_field() -> None:
    bad = privacy_pb2.ListAuditRecordsRequest(
        account_id="nope",
        end_user_id="u" * 256,
        action=7,
        resource=99,
        from_time=timestamp_pb2.Timestamp(seconds=2000),
        to_time=timestamp_pb2.Timestamp(seconds=1000),
    )
    with pytest.raises(errors.InvalidArgument) as caught:
        audit.filters_of(bad)
    fields = [f for f, _ in caught.value.violations]
    assert fields == ["account_id", "end_user_id", "action", "resource", "to_time"]
    ok = audit.filters_of(privacy_pb2.ListAuditRecordsRequest(caller="svc", action=audit.READ))
    assert ok.caller == "svc" and ok.action == audit.READ and ok.account_id is None


def test_erasure_finds_responses_that_name_the_end_user_or_an_account() -> None:
    account = str(uuid.uuid4())
    token = link_token_pb2.LinkToken(id=str(uuid.uuid4()), end_user_id="eu-42", org_name="Acme")
    assert idempotency.mentions(token.SerializeToString(), "eu-42", [])
    assert not idempotency.mentions(token.SerializeToString(), "eu-4", [])  # not a prefix match
    assert not idempotency.mentions(token.SerializeToString(), "eu-420", [])
    disconnected = account_pb2.Account(id=account, end_user_id="someone-else")
    assert idempotency.mentions(disconnected.SerializeToString(), "eu-42", [account])
    assert not idempotency.mentions(disconnected.SerializeToString(), "eu-42", [str(uuid.uuid4())])
    long_id = "e" * 200  # a two-byte length prefix
    assert idempotency.mentions(
        link_token_pb2.LinkToken(end_user_id=long_id).SerializeToString(), long_id, []
    )
    assert idempotency._varint(300) == b"\xac\x02"


def test_tagged_adds_the_reads_position_as_the_last_parameter_and_column() -> None:
    who = audit.Who(uuid.uuid4(), "svc", "k", "GetIdentity", "req-1")
    record = audit.Record(who, audit.READ, privacy_pb2.AUDIT_RESOURCE_IDENTITY)
    statement = audit.attach(
        "SELECT $1::uuid AS account_id, 'u'::text AS end_user_id", 1, subject="SELECT * FROM target"
    )
    arity = 1 + len(record.args(from_subject=True))
    tagged = audit.tagged(statement, arity + 1)
    assert tagged is not None and _params(tagged) == set(range(1, arity + 2))
    assert tagged.endswith(f"SELECT *, ${arity + 1}::int4 AS {audit.TAG} FROM target")
    assert tagged.removesuffix(f"SELECT *, ${arity + 1}::int4 AS {audit.TAG} FROM target") == (
        statement.removesuffix("SELECT * FROM target")
    )
    # Only what `attach` built: any other statement runs as it is, one per read.
    assert audit.tagged("SELECT 1 / 0", 1) is None
    assert audit.tagged("WITH target AS (SELECT 1) SELECT * FROM target", 1) is None
