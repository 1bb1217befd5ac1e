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
    payload = event_pb2.LinkSessionCompletedPayload(
        link_session_id=str(s.session_id) if s.session_id else "",
        link_token_id=str(s.link_token_id) if s.link_token_id else "",
        account_id=str(s.account_id),
        end_user_id=s.end_user_id,
        origin=s.origin,  # type: ignore[arg-type]
        jobs=[
            event_pb2.SettledJob(
                job_id=str(job.id),
                name=job.name,  # type: ignore[arg-type]
                outcome=job.outcome,  # type: ignore[arg-type]
                error_type=job.error_type,  # type: ignore[arg-type]
                error_code=job.error_code,  # type: ignore[arg-type]
            )
            for job in s.jobs
        ],
    )
    timeutil.set_ts(payload.timestamp, s.at)
    event = event_pb2.Event(link_session_completed=payload)
    work.emit(s.workspace_id, s.account_id, outbox.LINK_SESSION_COMPLETED, s.api_version, event, s.at)
