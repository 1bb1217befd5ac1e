"""The unit of work: one transaction, and the events it produces, committed together.

    async with uow.begin(deps) as work:
        ... change rows with work.conn ...
        work.emit(account, outbox.ACCOUNT_ADDED, api_version, event)

Events are collected as the change goes and written to the outbox (one `Events.flush` per account:
one sequence reservation and one INSERT) just before COMMIT. A rolled-back change leaves no event,
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

    def __init__(self, deps: Deps, conn: db.Conn) -> None:
        self.deps = deps
        self.conn = conn
        self._events: dict[uuid.UUID, outbox.Events] = {}

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
        locked = [e for e in self._events.values() if e.pending and e.locked_sequence is not None]
        if len(locked) > 1:
            await outbox.flush_locked(self.conn, locked)
        for events in self._events.values():
            await events.flush(self.conn)


@contextlib.asynccontextmanager
async def begin(deps: Deps) -> AsyncIterator[UnitOfWork]:
    """A pooled connection, a transaction and a unit of work; events written, then COMMIT."""
    async with deps.pool.acquire() as conn, conn.transaction():
        work = UnitOfWork(deps, conn)
        yield work
        await work.flush()


@contextlib.asynccontextmanager
async def within(deps: Deps, conn: db.Conn) -> AsyncIterator[UnitOfWork]:
    """A unit of work in a transaction (or savepoint) on a connection the caller holds."""
    async with conn.transaction():
        work = UnitOfWork(deps, conn)
        yield work
        await work.flush()
