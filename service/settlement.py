"""`link_session.completed`: the event that tells a consumer a batch of jobs is over.

Built from a small typed `Settlement`; emitted into the unit of work that writes the last outcome
(job_outcomes.py) or, for a bound token with no jobs, the one that connects the session
(sessions.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence

from paylink.v1 import event_pb2

from service import outbox, queue, timeutil, uow


@dataclasses.dataclass(frozen=True, slots=True)
class Settlement:
    workspace_id: uuid.UUID
    account_id: uuid.UUID
    end_user_id: str
    session_id: uuid.UUID | None  # None for a server-side refresh
    link_token_id: uuid.UUID | None
    origin: int  # common_pb2.JobOrigin
    api_version: str
    jobs: Sequence[queue.BatchJob]
    at: dt.datetime


def publish(work: uow.UnitOfWork, settlement: Settlement) -> None:
    s = settlement
    # Built in place in its Event (a payload passed to Event(...=) would be copied into it).
    event = event_pb2.Event()
    payload = event.link_session_completed
    if s.session_id:
        payload.link_session_id = str(s.session_id)
    if s.link_token_id:
        payload.link_token_id = str(s.link_token_id)
    payload.account_id = str(s.account_id)
    payload.end_user_id = s.end_user_id
    payload.origin = s.origin  # type: ignore[assignment]
    for job in s.jobs:
        settled = payload.jobs.add()
        settled.job_id = str(job.id)
        settled.name = job.name  # type: ignore[assignment]
        settled.outcome = job.outcome  # type: ignore[assignment]
        settled.error_type = job.error_type  # type: ignore[assignment]
        settled.error_code = job.error_code  # type: ignore[assignment]
    timeutil.set_ts(payload.timestamp, s.at)
    work.emit(s.workspace_id, s.account_id, outbox.LINK_SESSION_COMPLETED, s.api_version, event, s.at)
