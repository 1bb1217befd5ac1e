"""The group-commit primitive's batching rules (service/group_commit.py), with no I/O: the operation
is an in-memory one the test holds and releases. The two operations that touch the database are
tested against real PostgreSQL in tests/integration/test_audit_group_commit.py (audited reads) and
tests/integration/test_job_intake.py (CreateJob's refreshes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from service.group_commit import GroupCommit, ItemFailed


class Operation:
    """Records each batch; while `gate` is clear a batch waits for it (its 'commit')."""

    def __init__(self, fail: Callable[[list[int]], BaseException | None] = lambda _: None) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self._fail = fail

    async def __call__(self, items: list[int]) -> list[str]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        error = self._fail(items)
        if error is not None:
            raise error
        return [f"r{i}" for i in items]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_items_waiting_together_share_one_batch_and_each_gets_its_own_result() -> None:
    op = Operation()
    commit = GroupCommit(op, max_batch=64, in_flight=2)
    results = await asyncio.gather(*(commit.submit(i) for i in range(10)))
    assert results == [f"r{i}" for i in range(10)]
    assert op.batches == [list(range(10))]
    assert commit.batches == 1


async def test_a_lone_item_starts_at_once() -> None:
    """No timer: with a slot free the item's batch starts in the next loop step."""
    op = Operation()
    op.gate.clear()
    commit = GroupCommit(op, max_batch=64, in_flight=2)
    call = asyncio.ensure_future(commit.submit(7))
    await _settle()
    assert op.batches == [[7]]
    op.gate.set()
    assert await call == "r7"


async def test_at_most_in_flight_batches_of_at_most_max_batch_oldest_first() -> None:
    op = Operation()
    op.gate.clear()
    commit = GroupCommit(op, max_batch=3, in_flight=2)
    first = []
    for i in range(2):
        first.append(asyncio.ensure_future(commit.submit(i)))
        await _settle()
    assert op.batches == [[0], [1]]  # both slots taken, one item each
    rest = [asyncio.ensure_future(commit.submit(i)) for i in range(2, 10)]
    await _settle()
    assert len(op.batches) == 2  # the others wait for a free slot
    assert not any(f.done() for f in first + rest)  # nobody answered before its commit
    op.gate.set()
    assert await asyncio.gather(*first, *rest) == [f"r{i}" for i in range(10)]
    assert op.batches[2:] == [[2, 3, 4], [5, 6, 7], [8, 9]]
    assert op.most_running == 2


async def test_an_item_that_fails_on_its_own_fails_alone_and_the_others_go_again_first() -> None:
    op = Operation(lambda items: ItemFailed(items.index(3), ValueError("bad 3")) if 3 in items else None)
    op.gate.clear()
    commit = GroupCommit(op, max_batch=64, in_flight=1)
    calls = [asyncio.ensure_future(commit.submit(i)) for i in range(5)]
    await _settle()
    later = asyncio.ensure_future(commit.submit(5))  # comes while the failing batch runs
    await _settle()
    op.gate.set()
    outcomes = await asyncio.gather(*calls, later, return_exceptions=True)
    assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "bad 3"
    assert [o for i, o in enumerate(outcomes) if i != 3] == ["r0", "r1", "r2", "r4", "r5"]
    # The others went again ahead of the one that came since (here in the same batch, in order).
    assert op.batches == [[0, 1, 2, 3, 4], [0, 1, 2, 4, 5]]
    assert commit.batches == 1


async def test_any_other_error_fails_every_item_of_its_batch() -> None:
    lost = ConnectionError("connection lost")
    op = Operation(lambda items: lost if 2 in items else None)
    commit = GroupCommit(op, max_batch=64, in_flight=2)
    outcomes = await asyncio.gather(*(commit.submit(i) for i in range(4)), return_exceptions=True)
    assert outcomes == [lost] * 4
    assert commit.batches == 0
    assert await commit.submit(9) == "r9"  # the next items go on as usual


async def test_an_error_that_splits_runs_each_item_alone_so_a_bad_one_fails_only_its_caller() -> None:
    op = Operation(lambda items: ValueError("bad 2") if 2 in items else None)
    commit = GroupCommit(op, max_batch=64, in_flight=2, split=lambda exc: isinstance(exc, ValueError))
    outcomes = await asyncio.gather(*(commit.submit(i) for i in range(4)), return_exceptions=True)
    assert isinstance(outcomes[2], ValueError)
    assert [o for i, o in enumerate(outcomes) if i != 2] == ["r0", "r1", "r3"]
    assert op.batches == [[0, 1, 2, 3], [0], [1], [2], [3]]
    assert commit.batches == 3


async def test_an_error_that_does_not_split_fails_the_batch_even_with_split() -> None:
    lost = ConnectionError("connection lost")
    op = Operation(lambda items: lost)
    commit = GroupCommit(op, max_batch=64, in_flight=2, split=lambda exc: isinstance(exc, ValueError))
    outcomes = await asyncio.gather(*(commit.submit(i) for i in range(3)), return_exceptions=True)
    assert outcomes == [lost] * 3
    assert op.batches == [[0, 1, 2]]


async def test_a_caller_gone_before_its_batch_starts_is_left_out_unless_run_abandoned() -> None:
    for run_abandoned, expected in ((False, [[0], [2]]), (True, [[0], [1, 2]])):
        op = Operation()
        op.gate.clear()
        commit = GroupCommit(op, max_batch=64, in_flight=1, run_abandoned=run_abandoned)
        first = asyncio.ensure_future(commit.submit(0))
        await _settle()
        gone, kept = asyncio.ensure_future(commit.submit(1)), asyncio.ensure_future(commit.submit(2))
        await _settle()
        gone.cancel()
        op.gate.set()
        assert list(await asyncio.gather(first, kept)) == ["r0", "r2"]  # typed a tuple, a list at run time
        assert op.batches == expected


async def test_a_stopping_slot_fails_its_batch_and_those_waiting() -> None:
    op = Operation()
    op.gate.clear()
    commit = GroupCommit(op, max_batch=2, in_flight=1, stopping=lambda: RuntimeError("stopping"))
    calls = [asyncio.ensure_future(commit.submit(i)) for i in range(4)]
    await _settle()
    assert op.batches == [[0, 1]]
    for task in list(commit._tasks):  # the process stops: its tasks are cancelled
        task.cancel()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and str(o) == "stopping" for o in outcomes), outcomes


async def test_an_operation_answering_the_wrong_number_of_results_fails_its_batch() -> None:
    async def short(items: list[int]) -> list[str]:
        return ["only one"]

    commit = GroupCommit(short, max_batch=64, in_flight=1)
    outcomes = await asyncio.gather(*(commit.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupCommit(Operation(), max_batch=0, in_flight=1)
    with pytest.raises(ValueError):
        GroupCommit(Operation(), max_batch=1, in_flight=0)
