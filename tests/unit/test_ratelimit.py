import uuid

import grpc
import pytest

from service.api.ratelimit import RateLimiter
from service.api.status import ApiError


def test_burst_then_refill() -> None:
    limiter = RateLimiter("things", rate_per_minute=60, burst=3)
    ws = uuid.uuid4()
    for _ in range(3):
        limiter.check(ws, now=100.0)
    with pytest.raises(ApiError) as info:
        limiter.check(ws, now=100.0)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in 1 s" in info.value.message
    limiter.check(ws, now=101.0)  # one token back after a second at 60/min
    with pytest.raises(ApiError):
        limiter.check(ws, now=101.0)


def test_workspaces_are_independent_and_zero_disables() -> None:
    limiter = RateLimiter("things", rate_per_minute=60, burst=1)
    a, b = uuid.uuid4(), uuid.uuid4()
    limiter.check(a, now=0.0)
    limiter.check(b, now=0.0)
    with pytest.raises(ApiError):
        limiter.check(a, now=0.0)
    off = RateLimiter("things", rate_per_minute=0)
    for _ in range(1000):
        off.check(a, now=0.0)
