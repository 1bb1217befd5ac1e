"""Group commit, the mechanism alone: callers that arrive while a batch is being committed wait
together, and the next free slot commits all of them with one operation (one statement or one
transaction: one durable commit), then answers each caller with its own result. Both group commits of
the service use it, each with its own operation: the audited reads of personal data
(service/audit_commit.py) and CreateJob's refreshes (service/job_intake.py).

The rules (tests/unit/test_group_commit.py proves each, with no I/O):
- no timer: a caller waits only for the batches being committed ahead of it; with a slot free its
  batch starts at once. At most `in_flight` batches run at once, each taking up to `max_batch` of the
  waiting items, oldest first;
- a caller is answered only after the operation of its batch returned (its commit), with the result
  at its item's position;
- the operation raises `ItemFailed(index, error)`: that item alone fails with `error`; nothing of the
  batch was committed, and the others go again, ahead of the items that came since;
- the operation raises anything else: when `split(error)` says so (and the batch holds more than one
  item), each item goes again alone, in the same slot, so one bad item fails only its own caller;
  otherwise every item of the batch fails with that error (a lost connection, a failed commit);
- the task committing is cancelled (the process stops): the batch's callers and those waiting get
  `stopping()`, nobody waits forever;
- a caller that went away (cancelled, e.g. its deadline) before its batch started: its item is left
  out, unless `run_abandoned` (then it is committed all the same, nobody to answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from service import errors

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class ItemFailed(Exception):
    """Raised by an operation: the item at `index` of the batch failed on its own with `error`, and
    nothing of the batch was committed (the others go again)."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def _never(_: Exception) -> bool:
    return False


def _stopping() -> BaseException:
    return errors.unavailable("the server is stopping; retry")


class _Waiting(Generic[ItemT, ResultT]):
    __slots__ = ("answer", "item")

    def __init__(self, item: ItemT, answer: asyncio.Future[ResultT]) -> None:
        self.item = item
        self.answer = answer


class GroupCommit(Generic[ItemT, ResultT]):
    """`await submit(item)`: the item's result once the batch holding it is committed."""

    def __init__(
        self,
        commit: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]],
        *,
        max_batch: int,
        in_flight: int,
        split: Callable[[Exception], bool] = _never,
        run_abandoned: bool = False,
        stopping: Callable[[], BaseException] = _stopping,
    ) -> None:
        """`commit(items)`: commits the batch, one result per item in order (see the module's rules
        for what it may raise)."""
        if max_batch < 1 or in_flight < 1:
            raise ValueError("max_batch and in_flight must be at least 1")
        self._commit = commit
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._split = split
        self._run_abandoned = run_abandoned
        self._stopping = stopping
        self._waiting: list[_Waiting[ItemT, ResultT]] = []
        self._draining = 0  # slots (drain tasks) that will still look at `_waiting`
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # committed batches (tests)

    async def submit(self, item: ItemT) -> ResultT:
        # (Not `_Waiting[ItemT, ResultT](...)`: calling a subscripted generic costs a failed
        # `__orig_class__` store on every call.)
        answer: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        waiting = _Waiting(item, answer)
        self._waiting.append(waiting)
        if self._draining < self.in_flight:
            self._draining += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await waiting.answer

    async def _drain(self) -> None:
        """One slot: commits batches while items wait."""
        try:
            while self._waiting:
                taken = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                batch = taken if self._run_abandoned else [w for w in taken if not w.answer.done()]
                if batch:
                    self._waiting[:0] = await self._run(batch)
        except asyncio.CancelledError:
            waiting, self._waiting = self._waiting, []
            _fail(waiting, self._stopping())
            raise
        finally:
            # In the same step as the loop's last look at `_waiting`: an item queued after it starts
            # a slot of its own.
            self._draining -= 1

    async def _run(self, batch: list[_Waiting[ItemT, ResultT]]) -> list[_Waiting[ItemT, ResultT]]:
        """Commits the batch and answers its callers; returns the items to run again."""
        try:
            results = await self._commit([w.item for w in batch])
        except ItemFailed as failed:
            _fail([batch[failed.index]], failed.error)
            return [w for i, w in enumerate(batch) if i != failed.index]
        except asyncio.CancelledError:
            _fail(batch, self._stopping())
            raise
        except Exception as exc:
            if len(batch) > 1 and self._split(exc):
                for waiting in batch:  # each alone: one bad item fails only its own caller
                    await self._run([waiting])
                return []
            _fail(batch, exc)
            return []
        if len(results) != len(batch):  # a broken operation: its callers must not wait forever
            _fail(batch, RuntimeError(f"group commit: {len(results)} results for {len(batch)} items"))
            return []
        self.batches += 1
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.answer.done():
                waiting.answer.set_result(result)
        return []


def _fail(batch: list[_Waiting[ItemT, ResultT]], exc: BaseException) -> None:
    for waiting in batch:
        if not waiting.answer.done():
            waiting.answer.set_exception(exc)
