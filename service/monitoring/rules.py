"""Pure monitoring rules: cadences, jitter, per-platform allotment and the status machine.

Nothing here does I/O; `tests/unit/test_monitoring_rules.py` covers every rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence

from paylink.v1 import common_pb2

J = common_pb2
E = common_pb2.JobErrorCode

DAY = dt.timedelta(days=1)

# Defaults: what moves often (deposits, pay) daily, the rest less often.
DEFAULT_CADENCES: dict[int, dt.timedelta] = {
    J.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: DAY,
    J.JOB_NAME_PAYSTUBS: DAY,
    J.JOB_NAME_INCOME: 7 * DAY,
    J.JOB_NAME_EMPLOYMENT: 7 * DAY,
    J.JOB_NAME_IDENTITY: 30 * DAY,
}
SCHEDULED_JOBS: tuple[int, ...] = tuple(sorted(DEFAULT_CADENCES))
MIN_CADENCE = dt.timedelta(hours=1)
MAX_CADENCE = 90 * DAY

# Spread: the first refresh after linking falls anywhere in the second half of one cadence, each later
# one a cadence after the last, +-5%. A million accounts linked in one afternoon thus spread over
# half a cadence at first and never clump again.
FIRST_SPREAD = (0.5, 1.0)
NEXT_SPREAD = (0.95, 1.05)


def cadences(overrides: Mapping[str, int]) -> dict[int, dt.timedelta]:
    """The effective cadence per job type: the workspace's overrides (job name -> seconds) or the defaults."""
    out = dict(DEFAULT_CADENCES)
    for key, seconds in overrides.items():
        name = int(key)
        if name in out and seconds > 0:
            out[name] = dt.timedelta(seconds=seconds)
    return out


def cadence_error(cadence: dt.timedelta) -> str | None:
    """Why a cadence override is refused, or None (0 means "back to the default")."""
    if cadence == dt.timedelta(0):
        return None
    if cadence < MIN_CADENCE or cadence > MAX_CADENCE:
        return "must be between 1 hour and 90 days (or 0 for the default)"
    if cadence.microseconds:
        return "must be whole seconds"
    return None


def first_due(now: dt.datetime, cadence: dt.timedelta, rng: random.Random) -> dt.datetime:
    """When a newly linked account's first scheduled refresh of one type is due."""
    return now + cadence * rng.uniform(*FIRST_SPREAD)


def next_due(now: dt.datetime, cadence: dt.timedelta, rng: random.Random) -> dt.datetime:
    """When the refresh after one queued `now` is due."""
    return now + cadence * rng.uniform(*NEXT_SPREAD)


def next_budget_day(now: dt.datetime, rng: random.Random) -> dt.datetime:
    """A due refresh over its platform's daily budget: some time in the first hour of the next UTC day."""
    midnight = dt.datetime.combine(now.astimezone(dt.UTC).date() + DAY, dt.time(), dt.UTC)
    return midnight + dt.timedelta(seconds=rng.uniform(0, 3600))


@dataclasses.dataclass(frozen=True, slots=True)
class Due:
    """A due schedule row."""

    account_id: uuid.UUID
    name: int
    platform_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class PlatformLoad:
    """A platform's scheduled-refresh load when the claim starts."""

    in_flight: int  # refresh jobs not finished yet
    used_today: int  # scheduled refreshes started today (UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Allotment:
    """What to do with each due row of one claim."""

    run: list[Due]
    busy: list[Due]  # platform at its concurrency bound: stays due for a later claim
    over_budget: list[Due]  # platform's daily budget spent: tomorrow


def allot(
    due: Sequence[Due], load: Mapping[str, PlatformLoad], *, concurrency: int, daily_budget: int
) -> Allotment:
    """Splits due rows, in order, by each platform's concurrency bound and daily budget.

    `daily_budget` 0 means no budget.
    """
    run: list[Due] = []
    busy: list[Due] = []
    over: list[Due] = []
    started: dict[str, int] = {}
    for row in due:
        current = load.get(row.platform_id, PlatformLoad(0, 0))
        n = started.get(row.platform_id, 0)
        if daily_budget and current.used_today + n >= daily_budget:
            over.append(row)
        elif current.in_flight + n >= concurrency:
            busy.append(row)
        else:
            run.append(row)
            started[row.platform_id] = n + 1
    return Allotment(run, busy, over)


def started_per_platform(rows: Iterable[Due]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row.platform_id] = out.get(row.platform_id, 0) + 1
    return out


# -- the monitoring status machine ------------------------------------------------------------


