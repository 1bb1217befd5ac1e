"""The event outbox: events are written in the same transaction as the change they describe.

Code does not call this module to emit an event: it adds the event to its unit of work
(`service/uow.py`), which writes each account's events here, with one `Events.flush`, just before
it commits. `flush` takes the lock of the account's sequence row (`account_event_sequences`, this
module's table: migration 0178) while it hands out the next per-account sequence numbers, and holds
it until COMMIT, so events of one account get increasing sequences and increasing outbox ids in
commit order — the relay publishes by id and per-account order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable

from paylink.v1 import common_pb2, event_pb2

from service import db, ids, timeutil, tracing

log = logging.getLogger("paylink.outbox")

NOTIFY_CHANNEL = "paylink_outbox"

ACCOUNT_ADDED = "account.added"
MONITORING_STATUS_UPDATED = "account.monitoring_status.updated"
LINK_SESSION_COMPLETED = "link_session.completed"
END_USER_ERASED = "end_user.erased"  # one per erased account (service/erasure.py)
LINK_SESSION_FAILED = "link_session.failed"

# Job event names by JobName.
JOB_EVENTS: dict[int, str] = {
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

ALL_EVENTS: tuple[str, ...] = (
    ACCOUNT_ADDED,
    MONITORING_STATUS_UPDATED,
    *JOB_EVENTS.values(),
    LINK_SESSION_COMPLETED,
    END_USER_ERASED,
    LINK_SESSION_FAILED,
)


# The per-account event sequence is the outbox's, one narrow row per account in its own table
# (`account_event_sequences`, migration 0178; every account has its row from its creation on):
# reserving it takes that row's lock until COMMIT, so sequences follow commit order. The bump changes
# no indexed column of a half-empty page: a HOT update, and `accounts` is not written.
# Reserves the sequences and reads the account's tags (copied onto every event) in one statement.
_RESERVE = """
UPDATE account_event_sequences SET sequence = sequence + $2 WHERE account_id = $1
RETURNING sequence - $2, (SELECT tags FROM accounts WHERE id = $1) AS tags
"""
# Inserts the events ($1 ids, $2 topics, $3 names, $6 sequences, $7 payloads, $8 traceparents,
# $9 request ids of account $5 in workspace $4) in sequence order, so outbox ids follow the sequences,
# each with its `outbox_pending` row (what the relay reads: migration 0175) in the same statement.
_ROWS = """rows AS (
  INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload, traceparent,
                      request_id)
  SELECT e, t, n, $4, $5, q, p, tp, r
  FROM unnest($1::uuid[], $2::text[], $3::text[], $6::bigint[], $7::bytea[], $8::text[], $9::text[])
       WITH ORDINALITY AS u(e, t, n, q, p, tp, r, i)
  ORDER BY i
  RETURNING id, created_at),
