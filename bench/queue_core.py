"""paylink's queue core for bench/peers.py: enqueue -> claim -> complete, no platform, no events.

`service.queue` alone (enqueue with its NOTIFY, claim of up to the free slots, complete) driven the
way `service.worker.Worker` drives it: one LISTEN connection, claims of up to the free slots, each
claimed job a task whose slot is free once its outcome is handed over (not once it commits), claims
stopped while more than the completer's backlog bound wait to be written. Completions are written either the way the worker writes outcomes now
(`batched`: whatever has gathered, in one transaction, as service/completer.py does) or one
transaction per job (`per-job`, how outcomes were written before batching).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid

import asyncpg
from paylink.v1 import common_pb2

from service import db, queue
from service.completer import MAX_BACKLOG, MAX_BATCH
from service.queue import Completion, JobStatus
from tests.harness import insert_account, insert_jobs

CONCURRENCY = 64  # PAYLINK_WORKER_CONCURRENCY and PAYLINK_PLATFORM_CONCURRENCY as make bench sets them
PLATFORM = "sandbox_adp"
_PARAMS = common_pb2.JobParams()


class Core:
    def __init__(self, pool: db.Pool, url: str, n: int, batched: bool) -> None:
        self.pool, self.url, self.n, self.batched = pool, url, n, batched
        self.id = f"bench:{uuid.uuid4().hex[:8]}"
        self.done = 0
        self.finished = asyncio.Event()
        self.wake = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()  # held: claimed, outcome not committed
        self.slots = 0  # of them, not handed over yet (as Worker._slots)
        # As Worker: outcomes waiting beyond this stop the claims (the completer's max_backlog).
        self.max_backlog = min(CONCURRENCY, MAX_BACKLOG)
        self.room = asyncio.Event()  # a slot freed or an outcome committed (as Worker._room)
        self._gathered: list[tuple[Completion, asyncio.Future[None]]] = []
        self._ready = asyncio.Event()
        self.batches = 0

    async def _complete(self, job: queue.ClaimedJob) -> None:
        done = Completion(
            job.id, JobStatus.SUCCESS, dt.datetime.now(dt.UTC), outcome=common_pb2.JOB_OUTCOME_SUCCESS
        )
        if self.batched:
            future = asyncio.get_running_loop().create_future()
            self._gathered.append((done, future))
            self._ready.set()
            self._free_slot()  # handed over: the slot is free while the outcome is written
            await future
        else:
            async with self.pool.acquire() as conn, conn.transaction():
                await queue.complete(conn, [done])
            self.batches += 1
        self.done += 1
        if self.done >= self.n:
            self.finished.set()

    async def flusher(self) -> None:
        """One transaction at a time, in hand-over order (the completer writes up to FLUSHERS at once,
        one outcome per account each; here every job is the same account's)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._gathered:
                batch, self._gathered = self._gathered[:MAX_BATCH], self._gathered[MAX_BATCH:]
                async with self.pool.acquire() as conn, conn.transaction():
                    await queue.complete(conn, [c for c, _ in batch])
                self.batches += 1
                for _, future in batch:
                    future.set_result(None)

    def _start(self, job: queue.ClaimedJob) -> None:
        task = asyncio.create_task(self._complete(job))
        self.running.add(task)
        self.slots += 1
        task.add_done_callback(self._finished)

    def _free_slot(self) -> None:
        self.slots -= 1
        self.room.set()
        self.wake.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if not self.batched:
            self.slots -= 1
        self.room.set()
        self.wake.set()

    def _free_slots(self) -> int:
        """As Worker._free_slots: none while more than max_backlog outcomes wait to be written."""
        if len(self.running) - self.slots > self.max_backlog:
            return 0
        return CONCURRENCY - self.slots

    async def run(self) -> None:
        listen = await db.connect(self.url)
        await listen.add_listener(queue.NOTIFY_CHANNEL, lambda *_: self.wake.set())
        flusher = asyncio.create_task(self.flusher())
        lease = dt.timedelta(seconds=30)
        try:
            while not self.finished.is_set():
                self.wake.clear()
                free = self._free_slots()
                claimed = await queue.claim(self.pool, self.id, lease, free, []) if free > 0 else []
                for job in claimed:
                    self._start(job)
                if claimed and len(claimed) == free:
                    self.room.clear()  # as Worker._wait_for_room
                    while self._free_slots() <= 0:
                        await self.room.wait()
                        self.room.clear()
                    continue
                if claimed:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 2.0)
        finally:
            flusher.cancel()
            await listen.close()


async def run(mode: str, n: int, url: str, batched: bool = True) -> dict[str, object]:
    from bench.peers import Producer, stop_task, timed

    pool = await asyncpg.create_pool(
        url,
        min_size=8,
        max_size=8,
        connection_class=db.PooledConnection,
        server_settings=db.server_settings(),
    )
    workspace, account = await insert_account(pool, platform_id=PLATFORM, name="bench")
    batch = uuid.uuid4()

    async def enqueue() -> None:
        async with pool.acquire() as conn:  # what pool.fetchrow does: one statement, its own commit
            await queue.enqueue(
                conn,
                workspace_id=workspace,
                account_id=account,
                platform_id=PLATFORM,
                name=common_pb2.JOB_NAME_IDENTITY,
                origin=common_pb2.JOB_ORIGIN_LINK,
                batch_id=batch,
                api_version="",
                params=_PARAMS,
            )

    core = Core(pool, url, n, batched)

    async def done() -> int:
        return core.done

    producing = None
    if mode == "drain":
        await insert_jobs(  # with their rows in the queue, as queue.enqueue writes them
            pool,
            workspace,
            account,
            count=n,
            platform_id=PLATFORM,
            batch_id=batch,
            params=_PARAMS.SerializeToString(),
        )
        runner = asyncio.create_task(core.run())
    else:
        runner = asyncio.create_task(core.run())
        await asyncio.sleep(0.5)
        producing = asyncio.create_task(Producer(n, enqueue).run())
    result = await timed(n, time.perf_counter(), done, url)
    for task in (producing, runner):
        if task is not None:
            await stop_task(task)
    await pool.close()
    how = "completions batched per transaction" if batched else "one transaction per completion"
    return {
        **result,
        "settings": f"worker concurrency {CONCURRENCY}, {how}",
        "jobs_per_commit": round(core.done / core.batches, 1) if core.batches else 0,
    }
