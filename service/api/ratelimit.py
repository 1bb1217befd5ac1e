"""Per-workspace rate limits (token buckets) on link token creation and login attempts.

Limits are per process: with N API processes a workspace can reach N times the rate. They guard
the platforms and the password-guessing surface, not billing, so that is the accepted trade for
not paying a database round trip on every call.
"""

from __future__ import annotations

import math
import time
import uuid

from service import errors
from service.api.status import from_domain


class RateLimiter:
    """A token bucket per key: `rate_per_minute` sustained, bursts up to `burst`."""

    def __init__(self, name: str, rate_per_minute: float, burst: int | None = None) -> None:
        self.name = name
        self._rate = rate_per_minute / 60.0
        self._burst = float(burst if burst is not None else max(1, int(rate_per_minute // 6)))
        self._buckets: dict[uuid.UUID, tuple[float, float]] = {}

    def check(self, workspace_id: uuid.UUID, now: float | None = None) -> None:
        """Takes one token or raises RESOURCE_EXHAUSTED (an ApiError) with the seconds to wait."""
        if self._rate <= 0:
            return
        at = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(workspace_id, (self._burst, at))
        tokens = min(self._burst, tokens + (at - last) * self._rate)
        if tokens < 1.0:
            self._buckets[workspace_id] = (tokens, at)
            wait = math.ceil((1.0 - tokens) / self._rate)
            raise from_domain(
                errors.resource_exhausted(
                    "RATE_LIMITED", f"too many {self.name} for this workspace; retry in {wait} s", wait
                )
            )
        self._buckets[workspace_id] = (tokens - 1.0, at)
        if len(self._buckets) > 100_000:
            self._buckets.clear()
