"""Audit trail rules (service/audit.py) and the erasure's response matcher: no I/O."""

from __future__ import annotations

import re
import uuid

import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from paylink.v1 import account_pb2, link_token_pb2, privacy_pb2

from service import audit, erasure, errors
from service.api.status import ApiError, from_domain


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
    with pytest.raises(errors.DomainError) as caught:
        audit.filters_of(bad)
    fields = [f for f, _ in _violations(from_domain(caught.value))]
    assert fields == ["account_id", "end_user_id", "action", "resource", "to_time"]
    ok = audit.filters_of(privacy_pb2.ListAuditRecordsRequest(caller="svc", action=audit.READ))
    assert ok.caller == "svc" and ok.action == audit.READ and ok.account_id is None


def _violations(exc: ApiError) -> list[tuple[str, str]]:
    (bad,) = exc.details
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad.field_violations]


def test_erasure_finds_responses_that_name_the_end_user_or_an_account() -> None:
    account = str(uuid.uuid4())
    token = link_token_pb2.LinkToken(id=str(uuid.uuid4()), end_user_id="eu-42", org_name="Acme")
    assert erasure._mentions(token.SerializeToString(), "eu-42", [])
    assert not erasure._mentions(token.SerializeToString(), "eu-4", [])  # not a prefix match
    assert not erasure._mentions(token.SerializeToString(), "eu-420", [])
    disconnected = account_pb2.Account(id=account, end_user_id="someone-else")
    assert erasure._mentions(disconnected.SerializeToString(), "eu-42", [account])
    assert not erasure._mentions(disconnected.SerializeToString(), "eu-42", [str(uuid.uuid4())])
    long_id = "e" * 200  # a two-byte length prefix
    assert erasure._mentions(link_token_pb2.LinkToken(end_user_id=long_id).SerializeToString(), long_id, [])
    assert erasure._varint(300) == b"\xac\x02"
