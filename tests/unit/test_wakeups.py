"""When a wake-up makes the worker claim (service/wakeups.py): a CreateJob's names its job, and one
whose job the claim took is spent; any other wake-up makes a claim. (Before, the worker's one
asyncio.Event made a claim of every wake-up; tests/integration/test_job_wakeups.py shows the claims.)"""

from __future__ import annotations

import asyncio
import uuid

from service.wakeups import UNKNOWN_JOB, WakeUps

POLL = 0.05  # the wait's poll: a wait that returns False waited it out (nothing woke it)


async def test_a_wake_up_for_a_job_the_claim_took_makes_no_claim() -> None:
    wake, job = WakeUps(), uuid.uuid4()
    wake.job(job)
    named = wake.claiming()
    assert named == {job}
    assert wake.claimed(named, [job]) is False
    assert not wake.pending
    assert await wake.wait(POLL) is False


async def test_a_wake_up_during_the_claim_for_a_job_it_took_makes_no_claim() -> None:
    """The CreateJob committed, a claim began and took the job, and its wake-up came meanwhile."""
    wake, job = WakeUps(), uuid.uuid4()
    named = wake.claiming()
    wake.job(job)  # during the claim
    assert wake.claimed(named, [job]) is False
    assert await wake.wait(POLL) is False


async def test_a_wake_up_for_a_job_the_claim_did_not_take_makes_a_claim() -> None:
    """The claim began before the job's commit (or another worker took a job first): claim again."""
    wake, taken, missed = WakeUps(), uuid.uuid4(), uuid.uuid4()
    named = wake.claiming()
    wake.job(missed)  # during the claim
    assert wake.claimed(named, [taken]) is True  # left one: passed on when the claim came back full
    assert wake.pending
    assert await wake.wait(600) is True  # at once
    assert wake.claiming() == {missed}


async def test_a_claim_that_left_a_named_job_says_so() -> None:
    """What the worker passes on to other processes' workers when its claim comes back full; once
    passed on (`clear`), the wake-up makes no claim of its own (the full worker claims when it has room)."""
    wake, jobs = WakeUps(), [uuid.uuid4() for _ in range(3)]
    for job in jobs:
        wake.job(job)
    named = wake.claiming()
    assert wake.claimed(named, jobs[:2]) is True
    assert wake.claimed(set(), jobs[:2]) is False  # nothing named, nothing left
    wake.clear()
    assert not wake.pending
    assert await wake.wait(POLL) is False


async def test_an_unnamed_wake_up_always_makes_a_claim() -> None:
    wake = WakeUps()
    wake.job(None)
    named = wake.claiming()
    assert named == {UNKNOWN_JOB}
    assert wake.claimed(named, [uuid.uuid4()]) is True
    wake.job(None)
    assert await wake.wait(600) is True


async def test_another_wake_up_makes_a_claim_whatever_the_claim_took() -> None:
    wake, job = WakeUps(), uuid.uuid4()
    named = wake.claiming()
    wake.job(job)
    wake.other()  # a NOTIFY, a rescue, a slot freed
    wake.claimed(named, [job])
    assert await wake.wait(600) is True
    wake.claiming()
    assert await wake.wait(POLL) is False  # spent by the claim that began


async def test_a_wait_returns_when_woken_later() -> None:
    wake, job = WakeUps(), uuid.uuid4()
    wake.claimed(wake.claiming(), [])
    waiting = asyncio.create_task(wake.wait(600))
    await asyncio.sleep(0)
    assert not waiting.done()
    wake.job(job)
    assert await asyncio.wait_for(waiting, 5) is True


async def test_a_spent_wake_up_does_not_end_a_later_wait_early() -> None:
    """A wake-up for a taken job sets the event; the wait goes on until a real one."""
    wake, taken, later = WakeUps(), uuid.uuid4(), uuid.uuid4()
    named = wake.claiming()
    wake.job(taken)
    wake.claimed(named, [taken])
    waiting = asyncio.create_task(wake.wait(600))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()
    wake.job(later)
    assert await asyncio.wait_for(waiting, 5) is True
