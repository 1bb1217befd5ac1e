"""Keyset pagination (AIP-158) over (sort key, id), newest first.

A page token is opaque to callers: base64 of the last row's sort key and id plus a hash of the
filters, so it is stable under concurrent inserts (new rows land before the cursor, never shift a
page) and refused when reused with other filters.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import uuid

from service import errors

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    key: str  # ISO timestamp or date of the last row's sort key
    id: uuid.UUID


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise errors.invalid_field(field, "must not be negative")
    if value > MAX_PAGE_SIZE:
        raise errors.invalid_field(field, f"must be at most {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def _filter_hash(filters: object) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(cursor: Cursor, filters: object) -> str:
    raw = json.dumps({"k": cursor.key, "i": str(cursor.id), "f": _filter_hash(filters)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, filters: object, field: str = "page_token") -> Cursor | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = Cursor(str(data["k"]), uuid.UUID(str(data["i"])))
        same_filters = data["f"] == _filter_hash(filters)
    except (ValueError, KeyError, TypeError) as exc:
        raise _forged(field) from exc
    if not same_filters:
        raise errors.invalid_field(field, "was issued for other filters; repeat them unchanged")
    return cursor


def _forged(field: str) -> errors.InvalidArgument:
    return errors.invalid_field(field, "is not a page token this list returned")


def timestamp_cursor(
    cursor: Cursor | None, field: str = "page_token"
) -> tuple[dt.datetime | None, uuid.UUID | None]:
    """The cursor's time, in UTC. Only what `encode` writes is accepted: an ISO time with a zone
    that stays within years 1..9999 in UTC (a forged token's key never reaches SQL)."""
    if cursor is None:
        return None, None
    try:
        parsed = dt.datetime.fromisoformat(cursor.key)
        if parsed.tzinfo is None:
            raise ValueError("no time zone")
        return parsed.astimezone(dt.UTC), cursor.id
    except (ValueError, OverflowError) as exc:
        raise _forged(field) from exc


def date_cursor(cursor: Cursor | None, field: str = "page_token") -> tuple[dt.date | None, uuid.UUID | None]:
    """The cursor's date (YYYY-MM-DD, as `encode` writes it)."""
    if cursor is None:
        return None, None
    try:
        if len(cursor.key) != 10:
            raise ValueError("not a date")
        return dt.date.fromisoformat(cursor.key), cursor.id
    except ValueError as exc:
        raise _forged(field) from exc
