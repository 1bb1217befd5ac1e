"""The call pipeline's one coroutine (service/api/interceptor.py `Pipeline._unary`): the caller's
deadline, a cancellation from outside, the metadata it reads and the handler it awaits.

The pipeline runs here around small handlers with a stand-in for grpc's servicer context (its
metadata, deadline, trailer and abort); the same pipeline through real gRPC is proven by the
integration and e2e suites. Nothing here waits for time to pass except the 50 ms deadline under
test, which only the pipeline's own timer can end (the guards only turn a hang into a failure).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Any, cast

import grpc
import pytest

from service import context, metrics
from service.api.interceptor import Pipeline
from service.auth import Authenticator, Workspace

WORKSPACE = Workspace(uuid.uuid4(), "pipeline", True)
KEY = "unitkey000000001"
SECRET = f"pl_{KEY}_" + "s" * 32
GUARD = 10.0


class _Auth(Authenticator):
    """Every secret valid for a minute, without a database."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None))

    async def validated(self, secret: str | None) -> tuple[Workspace, float]:
        return WORKSPACE, self.clock() + 60


class _Aborted(Exception):
    pass


class _Context:
    """What the pipeline uses of grpc.aio's servicer context."""

    def __init__(self, remaining: float | None, extra: tuple[tuple[str, Any], ...] = ()) -> None:
        self._remaining = remaining
        self.metadata = (("x-api-secret", SECRET), ("api-version", "2021-07-28"), *extra)
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self._remaining

    def set_trailing_metadata(self, trailing: tuple[tuple[str, str], ...]) -> None:
        self.trailing = trailing

    async def abort(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        self.aborted = (code, details)
        raise _Aborted(details)  # grpc raises AbortError: the call ends here


def _wrapped(method: str, handler: Any) -> Any:
    wrapped = Pipeline(_Auth()).wrap(
        f"/paylink.v1.AccountService/{method}", grpc.unary_unary_rpc_method_handler(handler)
    )
    return wrapped.unary_unary


def _count(method: str, code: str) -> float:
    return sum(metrics.RPC_LATENCY.labels(method, code).counts[:-1])  # its buckets (the last: the sum)


async def test_a_call_that_outlives_its_callers_deadline_answers_and_counts_deadline_exceeded() -> None:
    async def never(request: Any, ctx: Any) -> Any:
        await asyncio.Event().wait()

    call = _wrapped("UnitDeadline", never)
    ctx = _Context(remaining=0.05)
    before = _count("UnitDeadline", "DEADLINE_EXCEEDED")
    started = time.monotonic()
    with pytest.raises(_Aborted):
        await asyncio.wait_for(call(object(), ctx), GUARD)
    assert time.monotonic() - started < GUARD
    assert ctx.aborted == (grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran out of time")
    assert _count("UnitDeadline", "DEADLINE_EXCEEDED") == before + 1
    assert dict(ctx.trailing)["x-request-id"]  # the request id goes out with the error too


async def test_a_call_cancelled_from_outside_stays_cancelled_and_is_not_taken_for_a_deadline() -> None:
    entered = asyncio.Event()

    async def waits(request: Any, ctx: Any) -> Any:
        entered.set()
        await asyncio.Event().wait()

    call = _wrapped("UnitCancelled", waits)
    ctx = _Context(remaining=GUARD * 2)  # a deadline far off: the cancellation is not its timer's
    task = asyncio.ensure_future(call(object(), ctx))
    await asyncio.wait_for(entered.wait(), GUARD)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.aborted is None
    assert _count("UnitCancelled", "DEADLINE_EXCEEDED") == 0


async def test_the_handler_runs_as_its_caller_with_binary_metadata_beside_and_may_return_an_awaitable() -> (
    None
):
    """GetAccount's handler returns the read's awaitable rather than awaiting it in a coroutine of
    its own; a `-bin` entry (bytes) among the metadata is carried, not read."""
    seen: list[context.CallContext] = []

    async def read(request: str) -> str:
        seen.append(context.current())
        return request.upper()

    def handler(request: str, ctx: Any) -> Awaitable[str]:
        return read(request)

    call = _wrapped("UnitAwaitable", handler)
    ctx = _Context(remaining=None, extra=(("x-trace-bin", b"\x00\xff"), ("x-request-id", "req-unit-1")))
    assert await asyncio.wait_for(call("answer", ctx), GUARD) == "ANSWER"
    assert ctx.aborted is None
    assert dict(ctx.trailing) == {"x-request-id": "req-unit-1"}
    (who,) = seen
    assert (who.workspace, who.request_id, who.deadline) == (WORKSPACE, "req-unit-1", None)
    assert who.key_id == KEY and who.caller == f"key:{KEY}"
    with pytest.raises(LookupError):
        context.current()  # reset once the call is answered
