"""JSON logs: one object per line, with the request id when there is one. Secrets never go here."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from typing import Any

from service import context

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

# Fields every log line of the current task carries (a job's id and account in the worker), so
# "job created" (with the RPC's request_id), the worker's lines and "event appended" connect.
_bound: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "paylink_log_fields", default=None
)


def bind(**fields: str) -> None:
    """Adds fields to every later log line of the current task (asyncio tasks copy the context)."""
    _bound.set({**(_bound.get() or {}), **fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        with contextlib.suppress(LookupError):
            out["request_id"] = context.current().request_id
        out.update(_bound.get() or {})
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                if isinstance(value, (list, tuple)):
                    out[key] = [v if isinstance(v, (int, float, bool)) else str(v) for v in value]
                else:
                    out[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class RepeatFilter(logging.Filter):
    """Lets the same message through once per `interval` seconds, then counts what it dropped.

    aiokafka logs "Unable to update metadata" in a tight loop while the broker is down (about
    150,000 lines in a 30 s outage); one line per interval, with the count, says the same.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, int], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (str(record.msg), record.levelno)
        now = time.monotonic()
        last, dropped = self._seen.get(key, (0.0, 0))
        if now - last < self.interval:
            self._seen[key] = (last, dropped + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.repeated = dropped
        return True


def setup(level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    kafka = logging.getLogger("aiokafka")
    kafka.setLevel(logging.WARNING)
    if not any(isinstance(f, RepeatFilter) for f in kafka.filters):
        kafka.addFilter(RepeatFilter())
