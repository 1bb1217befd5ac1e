"""What a refresh's outcome does to monitoring: the status machine applied, and what changed.

What changed is said without personal data (docs/privacy.md, docs/events.md): new paystubs by id and
pay date, allocations by how many there were and are; consumers read the data through the audited
reads.

Called by `job_outcomes` inside the outcome's unit of work (job and account rows locked).
"""

from __future__ import annotations

import datetime as dt

from paylink.v1 import common_pb2, data_pb2, event_pb2

from service import accounts, metrics, timeutil, uow
from service.monitoring import rules
from service.queue import LockedJob
from service.results import Stored


async def after_refresh(
    work: uow.UnitOfWork,
    job: LockedJob,
    at: dt.datetime,
    *,
    ok: bool,
    error_code: int = 0,
    transient: bool = False,
) -> None:
    """Feeds a refresh's final outcome to the status machine: the failure run, and the status with
    its `account.monitoring_status.updated` event when it changed."""
    status = rules.Status(job.monitoring_status)
    if ok:
        decision = rules.refresh_succeeded(status, job.refresh_failures)
    else:
        decision = rules.refresh_failed(
            status,
            job.refresh_failures,
            error_code,
            transient=transient,
            degraded_after=work.deps.settings.monitoring_degraded_after,
        )
    if decision.failures != job.refresh_failures:
        await accounts.set_refresh_failures(work.conn, job.account_id, decision.failures)
    if decision.changed(status) and job.connected:
        account = {"id": job.account_id, "workspace_id": job.workspace_id, "end_user_id": job.end_user_id}
        await accounts.set_monitoring(
            work, account, decision.status.value, decision.reason, api_version=job.api_version, at=at
        )


def change(job: LockedJob, stored: Stored, data: object, at: dt.datetime) -> event_pb2.DataChange | None:
    """What a refresh's event says changed; None when nothing did (a scheduled refresh then
    publishes no product event)."""
    if not stored.changed:
        if job.scheduled:
            metrics.UNCHANGED_REFRESHES.labels(common_pb2.JobName.Name(job.name)).inc()  # type: ignore[arg-type]
        return None
    out = event_pb2.DataChange(
        monitoring=job.scheduled, added_paystubs=[_paystub_ref(p) for p in stored.added_paystubs]
    )
    timeutil.set_ts(out.updated_at, at)
    if job.name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS and isinstance(
        data, data_pb2.DirectDepositAllocations
    ):
        if stored.previous is not None:
            out.previous_allocation_count = len(
                data_pb2.DirectDepositAllocations.FromString(stored.previous).allocations
            )
        out.allocation_count = len(data.allocations)
    return out


def _paystub_ref(stub: data_pb2.Paystub) -> data_pb2.Paystub:
    """What an event says of a new paystub: ids and dates, no pay figures (personal data)."""
    out = data_pb2.Paystub(
        id=stub.id, account_id=stub.account_id, pay_date=stub.pay_date, document_id=stub.document_id
    )
    out.created_at.CopyFrom(stub.created_at)
    return out
