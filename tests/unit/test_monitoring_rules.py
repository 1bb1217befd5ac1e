"""Pure monitoring rules (service/monitoring/rules.py): cadences, jitter, allotment, status machine."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import pytest
from paylink.v1 import common_pb2 as c

from service.monitoring import rules
from service.monitoring.rules import Status

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def test_default_cadences() -> None:
    assert rules.cadences({}) == {
        c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: DAY,
        c.JOB_NAME_PAYSTUBS: DAY,
        c.JOB_NAME_INCOME: 7 * DAY,
        c.JOB_NAME_EMPLOYMENT: 7 * DAY,
        c.JOB_NAME_IDENTITY: 30 * DAY,
    }
    assert c.JOB_NAME_DIRECT_DEPOSIT_SWITCH not in rules.SCHEDULED_JOBS


def test_workspace_overrides_replace_defaults() -> None:
    got = rules.cadences({str(c.JOB_NAME_IDENTITY): 3600, str(c.JOB_NAME_DIRECT_DEPOSIT_SWITCH): 60})
    assert got[c.JOB_NAME_IDENTITY] == dt.timedelta(hours=1)
    assert got[c.JOB_NAME_PAYSTUBS] == DAY
    assert c.JOB_NAME_DIRECT_DEPOSIT_SWITCH not in got  # not a scheduled job: ignored


@pytest.mark.parametrize(
    ("cadence", "ok"),
    [
        (dt.timedelta(0), True),
        (dt.timedelta(hours=1), True),
        (90 * DAY, True),
        (dt.timedelta(minutes=59), False),
        (91 * DAY, False),
        (dt.timedelta(hours=2, microseconds=5), False),
    ],
)
def test_cadence_bounds(cadence: dt.timedelta, ok: bool) -> None:
    assert (rules.cadence_error(cadence) is None) == ok


def test_first_refresh_is_spread_over_the_second_half_of_a_cadence() -> None:
    rng = random.Random(7)
    dues = [rules.first_due(NOW, DAY, rng) for _ in range(10_000)]
    assert all(NOW + DAY / 2 <= d <= NOW + DAY for d in dues)
    # A million accounts linked at once do not land on the same minute: the spread is even.
    buckets = {int((d - NOW) / dt.timedelta(hours=1)) for d in dues}
    assert buckets == set(range(12, 24))
    hours = [int((d - NOW) / dt.timedelta(hours=1)) for d in dues]
    assert max(hours.count(h) for h in buckets) < 2 * min(hours.count(h) for h in buckets)


def test_next_refresh_is_a_cadence_later_with_five_percent_jitter() -> None:
    rng = random.Random(3)
    dues = [rules.next_due(NOW, 7 * DAY, rng) for _ in range(1000)]
    assert all(NOW + 7 * DAY * 0.95 <= d <= NOW + 7 * DAY * 1.05 for d in dues)
    assert len(set(dues)) > 990


def test_rows_over_the_budget_move_to_the_next_day() -> None:
    rng = random.Random(1)
    tomorrow = rules.next_budget_day(NOW, rng)
    assert dt.datetime(2026, 12, 1, tzinfo=dt.UTC) <= tomorrow <= dt.datetime(2026, 12, 1, 1, tzinfo=dt.UTC)


def _due(platform: str, n: int) -> list[rules.Due]:
    return [rules.Due(uuid.uuid4(), c.JOB_NAME_PAYSTUBS, platform) for _ in range(n)]


def test_allot_respects_concurrency_per_platform() -> None:
    a, b = _due("a", 5), _due("b", 3)
    load = {"a": rules.PlatformLoad(in_flight=2, used_today=0)}
    got = rules.allot(a + b, load, concurrency=4, daily_budget=0)
    assert got.run == a[:2] + b
    assert got.busy == a[2:]
    assert got.over_budget == []


def test_allot_respects_the_daily_budget_first() -> None:
    a = _due("a", 5)
    got = rules.allot(a, {"a": rules.PlatformLoad(0, used_today=8)}, concurrency=100, daily_budget=10)
    assert got.run == a[:2] and got.over_budget == a[2:] and got.busy == []
    assert rules.started_per_platform(got.run) == {"a": 2}


def test_allot_with_no_budget_runs_everything_under_the_bound() -> None:
    a = _due("a", 3)
    got = rules.allot(a, {}, concurrency=10, daily_budget=0)
    assert got.run == a


def test_success_brings_every_reachable_status_back_to_active() -> None:
    for status in (Status.DEGRADED, Status.UNAVAILABLE, Status.USER_ACTION_REQUIRED):
        assert rules.refresh_succeeded(status, 2) == rules.Decision(Status.ACTIVE, "reaccess_succeeded", 0)
    assert rules.refresh_succeeded(Status.ACTIVE, 2) == rules.Decision(Status.ACTIVE, "", 0)
    # The customer's decision stands.
    same = rules.refresh_succeeded(Status.CUSTOMER_DISABLED, 0)
    assert same.status is Status.CUSTOMER_DISABLED and not same.changed(Status.CUSTOMER_DISABLED)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (c.JOB_ERROR_CODE_INVALID_CREDENTIALS, "credentials_expired"),
        (c.JOB_ERROR_CODE_USER_ACTION_REQUIRED, "mfa_required"),
        (c.JOB_ERROR_CODE_MFA_FAILED, "mfa_required"),
        (c.JOB_ERROR_CODE_ACCOUNT_LOCKED, "account_locked"),
    ],
)
def test_errors_that_need_the_user(code: int, reason: str) -> None:
    for status in (Status.ACTIVE, Status.DEGRADED, Status.UNAVAILABLE):
        got = rules.refresh_failed(status, 0, code, transient=False, degraded_after=3)
        assert (got.status, got.reason) == (Status.USER_ACTION_REQUIRED, reason)


def test_platform_unavailable_for_good_is_unavailable() -> None:
    got = rules.refresh_failed(
        Status.ACTIVE, 0, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, transient=False, degraded_after=3
    )
    assert (got.status, got.reason) == (Status.UNAVAILABLE, "platform_unavailable")


def test_consecutive_passing_failures_degrade() -> None:
    status, failures = Status.ACTIVE, 0
    seen = []
    for code in (c.JOB_ERROR_CODE_TIMEOUT, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, c.JOB_ERROR_CODE_TIMEOUT):
        got = rules.refresh_failed(status, failures, code, transient=True, degraded_after=3)
        seen.append((got.status, got.reason, got.failures))
        status, failures = got.status, got.failures
    assert seen == [
        (Status.ACTIVE, "", 1),
        (Status.ACTIVE, "", 2),
        (Status.DEGRADED, "platform_timeout", 3),
    ]
    # A success in between resets the run.
    assert rules.refresh_succeeded(Status.ACTIVE, 2).failures == 0
    # Degraded stays degraded (no second event) while failures go on.
    again = rules.refresh_failed(
        Status.DEGRADED, 3, c.JOB_ERROR_CODE_TIMEOUT, transient=True, degraded_after=3
    )
    assert again.status is Status.DEGRADED and not again.changed(Status.DEGRADED)


def test_errors_that_say_nothing_about_reachability_leave_the_status() -> None:
    for code in (c.JOB_ERROR_CODE_NO_DATA, c.JOB_ERROR_CODE_JOB_NOT_SUPPORTED):
        got = rules.refresh_failed(Status.DEGRADED, 1, code, transient=False, degraded_after=3)
        assert (got.status, got.failures) == (Status.DEGRADED, 1)


def test_a_disabled_account_stays_disabled_whatever_refreshes_say() -> None:
    for code in (c.JOB_ERROR_CODE_INVALID_CREDENTIALS, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE):
        got = rules.refresh_failed(Status.CUSTOMER_DISABLED, 0, code, transient=False, degraded_after=1)
        assert got.status is Status.CUSTOMER_DISABLED


def test_disable_and_enable() -> None:
    for status in Status:
        assert rules.disabled(status) == rules.Decision(Status.CUSTOMER_DISABLED, "monitoring_disabled", 0)
    assert rules.enabled(Status.CUSTOMER_DISABLED) == rules.Decision(Status.ACTIVE, "monitoring_enabled", 0)
    assert not rules.enabled(Status.DEGRADED).changed(Status.DEGRADED)


def test_which_statuses_refresh() -> None:
    def active(status: Status, **kw: bool) -> bool:
        args = {"connected": True, "account_enabled": True, "workspace_enabled": True} | kw
        return rules.schedule_active(status=status, **args)

    assert [s for s in Status if active(s)] == [Status.ACTIVE, Status.DEGRADED, Status.UNAVAILABLE]
    assert not active(Status.ACTIVE, connected=False)
    assert not active(Status.ACTIVE, account_enabled=False)
    assert not active(Status.ACTIVE, workspace_enabled=False)


@pytest.mark.parametrize(
    ("before", "code", "after", "reason"),
    [
        (Status.ACTIVE, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, Status.UNAVAILABLE, "platform_unavailable"),
        (Status.DEGRADED, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, Status.UNAVAILABLE, "platform_unavailable"),
        (Status.ACTIVE, c.JOB_ERROR_CODE_TIMEOUT, Status.DEGRADED, "platform_timeout"),
        (Status.UNAVAILABLE, c.JOB_ERROR_CODE_TIMEOUT, Status.UNAVAILABLE, ""),
        (Status.USER_ACTION_REQUIRED, c.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, Status.USER_ACTION_REQUIRED, ""),
        (Status.CUSTOMER_DISABLED, c.JOB_ERROR_CODE_TIMEOUT, Status.CUSTOMER_DISABLED, ""),
    ],
)
def test_a_link_session_whose_platform_stayed_down_moves_the_bound_account(
    before: Status, code: int, after: Status, reason: str
) -> None:
    decision = rules.session_outage(before, code)
    assert (decision.status, decision.reason) == (after, reason)
    assert decision.changed(before) == (after is not before)
