"""Fixtures: real PostgreSQL and Kafka from `make up` (or PAYLINK_DATABASE_URL / PAYLINK_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from service import auth, logs, runtime
from service.config import Settings
from service.logs import JsonFormatter
from tests.harness import Client, EventLog, base_settings, new_database


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """The database the session's app (api, worker, relay) runs on, shared by most tests."""
    async with new_database() as url:
        yield url


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a database of the test's own, at the newest migration, dropped after it: what no
    worker, relay or other test touches (a backlog stays put, a raised release floor or a new vault
    key stays there). Wider scopes use `tests.harness.new_database` directly."""
    async with new_database() as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return base_settings().model_copy(
        update={
            "database_url": database_url,
            "topic_prefix": f"test{uuid.uuid4().hex[:8]}.",
            "grpc_port": 0,
            "job_retry_base_seconds": 0.05,
            "job_retry_max_seconds": 0.2,
            "sandbox_pending_delay_seconds": 2.0,
            "sandbox_slow_latency_seconds": 0.5,
            "worker_poll_seconds": 0.5,
            "relay_poll_seconds": 0.5,
            "monitoring_tick_seconds": 0.5,
            "shutdown_grace_seconds": 2.0,
            "login_retry_base_seconds": 0.05,
            "login_retry_max_seconds": 0.2,
            "login_lease_seconds": 2.0,
        }
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[runtime.Running]:
    running = await runtime.start(settings)
    yield running
    await running.stop()


@pytest.fixture(scope="session")
async def channel(app: runtime.Running) -> AsyncIterator[grpc.aio.Channel]:
    assert app.api is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.api.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
async def events(settings: Settings) -> AsyncIterator[EventLog]:
    log = EventLog(settings.kafka_bootstrap, settings.topic_prefix)
    await log.start()
    yield log
    await log.stop()


async def new_client(app: runtime.Running, channel: grpc.aio.Channel, *, sandbox: bool = True) -> Client:
    _, secret = await auth.create_workspace(app.deps.pool, f"ws-{uuid.uuid4().hex[:6]}", sandbox=sandbox)
    return Client(channel, secret)


@pytest.fixture
async def client(app: runtime.Running, channel: grpc.aio.Channel) -> Client:
    return await new_client(app, channel)


@pytest.fixture
async def other_client(app: runtime.Running, channel: grpc.aio.Channel) -> Client:
    return await new_client(app, channel)


class _SessionLog(logging.Handler):
    """Every log record of the whole run, formatted as the service writes it (JSON), for the scan."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + "\n" + self.format(record))


SESSION_LOG = _SessionLog()


def pytest_configure(config: pytest.Config) -> None:
    logs.install_redaction()  # as `python -m service` does: the in-process server's records too
    root = logging.getLogger()
    root.addHandler(SESSION_LOG)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `runs_last` (the secrets scan) run after everything else, so they see what the
    whole suite left in the database, the logs and Kafka."""
    last = [item for item in items if item.get_closest_marker("runs_last")]
    items[:] = [item for item in items if not item.get_closest_marker("runs_last")] + last
