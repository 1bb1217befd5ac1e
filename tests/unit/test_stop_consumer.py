"""tests.harness.stop_consumer: a consumer's close race does not fail the caller (aio-libs/aiokafka#647).

The fakes reproduce the shape of aiokafka 0.14's `Fetcher.close()`: it cancels each pending fetch task
and awaits it; a task that was sleeping in its retry back-off re-raises its own CancelledError."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import stop_consumer
from tests.unit.scripts import load_script


class _Client:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


class _Fetcher:
    """Two fetch tasks in their retry back-off, closed the way aiokafka closes them."""

    def __init__(self) -> None:
        self._pending_tasks = {asyncio.create_task(asyncio.sleep(3600)) for _ in range(2)}

    async def close(self) -> None:
        for task in list(self._pending_tasks):
            task.cancel()
            await task  # raises the task's CancelledError: the race


class _Consumer:
    def __init__(self, fetcher: _Fetcher | None) -> None:
        self._fetcher = fetcher
        self._client = _Client()
        self.stops = 0

    async def stop(self) -> None:
        self.stops += 1
        if self._fetcher is not None:
            await self._fetcher.close()
        await self._client.close()


async def test_the_close_race_is_swallowed_and_the_close_finished() -> None:
    consumer = _Consumer(_Fetcher())
    await asyncio.sleep(0)  # the fetch tasks are running (sleeping)
    with pytest.raises(asyncio.CancelledError):
        await _Consumer(_Fetcher()).stop()  # what a bare stop() does
    await stop_consumer(consumer)
    assert consumer.stops == 1
    assert consumer._fetcher is not None
    assert all(task.done() for task in consumer._fetcher._pending_tasks)
    assert consumer._client.closed == 1


async def test_a_clean_stop_closes_once() -> None:
    consumer = _Consumer(None)
    await stop_consumer(consumer)
    assert (consumer.stops, consumer._client.closed) == (1, 1)


async def test_a_caller_being_cancelled_is_still_cancelled() -> None:
    stopping = asyncio.Event()

    class _Hanging(_Consumer):
        async def stop(self) -> None:
            stopping.set()
            await asyncio.sleep(3600)

    caller = asyncio.create_task(stop_consumer(_Hanging(None)))
    await stopping.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()


async def test_the_example_consumer_stops_past_the_same_race() -> None:
    """examples/consumer.py's `stop`: the race's CancelledError does not end the example with a
    traceback after its offsets were committed (a bare `consumer.stop()` there did). It does not reach
    into aiokafka's internals: what the interrupted close left is cancelled by `asyncio.run` as the
    example exits, done here by hand."""
    example = load_script("examples/consumer.py")
    consumer = _Consumer(_Fetcher())
    await asyncio.sleep(0)
    await example.stop(consumer)  # returns: the race's CancelledError is swallowed
    assert consumer.stops == 1
    assert consumer._fetcher is not None
    left = [task for task in consumer._fetcher._pending_tasks if not task.done()]
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
