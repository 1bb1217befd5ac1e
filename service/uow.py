"""The unit of work: one transaction, and the events it produces, committed together.

    async with uow.begin(deps) as work:
        ... change rows with work.conn ...
        work.emit(account, outbox.ACCOUNT_ADDED, api_version, event)

Events are collected as the change goes and written to the outbox (one `Events.flush` per account:
one sequence reservation and one INSERT) just before COMMIT. A unit of work of `begin` wakes its
process's relay by a call after COMMIT while that relay leads (`outbox.RelayWake`), else its events'
statement notifies the relay at commit. A rolled-back change leaves no event,
and a committed change always has its events: that is the outbox's guarantee, and this is the only
way to emit an event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator

from paylink.v1 import event_pb2

from service import db, outbox
from service.deps import Deps


class UnitOfWork:
    """A connection inside a transaction, plus the events the transaction will publish."""

    def __init__(self, deps: Deps, conn: db.Conn, *, commits: bool = False) -> None:
        """`commits`: the unit of work commits its transaction itself (`begin`) and can wake the
        process's relay after COMMIT; else its events' statement notifies."""
        self.deps = deps
        self.conn = conn
        self._events: dict[uuid.UUID, outbox.Events] = {}
        self._commits = commits
        self.wakes_relay = False  # events were written without a NOTIFY: wake the relay after COMMIT

    def account_locked(
        self, workspace_id: uuid.UUID, account_id: uuid.UUID, sequence: int, tags: dict[str, str]
    ) -> None:
        """Declares that this transaction holds the account's sequence row locked (with the account
        row: `queue.lock_for_outcomes`) and read its last event sequence and tags: its events then go
        in without a separate sequence reservation."""
        events = self._for(workspace_id, account_id)
        if not events.pending:
            events.locked_sequence = sequence
            events.tags = tags

    def emit(
        self,
        workspace_id: uuid.UUID,
        account_id: uuid.UUID,
        name: str,
        api_version: str,
        payload: event_pb2.Event,
        at: dt.datetime | None = None,
    ) -> event_pb2.Event:
        """Adds one event (an Event with only its oneof payload set, built for this call: the outbox
        keeps it) to be written at commit."""
        return self._for(workspace_id, account_id).add(name, api_version, payload, at)

    def emit_without_account(
        self,
        workspace_id: uuid.UUID,
        key_id: uuid.UUID,
        name: str,
        api_version: str,
        payload: event_pb2.Event,
        at: dt.datetime | None = None,
    ) -> event_pb2.Event:
        """An event about something that has no account (keyed by `key_id`, e.g. a session id)."""
        return self._for(workspace_id, key_id, without_account=True).add(name, api_version, payload, at)

    def _for(
        self, workspace_id: uuid.UUID, account_id: uuid.UUID, *, without_account: bool = False
    ) -> outbox.Events:
        events = self._events.get(account_id)
        if events is None:
            events = outbox.Events(
                topic_prefix=self.deps.settings.topic_prefix,
                workspace_id=workspace_id,
                account_id=account_id,
                without_account=without_account,
            )
            self._events[account_id] = events
        return events

    @property
    def has_events(self) -> bool:
        return any(events.pending for events in self._events.values())

    async def flush(self) -> None:
        """Writes the collected events now (still inside the transaction): those of accounts whose
        rows it holds locked in one statement, the others one account at a time."""
        if not self.has_events:
            return
        notify = not (self._commits and self.deps.relay_wake.leader is not None)
        self.wakes_relay = self.wakes_relay or not notify
        locked = [e for e in self._events.values() if e.pending and e.locked_sequence is not None]
        if len(locked) > 1:
            await outbox.flush_locked(self.conn, locked, notify=notify)
        for events in self._events.values():
            await events.flush(self.conn, notify=notify)


@contextlib.asynccontextmanager
async def begin(deps: Deps, *, settings: str = "") -> AsyncIterator[UnitOfWork]:
    """A pooled connection, a transaction and a unit of work; events written, then COMMIT.
    `settings`: `SET LOCAL` statements sent with the BEGIN, in its round trip (they end with the
    transaction; job_outcomes.apply_many's plan settings)."""
    async with deps.pool.acquire() as conn:
        transaction = _begun(conn, settings) if settings else conn.transaction()
        async with transaction:
            work = UnitOfWork(deps, conn, commits=True)
            yield work
            await work.flush()
        if work.wakes_relay:
            deps.relay_wake.committed(deps.pool)


@contextlib.asynccontextmanager
async def _begun(conn: db.Conn, settings: str) -> AsyncIterator[None]:
    """A transaction begun together with `settings`: one simple-protocol query, one round trip
    (asyncpg's `transaction()` sends its BEGIN alone). Rolled back on any exception; a COMMIT that
    PostgreSQL answers with ROLLBACK (a statement failed and was caught) raises, as nothing was written."""
    await conn.execute(f"BEGIN; {settings}")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # a lost connection: the pool closes it
            await conn.execute("ROLLBACK")
        raise
    if await conn.execute("COMMIT") != "COMMIT":
        raise RolledBack("the transaction was rolled back: a statement in it failed")


class RolledBack(Exception):
    """COMMIT found the transaction failed (PostgreSQL answered ROLLBACK): nothing was written."""


@contextlib.asynccontextmanager
async def within(deps: Deps, conn: db.Conn) -> AsyncIterator[UnitOfWork]:
    """A unit of work in a transaction (or savepoint) on a connection the caller holds."""
    async with conn.transaction():
        work = UnitOfWork(deps, conn)
        yield work
        await work.flush()
