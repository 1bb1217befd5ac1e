"""MonitoringService: the account and workspace switches and the workspace cadences; and the
sandbox controls that move an account's time or trigger its scheduled refreshes."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from paylink.v1 import account_pb2, monitoring_pb2

from service import accounts, errors, uow
from service.context import CallContext
from service.deps import Deps
from service.monitoring import rules, scheduler, schedules


async def _reply(work: uow.UnitOfWork, call: CallContext, account_id: str) -> account_pb2.Account:
    row = await accounts.fetch(work.conn, call.workspace.id, account_id, data_times=True)
    return accounts.to_proto(row, work.deps.drivers)


async def set_account_monitoring(
    deps: Deps, call: CallContext, account_id: str, enabled: bool
) -> account_pb2.Account:
    """EnableMonitoring / DisableMonitoring: the switch, the status it implies, and its event."""
    async with uow.begin(deps) as work:
        row = await accounts.fetch(work.conn, call.workspace.id, account_id, lock=True)
        if enabled and not row["connected"]:
            raise errors.failed_precondition("ACCOUNT_DISCONNECTED", f"account {account_id} is disconnected")
        status = rules.Status(row["monitoring_status"])
        decision = rules.enabled(status) if enabled else rules.disabled(status)
        await accounts.set_monitoring_enabled(work.conn, row["id"], enabled)
        if decision.changed(status):
            await accounts.set_monitoring(
                work, row, decision.status.value, decision.reason, api_version=call.version_label
            )
        return await _reply(work, call, account_id)


def _settings(enabled: bool, overrides: dict[str, int]) -> monitoring_pb2.MonitoringSettings:
    out = monitoring_pb2.MonitoringSettings(enabled=enabled)
    for name, cadence in rules.cadences(overrides).items():
        entry = out.cadences.add(name=name, is_default=str(name) not in overrides)
        entry.cadence.FromTimedelta(cadence)
    return out


async def get_settings(deps: Deps, call: CallContext) -> monitoring_pb2.MonitoringSettings:
    row = await deps.pool.fetchrow(
        "SELECT enabled, cadences::text FROM monitoring_settings WHERE workspace_id = $1", call.workspace.id
    )
    if row is None:
        return _settings(True, {})
    return _settings(row["enabled"], json.loads(row["cadences"]))


async def update_settings(
    deps: Deps, call: CallContext, request: monitoring_pb2.UpdateMonitoringSettingsRequest
) -> monitoring_pb2.MonitoringSettings:
    v = errors.Violations()
    cadences: dict[int, dt.timedelta] = {}
    for i, entry in enumerate(request.cadences):
        field = f"cadences[{i}]"
        if entry.name not in rules.SCHEDULED_JOBS:
            v.add(f"{field}.name", "must be a data job type (not direct_deposit_switch)")
        elif entry.name in cadences:
            v.add(f"{field}.name", "is listed twice")
        if entry.is_default:
            v.add(f"{field}.is_default", "is output only")
        if entry.cadence.nanos or not 0 <= entry.cadence.seconds <= rules.MAX_CADENCE.total_seconds():
            v.add(
                f"{field}.cadence",
                "must be between 1 hour and 90 days in whole seconds (or 0 for the default)",
            )
            continue
        cadence = dt.timedelta(seconds=entry.cadence.seconds)
        problem = rules.cadence_error(cadence)
        if problem:
            v.add(f"{field}.cadence", problem)
        elif entry.name in rules.SCHEDULED_JOBS:
            cadences[entry.name] = cadence
    v.raise_if_any()
    enabled = request.enabled if request.HasField("enabled") else None
    async with uow.begin(deps) as work:
        switch, overrides = await schedules.update_settings(work.conn, call.workspace.id, enabled, cadences)
    return _settings(switch, overrides)


# -- sandbox controls (SandboxService; the caller checked the workspace is a sandbox) -------------


async def trigger(deps: Deps, call: CallContext, account_id: str, names: list[int]) -> list[uuid.UUID]:
    """Makes the account's schedules due now and queues them at once (bounds still apply)."""
    v = errors.Violations()
    for i, name in enumerate(names):
        if name not in rules.SCHEDULED_JOBS:
            v.add(f"names[{i}]", "must be a data job type")
    v.raise_if_any()
    async with uow.begin(deps) as work:
        row = await accounts.fetch(work.conn, call.workspace.id, account_id, lock=True)
        await schedules.make_due(work.conn, row["id"], names)
        claimed = await schedules.claim(work.conn, scheduler.limits(deps), account_id=row["id"])
    return claimed.job_ids


async def advance(work: uow.UnitOfWork, account_id: uuid.UUID, days: int) -> None:
    """The account's schedule moves with its sandbox clock."""
    await schedules.advance(work.conn, account_id, dt.timedelta(days=days))
