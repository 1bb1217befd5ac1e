"""Test harness: a database per test run (from a migrated template), a Kafka topic prefix per run,
an in-process server (API + worker + relay), gRPC clients, and an event collector on the real broker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import pathlib
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paylink.v1 import (
    account_pb2,
    account_pb2_grpc,
    catalog_pb2_grpc,
    common_pb2,
    event_pb2,
    job_pb2,
    job_pb2_grpc,
    link_pb2,
    link_pb2_grpc,
    link_token_pb2,
    link_token_pb2_grpc,
    privacy_pb2_grpc,
    sandbox_pb2_grpc,
)

from service import db, ids, migrate, queue
from service.config import Settings
from tests import secret_scan

LATEST_VERSION = "2021-07-28"


# The tests' own key ring (fresh each run) unless PAYLINK_VAULT_KEYS is set: the development key
# would stop a server subprocess once a test has created a production workspace.
_TEST_VAULT_KEYS = "test1:" + base64.b64encode(os.urandom(32)).decode()


def base_settings() -> Settings:
    if os.environ.get("PAYLINK_VAULT_KEYS"):
        return Settings()
    return Settings(vault_keys=_TEST_VAULT_KEYS, vault_primary_key=None)


def _with_db(url: str, name: str) -> str:
    return re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", url, count=1) if url.count("/") >= 3 else url + "/" + name


async def create_test_database(url: str) -> str:
    """Creates (once) a migrated template named after the migrations' hash, then a fresh copy."""
    digest = hashlib.sha256("".join(sql for _, _, sql in migrate.discover()).encode()).hexdigest()[:10]
    template = f"paylink_tpl_{digest}"
    test_db = f"paylink_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute("SELECT pg_advisory_lock(4242)")
        try:
            if not await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", template):
                await admin.execute(f'CREATE DATABASE "{template}"')
                await migrate.migrate(_with_db(url, template))
            await admin.execute(f'CREATE DATABASE "{test_db}" TEMPLATE "{template}"')
        finally:
            await admin.execute("SELECT pg_advisory_unlock(4242)")
    finally:
        await admin.close()
    return _with_db(url, test_db)


async def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[-1].split("?", maxsplit=1)[0]
    admin = await asyncpg.connect(admin_url)
    try:
        for attempt in range(10):
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:  # an autovacuum worker on it: FORCE cannot end it
                if attempt == 9:
                    raise
                await asyncio.sleep(1.0)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def new_database() -> AsyncIterator[str]:
    """The URL of a fresh database at the newest migration (a copy of the migrated template), on the
    test run's server, dropped after the block: for tests whose database no worker, relay or other
    test may touch (the `fresh_database` fixture of tests/conftest.py, or a wider scope)."""
    admin = base_settings().database_url
    url = await create_test_database(admin)
    try:
        yield url
    finally:
        await drop_database(admin, url)


@contextlib.asynccontextmanager
async def listening(url: str, channel: str) -> AsyncIterator[asyncio.Queue[str]]:
    """The payloads of the NOTIFYs on `channel` (the workers' `queue.NOTIFY_CHANNEL`, the relay's
    `outbox.NOTIFY_CHANNEL`) in the database at `url`, as another process listening there hears them."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    conn = await db.connect(url)
    try:
        await conn.add_listener(channel, lambda *args: heard.put_nowait(args[3]))
        yield heard
    finally:
        await conn.close()


def get_ready(metrics_port: int) -> tuple[int, dict[str, object]]:
    """GET /ready on a server's metrics port: (HTTP status, JSON body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/ready", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def migrations_up_to(folder: pathlib.Path, last: int) -> pathlib.Path:
    """A copy of the migrations numbered `last` and before, in `folder`/up_to_NNNN (for migrate.migrate)."""
    target = folder / f"up_to_{last:04d}"
    target.mkdir(parents=True, exist_ok=True)
    for version, name, _ in migrate.discover():
        if version <= last:
            shutil.copy(migrate.MIGRATIONS / name, target / name)
    return target


