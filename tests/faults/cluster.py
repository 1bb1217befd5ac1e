"""Fault-test harness: a private PostgreSQL + Kafka stack that the tests may kill, paylink as real
processes (`python -m service api|worker|relay|serve`), and exact counts from SQL and from Kafka.

The stack is `scripts/stack.sh` with PAYLINK_STACK_DIR=.stack/faults and its own ports, so the
default stack (25432/29092) that other test runs use is never touched.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import glob
import os
import random
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from paylink.v1 import common_pb2, event_pb2

from service import auth, db
from tests import secret_scan
from tests.harness import Client, EventLog, Received, stop_consumer

ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = ROOT / "scripts" / "stack.sh"
STACK_DIR = ROOT / ".stack" / "faults"
# Ports below Linux's ephemeral range (32768-60999): while a server is down, clients retrying to
# connect to a port inside that range can be handed that very port as their own source port (a TCP
# self-connect), and the server's restart then fails with "Address already in use".
PG_PORT = int(os.environ.get("PAYLINK_FAULT_PG_PORT", "25532"))
KAFKA_PORT = int(os.environ.get("PAYLINK_FAULT_KAFKA_PORT", "29192"))
KAFKA_CONTROLLER_PORT = KAFKA_PORT + 1
ADMIN_URL = f"postgresql://paylink:paylink@127.0.0.1:{PG_PORT}/paylink"
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"

# Settings every paylink process of a fault test starts with (PAYLINK_ prefix added): short leases
# and polls so that rescue and recovery take seconds, no rate limits (the tests make load).
PROCESS_DEFAULTS: dict[str, object] = {
    "WORKER_LEASE_SECONDS": 3,
    "WORKER_POLL_SECONDS": 0.5,
    "RELAY_POLL_SECONDS": 0.5,
    "JOB_RETRY_BASE_SECONDS": 0.1,
    "JOB_RETRY_MAX_SECONDS": 0.5,
    "SHUTDOWN_GRACE_SECONDS": 5,
    "HEALTH_CHECK_SECONDS": 1,
    "RATE_LINK_TOKENS_PER_MINUTE": 0,
    "RATE_LOGINS_PER_MINUTE": 0,
    "RATE_CREATE_JOBS_PER_MINUTE": 0,
    "DATABASE_POOL_SIZE": 8,
    "SANDBOX_LATENCY_SECONDS": 0,
    "LOG_LEVEL": "INFO",
}


def stack_env() -> dict[str, str]:
    """The environment for scripts/stack.sh: the faults stack, managed by the script itself."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PAYLINK_DATABASE_URL", "PAYLINK_KAFKA_BOOTSTRAP")
    }
    env.update(
        PAYLINK_STACK_DIR=str(STACK_DIR),
        PAYLINK_PG_PORT=str(PG_PORT),
        PAYLINK_KAFKA_PORT=str(KAFKA_PORT),
        PAYLINK_KAFKA_CONTROLLER_PORT=str(KAFKA_CONTROLLER_PORT),
    )
    return env


def free_port() -> int:
    """A free port below the ephemeral range (see PG_PORT), so an API restart can bind it again."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.1
) -> float:
    """Polls `check` until it is true; returns the seconds it took. Fails after `within` seconds."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within:.0f} s waiting for: {what}")
        await asyncio.sleep(interval)


def _pg_ctl() -> str:
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4].split(".")[0])
    )
    if not candidates:
        raise RuntimeError("pg_ctl not found")
    return candidates[-1]


