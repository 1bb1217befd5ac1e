"""The call context (service/context.py) and the request id the API gives a call without one
(service/tracing.py::accepted_request_id): what the pipeline builds on every RPC."""

from __future__ import annotations

import contextvars
import datetime as dt
import time
import uuid

import pytest

from service import tracing
from service.auth import Workspace
from service.context import CallContext, current, reset, set_current

WORKSPACE = Workspace(uuid.uuid4(), "unit", True)


def test_a_call_context_cannot_be_changed_once_built() -> None:
    call = CallContext(WORKSPACE, None, "rid-1", None, "billing", "key1")
    with pytest.raises(AttributeError):
        call.request_id = "other"  # type: ignore[misc]
    assert (call.workspace, call.request_id, call.caller, call.key_id) == (
        WORKSPACE,
        "rid-1",
        "billing",
        "key1",
    )


def test_a_call_context_defaults_to_no_deadline_no_caller_and_no_key() -> None:
    call = CallContext(WORKSPACE, dt.date(2021, 7, 28), "rid-2")
    assert (call.deadline, call.caller, call.key_id) == (None, "", "")
    assert call.time_left() is None
    assert call.version_label == "2021-07-28"


def test_time_left_counts_down_to_the_deadline_and_never_below_zero() -> None:
    assert CallContext(WORKSPACE, None, "r", time.monotonic() - 5).time_left() == 0.0
    left = CallContext(WORKSPACE, None, "r", time.monotonic() + 60).time_left()
    assert left is not None and 0 < left <= 60


def test_the_current_call_context_is_set_and_reset() -> None:
    call = CallContext(WORKSPACE, None, "rid-3")

    def within() -> None:  # a fresh context, as a call's task starts with none set
        token = set_current(call)
        assert current() is call
        reset(token)
        with pytest.raises(LookupError):
            current()

    contextvars.Context().run(within)


def test_a_call_without_a_request_id_gets_32_hex_digits_of_its_own() -> None:
    generated = {tracing.accepted_request_id(None) for _ in range(1000)} | {tracing.accepted_request_id("")}
    assert len(generated) == 1001
    assert all(len(rid) == 32 and int(rid, 16) >= 0 and rid == rid.lower() for rid in generated)


def test_a_sensible_request_id_is_kept_and_anything_else_replaced() -> None:
    assert tracing.accepted_request_id("job-42:retry/1") == "job-42:retry/1"
    for odd in ("two words", "x" * 129, "é"):
        replaced = tracing.accepted_request_id(odd)
        assert replaced != odd and len(replaced) == 32