@contextlib.asynccontextmanager
async def database_migrated_to(folder: pathlib.Path, last: int) -> AsyncIterator[str]:
    """A new database as an earlier release left it (migrations up to `last` only); its URL. Dropped after."""
    admin = base_settings().database_url
    url = _with_db(admin, f"paylink_mig_{uuid.uuid4().hex[:10]}")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1].split("?")[0]}"')
    finally:
        await conn.close()
    try:
        await migrate.migrate(url, migrations_up_to(folder, last))
        yield url
    finally:
        await drop_database(admin, url)


@dataclasses.dataclass
class Client:
    """gRPC stubs that send the workspace's secret and an api-version."""

    channel: grpc.aio.Channel
    secret: str
    api_version: str | None = LATEST_VERSION

    def __post_init__(self) -> None:
        secret_scan.API_SECRETS.add(self.secret)
        self.tokens = link_token_pb2_grpc.LinkTokenServiceStub(self.channel)
        self.link = link_pb2_grpc.LinkServiceStub(self.channel)
        self.accounts = account_pb2_grpc.AccountServiceStub(self.channel)
        self.jobs = job_pb2_grpc.JobServiceStub(self.channel)
        self.sandbox = sandbox_pb2_grpc.SandboxServiceStub(self.channel)
        self.privacy = privacy_pb2_grpc.PrivacyServiceStub(self.channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.channel)

    def md(self, api_version: str | object | None = ...) -> list[tuple[str, str]]:
        version = self.api_version if api_version is ... else api_version
        out = [("x-api-secret", self.secret)]
        if version:
            out.append(("api-version", str(version)))
        return out

    async def token(
        self, jobs: Sequence[int], *, api_version: str | object | None = ..., **fields: Any
    ) -> link_token_pb2.LinkToken:
        fields.setdefault("org_name", "Acme Bank")
        if "account_id" not in fields:
            fields.setdefault("end_user_id", f"user-{uuid.uuid4().hex[:8]}")
        names = [common_pb2.JobName.ValueType(j) for j in jobs]  # the enum's type (int at run time)
        request = link_token_pb2.CreateLinkTokenRequest(required_jobs=names, **fields)
        return await self.tokens.CreateLinkToken(request, metadata=self.md(api_version))

    async def connect(
        self,
        username: str,
        jobs: Sequence[int],
        *,
        platform_id: str = "sandbox_adp",
        password: str = "pass_good",
        mfa_answer: str | None = None,
        **fields: Any,
    ) -> tuple[link_token_pb2.LinkToken, link_pb2.LinkSession]:
        """Creates a token, starts a session, logs in (and answers MFA when given)."""
        token = await self.token(jobs, **fields)
        session = await self.link.StartSession(
            link_pb2.StartSessionRequest(token=token.token), metadata=self.md()
        )
        session = await self.link.SubmitCredentials(
            link_pb2.SubmitCredentialsRequest(
                session_id=session.id, platform_id=platform_id, username=username, password=password
            ),
            metadata=self.md(),
        )
        if mfa_answer is not None and session.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED:
            session = await self.link.SubmitMfa(
                link_pb2.SubmitMfaRequest(session_id=session.id, answer=mfa_answer), metadata=self.md()
            )
        return token, session

    async def wait_session(self, session_id: str, state: int, timeout: float = 20) -> link_pb2.LinkSession:
        deadline = time.monotonic() + timeout
        while True:
            session = await self.link.GetSession(
                link_pb2.GetSessionRequest(session_id=session_id), metadata=self.md()
            )
            if session.state == state:
                return session
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"session {session_id} is {link_pb2.LinkSessionState.Name(session.state)}"
                )
            await asyncio.sleep(0.05)


