"""Field checks shared by request handlers. Each adds to a Violations list; none raises alone."""

from __future__ import annotations

import datetime as dt
import re

from google.protobuf import timestamp_pb2
from paylink.v1 import common_pb2

from service.errors import Violations

_DIGITS = re.compile(r"^\d+$")
_ROUTING_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7, 1)

ALL_JOB_NAMES = frozenset(v for v in common_pb2.JobName.values() if v != common_pb2.JOB_NAME_UNSPECIFIED)
# The jobs a link token or CreateJob may ask for: those the worker runs. SHIFTS, TAX_FORMS and
# DOCUMENTS (issue 13) are accepted once the worker runs them and stores their data.
_NOT_YET_RUN = {common_pb2.JOB_NAME_SHIFTS, common_pb2.JOB_NAME_TAX_FORMS, common_pb2.JOB_NAME_DOCUMENTS}
JOB_NAMES = frozenset(
    v for v in common_pb2.JobName.values() if v != common_pb2.JOB_NAME_UNSPECIFIED and v not in _NOT_YET_RUN
)
DATA_JOBS = JOB_NAMES - {common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH}


def aba_checksum_ok(routing: str) -> bool:
    if len(routing) != 9 or not _DIGITS.match(routing):
        return False
    return sum(int(d) * w for d, w in zip(routing, _ROUTING_WEIGHTS, strict=True)) % 10 == 0


def account_number_ok(number: str) -> bool:
    """5 to 17 digits: what US deposit account numbers are."""
    return bool(_DIGITS.match(number)) and 5 <= len(number) <= 17


def deposit_type_ok(kind: int) -> bool:
    return kind in (common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING, common_pb2.DEPOSIT_ACCOUNT_TYPE_SAVINGS)


def text(v: Violations, field: str, value: str, *, min_len: int = 0, max_len: int = 255) -> str:
    """Trims and checks the length (characters); returns the trimmed value."""
    trimmed = value.strip()
    if len(trimmed) < min_len:
        v.add(
            field, "is required" if min_len == 1 and not trimmed else f"must be at least {min_len} characters"
        )
    elif len(trimmed) > max_len:
        v.add(field, f"must be at most {max_len} characters")
    return trimmed


def job_names(
    v: Violations, field: str, names: list[int], *, allow_empty: bool, known_only: bool = True
) -> list[int]:
    """Checks a job name list: each a job paylink runs (any JobName with known_only=False), once."""
    if not names and not allow_empty:
        v.add(field, "must name at least one job")
    allowed = JOB_NAMES if known_only else ALL_JOB_NAMES
    seen: list[int] = []
    for i, name in enumerate(names):
        if name not in allowed:
            v.add(f"{field}[{i}]", "is not a known job name")
        elif name in seen:
            v.add(f"{field}[{i}]", "is listed twice")
        else:
            seen.append(name)
    return seen


def pay_date(v: Violations, field: str, value: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        v.add(field, "must be a date in YYYY-MM-DD form")
        return None


def timestamp(v: Violations, field: str, value: timestamp_pb2.Timestamp, present: bool) -> dt.datetime | None:
    """The Timestamp as a datetime; None when absent or invalid (nanos outside 0..999999999, or a
    time outside years 1..9999)."""
    if not present:
        return None
    try:
        return value.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        v.add(field, "must be a valid timestamp between years 1 and 9999")
        return None


def allocation(v: Violations, field: str, alloc: common_pb2.Allocation) -> None:
    if alloc.type not in (common_pb2.ALLOCATION_TYPE_AMOUNT, common_pb2.ALLOCATION_TYPE_PERCENTAGE):
        v.add(f"{field}.type", "must be AMOUNT or PERCENTAGE")
    percentage = alloc.type == common_pb2.ALLOCATION_TYPE_PERCENTAGE
    _alloc_value(v, f"{field}.value", alloc.value, percentage)
    low = alloc.min_value if alloc.HasField("min_value") else None
    high = alloc.max_value if alloc.HasField("max_value") else None
    if low is not None:
        _alloc_value(v, f"{field}.min_value", low, percentage)
        if low > alloc.value:
            v.add(f"{field}.min_value", "must not exceed value")
    if high is not None:
        _alloc_value(v, f"{field}.max_value", high, percentage)
        if high < alloc.value:
            v.add(f"{field}.max_value", "must not be below value")
    if len(alloc.targets) > 5:
        v.add(f"{field}.targets", "must hold at most 5 targets")
    for i, target in enumerate(alloc.targets):
        _target(v, f"{field}.targets[{i}]", target)


def _alloc_value(v: Violations, field: str, value: int, percentage: bool) -> None:
    if value <= 0:
        v.add(field, "must be greater than 0")
    elif percentage and value > 100:
        v.add(field, "must be at most 100 for a percentage")
    elif value > 100_000_000_00:
        v.add(field, "is larger than any paycheck")


def _target(v: Violations, field: str, target: common_pb2.AllocationTarget) -> None:
    if not deposit_type_ok(target.type):
        v.add(f"{field}.type", "must be CHECKING or SAVINGS")
    if not aba_checksum_ok(target.routing_number):
        v.add(f"{field}.routing_number", "must be a 9-digit ABA routing number with a valid checksum")
    if not account_number_ok(target.account_number):
        v.add(f"{field}.account_number", "must be 5 to 17 digits")
    if len(target.name) > 100:
        v.add(f"{field}.name", "must be at most 100 characters")
    if target.account_number_last_four:
        v.add(f"{field}.account_number_last_four", "is output only")


def masked_allocation(alloc: common_pb2.Allocation) -> common_pb2.Allocation:
    """A copy without full account numbers (last four only)."""
    out = common_pb2.Allocation()
    out.CopyFrom(alloc)
    for target in out.targets:
        if target.account_number:
            target.account_number_last_four = target.account_number[-4:]
        target.account_number = ""
    return out