pending AS (INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM rows)"""
# ...and wakes the relay (delivered at commit); without the NOTIFY when this process's relay leads
# (`RelayWake`: it is woken by a call after COMMIT).
_NOTIFY = f"pg_notify('{NOTIFY_CHANNEL}', '')"
_INSERT = f"WITH {_ROWS}\nSELECT {_NOTIFY} FROM (SELECT count(*) FROM rows) AS written"
# With the sequence row already locked and its sequence known: sequence, events and wake-up in one.
_WRITE_LOCKED = (
    f"WITH seq AS (UPDATE account_event_sequences SET sequence = $10 WHERE account_id = $5 RETURNING 1),\n"
    f"{_ROWS}\n"
    f"SELECT {_NOTIFY} FROM (SELECT count(*) FROM rows, seq) AS written"
)


def _quiet(statement: str) -> str:
    """The statement without its NOTIFY (the same rows written)."""
    assert statement.count(_NOTIFY) == 1
    return statement.replace(_NOTIFY, "NULL")


class RelayWake:
    """This process's relay while it leads (service/relay.py sets `leader`; one per process,
    `Deps.relay_wake`).

    A NOTIFY inside a transaction takes PostgreSQL's notify-queue lock at COMMIT and holds it until the
    commit is durable, so every transaction that notifies waits for the one before it to be flushed to
    disk: the completer's batches could not share a WAL flush. While this process's relay leads, no
    other relay publishes (they stand by on the leader lock, and one that takes over reads the outbox
    before it waits), so a unit of work (`uow.begin`) writes its events without the NOTIFY and wakes
    the relay by a call once COMMIT returned. Without a local leader (`api` processes, a relay standing
    by, a process without a relay) the events' statement notifies as before; a unit of work that
    flushed while the relay led and commits after it stopped leading sends one NOTIFY then
    (coalesced, on the pool). Tests: tests/integration/test_relay_wakeups.py.
    """

    def __init__(self) -> None:
        self.leader: Callable[[], None] | None = None
        self._notifying: asyncio.Task[None] | None = None
        self._unsent = False

    def committed(self, pool: db.Pool) -> None:
        """Events flushed without a NOTIFY (while the relay led) are committed: wakes the relay."""
        if self.leader is not None:
            self.leader()
            return
        self._unsent = True  # it stopped leading since: the relay that leads now may be another's
        if self._notifying is None or self._notifying.done():
            self._notifying = asyncio.get_running_loop().create_task(self._notify(pool))

    async def _notify(self, pool: db.Pool) -> None:
        while self._unsent:
            self._unsent = False
            with contextlib.suppress(Exception):  # a lost wake-up costs the relay one poll interval
                await pool.execute(f"NOTIFY {NOTIFY_CHANNEL}")


class Events:
    """The events one transaction appends for one account, written in two statements at `flush`.

    `flush` reserves the sequence numbers with one UPDATE of the account's sequence row (which takes
    its lock, so sequences follow commit order) and inserts every event with one INSERT that also
    wakes the relay.
    """

    def __init__(
        self,
        *,
        topic_prefix: str,
        workspace_id: uuid.UUID,
        account_id: uuid.UUID,
        locked_sequence: int | None = None,
        tags: dict[str, str] | None = None,
        without_account: bool = False,
    ) -> None:
        """`locked_sequence`: the account's last event sequence, read under its sequence row's lock
        (`queue.lock_for_outcomes`), which the transaction still holds; then `flush` needs no
        separate reservation (`tags`: the account's tags, read with it).

        `without_account`: the events of something that never had an account (a Link session that
        failed before connecting): `account_id` is then that thing's id, used as the Kafka key and
        outbox key, the events' own account_id is empty and their sequence starts at 1."""
        self.topic_prefix = topic_prefix
        self.workspace_id = workspace_id
        self.account_id = account_id
        self.locked_sequence = 0 if without_account else locked_sequence
        self.without_account = without_account
        self.tags = tags
        self.pending: list[event_pb2.Event] = []
        self.traceparents: list[str] = []  # per pending event: the span current when it was added
        # Per pending event: the context it was added in (its "event appended" line is logged there:
        # a batch of job outcomes is flushed outside the jobs' tasks).
        self.contexts: list[contextvars.Context] = []

    def add(
        self, name: str, api_version: str, event: event_pb2.Event, at: dt.datetime | None = None
    ) -> event_pb2.Event:
        """Queues one event: `event` is an Event with only its oneof payload set, built for this call.
        The outbox fills in the rest in place and keeps it (no copy: the caller does not use it again)."""
        event.event_id = str(ids.new_id())
        event.event = name
        event.workspace_id = str(self.workspace_id)
        event.account_id = "" if self.without_account else str(self.account_id)
        event.api_version = api_version
        event.request_id = tracing.request_id()
        timeutil.set_ts(event.created_at, at or timeutil.now())
        self.pending.append(event)
        self.traceparents.append(tracing.traceparent())
        self.contexts.append(contextvars.copy_context())
        return event

    async def flush(self, conn: db.Conn, *, notify: bool = True) -> None:
        """Writes the pending events; `notify`: wake the relay by NOTIFY at commit (False: the caller
        wakes this process's leading relay after COMMIT, `RelayWake.committed`)."""
        if not self.pending:
            return
        events, self.pending = self.pending, []
        traceparents, self.traceparents = self.traceparents, []
        contexts, self.contexts = self.contexts, []
        base = self.locked_sequence
        tags = self.tags
        if base is None:
            reserved = await conn.fetchrow(_RESERVE, self.account_id, len(events))
            if reserved is None:
                raise LookupError(f"account {self.account_id} vanished while appending events")
            base, tags = reserved[0], json.loads(reserved["tags"])
        for offset, event in enumerate(events, start=1):
            event.sequence = base + offset
            if tags:
                event.tags.update(tags)
        args = (
            [e.event_id for e in events],  # the text form: asyncpg parses it itself
            [self.topic_prefix + e.event for e in events],
            [e.event for e in events],
            self.workspace_id,
            self.account_id,
            [e.sequence for e in events],
            [e.SerializeToString() for e in events],
            traceparents,
            [e.request_id for e in events],
        )
        if self.locked_sequence is None or self.without_account:
            await conn.execute(_INSERT if notify else _INSERT_QUIET, *args)
        else:
            await conn.execute(_WRITE_LOCKED if notify else _WRITE_LOCKED_QUIET, *args, base + len(events))
            self.locked_sequence = base + len(events)
        if self.without_account:
            self.locked_sequence = base + len(events)
        _logged(events, contexts)


def _logged(events: list[event_pb2.Event], contexts: list[contextvars.Context]) -> None:
    # Carries the request_id (in an RPC) or the job_id (in the worker): logged in the context each
    # event was added in. The relay logs the event_ids it published, so one grep follows a request
    # to Kafka.
    if log.isEnabledFor(logging.INFO):
        for e, context in zip(events, contexts, strict=True):
            extra = {
                "event_id": e.event_id,
                "event": e.event,
                "account_id": e.account_id,
                "sequence": e.sequence,
            }
            context.run(log.info, "event appended", extra=extra)


# Many accounts' events at once, each account's sequence row locked with its sequence known: $10
# accounts get the sequences $11 (read by key: `UPDATE ... FROM unnest(...)` got a generic plan that
# hashed the whole table); rows are inserted account by account in sequence order.
_WRITE_LOCKED_MANY = f"""
WITH seq AS (
  UPDATE account_event_sequences SET sequence = ($11::bigint[])[array_position($10::uuid[], account_id)]
  WHERE account_id = ANY($10::uuid[]) RETURNING 1),
rows AS (
  INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload, traceparent,
                      request_id)
  SELECT e, t, n, w, a, q, p, tp, r
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::bigint[], $7::bytea[],
              $8::text[], $9::text[])
       WITH ORDINALITY AS u(e, t, n, w, a, q, p, tp, r, i)
  ORDER BY i
  RETURNING id, created_at),
pending AS (INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM rows)
SELECT {_NOTIFY} FROM (SELECT count(*) FROM rows, seq) AS written
"""
_INSERT_QUIET = _quiet(_INSERT)
_WRITE_LOCKED_QUIET = _quiet(_WRITE_LOCKED)
_WRITE_LOCKED_MANY_QUIET = _quiet(_WRITE_LOCKED_MANY)


async def flush_locked(conn: db.Conn, batches: list[Events], *, notify: bool = True) -> None:
    """Flushes the events of many accounts whose sequence rows the transaction holds locked (each with its
    `locked_sequence` and tags) in one statement and one wake-up for the relay; what `Events.flush`
    writes for one account (`notify` as there)."""
    batches = [b for b in batches if b.pending]
    events: list[event_pb2.Event] = []
    contexts: list[contextvars.Context] = []
    columns: dict[str, list[object]] = {"workspaces": [], "accounts": [], "topics": [], "traceparents": []}
    for batch in batches:
        base = batch.locked_sequence
        assert base is not None
        for offset, event in enumerate(batch.pending, start=1):
            event.sequence = base + offset
            if batch.tags:
                event.tags.update(batch.tags)
            columns["workspaces"].append(batch.workspace_id)
            columns["accounts"].append(batch.account_id)
            columns["topics"].append(batch.topic_prefix + event.event)
        columns["traceparents"] += batch.traceparents
        events += batch.pending
        contexts += batch.contexts
        batch.locked_sequence = base + len(batch.pending)
        batch.pending, batch.traceparents, batch.contexts = [], [], []
    if not events:
        return
    await conn.execute(
        _WRITE_LOCKED_MANY if notify else _WRITE_LOCKED_MANY_QUIET,
        [e.event_id for e in events],  # the text form: asyncpg parses it itself
        columns["topics"],
        [e.event for e in events],
        columns["workspaces"],
        columns["accounts"],
        [e.sequence for e in events],
        [e.SerializeToString() for e in events],
        columns["traceparents"],
        [e.request_id for e in events],
        [b.account_id for b in batches],
        [b.locked_sequence for b in batches],
    )
    _logged(events, contexts)


# --- Publication (the relay) and retention (service/janitor.py) -------------------------------------

# Unpublished events: those with a pending row (written with the event, deleted by the mark; a
# process of the release before 0175 keeps them in step through the migration's trigger). The relay
# reads the first pending ids, then their outbox rows by primary key (service/relay.py): never the
# outbox in id order filtered on `published_at`, which the planner may choose and which reads every
# published row. The backlog gauges read the pending rows alone.
BACKLOG = "SELECT count(*) AS unpublished, min(created_at) AS oldest FROM outbox_pending"
# The mark: the pending rows go, and `published_at` (no index names it, fillfactor 50: a HOT update)
# says when, in one statement and one commit.
_MARK_PUBLISHED = """
WITH published AS (DELETE FROM outbox_pending WHERE id = ANY($1::bigint[]))
UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])
"""
_PRUNE = """
DELETE FROM outbox WHERE id IN (
  SELECT id FROM outbox WHERE published_at < now() - make_interval(days => $1) LIMIT $2)
"""


async def mark_published(conn: db.Executor, ids_: list[int]) -> None:
    """Rows the relay has published (every one acknowledged by Kafka)."""
    await conn.execute(_MARK_PUBLISHED, ids_)


async def prune_published(conn: db.Executor, retention_days: int, batch: int) -> int:
    """Deletes up to `batch` published rows older than `retention_days`; returns how many.
    Unpublished rows are never touched."""
    status: str = await conn.execute(_PRUNE, retention_days, batch)
    return int(status.rsplit(" ", 1)[-1])
