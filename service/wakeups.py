"""The workers' wake-ups: `wake_soon`, the coalesced NOTIFY for jobs already committed; and why the
worker's claim loop (service/worker.py) wakes up, and whether a wake-up may find a job (`WakeUps`).

Two kinds. A CreateJob of the worker's own process names the job it committed (`job`): the claim
that began after that commit took it, or the next claim will. Anything else (a NOTIFY from another
process, a rescue, a slot of a platform at its limit freed, the LISTEN connection lost, stop) says
only that some job may be runnable (`other`). A claim that took every job named since the claim
before began, with nothing else since, leaves nothing to claim for: `wait` keeps waiting instead of
returning for a claim that would find nothing (bench/NOTES.md, claims session 30).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable

from service import db
from service.queue import NOTIFY_CHANNEL

UNKNOWN_JOB = uuid.UUID(int=0)  # a CreateJob's wake-up that did not say which job

# Per pool (a process has one or two, for its life): the task sending wake-ups, who asked since, and
# its NOTIFYs' payload (every other NOTIFY on the channel carries '').
_wakers: dict[int, asyncio.Task[None]] = {}
_unsent: set[int] = set()
_payloads: dict[int, str] = {}


def wake_payload(pool: db.Pool) -> str:
    """`wake_soon`'s payload on this pool: its process's worker is not woken by it (service/worker.py)."""
    return _payloads.get(id(pool)) or _payloads.setdefault(id(pool), uuid.uuid4().hex)


def wake_soon(pool: db.Pool) -> None:
    """Wakes the workers for jobs already committed: one NOTIFY at a time per pool, however many
    callers ask meanwhile (each is covered by a NOTIFY sent after it asked)."""
    _unsent.add(id(pool))
    task = _wakers.get(id(pool))
    if task is None or task.done():
        _wakers[id(pool)] = asyncio.get_running_loop().create_task(_wake(pool))


async def _wake(pool: db.Pool) -> None:
    notify = f"NOTIFY {NOTIFY_CHANNEL}, '{wake_payload(pool)}'"
    while id(pool) in _unsent:
        _unsent.discard(id(pool))
        with contextlib.suppress(Exception):  # a lost wake-up costs one poll interval, no more
            await pool.execute(notify)


class WakeUps:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._jobs: set[uuid.UUID] = set()  # named by CreateJobs since the last claim began, not taken
        self._other = False  # woken for another reason since the last claim began

    def job(self, job_id: uuid.UUID | None) -> None:
        """This process committed job `job_id` (None: not known) for the worker."""
        self._jobs.add(job_id or UNKNOWN_JOB)
        self._event.set()

    def other(self) -> None:
        """Something else may have made a job runnable."""
        self._other = True
        self._event.set()

    @property
    def pending(self) -> bool:
        """Jobs named since the last claim began that it did not take (the worker passes these on to
        other processes' workers when it stops claiming)."""
        return bool(self._jobs)

    def claiming(self) -> set[uuid.UUID]:
        """A claim begins: what woke the worker so far is its reason; returns the jobs named."""
        self._event.clear()
        named, self._jobs, self._other = self._jobs, set(), False
        return named

    def claimed(self, named: set[uuid.UUID], job_ids: Iterable[uuid.UUID]) -> bool:
        """The claim took `job_ids`: no wake-up for them is left (those named during the claim
        included). Whether it left any job named before or during it (`named`: from `claiming`)."""
        taken = set(job_ids)
        self._jobs -= taken
        return bool(self._jobs) or not named <= taken

    def clear(self) -> None:
        """The jobs named so far are passed on to other processes' workers, or moot."""
        self._jobs = set()

    async def wait(self, seconds: float) -> bool:
        """Until a wake-up that may find a job (True), or `seconds` passed (False: the poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not (self._jobs or self._other):
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), left)
        return True
