"""Conversions between datetimes and protobuf Timestamps."""

from __future__ import annotations

import datetime as dt
import random

from google.protobuf import duration_pb2, timestamp_pb2

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def set_ts(target: timestamp_pb2.Timestamp, value: dt.datetime | None) -> None:
    """Sets a Timestamp field in place (leaves it unset for None): what `FromDatetime` sets (a naive
    datetime is taken as UTC), in a quarter of its time (datetime arithmetic is C; it is Python)."""
    if value is not None:
        micros = (value - (_EPOCH if value.tzinfo is not None else _NAIVE_EPOCH)) // _MICROSECOND
        seconds, micro = divmod(micros, 1_000_000)
        target.seconds = seconds
        target.nanos = micro * 1000


def set_duration(target: duration_pb2.Duration, value: dt.timedelta) -> None:
    """Sets a Duration field in place: what `FromTimedelta` sets, faster."""
    micros = value // _MICROSECOND
    if micros < 0:  # seconds and nanos carry the same sign: the library's own normalization
        target.FromTimedelta(value)
        return
    seconds, micro = divmod(micros, 1_000_000)
    target.seconds = seconds
    target.nanos = micro * 1000


def from_ts(value: timestamp_pb2.Timestamp) -> dt.datetime:
    return value.ToDatetime(tzinfo=dt.UTC)


def backoff(attempt: int, base: float, cap: float) -> dt.timedelta:
    """Full-jitter exponential backoff for the retry after `attempt` (1-based)."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not crypto
