"""The queue side by side: procrastinate, PgQueuer and paylink's queue core on the same PostgreSQL.

Each measurement runs in a process of its own (uvloop, one event loop, producer and consumer in it)
on a fresh database, with no-op jobs, and prints one JSON line:

- `drain`: the queue is filled first (not timed), then the consumer's time to finish every job;
- `e2e`: a producer enqueues one job at a time at concurrency 16 while the consumer runs; timed
  from the first enqueue to the last job's completion being committed.

paylink's queue core is `service.queue` (enqueue, claim, complete) driven like the worker drives it,
with no platform and no events; see `core()` below.

    python bench/peers.py {procrastinate|pgqueuer|paylink|paylink-per-job} {drain|e2e} JOBS ADMIN_DATABASE_URL

`make bench` (bench/run.py `bench_peers`) runs --peer-runs rounds of each mode, the queues interleaved
within a round (paylink, PgQueuer, procrastinate, paylink, ...) so that the host's drift hits them
alike, and sums them up with `summarize`: each queue's median run, and paylink's median ratio to the
faster peer of each round.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import statistics
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import uvloop

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated")]

PRODUCERS = 16  # producer concurrency in e2e mode, one job per enqueue
CAP_SECONDS = 20.0  # a slow queue is timed on what it finished by then


def summarize(
    queues: Sequence[str], rounds: Sequence[Mapping[str, Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Interleaved rounds (each: one run per queue, back to back) summed up per queue: its median run,
    with every round's jobs/s; and for paylink's queue core, each round's ratio to the faster peer of
    that round and their median (what the target is judged on: drift between rounds hits every queue
    of a round alike, so a ratio within a round is steadier than a ratio of two medians)."""
    out = []
    for queue in queues:
        runs = [r[queue] for r in rounds]
        median_run = dict(sorted(runs, key=lambda x: float(x["jobs_per_s"]))[len(runs) // 2])
        median_run["runs"] = [round(float(x["jobs_per_s"])) for x in runs]
        if queue == "paylink" and len(queues) > 1:
            ratios, faster = [], []
            for r in rounds:
                peer = max((q for q in queues if q != "paylink"), key=lambda q: float(r[q]["jobs_per_s"]))
                ratios.append(float(r["paylink"]["jobs_per_s"]) / float(r[peer]["jobs_per_s"]))
                faster.append(peer)
            median_run["vs_faster_peer"] = {
                "ratios": [round(x, 3) for x in ratios],
                "peers": faster,
                "median": round(statistics.median(ratios), 3),
            }
        out.append(median_run)
    return out


def with_db(url: str, name: str) -> str:
    return re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", url, count=1)


class Producer:
    """PRODUCERS tasks enqueuing one job at a time until `n` are enqueued (or it is cancelled)."""

    def __init__(self, n: int, enqueue: Callable[[], Awaitable[object]]) -> None:
        self.n, self.enqueue, self.enqueued = n, enqueue, 0
        self._left = n

    async def _one(self) -> None:
        while self._left > 0:
            self._left -= 1
            await self.enqueue()
            self.enqueued += 1

    async def run(self) -> None:
        await asyncio.gather(*(self._one() for _ in range(PRODUCERS)))


def postgres_cpu_seconds(url: str) -> float:
    """CPU seconds used so far by the PostgreSQL cluster `url` names (its postmaster and backends)."""
    from bench.common import cpu_seconds_by_component

    pg = cpu_seconds_by_component(pg_port=urllib.parse.urlsplit(url).port or 5432)
    return sum(v for k, v in pg.items() if k.startswith("PostgreSQL"))


async def timed(n: int, start: float, done: Callable[[], Awaitable[int]], url: str) -> dict[str, object]:
    """Waits until `n` jobs are done or CAP_SECONDS passed; the rate is what was done by then, with
    the CPU the client and PostgreSQL spent per job meanwhile (steadier than jobs/s on a busy host)."""
    pg = postgres_cpu_seconds(url)
    client = time.process_time()  # this process: the queue's client (producer and consumer)
    while True:
        count = await done()
        now = time.perf_counter()
        if count >= n or now - start > CAP_SECONDS:
            client_after = time.process_time()  # before reading /proc, which is not the queue's
            pg_after = postgres_cpu_seconds(url)
            per_job = 1000 / max(count, 1)
            return {
                "jobs": count,
                "seconds": now - start,
                "capped": count < n,
                "cpu_ms_per_job": {
                    "client": round((client_after - client) * per_job, 4),
                    "postgres": round((pg_after - pg) * per_job, 4),
                },
            }
        await asyncio.sleep(0.02)


async def stop_task(task: asyncio.Task[object]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# -- procrastinate --------------------------------------------------------------------------------


async def procrastinate(mode: str, n: int, url: str, concurrency: int = 16) -> dict[str, object]:
    import procrastinate as p

    # The pool is sized for the producers, the worker's jobs and its LISTEN connection (psycopg_pool's
    # default of 4 connections starves them).
    connector = p.PsycopgConnector(
        conninfo=url.replace("postgresql://", "postgres://"), min_size=4, max_size=PRODUCERS + concurrency + 4
    )
    app = p.App(connector=connector)

    @app.task(name="noop")  # type: ignore[untyped-decorator]  # the bench extra: not followed (pyproject)
    async def noop() -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        conn = await asyncpg.connect(url)

        async def done() -> int:
            return int(
                await conn.fetchval("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
            )

        producer = None
        if mode == "drain":
            for i in range(0, n, 1000):
                await noop.batch_defer_async(*[{} for _ in range(min(1000, n - i))])
        worker = asyncio.create_task(
            app.run_worker_async(concurrency=concurrency, wait=mode != "drain", install_signal_handlers=False)
        )
        if mode != "drain":
            await asyncio.sleep(0.5)
            feeder = Producer(n, noop.defer_async)
            producer = asyncio.create_task(feeder.run())
        result = await timed(n, time.perf_counter(), done, url)
        for task in (worker, producer):
            if task is not None:
                await stop_task(task)
        await conn.close()
    return {**result, "settings": f"worker concurrency {concurrency}"}


# -- PgQueuer -----------------------------------------------------------------------------------------


async def pgqueuer(mode: str, n: int, url: str, batch: int = 100) -> dict[str, object]:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode
    from pgqueuer.models import Job

    setup = await asyncpg.connect(url)
    await Queries(AsyncpgDriver(setup)).install()
    queries = Queries(AsyncpgDriver(await asyncpg.connect(url)))
    qm = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(url))))

    @qm.entrypoint("noop")  # type: ignore[untyped-decorator]  # the bench extra: not followed (pyproject)
    async def noop(job: Job) -> None:
        return None

    pool = await asyncpg.create_pool(url, min_size=PRODUCERS, max_size=PRODUCERS)
    producer_queries = Queries.from_asyncpg_pool(pool)
    producer = Producer(n, lambda: producer_queries.enqueue("noop", None))

    async def done() -> int:
        left = int(await setup.fetchval("SELECT count(*) FROM pgqueuer"))
        return (n if mode == "drain" else producer.enqueued) - left

    producing = None
    if mode == "drain":
        for i in range(0, n, 1000):
            k = min(1000, n - i)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        runner = asyncio.create_task(qm.run(batch_size=batch, mode=QueueExecutionMode.drain))
    else:
        runner = asyncio.create_task(qm.run(batch_size=batch))
        await asyncio.sleep(0.5)
        producing = asyncio.create_task(producer.run())
    result = await timed(n, time.perf_counter(), done, url)
    qm.shutdown.set()
    for task in (producing, runner):
        if task is not None:
            await stop_task(task)
    await pool.close()
    await setup.close()
    return {**result, "settings": f"batch size {batch}"}


# -- paylink's queue core -------------------------------------------------------------------------


async def paylink(mode: str, n: int, url: str) -> dict[str, object]:
    from bench import queue_core

    return await queue_core.run(mode, n, url, batched=True)


async def paylink_per_job(mode: str, n: int, url: str) -> dict[str, object]:
    from bench import queue_core

    return await queue_core.run(mode, n, url, batched=False)


async def main() -> None:
    which, mode, n, admin_url = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if which.startswith("paylink"):
        from tests.harness import create_test_database

        url = await create_test_database(admin_url)
    else:
        url = with_db(admin_url, f"bench_peer_{uuid.uuid4().hex[:8]}")
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
        await admin.close()
    try:
        run = {
            "procrastinate": procrastinate,
            "pgqueuer": pgqueuer,
            "paylink": paylink,
            "paylink-per-job": paylink_per_job,
        }[which]
        result = await run(mode, n, url)
    finally:
        from tests.harness import drop_database  # retries while an autovacuum worker is on it

        await drop_database(admin_url, url)
    result["jobs_per_s"] = result["jobs"] / result["seconds"]  # type: ignore[operator]
    print(json.dumps({"queue": which, "mode": mode, **result}), flush=True)


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
