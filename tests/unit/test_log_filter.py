import logging

import pytest

from service.logs import RepeatFilter


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, (), None)


def test_repeated_messages_pass_once_per_interval_with_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("service.logs.time.monotonic", lambda: clock[0])
    f = RepeatFilter(interval=10.0)
    assert f.filter(_record("Unable to update metadata"))
    assert [f.filter(_record("Unable to update metadata")) for _ in range(500)] == [False] * 500
    assert f.filter(_record("another message"))
    clock[0] += 10.0
    again = _record("Unable to update metadata")
    assert f.filter(again)
    assert vars(again)["repeated"] == 500  # set by the filter: not a LogRecord attribute
