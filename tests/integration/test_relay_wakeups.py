"""Who wakes the relay once a unit of work committed events (service/outbox.py, `RelayWake`): the relay
of its own process by a call while that relay leads, without a NOTIFY; the leading relay of another
process by NOTIFY when this process's relay does not lead (it stands by, or there is none). Each
process here runs on a database of its own, its relay polling every 10 minutes: only a wake-up makes
it read the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

from paylink.v1 import event_pb2

from service import metrics, outbox, runtime, uow
from service.config import Settings
from tests.harness import insert_account, listening, new_database

MARKER = "test-marker"


def _settings(settings: Settings, url: str, prefix: str) -> Settings:
    return settings.model_copy(
        update={
            "database_url": url,
            "topic_prefix": f"{settings.topic_prefix}{prefix}",
            "monitoring_scheduler": False,
            "relay_poll_seconds": 600.0,
            "worker_poll_seconds": 600.0,
        }
    )


@contextlib.asynccontextmanager
async def _process(
    settings: Settings, *, relay: bool = True, leads: bool = True
) -> AsyncIterator[runtime.Running]:
    """A process (no API, no worker) on `settings`' database: with a relay that leads (`leads`: the
    first one to start on its database), one that stands by, or none."""
    running = await runtime.start(settings, api=False, worker=False, relay=relay)
    try:
        deadline = time.monotonic() + 30
        while leads and next(iter(metrics.RELAY_LEADER.collect())).samples[0].value != 1:  # leads, listens
            assert time.monotonic() < deadline, "the relay did not start leading"
            await asyncio.sleep(0.01)
        yield running
    finally:
        await running.stop()


async def _emit(app: runtime.Running, n: int = 2, *, flushed: list[bool] | None = None) -> uuid.UUID:
    """Commits `n` events of a new account in one unit of work; returns the account."""
    workspace, account = await insert_account(app.deps.pool)
    async with uow.begin(app.deps) as work:
        for _ in range(n):
            work.emit(workspace, account, outbox.LINK_SESSION_COMPLETED, "2024-01-01", event_pb2.Event())
        if flushed is not None:
            await work.flush()
            flushed.append(True)
            app.deps.relay_wake.leader = None  # the relay stops leading between the flush and COMMIT
    return account


async def _published(app: runtime.Running, account: uuid.UUID, within: float = 30) -> None:
    """Waits until the relay marked every event of `account` published."""
    deadline = time.monotonic() + within
    sql = "SELECT count(*) FROM outbox WHERE account_id = $1 AND published_at IS NULL"
    while await app.deps.pool.fetchval(sql, account):
        assert time.monotonic() < deadline, "no relay published the events"
        await asyncio.sleep(0.05)


async def _heard_before_marker(app: runtime.Running, heard: asyncio.Queue[str]) -> list[str]:
    """What the channel carried before a NOTIFY the test sends now (notifications arrive in commit
    order): the wake-ups committed so far, once the process has none left to send."""
    wake: outbox.RelayWake | None = getattr(app.deps, "relay_wake", None)  # none in the code before
    if wake is not None and wake._notifying is not None:
        await asyncio.gather(wake._notifying, return_exceptions=True)
    await app.deps.pool.execute(f"NOTIFY {outbox.NOTIFY_CHANNEL}, '{MARKER}'")
    before: list[str] = []
    while (payload := await asyncio.wait_for(heard.get(), 30)) != MARKER:
        before.append(payload)
    return before


async def test_events_committed_in_the_leading_relays_process_wake_it_without_a_notify(
    settings: Settings,
) -> None:
    """Fails on the code before: every unit of work with events notified `paylink_outbox` inside its
    INSERT, which makes each such COMMIT wait for the one before it on the notify queue's lock."""
    async with (
        new_database() as url,
        _process(_settings(settings, url, "a.")) as app,
        listening(url, outbox.NOTIFY_CHANNEL) as heard,
    ):
        account = await _emit(app)
        await _published(app, account)  # woken though it polls every 10 minutes
        assert await _heard_before_marker(app, heard) == []


async def test_events_of_a_process_whose_relay_stands_by_wake_the_leader_by_notify(
    settings: Settings,
) -> None:
    """Two processes on one database: the first one's relay leads, the second one's stands by; the
    second's events are published by the first, woken by their NOTIFY."""
    async with (
        new_database() as url,
        _process(_settings(settings, url, "b.")) as leader,
        _process(_settings(settings, url, "b."), leads=False) as standby,
        listening(url, outbox.NOTIFY_CHANNEL) as heard,
    ):
        account = await _emit(standby)
        await _published(leader, account)
        assert "" in await _heard_before_marker(standby, heard)


async def test_events_of_a_process_without_a_relay_notify(settings: Settings) -> None:
    async with (
        new_database() as url,
        _process(_settings(settings, url, "c."), relay=False, leads=False) as app,
        listening(url, outbox.NOTIFY_CHANNEL) as heard,
    ):
        await _emit(app)
        assert "" in await _heard_before_marker(app, heard)


async def test_events_flushed_while_the_relay_led_and_committed_after_notify(settings: Settings) -> None:
    """The relay stopped leading between the events' INSERT (written without a NOTIFY) and COMMIT:
    whichever relay leads now is told by a NOTIFY after the COMMIT."""
    async with (
        new_database() as url,
        _process(_settings(settings, url, "d."), relay=False, leads=False) as app,
        listening(url, outbox.NOTIFY_CHANNEL) as heard,
    ):
        woken: list[int] = []
        app.deps.relay_wake.leader = lambda: woken.append(1)
        flushed: list[bool] = []
        account = await _emit(app, flushed=flushed)
        assert flushed == [True]
        assert woken == []
        assert "" in await _heard_before_marker(app, heard)
        count = "SELECT count(*) FROM outbox WHERE account_id = $1"
        assert await app.deps.pool.fetchval(count, account) == 2  # committed


async def test_a_relay_that_loses_its_connection_stops_leading_for_its_process(settings: Settings) -> None:
    """Its leader lock went with the connection: the process's events notify until it leads again."""
    async with new_database() as url, _process(_settings(settings, url, "e.")) as app:
        await app.deps.pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
            0x72656C6179 & 0xFFFFFFFF,
        )
        deadline = time.monotonic() + 30
        while app.deps.relay_wake.leader is not None:
            assert time.monotonic() < deadline, "the relay still leads for its process"
            await asyncio.sleep(0.01)
        while app.deps.relay_wake.leader is None:  # it leads again (a new connection, after 1 s)
            assert time.monotonic() < deadline, "the relay did not lead again"
            await asyncio.sleep(0.05)
        account = await _emit(app)
        await _published(app, account)
