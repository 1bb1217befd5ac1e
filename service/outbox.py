"""The event outbox: events are written in the same transaction as the change they describe.

`append` must run inside the caller's transaction. It takes the account row lock while it hands
out the next per-account sequence number, so events of one account get increasing sequences and
increasing outbox ids in commit order — the relay publishes by id and per-account order holds.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from paylink.v1 import event_pb2

from service import db, ids, timeutil

log = logging.getLogger("paylink.outbox")

NOTIFY_CHANNEL = "paylink_outbox"

ACCOUNT_ADDED = "account.added"
MONITORING_STATUS_UPDATED = "account.monitoring_status.updated"
LINK_SESSION_COMPLETED = "link_session.completed"

# Job event names by JobName value.
JOB_EVENTS: dict[int, str] = {
    1: "identity.added",
    2: "employment.added",
    3: "income.added",
    4: "paystubs.added",
    5: "direct_deposit_allocations.added",
    6: "direct_deposit_switch.added",
}

ALL_EVENTS: tuple[str, ...] = (
    ACCOUNT_ADDED,
    MONITORING_STATUS_UPDATED,
    *JOB_EVENTS.values(),
    LINK_SESSION_COMPLETED,
)


async def append(
    conn: db.Conn,
    *,
    topic_prefix: str,
    workspace_id: uuid.UUID,
    account_id: uuid.UUID,
    name: str,
    api_version: str,
    payload: event_pb2.Event,
    at: dt.datetime | None = None,
) -> event_pb2.Event:
    """Appends one event; `payload` is an Event with only its oneof payload set."""
    sequence = await conn.fetchval(
        "UPDATE accounts SET event_sequence = event_sequence + 1 WHERE id = $1 RETURNING event_sequence",
        account_id,
    )
    if sequence is None:
        raise LookupError(f"account {account_id} vanished while appending {name}")
    event = event_pb2.Event()
    event.CopyFrom(payload)
    event.event_id = str(ids.new_id())
    event.event = name
    event.workspace_id = str(workspace_id)
    event.account_id = str(account_id)
    event.sequence = sequence
    event.api_version = api_version
    timeutil.set_ts(event.created_at, at or timeutil.now())
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        uuid.UUID(event.event_id),
        topic_prefix + name,
        name,
        workspace_id,
        account_id,
        sequence,
        event.SerializeToString(),
    )
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    # Carries the request_id (in an RPC) or the job_id (in the worker); the relay logs the event_ids
    # it published, so one grep follows a request to Kafka.
    log.info(
        "event appended",
        extra={
            "event_id": event.event_id,
            "event": name,
            "account_id": str(account_id),
            "sequence": sequence,
        },
    )
    return event
