"""Field checks shared by request handlers. Each adds to a Violations list; none raises alone."""

from __future__ import annotations

import datetime as dt
import functools
import re

from google.protobuf import descriptor, timestamp_pb2
from google.protobuf.message import Message
from paylink.v1 import common_pb2

from service import allocation_rules, ids
from service.errors import Violations

# ASCII digits only: `\d` and str.isdigit() also accept Arabic-Indic, full-width and other digits,
# and `$` matches before a trailing newline. Always with fullmatch.
_ASCII_DIGITS = re.compile(r"[0-9]+")
_ROUTING_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7, 1)

ALL_JOB_NAMES = frozenset(v for v in common_pb2.JobName.values() if v != common_pb2.JOB_NAME_UNSPECIFIED)
# The jobs a link token or CreateJob may ask for: every job the worker runs.
JOB_NAMES = ALL_JOB_NAMES
DATA_JOBS = JOB_NAMES - {common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH}


# One rule for resource ids, in every RPC (documented in the protos and docs/grpcurl.md): an id that
# is not a UUID (36 characters) answers INVALID_ARGUMENT naming its field, as does a required id
# left empty; a well-formed id that names nothing this workspace can see answers NOT_FOUND (a list
# filter: an empty page). Checked for every request before its handler runs (service/api/decoding.py).
ID_FIELDS = frozenset({"account_id", "job_id", "session_id", "link_token_id", "paystub_id"})
# Optional ids that their handler checks with the request's other fields (so that every invalid
# field is reported at once), by the same rule.
OPTIONAL_IDS = frozenset(
    {
        "paylink.v1.ListJobsRequest.account_id",
        "paylink.v1.ListJobsRequest.link_token_id",
        "paylink.v1.CreateLinkTokenRequest.account_id",
        "paylink.v1.ListAuditRecordsRequest.account_id",  # a filter (service/audit.py checks it)
    }
)


def id_violations(request: Message, names: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(field, description) for each resource id of `request` that breaks the id rule (`names`:
    its type's `checked_ids`, when the caller has them at hand)."""
    out: list[tuple[str, str]] = []
    for name in checked_ids(request.DESCRIPTOR) if names is None else names:
        value = getattr(request, name)
        if not value:
            out.append((name, "is required"))
        elif not ids.is_uuid(value):
            out.append((name, "must be a UUID"))
    return out


@functools.cache
def checked_ids(message: descriptor.Descriptor) -> tuple[str, ...]:
    """The id fields of a message type that `id_violations` checks (once per type)."""
    return tuple(
        field.name
        for field in message.fields
        if field.name in ID_FIELDS
        and field.type == descriptor.FieldDescriptor.TYPE_STRING
        and not field.is_repeated
        and field.full_name not in OPTIONAL_IDS
    )


def ascii_digits(value: str, min_len: int, max_len: int) -> bool:
    """True when `value` is min_len..max_len characters, each one of 0-9 (nothing else, no newline)."""
    return min_len <= len(value) <= max_len and _ASCII_DIGITS.fullmatch(value) is not None


def aba_checksum_ok(routing: str) -> bool:
    """Nine ASCII digits whose ABA weighted checksum (3, 7, 1, ...) is divisible by 10."""
    if not ascii_digits(routing, 9, 9):
        return False
    return sum(int(d) * w for d, w in zip(routing, _ROUTING_WEIGHTS, strict=True)) % 10 == 0


def account_number_ok(number: str) -> bool:
    """A deposit account number: 5 to 17 ASCII digits."""
    return ascii_digits(number, 5, 17)


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


def date_range(
    v: Violations, from_field: str, from_value: str, to_field: str, to_value: str
) -> tuple[dt.date | None, dt.date | None]:
    """An optional range of dates (YYYY-MM-DD, "" for open): (from, to), each None when absent or
    invalid; `to` before `from` is a violation of `to_field`."""
    low = pay_date(v, from_field, from_value)
    high = pay_date(v, to_field, to_value)
    if low and high and low > high:
        v.add(to_field, f"must not be before {from_field.rsplit('.', 1)[-1]}")
    return low, high


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
    """A link token's allocation: the money rules of service/allocation_rules.py, and its targets."""
    for name, description in allocation_rules.check_token(field, alloc):
        v.add(name, description)
    if len(alloc.targets) > 5:
        v.add(f"{field}.targets", "must hold at most 5 targets")
    for i, target in enumerate(alloc.targets):
        _target(v, f"{field}.targets[{i}]", target)


def _target(v: Violations, field: str, target: common_pb2.AllocationTarget) -> None:
    if not deposit_type_ok(target.type):
        v.add(f"{field}.type", "must be CHECKING or SAVINGS")
    if not aba_checksum_ok(target.routing_number):
        v.add(f"{field}.routing_number", "must be a 9-digit (0-9) ABA routing number with a valid checksum")
    if not account_number_ok(target.account_number):
        v.add(f"{field}.account_number", "must be 5 to 17 digits (0-9)")
    if len(target.name) > 100:
        v.add(f"{field}.name", "must be at most 100 characters")
    if target.account_number_last_four:
        v.add(f"{field}.account_number_last_four", "is output only")


def deposit_target(v: Violations, field: str, target: common_pb2.AllocationTarget) -> None:
    """A bank account given in full (type, ABA routing number, 5-17 digit account number)."""
    _target(v, field, target)


def masked_allocation(alloc: common_pb2.Allocation) -> common_pb2.Allocation:
    """A copy without full account numbers (last four only)."""
    out = common_pb2.Allocation()
    out.CopyFrom(alloc)
    for target in out.targets:
        if target.account_number:
            target.account_number_last_four = target.account_number[-4:]
        target.account_number = ""
    return out