class Status(enum.StrEnum):
    """accounts.monitoring_status."""

    ACTIVE = "active"
    DEGRADED = "degraded"
    USER_ACTION_REQUIRED = "user_action_required"
    CUSTOMER_DISABLED = "customer_disabled"
    UNAVAILABLE = "unavailable"


# Statuses in which scheduled refreshes stop: the user must act, or the customer said so.
PAUSED = frozenset({Status.USER_ACTION_REQUIRED, Status.CUSTOMER_DISABLED})

# Refresh errors that need the user, with the reason published.
_USER_ACTION: dict[int, str] = {
    E.JOB_ERROR_CODE_INVALID_CREDENTIALS: "credentials_expired",
    E.JOB_ERROR_CODE_USER_ACTION_REQUIRED: "mfa_required",
    E.JOB_ERROR_CODE_MFA_FAILED: "mfa_required",
    E.JOB_ERROR_CODE_ACCOUNT_LOCKED: "account_locked",
}
# Refresh errors that count towards `degraded` (the platform failed this time, it may not next time).
_TRANSIENT_REASONS: dict[int, str] = {
    E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE: "platform_unavailable",
    E.JOB_ERROR_CODE_TIMEOUT: "platform_timeout",
    E.JOB_ERROR_CODE_UNSPECIFIED: "system_error",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The status after an input, the reason to publish when it changed, and the failure run."""

    status: Status
    reason: str
    failures: int

    def changed(self, before: Status) -> bool:
        return self.status is not before


def refresh_succeeded(status: Status, failures: int) -> Decision:
    """A refresh (re-access included) worked: back to active unless the customer disabled monitoring."""
    if status in (Status.DEGRADED, Status.UNAVAILABLE, Status.USER_ACTION_REQUIRED):
        return Decision(Status.ACTIVE, "reaccess_succeeded", 0)
    return Decision(status, "", 0)


def refresh_failed(
    status: Status, failures: int, error_code: int, *, transient: bool, degraded_after: int
) -> Decision:
    """A refresh ended with an error (after its retries).

    - needs the user (expired credentials, MFA, locked) -> user_action_required
    - the platform said it is unavailable (not a passing failure) -> unavailable
    - a passing failure (timeouts, transient unavailability, paylink's own errors): one more in the
      run; `degraded_after` in a row -> degraded
    - anything else (no data, a job the platform does not support) leaves the status alone.
    A customer-disabled account stays so whatever happens.
    """
    if status is Status.CUSTOMER_DISABLED:
        return Decision(status, "", failures)
    user = _USER_ACTION.get(error_code)
    if user is not None:
        return Decision(Status.USER_ACTION_REQUIRED, user, failures)
    if error_code == E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE and not transient:
        return Decision(Status.UNAVAILABLE, "platform_unavailable", failures + 1)
    reason = _TRANSIENT_REASONS.get(error_code)
    if reason is None:
        return Decision(status, "", failures)
    run = failures + 1
    if status is Status.ACTIVE and run >= degraded_after:
        return Decision(Status.DEGRADED, reason, run)
    return Decision(status, "", run)


def session_outage(status: Status, error_code: int) -> Decision:
    """A Link session's re-access of a bound account met a platform that stayed down through every
    retry (link sessions never ask the user to retype credentials for that): PLATFORM_UNAVAILABLE
    -> unavailable, a timeout -> degraded (unless already unavailable). An account waiting for its
    user, or disabled by the customer, stays so. The refresh failure run is the scheduler's: untouched."""
    if status in PAUSED:
        return Decision(status, "", 0)
    if error_code == E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE:
        return Decision(Status.UNAVAILABLE, "platform_unavailable", 0)
    if status is Status.UNAVAILABLE:
        return Decision(status, "", 0)
    return Decision(Status.DEGRADED, _TRANSIENT_REASONS.get(error_code, "platform_timeout"), 0)


def disabled(status: Status) -> Decision:
    """The customer turned monitoring off for the account."""
    return Decision(Status.CUSTOMER_DISABLED, "monitoring_disabled", 0)


def enabled(status: Status) -> Decision:
    """The customer turned monitoring on again: active until a refresh says otherwise."""
    if status is Status.CUSTOMER_DISABLED:
        return Decision(Status.ACTIVE, "monitoring_enabled", 0)
    return Decision(status, "", 0)


def schedule_active(
    *, connected: bool, account_enabled: bool, workspace_enabled: bool, status: Status
) -> bool:
    """Whether an account's scheduled refreshes run."""
    return connected and account_enabled and workspace_enabled and status not in PAUSED