@dataclasses.dataclass
class Received:
    topic: str
    key: str
    headers: dict[str, str]
    event: event_pb2.Event
    received_at: float = dataclasses.field(default_factory=time.time)
    kafka_timestamp_ms: int = 0  # the record's CreateTime: when the relay's producer built it


async def stop_consumer(consumer: Any) -> None:
    """`consumer.stop()`, without aiokafka's close race (aio-libs/aiokafka#647, still in 0.14).

    `Fetcher.close()` cancels its fetch tasks and awaits each; a task caught in its retry back-off
    after a failed fetch (a RequestTimedOutError on a loaded broker) re-raises the CancelledError of
    its own cancellation out of `stop()`, which failed a test's teardown on a fresh-clone CI run.
    That CancelledError belongs to the consumer's task, not to the caller: it is swallowed and the
    close is finished (the remaining fetch tasks cancelled, the client closed). A caller that is
    itself being cancelled still gets its CancelledError."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        fetcher = consumer._fetcher
        pending = [
            task for task in (fetcher._pending_tasks if fetcher is not None else ()) if not task.done()
        ]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await consumer._client.close()


class EventLog:
    """Consumes every topic under a prefix from the real broker and keeps what it read."""

    def __init__(self, bootstrap: str, prefix: str, events: Sequence[str] = ()) -> None:
        """`events`: read only these event types' topics (under `prefix`), else every topic under it.
        Naming them spares a metadata refresh of every topic on the broker every 0.5 s (the pattern's
        way of noticing new topics)."""
        self.items: list[Received] = []
        # A record is kept once: when the pattern's metadata refresh adds a topic, the consumer (no
        # group, no committed offsets) is assigned anew and reads every partition from the start
        # again; a record read twice that way is the same record, not a second delivery (a relay
        # that published twice shows as two offsets).
        self._read: set[tuple[str, int, int]] = set()
        self._changed = asyncio.Event()
        # No consumer group: it reads every partition of every matching topic (new topics are
        # noticed by the metadata refresh), and there is no join to wait for nor a group to leave
        # when it stops (leaving timed out on a loaded broker and failed a test's teardown).
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=500,
        )
        self._pattern = "^" + re.escape(prefix) + ".*"
        self._topics = [prefix + event for event in events]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        if self._topics:
            self._consumer.subscribe(topics=self._topics)
        else:
            self._consumer.subscribe(pattern=self._pattern)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await stop_consumer(self._consumer)

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    where = (record.topic, record.partition, record.offset)
                    if where in self._read:
                        continue
                    self._read.add(where)
                    self.items.append(
                        Received(
                            topic=record.topic,
                            key=(record.key or b"").decode(),
                            headers={k: v.decode() for k, v in record.headers},
                            event=event_pb2.Event.FromString(record.value),
                            kafka_timestamp_ms=record.timestamp,
                        )
                    )
            if batch:
                self._changed.set()

    def for_account(self, account_id: str) -> list[Received]:
        return [r for r in self.items if r.event.account_id == account_id]

    async def wait_for(
        self, predicate: Callable[[Received], bool], count: int = 1, timeout: float = 30
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.items if predicate(r)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(found)} of {count} expected events arrived")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def settled(self, account_id: str, timeout: float = 30) -> Received:
        """The link_session.completed event of an account (the latest)."""
        found = await self.wait_for(
            lambda r: r.event.account_id == account_id and r.event.event == "link_session.completed",
            timeout=timeout,
        )
        return found[-1]


JOBS = common_pb2


# --- Helpers for the acceptance tests (errors, polling, linking) --------------------------------

FINAL_JOB_STATUSES = (common_pb2.JOB_STATUS_SUCCESS, common_pb2.JOB_STATUS_ERROR)
JOB_EVENT_NAMES = {
    common_pb2.JOB_NAME_IDENTITY: "identity.added",
    common_pb2.JOB_NAME_EMPLOYMENT: "employment.added",
    common_pb2.JOB_NAME_INCOME: "income.added",
    common_pb2.JOB_NAME_PAYSTUBS: "paystubs.added",
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: "direct_deposit_allocations.added",
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH: "direct_deposit_switch.added",
    common_pb2.JOB_NAME_SHIFTS: "shifts.added",
    common_pb2.JOB_NAME_TAX_FORMS: "tax_forms.added",
    common_pb2.JOB_NAME_DOCUMENTS: "documents.added",
}
DATA_JOBS = [
    common_pb2.JOB_NAME_IDENTITY,
    common_pb2.JOB_NAME_EMPLOYMENT,
    common_pb2.JOB_NAME_INCOME,
    common_pb2.JOB_NAME_PAYSTUBS,
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS,
]
ALL_JOBS = [*DATA_JOBS, common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH]
RECORD_JOBS = [common_pb2.JOB_NAME_SHIFTS, common_pb2.JOB_NAME_TAX_FORMS, common_pb2.JOB_NAME_DOCUMENTS]
TEST_TARGET = common_pb2.AllocationTarget(
    type=common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING,
    routing_number="021000021",
    account_number="123456789012",
    name="Everyday Checking",
)
TEST_ALLOCATION = common_pb2.Allocation(
    type=common_pb2.ALLOCATION_TYPE_AMOUNT, value=25_000, targets=[TEST_TARGET]
)


async def rpc_error(awaitable: Any) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail and returns its error."""
    try:
        await awaitable
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded but an error was expected")


