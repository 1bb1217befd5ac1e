"""The per-call context that the interceptor sets and handlers read."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
from typing import Any, TypeAlias

import grpc

from service.auth import Workspace

# The servicer context type handlers receive (requests and responses are protobuf messages).
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


@dataclasses.dataclass(frozen=True, slots=True)
class CallContext:
    workspace: Workspace
    api_version: dt.date | None
    request_id: str  # x-request-id metadata or a generated one, for logs


_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar("paylink_call")


def current() -> CallContext:
    return _current.get()


def set_current(ctx: CallContext) -> contextvars.Token[CallContext]:
    return _current.set(ctx)


def reset(token: contextvars.Token[CallContext]) -> None:
    _current.reset(token)
