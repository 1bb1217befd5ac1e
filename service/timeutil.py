"""Conversions between datetimes and protobuf Timestamps."""

from __future__ import annotations

import datetime as dt
import random

from google.protobuf import timestamp_pb2


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def set_ts(target: timestamp_pb2.Timestamp, value: dt.datetime | None) -> None:
    """Sets a Timestamp field in place (leaves it unset for None)."""
    if value is not None:
        target.FromDatetime(value)


def from_ts(value: timestamp_pb2.Timestamp) -> dt.datetime:
    return value.ToDatetime(tzinfo=dt.UTC)


def backoff(attempt: int, base: float, cap: float) -> dt.timedelta:
    """Full-jitter exponential backoff for the retry after `attempt` (1-based)."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not crypto