async def run_stack(env: dict[str, str], *args: str, check: bool = True) -> str:
    """`scripts/stack.sh args` in `env` (the fault stack's, or an extra stack's of tests/faults/fleet.py):
    its output; with `check`, an error with the tail of its stderr when it fails."""
    process = await asyncio.create_subprocess_exec(
        str(STACK_SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(process.communicate(), 400)
    if check and process.returncode != 0:
        raise RuntimeError(
            f"scripts/stack.sh {' '.join(args)} exited {process.returncode}:\n{err.decode()[-4000:]}"
        )
    return out.decode()


class FaultStack:
    """The private PostgreSQL + Kafka of the fault tests, with ways to stop and start each one."""

    admin_url = ADMIN_URL
    bootstrap = BOOTSTRAP

    def __init__(self) -> None:
        self.pg_data = ""

    async def run(self, command: str, *, check: bool = True) -> str:
        return await run_stack(stack_env(), command, check=check)

    async def up(self) -> None:
        """Starts whatever is down and waits until both answer (idempotent)."""
        await self.run("up")
        status = await self.run("status")
        for line in status.splitlines():
            if line.startswith("postgres:") and " data " in line:
                self.pg_data = line.rsplit(" data ", 1)[1].strip()
        assert self.pg_data, status

    async def down(self) -> None:
        await self.run("down")

    def kafka_pid(self) -> int:
        return int((STACK_DIR / "kafka" / "kafka.pid").read_text().strip())

    async def stop_kafka(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stops only the broker (SIGTERM: controlled shutdown) and waits until its process is gone."""
        pid = self.kafka_pid()
        os.kill(pid, sig)

        async def gone() -> bool:
            return not pid_alive(pid)

        await wait_until(gone, 90, "the Kafka broker to exit", interval=0.2)

    async def _pg_ctl(self, *args: str) -> None:
        command = [_pg_ctl(), "-D", self.pg_data, *args]
        if os.geteuid() == 0:  # PostgreSQL runs as the postgres OS user (see scripts/stack.sh)
            command = ["runuser", "-u", "postgres", "--", *command]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} exited {process.returncode}: {out.decode()[-2000:]}")

    async def stop_postgres(self) -> None:
        """`pg_ctl stop -m fast`: every session is terminated, then the server exits."""
        await self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")


class Proc:
    """One `python -m service ROLE` process; its JSON log goes to a file."""

    def __init__(self, role: str, env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.role = role
        self.env = env
        self.log_path = log_path
        self.cwd = cwd  # the source tree it runs (another release's, in test_previous_release.py)
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

    async def start(self, within: float = 60, *, wait_ready: bool = True) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        secret_scan.PROCESS_LOG_FILES.append(self.log_path)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.role} {time.strftime('%H:%M:%S')}\n".encode())
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service",
                self.role,
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        self.started_at = time.monotonic()
        stdout = self.process.stdout
        assert stdout is not None

        async def ready() -> None:
            while True:
                line = await stdout.readline()
                if not line:
                    code = await self.process.wait()  # type: ignore[union-attr]
                    raise RuntimeError(f"{self.role} exited {code} before serving:\n{self.tail()}")
                if b"paylink serving" in line:
                    return

        if wait_ready:
            await asyncio.wait_for(ready(), within)
        self._drain = asyncio.create_task(self._drain_stdout(stdout))
        return self

    async def _drain_stdout(self, stdout: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while await stdout.read(65536):
                pass

    def send(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, within: float = 30) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 30) -> int:
        self.send(sig)
        return await self.wait(within)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Deployment:
    """One test's paylink: its own database (from the migrated template), topic prefix and API port,
    plus an asyncpg pool, a gRPC channel and a Kafka consumer for counting."""

    def __init__(self, stack: FaultStack, database_url: str, log_dir: Path) -> None:
        self.stack = stack
        self.database_url = database_url
        self.log_dir = log_dir
        shutil.rmtree(log_dir, ignore_errors=True)  # logs of this run only
        self.prefix = f"faults{uuid.uuid4().hex[:8]}."
        self.port = free_port()
        self.procs: list[Proc] = []
        self.pool: asyncpg.Pool[asyncpg.Record] | None = None
        self.channel: grpc.aio.Channel | None = None
        self.events = EventLog(stack.bootstrap, self.prefix)

    def env(self, **settings: object) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLINK_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "generated")])
        values = {
            **PROCESS_DEFAULTS,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP": self.stack.bootstrap,
            "TOPIC_PREFIX": self.prefix,
            "GRPC_PORT": self.port,
            **{k.upper(): v for k, v in settings.items()},
        }
        env.update({f"PAYLINK_{k}": str(v) for k, v in values.items()})
        return env

    async def spawn(self, role: str, *, wait_ready: bool = True, **settings: object) -> Proc:
        """Starts `python -m service ROLE` and (by default) waits for 'paylink serving'."""
        index = len(self.procs)
        proc = Proc(role, self.env(**settings), self.log_dir / f"{index:02d}-{role}.log")
        self.procs.append(proc)
        return await proc.start(wait_ready=wait_ready)

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.database_url, min_size=1, max_size=4, server_settings=db.server_settings()
        )
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        await self.events.start()

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await proc.wait(10)
        with contextlib.suppress(Exception):
            await self.events.stop()
        if self.channel is not None:
            await self.channel.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 10)

    def logs(self) -> str:
        return "\n".join(f"=== {p.log_path.name}\n{p.tail(25)}" for p in self.procs)

    async def new_client(self) -> Client:
        assert self.pool is not None and self.channel is not None
        _, secret = await auth.create_workspace(self.pool, f"faults-{uuid.uuid4().hex[:6]}")
        return Client(self.channel, secret)

    # -- counting ----------------------------------------------------------------------------

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        assert self.pool is not None
        return list(await self.pool.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        assert self.pool is not None
        return await self.pool.fetchval(sql, *args)

    async def job_statuses(self) -> collections.Counter[str]:
        rows = await self.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        return collections.Counter({r["status"]: r["n"] for r in rows})

    async def jobs(self) -> list[asyncpg.Record]:
        return await self.fetch(
            "SELECT id, account_id, batch_id, name, platform_id, status, outcome, error_type, error_code,"
            " attempts, locked_by, created_at, completed_at FROM jobs ORDER BY created_at, id"
        )

    async def unpublished(self) -> int:
        return int(await self.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))

    async def outbox(self) -> list[event_pb2.Event]:
        rows = await self.fetch("SELECT payload FROM outbox ORDER BY id")
        return [event_pb2.Event.FromString(bytes(r["payload"])) for r in rows]

    async def wait_all_jobs_final(self, count: int, within: float) -> float:
        async def done() -> bool:
            statuses = await self.job_statuses()
            return sum(statuses.values()) == count and statuses["success"] + statuses["error"] == count

        return await wait_until(done, within, f"all {count} jobs final ({await self.job_statuses()})")

    async def wait_outbox_published(self, within: float) -> float:
        async def flushed() -> bool:
            return await self.unpublished() == 0

        return await wait_until(flushed, within, "every outbox row published")

    async def wait_consumed(self, event_ids: set[str], within: float) -> float:
        async def arrived() -> bool:
            return not event_ids - {r.event.event_id for r in self.events.items}

        try:
            return await wait_until(arrived, within, "every event consumed from Kafka")
        except AssertionError:
            missing = event_ids - {r.event.event_id for r in self.events.items}
            raise AssertionError(f"{len(missing)} of {len(event_ids)} events never arrived") from None


# -- checks ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def deployment_on(
    stack: FaultStack, url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Deployment]:
    """The Deployment of the test `request` runs, on the database `url` of `stack` (the FaultStack,
    or an extra stack of tests/faults/fleet.py), opened; closed after the test, printing its processes'
    logs first when the test failed. The database stays: dropping it is the caller's."""
    dep = Deployment(stack, url, STACK_DIR / "logs" / "tests" / request.node.name)
    await dep.open()
    try:
        yield dep
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"\nprocess logs of {request.node.name}:\n{dep.logs()}")
        await dep.close()


def outcome_event_ids(events: list[event_pb2.Event]) -> dict[tuple[str, int], set[str]]:
    """(job_id, job name) -> event_ids of the job's final-outcome events (PENDING ones ignored)."""
    out: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    for event in events:
        if event.WhichOneof("payload") == "job" and event.job.outcome != common_pb2.JOB_OUTCOME_PENDING:
            out[(event.job.job_id, event.job.name)].add(event.event_id)
    return out


def assert_one_outcome_per_job(jobs: list[asyncpg.Record], events: list[event_pb2.Event]) -> None:
    outcomes = outcome_event_ids(events)
    wrong = {
        str(job["id"]): len(outcomes.get((str(job["id"]), job["name"]), ()))
        for job in jobs
        if len(outcomes.get((str(job["id"]), job["name"]), ())) != 1
    }
    assert not wrong, f"jobs without exactly one outcome event: {list(wrong.items())[:10]}"
    known = {str(job["id"]) for job in jobs}
    assert {job_id for job_id, _ in outcomes} <= known


def event_key(event: event_pb2.Event) -> str:
    """The Kafka key (and outbox key) of an event: its account, or for a Link session that failed
    before any account existed, the session (docs/events.md)."""
    return event.account_id or event.link_session_failed.link_session_id


def assert_contiguous_sequences(events: list[event_pb2.Event]) -> None:
    by_account: dict[str, list[int]] = collections.defaultdict(list)
    for event in events:
        by_account[event_key(event)].append(event.sequence)
    for account, sequences in by_account.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), (account, sorted(sequences))


@dataclasses.dataclass
class Delivery:
    consumed: int  # messages read from Kafka, redeliveries included
    distinct: int  # distinct event_ids
    redelivered: int  # event_ids read more than once
    accounts: int


def assert_delivery(consumed: list[Received], expected: list[event_pb2.Event]) -> Delivery:
    """Exactly the outbox's events arrived (by event_id), redeliveries are byte-identical, each
    account's sequences are 1..n, and within a topic-partition (one account's key) they arrive in
    increasing order."""
    first: dict[str, Received] = {}
    stream: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    counts: collections.Counter[str] = collections.Counter()
    for received in consumed:
        event = received.event
        counts[event.event_id] += 1
        seen = first.get(event.event_id)
        if seen is not None:
            assert seen.event == event and seen.topic == received.topic, (
                f"redelivery differs: {event.event_id}"
            )
            continue
        first[event.event_id] = received
        assert received.key == event_key(event) and received.headers["event-id"] == event.event_id
        stream[(received.topic, received.key)].append(event.sequence)
    expected_ids = {e.event_id for e in expected}
    missing = expected_ids - first.keys()
    extra = first.keys() - expected_ids
    assert not missing, f"{len(missing)} of {len(expected_ids)} events never arrived"
    assert not extra, f"{len(extra)} events arrived that the outbox does not hold"
    for (topic, account), sequences in stream.items():
        assert sequences == sorted(sequences), f"{topic} {account} out of order: {sequences}"
    assert_contiguous_sequences([r.event for r in first.values()])
    return Delivery(
        consumed=len(consumed),
        distinct=len(first),
        redelivered=sum(1 for n in counts.values() if n > 1),
        accounts=len({e.account_id for e in expected if e.account_id}),
    )


async def read_log(bootstrap: str, prefix: str) -> list[Received]:
    """Every message under `prefix`, read from offset 0 to the end of each partition without a
    consumer group: exactly what the broker holds, so redeliveries are counted exactly."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
    finally:
        await client.close()
    topics = sorted(t for t in cluster.topics() if t.startswith(prefix))
    partitions = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[Received] = []
        remaining = {tp for tp in partitions if end[tp] > 0}
        deadline = time.monotonic() + 60
        while remaining:
            assert time.monotonic() < deadline, f"could not read {len(remaining)} partitions to their end"
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < end[tp]:
                        out.append(
                            Received(
                                topic=record.topic,
                                key=(record.key or b"").decode(),
                                headers={k: v.decode() for k, v in record.headers},
                                event=event_pb2.Event.FromString(record.value),
                            )
                        )
                if records and records[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
        return out
    finally:
        await stop_consumer(consumer)


async def connect_many(
    client: Client, count: int, jobs: Sequence[int], *, platform_id: str = "sandbox_adp", parallel: int = 8
) -> list[str]:
    """Links `count` accounts (user_good+N) in parallel; returns their session ids."""
    semaphore = asyncio.Semaphore(parallel)
    tag = uuid.uuid4().hex[:6]

    async def one(n: int) -> str:
        async with semaphore:
            _, session = await client.connect(f"user_good+{tag}{n}", jobs, platform_id=platform_id)
            return str(session.id)

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def queued_sessions(dep: Deployment, count: int, jobs: Sequence[int]) -> list[str]:
    """The opening of the tests that start their workers themselves: an API and a relay, no worker,
    `count` accounts linked with `jobs` (connect_many), all of their jobs waiting `queued`; returns
    the session ids."""
    await dep.spawn("api")
    await dep.spawn("relay")
    sessions = await connect_many(await dep.new_client(), count, jobs)
    assert (await dep.job_statuses())["queued"] == count * len(jobs)  # no worker yet: everything waits
    return sessions


_BLOCKER = """
INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload)
VALUES (gen_random_uuid(), 'blocker', 'blocker', $1, $2, $3, ''::bytea)
"""


async def hold_next_event_sequences(dep: Deployment) -> dict[str, asyncpg.Connection[asyncpg.Record]]:
    """Per account (by id), an open transaction holding an uncommitted outbox row at the account's next
    event sequence: a transaction writing that account's events stops at its outbox INSERT until the
    connection is closed (which rolls the row back). The caller closes them."""
    blockers: dict[str, asyncpg.Connection[asyncpg.Record]] = {}
    try:
        for account in await dep.fetch(
            "SELECT a.id, a.workspace_id, s.sequence AS event_sequence"
            " FROM accounts a JOIN account_event_sequences s ON s.account_id = a.id"
        ):
            conn = await asyncpg.connect(dep.database_url, server_settings=db.server_settings())
            blockers[str(account["id"])] = conn
            await conn.execute("BEGIN")
            await conn.execute(
                _BLOCKER, account["workspace_id"], account["id"], account["event_sequence"] + 1
            )
    except BaseException:
        for conn in blockers.values():
            await conn.close()
        raise
    return blockers