def status_details(exc: grpc.aio.AioRpcError) -> list[Any]:
    status = rpc_status.from_call(exc)
    return list(status.details) if status is not None else []


def violation_fields(exc: grpc.aio.AioRpcError) -> list[str]:
    """Fields named by the BadRequest detail of an error (in order)."""
    fields: list[str] = []
    for detail in status_details(exc):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    for detail in status_details(exc):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_reason(exc: grpc.aio.AioRpcError) -> str:
    info = error_info(exc)
    return info.reason if info is not None else ""


class FetchesValues(Protocol):
    """An asyncpg pool, or the fault tests' Deployment."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...


async def stored_grant(db: FetchesValues, account_id: str) -> bytes:
    """The account's sealed grant, as stored (account_credentials.sealed)."""
    blob = await db.fetchval("SELECT sealed FROM account_credentials WHERE account_id = $1::uuid", account_id)
    assert blob is not None
    return bytes(blob)


async def start_session(client: Client, token: str) -> link_pb2.LinkSession:
    return await client.link.StartSession(link_pb2.StartSessionRequest(token=token), metadata=client.md())


async def wait_job(
    client: Client, job_id: str, *, until: Callable[[job_pb2.Job], bool] | None = None, within: float = 20
) -> job_pb2.Job:
    """Polls GetJob until `until` holds (default: the job has a final status)."""
    check = until or (lambda j: j.status in FINAL_JOB_STATUSES)
    deadline = time.monotonic() + within
    while True:
        job = await client.jobs.GetJob(job_pb2.GetJobRequest(job_id=job_id), metadata=client.md())
        if check(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {common_pb2.JobStatus.Name(job.status)}")
        await asyncio.sleep(0.05)


async def list_all_jobs(client: Client, **filters: Any) -> list[job_pb2.Job]:
    """Every job matching the filters, walking all pages."""
    out: list[job_pb2.Job] = []
    token = ""
    while True:
        page = await client.jobs.ListJobs(
            job_pb2.ListJobsRequest(page_size=100, page_token=token, **filters), metadata=client.md()
        )
        out += page.jobs
        token = page.next_page_token
        if not token:
            return out


async def wait_account(
    client: Client, account_id: str, until: Callable[[account_pb2.Account], bool], within: float = 20
) -> account_pb2.Account:
    deadline = time.monotonic() + within
    while True:
        account = await client.accounts.GetAccount(
            account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
        )
        if until(account):
            return account
        if time.monotonic() > deadline:
            raise AssertionError(f"account {account_id} never reached the expected state: {account}")
        await asyncio.sleep(0.05)


async def link_account(
    client: Client, username: str = "user_good", jobs: Sequence[int] | None = None, **fields: Any
) -> tuple[link_token_pb2.LinkToken, link_pb2.LinkSession]:
    """Connects an account and waits until its session is COMPLETED; returns the token and session."""
    token, session = await client.connect(
        username, jobs if jobs is not None else [common_pb2.JOB_NAME_IDENTITY], **fields
    )
    assert session.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING, link_pb2.LinkSessionState.Name(
        session.state
    )
    done = await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    return token, done


def unique_events(items: list[Received]) -> dict[str, Received]:
    """Received events by event_id (redeliveries collapse)."""
    return {r.event.event_id: r for r in items}


async def wait_event_ids(events: EventLog, event_ids: set[str], within: float = 30) -> None:
    """Waits until every one of `event_ids` has been consumed from Kafka (at least once)."""
    deadline = time.monotonic() + within
    while True:
        missing = event_ids - {r.event.event_id for r in events.items}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} of {len(event_ids)} events never arrived from Kafka")
        await asyncio.sleep(0.05)


