"""CreateJob's grouped account reads (service/job_intake.py `Intake.account`), with no I/O: the pool
is an in-memory one whose `fetch` the test holds and releases. Against real PostgreSQL (each caller's
own row, NOT_FOUND as `accounts.fetch` answers it): tests/integration/test_job_intake.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

from service import db
from service.job_intake import Intake


class Pool:
    """Answers `accounts.FETCH_MANY` from `rows`; while `gate` is clear a read waits for it."""

    def __init__(self, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
        self.rows = rows
        self.reads: list[list[uuid.UUID]] = []
        self.gate = asyncio.Event()

    async def fetch(self, _sql: str, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
        self.reads.append(list(ids))
        await self.gate.wait()
        return [self.rows[i] for i in ids if i in self.rows]


async def test_account_reads_arriving_while_one_runs_wait_for_it_and_share_the_next() -> None:
    """One read in flight at a time: the callers that arrive while it runs (here one by one, in
    separate steps of the loop, as CreateJobs do) gather into the next read instead of each starting
    a statement of its own (a round trip each for the process and PostgreSQL)."""
    workspace = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(4)]
    pool = Pool({i: {"id": i, "workspace_id": workspace} for i in ids})
    intake = Intake()
    asks = []
    for account in ids:
        asks.append(asyncio.create_task(intake.account(cast(db.Pool, pool), workspace, str(account))))
        for _ in range(3):  # the read this caller joined (or started) is under way
            await asyncio.sleep(0)
    assert pool.reads == [ids[:1]]  # the first alone, the others wait for it
    pool.gate.set()
    rows = await asyncio.gather(*asks)
    assert [row["id"] for row in rows] == ids
    assert [set(read) for read in pool.reads] == [set(ids[:1]), set(ids[1:])]
    assert intake.reads == 2
