"""JSON logs: one object per line, with the request id when there is one.

Secrets never go here: every record of every logger (gRPC's own included) is redacted when it is
created (`install_redaction`), and every line this formatter writes is redacted again as a whole
(`service.redact`), so a secret passed as an argument, an `extra` field or in a traceback is
replaced by [REDACTED].
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from typing import Any

from service import context, redact

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
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return redact.redact(json.dumps(out))


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


class _GrpcMetadataFilter(logging.Filter):
    """grpc's Cython layer logs `Invalid encoding on b'<raw metadata value>'` at ERROR, with a
    traceback, when a request's metadata is not UTF-8 (before any interceptor runs). The value may
    be a caller's API secret, and bad client input is no server error: the record keeps its
    meaning, loses the value and the traceback, and becomes a WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Invalid encoding on"):
            record.msg = "request metadata that is not valid UTF-8 (value withheld)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_factory: dict[str, Any] = {}  # "previous": the record factory in place before install_redaction


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record: logging.LogRecord = _factory["previous"](*args, **kwargs)
    message = record.getMessage()
    cleaned = redact.redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact.redact(text)
    if record.stack_info:
        record.stack_info = redact.redact(record.stack_info)
    return record


def install_redaction() -> None:
    """Redacts every log record of this process as it is created, whoever logs it and whichever
    handler writes it (idempotent). `extra` fields are set after creation: JsonFormatter redacts
    the whole line as well."""
    if "previous" not in _factory:
        _factory["previous"] = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_factory)
    grpc_logger = logging.getLogger("grpc._cython.cygrpc")
    if not any(isinstance(f, _GrpcMetadataFilter) for f in grpc_logger.filters):
        grpc_logger.addFilter(_GrpcMetadataFilter())


def setup(level: str = "INFO", stream: Any = None) -> None:
    install_redaction()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    kafka = logging.getLogger("aiokafka")
    kafka.setLevel(logging.WARNING)
    if not any(isinstance(f, RepeatFilter) for f in kafka.filters):
        kafka.addFilter(RepeatFilter())
