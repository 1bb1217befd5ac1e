"""service.validation: routing and account numbers are ASCII digits only (one rule, used by the API
and the sandbox platform alike)."""

from __future__ import annotations

import pytest

from service import pagination, validation
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