# -- Rows written straight into the database (tests and benchmarks that need no RPC) ----------------
# On a connection or pool of the current release: db.connect, db.create_pool or db.server_settings()
# (migration 0174's release guard refuses job writes from any other).


async def insert_accounts(
    conn: db.Executor, n: int, *, platform_id: str = "sandbox_adp", name: str = "tests", tags: str = "{}"
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A workspace and `n` connected accounts on `platform_id` with `tags` (JSON), one statement for
    the accounts: (workspace id, account ids)."""
    workspace, accounts = uuid.uuid4(), [uuid.uuid4() for _ in range(n)]
    await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, $2)", workspace, name)
    await conn.execute(
        "INSERT INTO accounts (id, workspace_id, end_user_id, platform_id, link_token_id, tags)"
        " SELECT a, $2, $3, $4, gen_random_uuid(), $5::jsonb FROM unnest($1::uuid[]) AS a",
        accounts,
        workspace,
        name,
        platform_id,
        tags,
    )
    return workspace, accounts


async def insert_account(
    conn: db.Executor, *, platform_id: str = "sandbox_adp", name: str = "tests"
) -> tuple[uuid.UUID, uuid.UUID]:
    """A workspace and one connected account on `platform_id`: (workspace id, account id)."""
    workspace, accounts = await insert_accounts(conn, 1, platform_id=platform_id, name=name)
    return workspace, accounts[0]


_INSERT_JOBS = f"""
WITH job AS (
  INSERT INTO jobs (id, workspace_id, account_id, batch_id, name, origin, platform_id, params, status, run_at,
                    locked_by, lease_expires_at)
  SELECT gen_random_uuid(), $1, $2, coalesce($3, gen_random_uuid()), $4, $5, $6, $7, $8, coalesce($9, now()),
         CASE WHEN $8 = '{queue.JobStatus.RUNNING.value}' THEN $10 END,
         CASE WHEN $8 = '{queue.JobStatus.RUNNING.value}' THEN now() + $11::interval END
  FROM generate_series(1, $12)
  RETURNING id, run_at, locked_by, lease_expires_at, platform_id, account_id, name, origin, status),
queued AS (
  INSERT INTO job_queue (id, run_at, locked_by, lease_expires_at, platform_id, account_id, name, refresh)
  SELECT id, run_at, locked_by, lease_expires_at, platform_id, account_id, name,
         origin = {common_pb2.JOB_ORIGIN_REFRESH}
  FROM job WHERE status IN {queue.IN_FLIGHT})
SELECT id FROM job
"""


async def insert_jobs(
    conn: db.Executor,
    workspace_id: uuid.UUID,
    account_id: uuid.UUID,
    *,
    count: int = 1,
    status: queue.JobStatus = queue.JobStatus.QUEUED,
    name: int = common_pb2.JOB_NAME_IDENTITY,
    origin: int = common_pb2.JOB_ORIGIN_LINK,
    platform_id: str = "sandbox_adp",
    batch_id: uuid.UUID | None = None,
    run_at: dt.datetime | None = None,
    locked_by: str = "w",
    lease: dt.timedelta = dt.timedelta(minutes=1),
    params: bytes = b"",
) -> list[uuid.UUID]:
    """`count` jobs in one statement, each with its `job_queue` row while not final, as service/queue.py
    writes them (a running one leased by `locked_by` for `lease` from now); their ids. For the rows a
    test or benchmark needs that no RPC makes quickly (many at once, a given status or run_at)."""
    rows = await conn.fetch(
        _INSERT_JOBS,
        workspace_id,
        account_id,
        batch_id,
        name,
        origin,
        platform_id,
        params,
        status.value,
        run_at,
        locked_by,
        lease,
        count,
    )
    return [row["id"] for row in rows]


def new_refresh(
    workspace_id: uuid.UUID,
    account_id: uuid.UUID,
    name: int,
    *,
    platform_id: str = "sandbox_adp",
    request_id: str = "tests",
    job_id: uuid.UUID | None = None,
) -> queue.NewRefresh:
    """A refresh to queue with `queue.enqueue_refreshes` (what CreateJob without a request_id queues)."""
    return queue.NewRefresh(
        job_id=job_id or ids.new_id(),
        batch_id=ids.new_id(),
        workspace_id=workspace_id,
        account_id=account_id,
        platform_id=platform_id,
        name=name,
        params=b"",
        api_version="",
        traceparent="",
        request_id=request_id,
    )


# What a later release's contract migration does to the release guard's floor (migration 0174's
# mechanism; docs/operations.md, The release guard): this release's connections are refused (PL001)
# once the floor is above its newest migration.
_SET_RELEASE_FLOOR = """
CREATE OR REPLACE TRIGGER jobs_release_guard_insert BEFORE INSERT ON jobs
    FOR EACH STATEMENT WHEN (paylink_schema() < {floor})
    EXECUTE FUNCTION jobs_refuse_stale_release('{floor:04d}');
CREATE OR REPLACE TRIGGER jobs_release_guard_update
    BEFORE UPDATE OF status, locked_by, lease_expires_at, run_at ON jobs
    FOR EACH STATEMENT WHEN (paylink_schema() < {floor})
    EXECUTE FUNCTION jobs_refuse_stale_release('{floor:04d}');
"""
RELEASE_FLOOR_OF_0174 = 173  # the floor migration 0174 set: this release is accepted


async def set_release_floor(url: str, floor: int) -> None:
    """Sets the release guard's floor of the database at `url` (use a database of the test's own)."""
    conn = await db.connect(url)
    try:
        await conn.execute(_SET_RELEASE_FLOOR.format(floor=floor))
    finally:
        await conn.close()


def count_firings(*tables: str) -> str:
    """SQL that records each row a write to `tables` sends through their BEFORE INSERT OR UPDATE row
    triggers (the erasure fence is one) in `fence_firings` (tab, op): the fence tests count them."""
    return (
        "CREATE TABLE fence_firings (tab text, op text);\n"
        "CREATE FUNCTION count_fence_firing() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n  INSERT INTO fence_firings VALUES (TG_TABLE_NAME, TG_OP);\n  RETURN NEW;\nEND $$;\n"
    ) + "".join(
        f"CREATE TRIGGER {t}_count_fence BEFORE INSERT OR UPDATE ON {t}"
        " FOR EACH ROW EXECUTE FUNCTION count_fence_firing();\n"
        for t in tables
    )
