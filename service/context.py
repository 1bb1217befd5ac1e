"""The call context: who is calling, with which api-version, under which request id and deadline.

The API interceptor sets it for every RPC; domain modules receive it (or read `current()`), and the
JSON log formatter adds its request id. No transport here: the CLI or a test can build one too.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import time
from collections.abc import Callable
from typing import NamedTuple

from service import versions
from service.auth import Workspace


class CallContext(NamedTuple):
    """Immutable, as the frozen dataclass it was; a named tuple because one is built for every RPC
    (0.3 µs against the frozen dataclass's 1.1: its `__init__` sets each field through
    `object.__setattr__`; bench/NOTES.md, "rpc (session 28)")."""

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


# The current call context (LookupError outside any call), making one current, and putting the
# previous one back: the context variable's own methods, so that no Python frame of ours wraps them
# on every RPC (bench/NOTES.md, "rpc (session 30)").
current: Callable[[], CallContext] = _current.get
set_current: Callable[[CallContext], contextvars.Token[CallContext]] = _current.set
reset: Callable[[contextvars.Token[CallContext]], None] = _current.reset
