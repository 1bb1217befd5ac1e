"""job_outcomes.in_context: a coroutine run to its end in a given context, as a task created with
that context would run it (each outcome of a batch is applied in its own job's context)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from service.job_outcomes import in_context

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("test_in_context", default="caller")


def job_context(value: str) -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(VAR.set, value)
    return context


async def test_each_step_runs_in_the_given_context_and_the_caller_keeps_its_own() -> None:
    seen: list[str] = []
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def outcome() -> int:
        seen.append(VAR.get())
        await asyncio.sleep(0)  # a bare yield to the loop
        seen.append(VAR.get())
        answer = await gate  # a future the task waits for
        VAR.set("changed by the outcome")
        seen.append(VAR.get())
        return answer

    context = job_context("job 1")
    asyncio.get_running_loop().call_soon(gate.set_result, 42)
    assert await in_context(outcome(), context) == 42
    assert seen == ["job 1", "job 1", "changed by the outcome"]
    assert VAR.get() == "caller"
    assert context[VAR] == "changed by the outcome"  # as a task's set would have left it


async def test_a_coroutine_that_never_waits_runs_without_a_task() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def outcome() -> str:
        tasks.append(asyncio.current_task())
        return VAR.get()

    assert await in_context(outcome(), job_context("job 2")) == "job 2"
    assert tasks == [asyncio.current_task()]


async def test_its_exceptions_and_those_of_what_it_waits_for_reach_the_caller() -> None:
    failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failing.set_exception(LookupError("from the future"))
    caught: list[str] = []

    async def outcome() -> None:
        try:
            await failing
        except LookupError:
            caught.append(VAR.get())
        raise ValueError("from the outcome")

    with pytest.raises(ValueError, match="from the outcome"):
        await in_context(outcome(), job_context("job 3"))
    assert caught == ["job 3"]


async def test_cancelling_the_caller_cancels_the_coroutine_in_its_context() -> None:
    started = asyncio.Event()
    cleaned: list[str] = []

    async def outcome() -> None:
        try:
            started.set()
            await asyncio.get_running_loop().create_future()  # never set
        finally:
            cleaned.append(VAR.get())

    caller = asyncio.create_task(in_context(outcome(), job_context("job 4")))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cleaned == ["job 4"]
