"""Hostile input found by the adversarial review (issue #11): digits that are not ASCII digits,
trailing newlines, forged page tokens. Each answers INVALID_ARGUMENT naming the field, never
INTERNAL, and nothing of it is stored."""

from __future__ import annotations

import base64
import json
import uuid

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from paylink.v1 import account_pb2, job_pb2, link_pb2, link_token_pb2, sandbox_pb2
from paylink.v1 import common_pb2 as c

from service import pagination
from tests.harness import TEST_TARGET, Client, link_account, rpc_error, violation_fields

ID_FIELDS = {"account_id", "job_id", "session_id", "link_token_id", "paystub_id"}
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + i) for i in range(10)))
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))


def _allocation(routing: str = "021000021", account: str = "123456789012") -> c.Allocation:
    target = c.AllocationTarget()
    target.CopyFrom(TEST_TARGET)
    target.routing_number, target.account_number = routing, account
    return c.Allocation(type=c.ALLOCATION_TYPE_AMOUNT, value=100, targets=[target])


@pytest.mark.parametrize(
    ("routing", "account", "field"),
    [
        ("021000021".translate(ARABIC_INDIC), "123456789012", "routing_number"),  # its checksum holds
        ("021000021", "12345678".translate(ARABIC_INDIC), "account_number"),
        ("021000021", "12345678\n", "account_number"),
        ("02100002\n", "123456789012", "routing_number"),  # was INTERNAL (int('\n') in the checksum)
        ("021000021\n", "123456789012", "routing_number"),
        ("021000021".translate(FULL_WIDTH), "123456789012", "routing_number"),
        ("021000021", "1234 5678", "account_number"),
        ("021000021", "+12345678", "account_number"),
    ],
)
async def test_only_ascii_digits_make_routing_and_account_numbers(
    client: Client, routing: str, account: str, field: str
) -> None:
    exc = await rpc_error(
        client.token([c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], allocation=_allocation(routing, account))
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert violation_fields(exc) == [f"allocation.targets[0].{field}"]


def _forged(real: str, key: str) -> str:
    """A page token as the review forged it: a real one (so its filter hash is right) with another key."""
    data = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    data["k"] = key
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_forged_page_tokens_are_invalid_not_internal(client: Client) -> None:
    await link_account(client)
    _, session = await link_account(client)
    accounts = await client.accounts.ListAccounts(
        account_pb2.ListAccountsRequest(page_size=1), metadata=client.md()
    )
    jobs = await client.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=1), metadata=client.md())
    assert accounts.next_page_token and jobs.next_page_token
    keys = [
        "9999-12-31T23:00:00-14:00",  # past year 9999 in UTC
        "0001-01-01T00:30:00+14:00",  # before year 1 in UTC
        "2024-01-01T00:00:00",  # no time zone
        "2024-01-01",
        "not a time",
    ]
    for key in keys:
        request = account_pb2.ListAccountsRequest(
            page_size=1, page_token=_forged(accounts.next_page_token, key)
        )
        exc = await rpc_error(client.accounts.ListAccounts(request, metadata=client.md()))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, exc.code(), exc.details())
        assert violation_fields(exc) == ["page_token"] and "other filters" not in (exc.details() or "")
        forged = job_pb2.ListJobsRequest(page_size=1, page_token=_forged(jobs.next_page_token, key))
        exc = await rpc_error(client.jobs.ListJobs(forged, metadata=client.md()))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, exc.code(), exc.details())
        assert violation_fields(exc) == ["page_token"] and "other filters" not in (exc.details() or "")
    some_id = uuid.uuid4()
    for key in ("2024-01-01T00:00:00+00:00", "10000-01-01", "2024-13-01"):
        filters = {"a": session.account_id, "f": "", "t": ""}
        token = pagination.encode(pagination.Cursor(key, some_id), filters)
        paystubs = account_pb2.ListPaystubsRequest(account_id=session.account_id, page_token=token)
        exc = await rpc_error(client.accounts.ListPaystubs(paystubs, metadata=client.md()))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, exc.code(), exc.details())
        assert violation_fields(exc) == ["page_token"]
    # The real tokens still page.
    page = await client.accounts.ListAccounts(
        account_pb2.ListAccountsRequest(page_size=1, page_token=accounts.next_page_token),
        metadata=client.md(),
    )
    assert len(page.accounts) == 1


async def test_nul_characters_are_refused_on_their_own_field(client: Client) -> None:
    """Reported against the field that holds NUL (was: field `request`, after the database refused
    it), and refused where it used to be stored (tags, allocation target names)."""
    target = c.AllocationTarget()
    target.CopyFrom(TEST_TARGET)
    target.name = "Every\x00day"
    allocation = c.Allocation(type=c.ALLOCATION_TYPE_AMOUNT, value=100, targets=[TEST_TARGET, target])
    cases: list[tuple[str, dict[str, object]]] = [
        ("org_name", {"org_name": "Acme\x00Bank"}),
        ("end_user_id", {"end_user_id": "user\x00"}),
        ("request_id", {"request_id": "req-\x00"}),
        ("tags[team]", {"tags": {"team": "pay\x00roll"}}),
        ("tags[team]", {"tags": {"tea\x00m": "payroll"}}),  # the key holds the NUL
        ("allocation.targets[1].name", {"allocation": allocation}),
    ]
    for field, fields in cases:
        jobs = [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH] if "allocation" in fields else [c.JOB_NAME_IDENTITY]
        exc = await rpc_error(client.token(jobs, **fields))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, exc.code(), exc.details())
        assert violation_fields(exc) == [field], (field, exc.details())
    exc = await rpc_error(
        client.jobs.ListJobs(job_pb2.ListJobsRequest(page_token="a\x00b"), metadata=client.md())
    )
    assert violation_fields(exc) == ["page_token"]


def _methods() -> list[MethodDescriptor]:
    files = (link_token_pb2, link_pb2, account_pb2, job_pb2, sandbox_pb2)
    return [m for f in files for s in f.DESCRIPTOR.services_by_name.values() for m in s.methods]


ID_METHODS = [
    (m, field.name)
    for m in _methods()
    for field in m.input_type.fields
    if field.name in {"account_id", "job_id", "session_id", "link_token_id", "paystub_id"}
]


@pytest.mark.parametrize(("method", "field"), ID_METHODS, ids=[f"{m.name}.{f}" for m, f in ID_METHODS])
async def test_one_rule_for_malformed_ids(
    client: Client, channel: grpc.aio.Channel, method: MethodDescriptor, field: str
) -> None:
    """Malformed id -> INVALID_ARGUMENT on its field, in every RPC (was NOT_FOUND on Get calls and
    INVALID_ARGUMENT elsewhere); a well-formed id of nothing -> NOT_FOUND (a filter: empty list)."""
    cls = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )
    ids_of_nothing = {f.name: str(uuid.uuid4()) for f in method.input_type.fields if f.name in ID_FIELDS}
    for bad in ("not-a-uuid", "1234", str(uuid.uuid4())[:-1] + "x", " " + str(uuid.uuid4())[1:]):
        exc = await rpc_error(call(cls(**{**ids_of_nothing, field: bad}), metadata=client.md()))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, exc.code(), exc.details())
        assert field in violation_fields(exc), (bad, violation_fields(exc))
    try:
        await call(cls(**ids_of_nothing), metadata=client.md())
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), exc.details()
        assert field not in violation_fields(exc)
