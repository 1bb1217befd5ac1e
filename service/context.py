"""The call context: who is calling, with which api-version, under which request id and deadline.

The API interceptor sets it for every RPC; domain modules receive it (or read `current()`), and the
JSON log formatter adds its request id. No transport here: the CLI or a test can build one too.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import time

from service import versions
from service.auth import Workspace


@dataclasses.dataclass(frozen=True, slots=True)
class CallContext:
    workspace: Workspace
    api_version: dt.date | None
    request_id: str  # x-request-id metadata or a generated one, for logs
    deadline: float | None = None  # time.monotonic() when the caller stops waiting, if it set one
    caller: str = ""  # the calling service for the audit trail: x-caller, else "key:<key id>"
    key_id: str = ""  # the public key id of the API secret the call was authenticated with

    @property
    def version_label(self) -> str:
        """The api-version as stored with tokens, jobs and events ('' for the default)."""
        return versions.label(self.api_version)

    def time_left(self) -> float | None:
        """Seconds until the caller's deadline (never negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar("paylink_call")


def current() -> CallContext:
    return _current.get()


def set_current(ctx: CallContext) -> contextvars.Token[CallContext]:
    return _current.set(ctx)


def reset(token: contextvars.Token[CallContext]) -> None:
    _current.reset(token)
