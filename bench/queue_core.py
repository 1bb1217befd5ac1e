"""paylink's queue core for bench/peers.py: enqueue -> claim -> complete, no platform, no events.

Uses the service's own statements (the job insert with its NOTIFY, the worker's claim, the
completion's job UPDATE) and drives them the way `service.worker.Worker` does: one LISTEN
connection, claims of up to the free slots, each claimed job run as a task that writes its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid

import asyncpg
from paylink.v1 import common_pb2

from service import db, jobs, worker

CONCURRENCY = 64  # PAYLINK_WORKER_CONCURRENCY and PAYLINK_PLATFORM_CONCURRENCY as make bench sets them
PLATFORM = "sandbox_adp"
_COMPLETE = (
    "UPDATE jobs SET status = 'success', outcome = $3, error_type = 0, error_code = 0, error_message = '',"
    " completed_at = now(), locked_by = NULL, lease_expires_at = NULL"
    " WHERE id = $1 AND locked_by = $2 AND status = 'running'"
)
_PARAMS = common_pb2.JobParams().SerializeToString()


async def _account(pool: db.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    workspace, account = uuid.uuid4(), uuid.uuid4()
    await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'bench')", workspace)
    await pool.execute(
        "INSERT INTO accounts (id, workspace_id, end_user_id, platform_id, link_token_id)"
        " VALUES ($1, $2, 'bench', $3, $4)",
        account,
        workspace,
        PLATFORM,
        uuid.uuid4(),
    )
    return workspace, account


class Core:
    def __init__(self, pool: db.Pool, url: str, n: int) -> None:
        self.pool, self.url, self.n = pool, url, n
        self.id = f"bench:{uuid.uuid4().hex[:8]}"
        self.done = 0
        self.finished = asyncio.Event()
        self.wake = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()

    async def _complete(self, job: asyncpg.Record) -> None:
        await self.pool.execute(_COMPLETE, job["id"], self.id, common_pb2.JOB_OUTCOME_SUCCESS)
        self.done += 1
        if self.done >= self.n:
            self.finished.set()

    def _start(self, job: asyncpg.Record) -> None:
        task = asyncio.create_task(self._complete(job))
        self.running.add(task)
        task.add_done_callback(lambda t: (self.running.discard(t), self.wake.set()))

    async def run(self) -> None:
        listen = await asyncpg.connect(self.url)
        await listen.add_listener(jobs.NOTIFY_CHANNEL, lambda *_: self.wake.set())
        lease = dt.timedelta(seconds=30)
        try:
            while not self.finished.is_set():
                self.wake.clear()
                free = CONCURRENCY - len(self.running)
                claimed = (
                    await self.pool.fetch(worker._CLAIM, self.id, lease, min(free, CONCURRENCY), [])
                    if free > 0
                    else []
                )
                for job in claimed:
                    self._start(job)
                if claimed and len(claimed) == free:
                    await asyncio.wait(list(self.running), return_when=asyncio.FIRST_COMPLETED)
                    continue
                if claimed:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 2.0)
        finally:
            await listen.close()


async def run(mode: str, n: int, url: str) -> dict[str, object]:
    pool = await asyncpg.create_pool(url, min_size=8, max_size=8, connection_class=db.PooledConnection)
    workspace, account = await _account(pool)
    batch = uuid.uuid4()

    async def enqueue() -> None:
        await pool.fetchrow(
            jobs._INSERT,
            uuid.uuid4(),
            workspace,
            account,
            None,
            None,
            batch,
            common_pb2.JOB_NAME_IDENTITY,
            common_pb2.JOB_ORIGIN_LINK,
            PLATFORM,
            _PARAMS,
            None,
            "",
            False,
        )

    from bench.peers import Producer, stop_task, timed

    core = Core(pool, url, n)

    async def done() -> int:
        return core.done

    producing = None
    if mode == "drain":
        await pool.execute(
            "INSERT INTO jobs (id, workspace_id, account_id, batch_id, name, origin, platform_id, params)"
            " SELECT gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7 FROM generate_series(1, $8)",
            workspace,
            account,
            batch,
            common_pb2.JOB_NAME_IDENTITY,
            common_pb2.JOB_ORIGIN_LINK,
            PLATFORM,
            _PARAMS,
            n,
        )
        runner = asyncio.create_task(core.run())
    else:
        runner = asyncio.create_task(core.run())
        await asyncio.sleep(0.5)
        producing = asyncio.create_task(Producer(n, enqueue).run())
    result = await timed(n, time.perf_counter(), done)
    for task in (producing, runner):
        if task is not None:
            await stop_task(task)
    await pool.close()
    return {**result, "settings": f"worker concurrency {CONCURRENCY}, claims of up to the free slots"}
