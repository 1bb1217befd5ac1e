"""timeutil.set_ts and set_duration set exactly what protobuf's FromDatetime and FromTimedelta set
(they replace them on every RPC's hot path)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from service import timeutil

PARIS = dt.timezone(dt.timedelta(hours=1, minutes=30))
DATETIMES = [
    dt.datetime(2026, 11, 30, 19, 5, 7, 123456, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 30, 19, 5, 7, 123456, tzinfo=PARIS),
    dt.datetime(2026, 11, 30, 19, 5, 7, 999999),  # naive: taken as UTC
    dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    dt.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),  # before the epoch: nanos stay positive
    dt.datetime(1, 1, 1, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
]
DURATIONS = [
    dt.timedelta(0),
    dt.timedelta(days=1),
    dt.timedelta(days=7, microseconds=1),
    dt.timedelta(seconds=90, microseconds=500_000),
    dt.timedelta(microseconds=-1),
    dt.timedelta(days=-1, seconds=5),
    dt.timedelta(seconds=-90, microseconds=-500_000),
]


@pytest.mark.parametrize("value", DATETIMES, ids=str)
def test_set_ts_is_from_datetime(value: dt.datetime) -> None:
    ours, theirs = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    timeutil.set_ts(ours, value)
    theirs.FromDatetime(value)
    assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos)
    assert ours.ToDatetime(tzinfo=dt.UTC) == (value if value.tzinfo else value.replace(tzinfo=dt.UTC))


def test_set_ts_leaves_none_unset() -> None:
    target = timestamp_pb2.Timestamp(seconds=5)
    timeutil.set_ts(target, None)
    assert target.seconds == 5


@pytest.mark.parametrize("value", DURATIONS, ids=str)
def test_set_duration_is_from_timedelta(value: dt.timedelta) -> None:
    ours, theirs = duration_pb2.Duration(), duration_pb2.Duration()
    timeutil.set_duration(ours, value)
    theirs.FromTimedelta(value)
    assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos)
    assert ours.ToTimedelta() == value
