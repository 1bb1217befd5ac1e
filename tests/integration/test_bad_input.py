"""Hostile input found by the adversarial review (issue #11): digits that are not ASCII digits,
trailing newlines, forged page tokens. Each answers INVALID_ARGUMENT naming the field, never
INTERNAL, and nothing of it is stored."""

from __future__ import annotations

import uuid

import grpc
import pytest
from paylink.v1 import account_pb2, job_pb2
from paylink.v1 import common_pb2 as c

from service import pagination
from tests.harness import TEST_TARGET, Client, link_account, rpc_error, violation_fields

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


async def test_forged_page_tokens_are_invalid_not_internal(client: Client) -> None:
    _, session = await link_account(client)
    some_id = uuid.uuid4()
    keys = [
        "9999-12-31T23:00:00-14:00",  # past year 9999 in UTC
        "0001-01-01T00:30:00+14:00",  # before year 1 in UTC
        "2024-01-01T00:00:00",  # no time zone
        "2024-01-01",
        "not a time",
    ]
    for key in keys:
        token = pagination.encode(pagination.Cursor(key, some_id), {"end_user_id": ""})
        exc = await rpc_error(
            client.accounts.ListAccounts(
                account_pb2.ListAccountsRequest(page_token=token), metadata=client.md()
            )
        )
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, exc.code(), exc.details())
        assert violation_fields(exc) == ["page_token"]
        filters = {"a": "", "l": "", "n": [], "o": 0, "g": 0, "ca": "None", "cb": "None"}
        token = pagination.encode(pagination.Cursor(key, some_id), filters)
        exc = await rpc_error(
            client.jobs.ListJobs(job_pb2.ListJobsRequest(page_token=token), metadata=client.md())
        )
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, exc.code(), exc.details())
        assert violation_fields(exc) == ["page_token"]
    for key in ("2024-01-01T00:00:00+00:00", "10000-01-01", "2024-13-01"):
        filters = {"a": session.account_id, "f": "", "t": ""}
        token = pagination.encode(pagination.Cursor(key, some_id), filters)
        request = account_pb2.ListPaystubsRequest(account_id=session.account_id, page_token=token)
        exc = await rpc_error(client.accounts.ListPaystubs(request, metadata=client.md()))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, exc.code(), exc.details())
        assert violation_fields(exc) == ["page_token"]
    # A real token still pages.
    token = pagination.encode(pagination.Cursor("9999-12-31T00:00:00+00:00", some_id), {"end_user_id": ""})
    page = await client.accounts.ListAccounts(
        account_pb2.ListAccountsRequest(page_token=token), metadata=client.md()
    )
    assert [a.id for a in page.accounts] == [session.account_id]
