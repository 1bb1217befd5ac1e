"""What servicers receive: the grpc servicer context type, and the call context (service/context.py)."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from service.context import CallContext, current, reset, set_current

__all__ = ["CallContext", "Ctx", "current", "reset", "set_current"]

# The servicer context type handlers receive (requests and responses are protobuf messages).
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
