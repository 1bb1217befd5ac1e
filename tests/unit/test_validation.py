"""service.validation: routing and account numbers are ASCII digits only (one rule, used by the API
and the sandbox platform alike)."""

from __future__ import annotations

import datetime as dt

import pytest
from paylink.v1 import account_pb2

from service import errors, ids, pagination, validation
from service.drivers import sandbox_profile as sandbox_data


@pytest.mark.parametrize(
    "routing",
    ["021000021", "011000015"],
)
def test_valid_routing_numbers(routing: str) -> None:
    assert validation.aba_checksum_ok(routing) and sandbox_data.aba_valid(routing)


@pytest.mark.parametrize(
    "routing",
    [
        "021000022",  # checksum
        "02100002",
        "02100002\n",  # 8 digits and a newline: was an exception (int('\n'))
        "021000021\n",
        "\u0660\u0662\u0661\u0660\u0660\u0660\u0660\u0662\u0661",  # Arabic-Indic 021000021
        "\uff10\uff12\uff11\uff10\uff10\uff10\uff10\uff12\uff11",  # full-width
        " 21000021",
        "",
    ],
)
def test_invalid_routing_numbers(routing: str) -> None:
    assert not validation.aba_checksum_ok(routing)
    assert not sandbox_data.aba_valid(routing)


@pytest.mark.parametrize("number", ["12345", "123456789012", "1" * 17])
def test_valid_account_numbers(number: str) -> None:
    assert validation.account_number_ok(number)


@pytest.mark.parametrize(
    "number", ["1234", "1" * 18, "12345678\n", "\u0661\u0662\u0663\u0664\u0665\u0666", "1234 5678", "+12345"]
)
def test_invalid_account_numbers(number: str) -> None:
    assert not validation.account_number_ok(number)


@pytest.mark.parametrize(
    "key",
    ["9999-12-31T23:00:00-14:00", "0001-01-01T00:30:00+14:00", "2024-01-01T00:00:00", "x", "2024-01-01"],
)
def test_page_cursor_times_must_be_what_encode_writes(key: str) -> None:
    import uuid

    from service import errors

    with pytest.raises(errors.InvalidArgument):
        pagination.timestamp_cursor(pagination.Cursor(key, uuid.uuid4()))


_ID = "3f2b9c4e-8a1d-4c6e-9b7a-0d5e6f7a8b9c"


@pytest.mark.parametrize(
    "value",
    [
        _ID,
        _ID.upper(),
        "",
        "x" * 36,
        "{" + _ID + "}",
        "urn:uuid:" + _ID,
        _ID.replace("-", ""),
        _ID + "\n",
        " " + _ID[1:],
        _ID[:-1] + "g",
        _ID[:8] + "x" + _ID[9:],  # a dash replaced: 36 characters, not a UUID
    ],
)
def test_the_request_id_check_accepts_exactly_the_ids_handlers_parse(value: str) -> None:
    """The deserializer's id check (validation.id_violations, ids.is_uuid: no UUID is built)
    accepts exactly what ids.parse_uuid parses, so a request it lets through never fails to parse."""
    parsed = ids.parse_uuid(value)
    assert ids.is_uuid(value) == (parsed is not None)
    expected = (
        [] if parsed is not None else [("account_id", "is required" if not value else "must be a UUID")]
    )
    request = account_pb2.GetAccountRequest(account_id=value)
    assert validation.id_violations(request) == expected
    names = validation.checked_ids(request.DESCRIPTOR)
    assert names == ("account_id",) and validation.id_violations(request, names) == expected


JAN1, FEB1 = dt.date(2024, 1, 1), dt.date(2024, 2, 1)
NOT_A_DATE = "must be a date in YYYY-MM-DD form"


@pytest.mark.parametrize(
    ("low", "high", "dates", "violations"),
    [
        ("", "", (None, None), []),
        ("2024-01-01", "", (JAN1, None), []),
        ("", "2024-01-01", (None, JAN1), []),
        ("2024-01-01", "2024-01-01", (JAN1, JAN1), []),
        ("2024-01-01", "2024-02-01", (JAN1, FEB1), []),
        ("2024-02-01", "2024-01-01", (FEB1, JAN1), [("p.to_pay_date", "must not be before from_pay_date")]),
        ("2024-13-01", "2024-01-01", (None, JAN1), [("p.from_pay_date", NOT_A_DATE)]),
        ("2024-02-01", "01/01/2024", (FEB1, None), [("p.to_pay_date", NOT_A_DATE)]),
    ],
)
def test_a_date_range_is_two_optional_dates_the_second_not_before_the_first(
    low: str, high: str, dates: tuple[dt.date | None, dt.date | None], violations: list[tuple[str, str]]
) -> None:
    """One rule for every from/to pair of dates (ListPaystubs, ListShifts, a job's paystubs and shifts
    parameters); the message names the other field without its prefix."""
    v = errors.Violations()
    assert validation.date_range(v, "p.from_pay_date", low, "p.to_pay_date", high) == dates
    assert v.items == violations
