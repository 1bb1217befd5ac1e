"""The collector once the API server has started (service/api/server.py): startup's heap is frozen
and the thresholds raised, and garbage cycles made by calls are still collected on their own, with
no explicit `gc.collect()`."""

from __future__ import annotations

import gc
import weakref

from service import runtime
from service.api import server


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


async def test_the_started_server_raised_the_thresholds_and_froze_its_heap(app: runtime.Running) -> None:
    assert app.api is not None
    assert gc.get_threshold() == server.GC_THRESHOLDS
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


async def test_a_garbage_cycle_is_still_collected_automatically(app: runtime.Running) -> None:
    assert app.api is not None
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None
    # Allocations past the gen-0 threshold (and past gen 1's, should the cycle be promoted) start
    # the collector by themselves.
    kept: list[list[object]] = []
    for _ in range(server.GC_THRESHOLDS[0] * (server.GC_THRESHOLDS[1] + 2)):
        kept.append([])
        if gone() is None:
            break
    assert gone() is None
