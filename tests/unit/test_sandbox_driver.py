"""Sandbox driver, its data and the driver registry."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, text_format
from paylink.v1 import common_pb2, data_pb2

from service.drivers import sandbox as sandbox_module
from service.drivers import sandbox_auth, sandbox_data
from service.drivers.base import (
    AccessGrant,
    Credentials,
    EmployerInfo,
    JobContext,
    JobPending,
    LoggedIn,
    MfaChallenge,
    PaystubQuery,
    PlatformError,
    PlatformInfo,
    ShiftQuery,
    SwitchRequest,
    SwitchTarget,
)
from service.drivers.registry import DriverRegistry, UnknownPlatform, default_registry
from service.drivers.sandbox import (
    ALL_JOBS,
    DATA_JOBS,
    SANDBOX_ADP,
    SANDBOX_GIG,
    SANDBOX_MFA,
    SANDBOX_SLOW,
    SANDBOX_WORKDAY,
    SandboxDriver,
)
from service.drivers.traced import TracedDriver

E = common_pb2.JobErrorCode
J = common_pb2.JobName
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
ADP_LIKE = (SANDBOX_ADP, SANDBOX_WORKDAY, SANDBOX_SLOW)
MANY_USERS = [f"user_good+{i}" for i in range(150)]
SOME_USERS = ["user_good", "user_nodata", *MANY_USERS[:38]]
SSN_PATTERN = re.compile(r"(?<!\d)\d{3}-?\d{2}-?\d{4}(?!\d)")

NEW_CHECKING = SwitchTarget(
    type=common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING,
    routing_number="011000015",
    account_number="123456789012",
    name="New Checking",
)
GIG_JOBS = frozenset(
    {
        J.JOB_NAME_IDENTITY,
        J.JOB_NAME_INCOME,
        J.JOB_NAME_PAYSTUBS,
        J.JOB_NAME_SHIFTS,
        J.JOB_NAME_TAX_FORMS,
        J.JOB_NAME_DOCUMENTS,
    }
)
FULL = SwitchRequest(common_pb2.SWITCH_ACTION_FULL, common_pb2.ALLOCATION_TYPE_REMAINDER, 0, NEW_CHECKING)


def partial(kind: int, value: int, target: SwitchTarget = NEW_CHECKING) -> SwitchRequest:
    return SwitchRequest(common_pb2.SWITCH_ACTION_PARTIAL, kind, value, target)


@pytest.fixture
def driver() -> SandboxDriver:
    return SandboxDriver(slow_latency=0.0, clock=lambda: NOW)


def ctx(grant: AccessGrant, platform_id: str = SANDBOX_ADP, **kw: Any) -> JobContext:
    return JobContext(
        account_id="acct-1", platform_id=platform_id, grant=grant, attempt=kw.pop("attempt", 1), **kw
    )


def grant_dict(grant: AccessGrant) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(grant.secret)
    return data


async def login(d: SandboxDriver, username: str, platform_id: str = SANDBOX_ADP) -> AccessGrant:
    result = await d.login(platform_id, Credentials(username, "pass_good"))
    if isinstance(result, MfaChallenge):
        answer = "pinwheel drive" if result.type == "security_question" else "mfa_code"
        result = await d.answer_mfa(platform_id, result.state, answer)
    return result.grant


async def run_job(d: SandboxDriver, job: int, c: JobContext) -> Any:
    if job == J.JOB_NAME_IDENTITY:
        return await d.fetch_identity(c)
    if job == J.JOB_NAME_EMPLOYMENT:
        return await d.fetch_employment(c)
    if job == J.JOB_NAME_INCOME:
        return await d.fetch_income(c)
    if job == J.JOB_NAME_PAYSTUBS:
        return await d.fetch_paystubs(c, PaystubQuery())
    if job == J.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS:
        return await d.fetch_allocations(c)
    if job == J.JOB_NAME_SHIFTS:
        return await d.fetch_shifts(c, ShiftQuery())
    if job == J.JOB_NAME_TAX_FORMS:
        return await d.fetch_tax_forms(c, 0)
    if job == J.JOB_NAME_DOCUMENTS:
        return await d.fetch_documents(c)
    return await d.switch_direct_deposit(c, FULL)


async def job_error(d: SandboxDriver, job: int, c: JobContext) -> PlatformError:
    with pytest.raises(PlatformError) as info:
        await run_job(d, job, c)
    return info.value


# -- platforms ---------------------------------------------------------------------------------


def test_platforms_ids_names_and_jobs(driver: SandboxDriver) -> None:
    got = {p.id: (p.name, p.supported_jobs, p.always_mfa) for p in driver.platforms()}
    assert got == {
        "sandbox_adp": ("ADP (Sandbox)", ALL_JOBS, False),
        "sandbox_workday": ("Workday (Sandbox)", ALL_JOBS - {J.JOB_NAME_SHIFTS}, False),
        "sandbox_gig": ("GigWorks (Sandbox)", GIG_JOBS, False),
        "sandbox_mfa": ("Paycor MFA (Sandbox)", ALL_JOBS, True),
        "sandbox_slow": ("SlowPay (Sandbox)", ALL_JOBS, False),
    }
    assert len(ALL_JOBS) == 9 and J.JOB_NAME_UNSPECIFIED not in ALL_JOBS


@pytest.mark.parametrize("platform_id", [p.id for p in sandbox_module.PLATFORMS])
@pytest.mark.parametrize("job", sorted(ALL_JOBS))
async def test_job_support_per_platform(driver: SandboxDriver, platform_id: str, job: int) -> None:
    grant = await login(driver, "user_good", platform_id)
    supported = job in driver._platforms[platform_id].supported_jobs
    if supported:
        assert await run_job(driver, job, ctx(grant, platform_id))
    else:
        err = await job_error(driver, job, ctx(grant, platform_id))
        assert err.code == E.JOB_ERROR_CODE_JOB_NOT_SUPPORTED
        job_name = J.Name(J.ValueType(job)).removeprefix("JOB_NAME_").lower()
        name = driver._platforms[platform_id].name
        assert err.message == f"{name} does not support {job_name}"
    if platform_id == SANDBOX_GIG:
        assert supported == (job in GIG_JOBS)
    else:
        assert supported == (platform_id != SANDBOX_WORKDAY or job != J.JOB_NAME_SHIFTS)


async def test_unknown_platform_is_job_not_supported(driver: SandboxDriver) -> None:
    with pytest.raises(PlatformError) as info:
        await driver.login("sandbox_nope", Credentials("user_good", "pass_good"))
    assert info.value.code == E.JOB_ERROR_CODE_JOB_NOT_SUPPORTED
    grant = await login(driver, "user_good")
    err = await job_error(driver, J.JOB_NAME_IDENTITY, ctx(grant, "sandbox_nope"))
    assert err.code == E.JOB_ERROR_CODE_JOB_NOT_SUPPORTED
    with pytest.raises(PlatformError) as info:
        await driver.reaccess("acct-1", "sandbox_nope", grant)
    assert info.value.code == E.JOB_ERROR_CODE_JOB_NOT_SUPPORTED


# -- login and credentials ---------------------------------------------------------------------


async def test_user_good_logs_in_and_every_job_succeeds(driver: SandboxDriver) -> None:
    result = await driver.login(SANDBOX_ADP, Credentials("user_good", "pass_good"))
    assert isinstance(result, LoggedIn)
    g = grant_dict(result.grant)
    assert g["username"] == "user_good" and g["password"] == "pass_good"
    assert g["expired"] is False and g["extra_paystubs"] == 0 and g["platform_id"] == SANDBOX_ADP
    assert g["session"].startswith("sbx_sess_") and len(g["session"]) > 20
    c = ctx(result.grant)
    identity = await driver.fetch_identity(c)
    assert identity.full_name == f"{identity.first_name} {identity.last_name}"
    employment = await driver.fetch_employment(c)
    assert employment.employer.name and employment.title
    income = await driver.fetch_income(c)
    assert income.currency == "USD" and income.pay_frequency == data_pb2.PAY_FREQUENCY_BIWEEKLY
    assert len(await driver.fetch_paystubs(c, PaystubQuery())) == 6
    assert (await driver.fetch_allocations(c)).allocations[-1].type == common_pb2.ALLOCATION_TYPE_REMAINDER
    switched = await driver.switch_direct_deposit(c, FULL)
    assert switched.allocations[0].target.account_number_last_four == "9012"


async def test_each_login_gets_a_fresh_session(driver: SandboxDriver) -> None:
    first, second = await login(driver, "user_good"), await login(driver, "user_good")
    assert grant_dict(first)["session"] != grant_dict(second)["session"]


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("user_good", "wrong"),
        ("user_good", ""),
        ("user_mfa", "pass_bad"),
        ("nobody", "pass_good"),
        ("User_Good", "pass_good"),
        ("user_goodx", "pass_good"),
        ("user_bogus+1", "pass_good"),
        ("", "pass_good"),
    ],
)
async def test_invalid_credentials(driver: SandboxDriver, username: str, password: str) -> None:
    with pytest.raises(PlatformError) as info:
        await driver.login(SANDBOX_ADP, Credentials(username, password))
    assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS
    assert not info.value.transient
    if password:
        assert password not in str(info.value)


@pytest.mark.parametrize("password", ["pass_good", "wrong", ""])
@pytest.mark.parametrize("platform_id", [SANDBOX_ADP, SANDBOX_MFA])
async def test_user_locked_with_any_password(driver: SandboxDriver, password: str, platform_id: str) -> None:
    with pytest.raises(PlatformError) as info:
        await driver.login(platform_id, Credentials("user_locked+x", password))
    assert info.value.code == E.JOB_ERROR_CODE_ACCOUNT_LOCKED


# -- MFA ---------------------------------------------------------------------------------------


async def test_user_mfa_code_right_answer(driver: SandboxDriver) -> None:
    challenge = await driver.login(SANDBOX_ADP, Credentials("user_mfa", "pass_good"))
    assert isinstance(challenge, MfaChallenge)
    assert challenge.type == "code"
    assert challenge.prompt == "Enter the code sent to your phone"
    done = await driver.answer_mfa(SANDBOX_ADP, challenge.state, " mfa_code ")
    assert grant_dict(done.grant)["username"] == "user_mfa"
    assert (await driver.fetch_identity(ctx(done.grant))).last_four_ssn.isdigit()


@pytest.mark.parametrize("answer", ["wrong", "MFA_CODE", "", "pinwheel drive"])
async def test_user_mfa_code_wrong_answer(driver: SandboxDriver, answer: str) -> None:
    challenge = await driver.login(SANDBOX_ADP, Credentials("user_mfa", "pass_good"))
    assert isinstance(challenge, MfaChallenge)
    with pytest.raises(PlatformError) as info:
        await driver.answer_mfa(SANDBOX_ADP, challenge.state, answer)
    assert info.value.code == E.JOB_ERROR_CODE_MFA_FAILED


@pytest.mark.parametrize("username", ["user_mfa", "user_good", "user_reauth_mfa", "user_good+7"])
@pytest.mark.parametrize("answer", ["pinwheel drive", "  Pinwheel DRIVE "])
async def test_security_question_on_always_mfa_platform(
    driver: SandboxDriver, username: str, answer: str
) -> None:
    challenge = await driver.login(SANDBOX_MFA, Credentials(username, "pass_good"))
    assert isinstance(challenge, MfaChallenge)
    assert challenge.type == "security_question"
    assert challenge.prompt == "What street did you grow up on?"
    done = await driver.answer_mfa(SANDBOX_MFA, challenge.state, answer)
    assert grant_dict(done.grant)["username"] == username


@pytest.mark.parametrize("answer", ["mfa_code", "pinwheel", "wrong"])
async def test_security_question_wrong_answer(driver: SandboxDriver, answer: str) -> None:
    challenge = await driver.login(SANDBOX_MFA, Credentials("user_mfa", "pass_good"))
    assert isinstance(challenge, MfaChallenge)
    with pytest.raises(PlatformError) as info:
        await driver.answer_mfa(SANDBOX_MFA, challenge.state, answer)
    assert info.value.code == E.JOB_ERROR_CODE_MFA_FAILED
    assert answer not in info.value.message


async def test_mfa_state_is_checked(driver: SandboxDriver) -> None:
    challenge = await driver.login(SANDBOX_ADP, Credentials("user_mfa", "pass_good"))
    assert isinstance(challenge, MfaChallenge)
    for platform_id, state in [
        (SANDBOX_WORKDAY, challenge.state),
        (SANDBOX_ADP, b"{not json"),
        (SANDBOX_ADP, b"{}"),
    ]:
        with pytest.raises(PlatformError) as info:
            await driver.answer_mfa(platform_id, state, "mfa_code")
        assert info.value.code == E.JOB_ERROR_CODE_MFA_FAILED


# -- job behaviours ----------------------------------------------------------------------------


@pytest.mark.parametrize("job", sorted(DATA_JOBS))
async def test_user_error_data_jobs_fail_final(driver: SandboxDriver, job: int) -> None:
    err = await job_error(driver, job, ctx(await login(driver, "user_error")))
    assert err.code == E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE
    assert err.transient is False


async def test_user_error_switch_is_rejected_with_reason(driver: SandboxDriver) -> None:
    err = await job_error(driver, J.JOB_NAME_DIRECT_DEPOSIT_SWITCH, ctx(await login(driver, "user_error")))
    assert err.code == E.JOB_ERROR_CODE_ALLOCATION_REJECTED
    assert "blocked for 10 days" in err.message


@pytest.mark.parametrize("job", sorted(ALL_JOBS))
async def test_user_pending_then_timeout(job: int) -> None:
    now = [NOW]
    d = SandboxDriver(pending_delay=dt.timedelta(seconds=60), clock=lambda: now[0])
    grant = await login(d, "user_pending")
    with pytest.raises(JobPending) as pending:
        await run_job(d, job, ctx(grant))
    assert pending.value.retry_after == dt.timedelta(seconds=60)
    since = NOW
    now[0] = NOW + dt.timedelta(seconds=20)
    with pytest.raises(JobPending) as pending:
        await run_job(d, job, ctx(grant, attempt=2, pending_since=since))
    assert pending.value.retry_after == dt.timedelta(seconds=40)
    now[0] = NOW + dt.timedelta(seconds=60)
    err = await job_error(d, job, ctx(grant, attempt=3, pending_since=since))
    assert err.code == E.JOB_ERROR_CODE_TIMEOUT and err.transient is False
    now[0] = NOW - dt.timedelta(seconds=30)  # clock skew never yields more than the delay
    with pytest.raises(JobPending) as pending:
        await run_job(d, job, ctx(grant, pending_since=since))
    assert pending.value.retry_after == dt.timedelta(seconds=60)


async def test_pending_delay_is_configurable() -> None:
    d = SandboxDriver(pending_delay=dt.timedelta(seconds=5), clock=lambda: NOW)
    grant = await login(d, "user_pending+a")
    err = await job_error(d, J.JOB_NAME_INCOME, ctx(grant, pending_since=NOW - dt.timedelta(seconds=5)))
    assert err.code == E.JOB_ERROR_CODE_TIMEOUT
    with pytest.raises(JobPending) as pending:
        await d.fetch_income(ctx(grant, pending_since=NOW - dt.timedelta(seconds=4)))
    assert pending.value.retry_after == dt.timedelta(seconds=1)


@pytest.mark.parametrize("job", sorted(ALL_JOBS))
async def test_user_flaky_fails_twice_then_succeeds(driver: SandboxDriver, job: int) -> None:
    grant = await login(driver, "user_flaky")
    for attempt in (1, 2):
        err = await job_error(driver, job, ctx(grant, attempt=attempt))
        assert err.code == E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE and err.transient is True
    assert await run_job(driver, job, ctx(grant, attempt=3))
    assert await run_job(driver, job, ctx(grant, attempt=4))


@pytest.mark.parametrize("job", sorted(DATA_JOBS))
async def test_user_nodata_data_jobs(driver: SandboxDriver, job: int) -> None:
    err = await job_error(driver, job, ctx(await login(driver, "user_nodata")))
    assert err.code == E.JOB_ERROR_CODE_NO_DATA


async def test_user_nodata_switch_succeeds(driver: SandboxDriver) -> None:
    result = await driver.switch_direct_deposit(ctx(await login(driver, "user_nodata")), FULL)
    assert [a.type for a in result.allocations] == [common_pb2.ALLOCATION_TYPE_REMAINDER]


BEHAVIOURS = [
    "user_good",
    "user_mfa",
    "user_error",
    "user_pending",
    "user_locked",
    "user_flaky",
    "user_reauth_mfa",
    "user_expired",
    "user_nodata",
    "user_salaried",
    "user_gig",
]


async def outcome(d: SandboxDriver, username: str, platform_id: str = SANDBOX_ADP) -> list[str]:
    """A behaviour fingerprint: login, each job, then re-access."""
    trace: list[str] = []
    try:
        result = await d.login(platform_id, Credentials(username, "pass_good"))
    except PlatformError as exc:
        return [f"login:{E.Name(E.ValueType(exc.code))}"]
    trace.append(f"login:{type(result).__name__}:{getattr(result, 'type', '')}")
    grant = await login(d, username, platform_id)
    for job in sorted(ALL_JOBS):
        try:
            await run_job(d, job, ctx(grant, platform_id))
            trace.append("ok")
        except PlatformError as exc:
            trace.append(f"{E.Name(E.ValueType(exc.code))}:{exc.transient}")
        except JobPending:
            trace.append("pending")
    try:
        again = await d.reaccess("acct-1", platform_id, grant)
        trace.append(f"reaccess:{type(again).__name__}:{getattr(again, 'type', '')}")
    except PlatformError as exc:
        trace.append(f"reaccess:{E.Name(E.ValueType(exc.code))}")
    return trace


@pytest.mark.parametrize("base", BEHAVIOURS)
async def test_suffix_behaves_like_base_name(driver: SandboxDriver, base: str) -> None:
    expected = await outcome(driver, base)
    assert await outcome(driver, f"{base}+abc") == expected
    assert await outcome(driver, f"{base}+x+y") == expected


async def test_behaviour_fingerprints(driver: SandboxDriver) -> None:
    got = {name: await outcome(driver, name) for name in BEHAVIOURS}
    # Jobs in JobName order: identity ... direct_deposit_switch (6), shifts, tax_forms, documents.
    ok9 = ["ok"] * 9
    assert got["user_good"] == ["login:LoggedIn:", *ok9, "reaccess:LoggedIn:"]
    assert got["user_salaried"] == got["user_gig"] == got["user_good"]
    assert got["user_mfa"] == ["login:MfaChallenge:code", *ok9, "reaccess:LoggedIn:"]
    unavailable = "JOB_ERROR_CODE_PLATFORM_UNAVAILABLE:False"
    assert (
        got["user_error"][1:10]
        == [unavailable] * 5 + ["JOB_ERROR_CODE_ALLOCATION_REJECTED:False"] + [unavailable] * 3
    )
    assert got["user_pending"][1:10] == ["pending"] * 9
    assert got["user_locked"] == ["login:JOB_ERROR_CODE_ACCOUNT_LOCKED"]
    assert got["user_flaky"][1:10] == ["JOB_ERROR_CODE_PLATFORM_UNAVAILABLE:True"] * 9  # attempt 1
    assert got["user_reauth_mfa"] == ["login:LoggedIn:", *ok9, "reaccess:MfaChallenge:code"]
    assert got["user_expired"] == ["login:LoggedIn:", *ok9, "reaccess:JOB_ERROR_CODE_INVALID_CREDENTIALS"]
    no_data = "JOB_ERROR_CODE_NO_DATA:False"
    assert got["user_nodata"][1:10] == [no_data] * 5 + ["ok"] + [no_data] * 3


# -- re-access, expiry, new paystubs -----------------------------------------------------------


@pytest.mark.parametrize("username", ["user_good", "user_mfa", "user_flaky", "user_nodata", "user_error"])
async def test_reaccess_gives_fresh_session_same_login_once_the_session_ended(username: str) -> None:
    now = [NOW]
    driver = SandboxDriver(slow_latency=0.0, clock=lambda: now[0], session_lifetime=dt.timedelta(minutes=10))
    grant = await login(driver, username)
    assert grant_dict(grant)["session_expires"] == int(NOW.timestamp()) + 600
    now[0] = NOW + dt.timedelta(minutes=10)  # the session opened at the login has just ended
    result = await driver.reaccess("acct-1", SANDBOX_ADP, grant)
    assert isinstance(result, LoggedIn)
    before, after = grant_dict(grant), grant_dict(result.grant)
    assert after["session"] != before["session"]
    assert after["session_expires"] == int(now[0].timestamp()) + 600
    assert {k: v for k, v in after.items() if k not in ("session", "session_expires")} == {
        k: v for k, v in before.items() if k not in ("session", "session_expires")
    }


async def test_a_reaccess_within_the_session_returns_the_very_grant() -> None:
    # A platform session lives for minutes: re-accessing within it uses it (nothing new to store);
    # the first re-access after it ended opens a new one, which later re-accesses use in turn.
    now = [NOW]
    driver = SandboxDriver(slow_latency=0.0, clock=lambda: now[0], session_lifetime=dt.timedelta(minutes=10))
    grant = await login(driver, "user_good")
    for minutes in (0, 5, 9):
        now[0] = NOW + dt.timedelta(minutes=minutes, seconds=59)
        same = await driver.reaccess("acct-1", SANDBOX_ADP, grant)
        assert isinstance(same, LoggedIn) and same.grant.secret == grant.secret
    now[0] = NOW + dt.timedelta(minutes=10)
    renewed = await driver.reaccess("acct-1", SANDBOX_ADP, grant)
    assert isinstance(renewed, LoggedIn) and renewed.grant.secret != grant.secret
    now[0] = NOW + dt.timedelta(minutes=19)
    again = await driver.reaccess("acct-1", SANDBOX_ADP, renewed.grant)
    assert isinstance(again, LoggedIn) and again.grant.secret == renewed.grant.secret
    # The session is no way around the checks: an expired password or a locked-out user still fail.
    with pytest.raises(PlatformError) as info:
        await driver.reaccess("acct-1", SANDBOX_ADP, driver.expire_grant(renewed.grant))
    assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS
    expired_user = await login(driver, "user_expired+s")
    with pytest.raises(PlatformError):
        await driver.reaccess("acct-1", SANDBOX_ADP, expired_user)
    # A grant stored before sessions had a lifetime has no open session: the re-access renews it.
    fields = {k: v for k, v in grant_dict(grant).items() if k != "session_expires"}
    old = AccessGrant(json.dumps(fields, sort_keys=True).encode())
    renewed_old = await driver.reaccess("acct-1", SANDBOX_ADP, old)
    assert isinstance(renewed_old, LoggedIn)
    assert grant_dict(renewed_old.grant)["session"] != fields["session"]


async def test_no_session_lifetime_renews_the_session_on_every_reaccess() -> None:
    driver = SandboxDriver(slow_latency=0.0, clock=lambda: NOW, session_lifetime=dt.timedelta(0))
    grant = await login(driver, "user_good")
    sessions = {grant_dict(grant)["session"]}
    for _ in range(3):
        result = await driver.reaccess("acct-1", SANDBOX_ADP, grant)
        assert isinstance(result, LoggedIn)
        grant = result.grant
        sessions.add(grant_dict(grant)["session"])
    assert len(sessions) == 4


async def test_reauth_mfa_reaccess_asks_code_every_time(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_reauth_mfa")
    assert isinstance(await driver.login(SANDBOX_ADP, Credentials("user_reauth_mfa", "pass_good")), LoggedIn)
    grant, _ = driver.add_paystub(grant)
    for _ in range(2):
        challenge = await driver.reaccess("acct-1", SANDBOX_ADP, grant)
        assert isinstance(challenge, MfaChallenge) and challenge.type == "code"
        with pytest.raises(PlatformError) as info:
            await driver.answer_mfa(SANDBOX_ADP, challenge.state, "nope")
        assert info.value.code == E.JOB_ERROR_CODE_MFA_FAILED
        done = await driver.answer_mfa(SANDBOX_ADP, challenge.state, "mfa_code")
        before, after = grant_dict(grant), grant_dict(done.grant)
        assert after["session"] != before["session"]
        assert (after["username"], after["password"], after["extra_paystubs"]) == (
            "user_reauth_mfa",
            "pass_good",
            1,
        )
        grant = done.grant


@pytest.mark.parametrize("username", ["user_good", "user_expired", "user_mfa"])
async def test_always_mfa_platform_reaccess(driver: SandboxDriver, username: str) -> None:
    grant = await login(driver, username, SANDBOX_MFA)
    if username == "user_expired":
        with pytest.raises(PlatformError) as info:
            await driver.reaccess("acct-1", SANDBOX_MFA, grant)
        assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS
        return
    challenge = await driver.reaccess("acct-1", SANDBOX_MFA, grant)
    assert isinstance(challenge, MfaChallenge) and challenge.type == "security_question"
    done = await driver.answer_mfa(SANDBOX_MFA, challenge.state, "PINWHEEL DRIVE")
    assert grant_dict(done.grant)["username"] == username


async def test_user_expired_every_new_grant_fails_reaccess(driver: SandboxDriver) -> None:
    for _ in range(2):
        grant = await login(driver, "user_expired+z")
        assert (await driver.fetch_identity(ctx(grant))).full_name
        with pytest.raises(PlatformError) as info:
            await driver.reaccess("acct-1", SANDBOX_ADP, grant)
        assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS


async def test_expire_grant_then_new_login_works(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_good")
    expired = driver.expire_grant(grant)
    assert grant_dict(expired)["expired"] is True
    assert grant_dict(expired)["username"] == "user_good"
    with pytest.raises(PlatformError) as info:
        await driver.reaccess("acct-1", SANDBOX_ADP, expired)
    assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS
    err = await job_error(driver, J.JOB_NAME_IDENTITY, ctx(expired))
    assert err.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS
    fresh = await login(driver, "user_good")
    assert isinstance(await driver.reaccess("acct-1", SANDBOX_ADP, fresh), LoggedIn)


@pytest.mark.parametrize(
    "secret",
    [
        b"garbage",
        b"{}",
        b'{"username": 1, "password": "pass_good", "platform_id": "sandbox_adp", "session": "s",'
        b' "expired": false, "extra_paystubs": 0}',
        b'{"username": "user_good", "password": "pass_good", "platform_id": "sandbox_adp", "session": "s",'
        b' "expired": false, "extra_paystubs": -1}',
        b'{"username": "user_good", "password": "wrong", "platform_id": "sandbox_adp", "session": "s",'
        b' "expired": false, "extra_paystubs": 0}',
    ],
)
async def test_reaccess_rejects_bad_grants(driver: SandboxDriver, secret: bytes) -> None:
    with pytest.raises(PlatformError) as info:
        await driver.reaccess("acct-1", SANDBOX_ADP, AccessGrant(secret))
    assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS
    assert b"wrong" not in str(info.value).encode()


async def test_grant_is_bound_to_its_platform(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_good", SANDBOX_ADP)
    with pytest.raises(PlatformError) as info:
        await driver.reaccess("acct-1", SANDBOX_WORKDAY, grant)
    assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS


async def test_add_paystub_is_newest_and_keeps_the_others(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_good")
    before = await driver.fetch_paystubs(ctx(grant), PaystubQuery())
    grant2, added = driver.add_paystub(grant)
    assert grant_dict(grant2)["extra_paystubs"] == 1
    newest_before = dt.date.fromisoformat(before[0].paystub.pay_date)
    assert dt.date.fromisoformat(added.paystub.pay_date) == newest_before + dt.timedelta(days=14)
    after = await driver.fetch_paystubs(ctx(grant2), PaystubQuery())
    assert len(after) == 7
    assert after[0] == added
    assert after[1:] == before
    grant3, added2 = driver.add_paystub(grant2)
    assert grant_dict(grant3)["extra_paystubs"] == 2 and added2.paystub.pay_date > added.paystub.pay_date
    relogged = await driver.reaccess("acct-1", SANDBOX_ADP, grant3)
    assert isinstance(relogged, LoggedIn)
    assert (await driver.fetch_paystubs(ctx(relogged.grant), PaystubQuery(count=1)))[0] == added2


# -- latency -----------------------------------------------------------------------------------


async def test_latency_sleeps_and_zero_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr("service.drivers.sandbox.asyncio.sleep", fake_sleep)
    quiet = SandboxDriver(latency=0.0, slow_latency=0.0)
    grant = await login(quiet, "user_good", SANDBOX_SLOW)
    await quiet.fetch_identity(ctx(grant, SANDBOX_SLOW))
    assert slept == []
    d = SandboxDriver(latency=0.25, slow_latency=2.0)
    grant = await login(d, "user_good", SANDBOX_ADP)
    await d.fetch_income(ctx(grant))
    await d.reaccess("acct-1", SANDBOX_ADP, grant)
    assert slept == [0.25, 0.25, 0.25]
    slept.clear()
    grant = await login(d, "user_good", SANDBOX_SLOW)
    await d.fetch_identity(ctx(grant, SANDBOX_SLOW))
    assert slept == [2.25, 2.25]
    slept.clear()
    only_slow = SandboxDriver(latency=0.0, slow_latency=1.5)
    await login(only_slow, "user_good", SANDBOX_ADP)
    await login(only_slow, "user_good", SANDBOX_SLOW)
    assert slept == [1.5]


# -- data --------------------------------------------------------------------------------------


def snapshot(username: str) -> bytes:
    parts = [
        sandbox_data.identity(username),
        sandbox_data.employment(username),
        sandbox_data.income(username),
        sandbox_data.allocations(username),
        *(p.paystub for p in sandbox_data.paystubs(username, 3)),
    ]
    ids = "".join(p.external_id for p in sandbox_data.paystubs(username, 3)).encode()
    return b"".join(m.SerializeToString(deterministic=True) for m in parts) + ids


async def test_same_username_same_data_across_drivers() -> None:
    a, b = SandboxDriver(), SandboxDriver()
    ga, gb = await login(a, "user_good+same"), await login(b, "user_good+same")
    for job in sorted(DATA_JOBS):
        assert await run_job(a, job, ctx(ga)) == await run_job(b, job, ctx(gb))


def test_data_is_the_same_in_another_process() -> None:
    code = (
        "import hashlib, sys; sys.path[:0] = ['.', 'generated'];"
        "from tests.unit.test_sandbox_driver import snapshot;"
        "print(hashlib.sha256(b''.join(snapshot(f'user_good+{i}') for i in range(5))).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
    )
    expected = hashlib.sha256(b"".join(snapshot(f"user_good+{i}") for i in range(5))).hexdigest()
    assert out.stdout.strip() == expected


def test_different_usernames_different_data() -> None:
    assert len({snapshot(u) for u in MANY_USERS}) == len(MANY_USERS)
    identities = {
        (i.full_name, i.date_of_birth, i.last_four_ssn) for i in map(sandbox_data.identity, MANY_USERS)
    }
    assert len(identities) == len(MANY_USERS)
    assert sandbox_data.identity("user_good") != sandbox_data.identity("user_good+1")


def test_data_has_variety() -> None:
    employments = [sandbox_data.employment(u) for u in MANY_USERS]
    incomes = [sandbox_data.income(u) for u in MANY_USERS]
    assert {e.status for e in employments} == {
        data_pb2.EMPLOYMENT_STATUS_EMPLOYED,
        data_pb2.EMPLOYMENT_STATUS_TERMINATED,
    }
    assert {i.compensation_unit for i in incomes} == {
        data_pb2.COMPENSATION_UNIT_HOURLY,
        data_pb2.COMPENSATION_UNIT_ANNUAL,
    }
    assert {len(sandbox_data.allocations(u).allocations) for u in MANY_USERS} == {1, 2}
    categories = {
        e.category for u in MANY_USERS for p in sandbox_data.paystubs(u) for e in p.paystub.earnings
    }
    assert categories == {
        data_pb2.EARNING_CATEGORY_WAGES,
        data_pb2.EARNING_CATEGORY_OVERTIME,
        data_pb2.EARNING_CATEGORY_BONUS,
    }


@pytest.mark.parametrize("username", SOME_USERS)
def test_identity_is_realistic_and_has_no_full_ssn(username: str) -> None:
    identity = sandbox_data.identity(username)
    assert identity.first_name in sandbox_data._FIRST_NAMES and identity.last_name in sandbox_data._LAST_NAMES
    assert re.fullmatch(r"\d{4}", identity.last_four_ssn)
    dob = dt.date.fromisoformat(identity.date_of_birth)
    age = (sandbox_data.ANCHOR_DATE - dob).days // 365.25
    assert 21 <= age <= 65
    assert 1 <= len(identity.emails) <= 2 and all(
        re.fullmatch(r"[a-z.0-9]+@example\.(com|net|org)", e) for e in identity.emails
    )
    assert 1 <= len(identity.phone_numbers) <= 2
    assert all(re.fullmatch(r"\+1555[2-9]\d{6}", p.value) for p in identity.phone_numbers)
    assert identity.address.country == "US" and re.fullmatch(r"\d{5}", identity.address.postal_code)
    assert identity.address.line1 and identity.address.city and len(identity.address.state) == 2
    for text in (text_format.MessageToString(identity), json_format.MessageToJson(identity)):
        assert not SSN_PATTERN.search(text)


def test_ssn_pattern_catches_full_ssns() -> None:
    assert SSN_PATTERN.search('x: "123-45-6789"') and SSN_PATTERN.search("ssn 123456789 ")
    assert not SSN_PATTERN.search("+15552001234")


@pytest.mark.parametrize("username", SOME_USERS)
def test_employment_and_income_are_consistent(username: str) -> None:
    employment, income = sandbox_data.employment(username), sandbox_data.income(username)
    newest = sandbox_data.paystubs(username)[0].paystub
    start = dt.date.fromisoformat(employment.start_date)
    assert start < dt.date.fromisoformat(sandbox_data.paystubs(username)[-1].paystub.pay_period_start)
    if employment.status == data_pb2.EMPLOYMENT_STATUS_TERMINATED:
        assert employment.termination_date == newest.pay_period_end
    else:
        assert employment.status == data_pb2.EMPLOYMENT_STATUS_EMPLOYED and employment.termination_date == ""
    assert employment.employer.name and employment.employer.address.country == "US"
    wages = newest.earnings[0]
    assert wages.category == data_pb2.EARNING_CATEGORY_WAGES
    if income.compensation_unit == data_pb2.COMPENSATION_UNIT_HOURLY:
        assert 1800 <= income.compensation_amount_cents <= 6500
        assert wages.rate_cents == income.compensation_amount_cents
        assert wages.amount.amount_cents == (wages.hours_hundredths * wages.rate_cents + 50) // 100
    else:
        assert 4_500_000 <= income.compensation_amount_cents <= 15_000_000
        assert wages.amount.amount_cents == income.compensation_amount_cents // 26
        assert wages.hours_hundredths == 0 and wages.rate_cents == 0
    assert income.currency == "USD"
    # A gig platform reports only the frequency; paylink derives the rest (income_rules).
    gig = sandbox_data.income(username, gig=True)
    assert gig == data_pb2.Income(currency="USD", pay_frequency=data_pb2.PAY_FREQUENCY_VARIABLE)


async def test_gig_platform_income_is_variable(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_good", SANDBOX_GIG)
    assert (
        await driver.fetch_income(ctx(grant, SANDBOX_GIG))
    ).pay_frequency == data_pb2.PAY_FREQUENCY_VARIABLE


@pytest.mark.parametrize("username", SOME_USERS)
def test_paystub_arithmetic(username: str) -> None:
    stubs = sandbox_data.paystubs(username, 4)
    assert len(stubs) == 10
    for fetched in stubs:
        p = fetched.paystub
        money = [p.gross_pay, p.net_pay, *(e.amount for e in p.earnings)]
        money += [*(d.amount for d in p.deductions), *(t.amount for t in p.taxes)]
        assert {m.currency for m in money} == {"USD"}
        gross = sum(e.amount.amount_cents for e in p.earnings)
        deductions = sum(d.amount.amount_cents for d in p.deductions)
        taxes = {t.category: t.amount.amount_cents for t in p.taxes}
        assert p.gross_pay.amount_cents == gross > 0
        assert p.net_pay.amount_cents == gross - deductions - sum(taxes.values())
        assert 0.4 * gross < p.net_pay.amount_cents < 0.9 * gross
        assert {d.category for d in p.deductions} == {
            data_pb2.DEDUCTION_CATEGORY_RETIREMENT,
            data_pb2.DEDUCTION_CATEGORY_HEALTH,
        }
        assert all(d.pre_tax for d in p.deductions)
        health = next(
            d.amount.amount_cents for d in p.deductions if d.category == data_pb2.DEDUCTION_CATEGORY_HEALTH
        )
        assert abs(taxes[data_pb2.TAX_CATEGORY_SOCIAL_SECURITY] - (gross - health) * 0.062) <= 0.5
        assert abs(taxes[data_pb2.TAX_CATEGORY_MEDICARE] - (gross - health) * 0.0145) <= 0.5
        assert taxes[data_pb2.TAX_CATEGORY_FEDERAL_INCOME] > 0
        assert [t.category for t in p.time_off] == [
            data_pb2.TIME_OFF_CATEGORY_VACATION,
            data_pb2.TIME_OFF_CATEGORY_SICK,
        ]
        assert all(t.remaining_hundredths >= 0 and t.used_hundredths in (0, 800) for t in p.time_off)
        end = dt.date.fromisoformat(p.pay_period_end)
        assert dt.date.fromisoformat(p.pay_period_start) == end - dt.timedelta(days=13)
        assert end < dt.date.fromisoformat(p.pay_date)


def test_paystub_arithmetic_for_many_users() -> None:
    for username in [f"user_flaky+{i}" for i in range(400)]:
        for fetched in sandbox_data.paystubs(username, 1):
            p = fetched.paystub
            withheld = sum(d.amount.amount_cents for d in p.deductions) + sum(
                t.amount.amount_cents for t in p.taxes
            )
            assert p.gross_pay.amount_cents == sum(e.amount.amount_cents for e in p.earnings), username
            assert p.net_pay.amount_cents == p.gross_pay.amount_cents - withheld, username
            assert p.net_pay.amount_cents > 0, username


def test_paystub_dates_order_and_ids() -> None:
    stubs = sandbox_data.paystubs("user_good", 2)
    dates = [dt.date.fromisoformat(s.paystub.pay_date) for s in stubs]
    assert all(a - b == dt.timedelta(days=14) for a, b in itertools.pairwise(dates))
    base_newest = dates[2]
    assert sandbox_data.ANCHOR_DATE - dt.timedelta(days=13) <= base_newest <= sandbox_data.ANCHOR_DATE
    assert len({s.external_id for s in stubs}) == 8
    assert stubs[0].external_id == sandbox_data.paystub_external_id("user_good", stubs[0].paystub.pay_date)
    assert stubs[0].external_id != sandbox_data.paystub_external_id("user_good+1", stubs[0].paystub.pay_date)
    assert not stubs[0].paystub.id and not stubs[0].paystub.account_id


def test_time_off_balances_carry_over() -> None:
    for username in MANY_USERS[:30]:
        oldest_first = list(reversed(sandbox_data.paystubs(username, 5)))
        for prev, cur in itertools.pairwise(oldest_first):
            for accrual, a, b in zip((462, 154), prev.paystub.time_off, cur.paystub.time_off, strict=True):
                assert b.remaining_hundredths == a.remaining_hundredths + accrual - b.used_hundredths


async def test_paystub_query_filters(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_good")
    every = await driver.fetch_paystubs(ctx(grant), PaystubQuery())
    dates = [s.paystub.pay_date for s in every]
    assert dates == sorted(dates, reverse=True)
    assert await driver.fetch_paystubs(ctx(grant), PaystubQuery(count=2)) == every[:2]
    assert await driver.fetch_paystubs(ctx(grant), PaystubQuery(from_pay_date=dates[2])) == every[:3]
    assert await driver.fetch_paystubs(ctx(grant), PaystubQuery(to_pay_date=dates[4])) == every[4:]
    window = PaystubQuery(count=1, from_pay_date=dates[4], to_pay_date=dates[1])
    assert await driver.fetch_paystubs(ctx(grant), window) == [every[1]]
    assert await driver.fetch_paystubs(ctx(grant), PaystubQuery(from_pay_date="2099-01-01")) == []
    assert len(sandbox_data.paystubs("user_good", 40)) == sandbox_data.MAX_PAYSTUBS


@pytest.mark.parametrize("username", SOME_USERS)
def test_allocations_are_realistic(username: str) -> None:
    allocations = sandbox_data.allocations(username).allocations
    assert [a.priority for a in allocations] == list(range(1, len(allocations) + 1))
    assert allocations[-1].type == common_pb2.ALLOCATION_TYPE_REMAINDER and allocations[-1].value == 0
    assert allocations[-1].target.type == common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING
    net = sandbox_data.paystubs(username)[0].paystub.net_pay.amount_cents
    for a in allocations:
        assert sandbox_data.aba_valid(a.target.routing_number)
        assert re.fullmatch(r"\d{4}", a.target.account_number_last_four)
        assert a.target.name
        if a.type == common_pb2.ALLOCATION_TYPE_AMOUNT:
            assert 0 < a.value < net and a.target.type == common_pb2.DEPOSIT_ACCOUNT_TYPE_SAVINGS


def test_aba_checksum() -> None:
    assert sandbox_data.aba_valid("011000015")  # Federal Reserve Bank of Boston
    assert sandbox_data.aba_valid("021000021")  # JPMorgan Chase
    assert not sandbox_data.aba_valid("011000016")
    assert not sandbox_data.aba_valid("01100001")
    assert not sandbox_data.aba_valid("01100001x")


# -- switch ------------------------------------------------------------------------------------


async def test_full_switch_replaces_everything(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_good+sw")
    result = await driver.switch_direct_deposit(ctx(grant), FULL)
    assert len(result.allocations) == 1
    only = result.allocations[0]
    assert (only.type, only.value, only.priority) == (common_pb2.ALLOCATION_TYPE_REMAINDER, 0, 1)
    assert only.target == data_pb2.DepositTarget(
        name="New Checking",
        type=common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        account_number_last_four="9012",
        routing_number="011000015",
    )
    assert "123456789012" not in text_format.MessageToString(result)
    assert await driver.switch_direct_deposit(ctx(grant), FULL) == result


@pytest.mark.parametrize("username", ["user_good", "user_good+2", "user_good+5", "user_good+9"])
@pytest.mark.parametrize(
    ("kind", "value"),
    [(common_pb2.ALLOCATION_TYPE_AMOUNT, 15_000), (common_pb2.ALLOCATION_TYPE_PERCENTAGE, 20)],
)
async def test_partial_switch_goes_first(driver: SandboxDriver, username: str, kind: int, value: int) -> None:
    grant = await login(driver, username)
    existing = list((await driver.fetch_allocations(ctx(grant))).allocations)
    savings = SwitchTarget(common_pb2.DEPOSIT_ACCOUNT_TYPE_SAVINGS, "021000021", "99887766", "")
    result = await driver.switch_direct_deposit(ctx(grant), partial(kind, value, savings))
    first, *rest = result.allocations
    assert (first.type, first.value, first.priority) == (kind, value, 1)
    assert first.target == data_pb2.DepositTarget(
        name="Savings",
        type=common_pb2.DEPOSIT_ACCOUNT_TYPE_SAVINGS,
        account_number_last_four="7766",
        routing_number="021000021",
    )
    assert [(a.type, a.value, a.target) for a in rest] == [(a.type, a.value, a.target) for a in existing]
    assert [a.priority for a in result.allocations] == list(range(1, len(existing) + 2))
    assert result.allocations[-1].type == common_pb2.ALLOCATION_TYPE_REMAINDER
    assert "99887766" not in text_format.MessageToString(result)
    assert await driver.switch_direct_deposit(ctx(grant), partial(kind, value, savings)) == result


async def test_partial_amount_up_to_net_pay(driver: SandboxDriver) -> None:
    grant = await login(driver, "user_good")
    net = (await driver.fetch_paystubs(ctx(grant), PaystubQuery(count=1)))[0].paystub.net_pay.amount_cents
    ok = await driver.switch_direct_deposit(ctx(grant), partial(common_pb2.ALLOCATION_TYPE_AMOUNT, net))
    assert ok.allocations[0].value == net
    err = await job_error_switch(driver, grant, partial(common_pb2.ALLOCATION_TYPE_AMOUNT, net + 1))
    assert err.code == E.JOB_ERROR_CODE_ALLOCATION_REJECTED
    assert err.message.startswith(
        f"The amount ${(net + 1) // 100:,}.{(net + 1) % 100:02d} exceeds the net pay"
    )


async def job_error_switch(d: SandboxDriver, grant: AccessGrant, request: SwitchRequest) -> PlatformError:
    with pytest.raises(PlatformError) as info:
        await d.switch_direct_deposit(ctx(grant), request)
    return info.value


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (partial(common_pb2.ALLOCATION_TYPE_PERCENTAGE, 101), "between 1% and 100%, not 101%"),
        (partial(common_pb2.ALLOCATION_TYPE_PERCENTAGE, 0), "between 1% and 100%, not 0%"),
        (partial(common_pb2.ALLOCATION_TYPE_AMOUNT, 0), "greater than $0.00"),
        (partial(common_pb2.ALLOCATION_TYPE_AMOUNT, 10_000_000), "exceeds the net pay"),
        (partial(common_pb2.ALLOCATION_TYPE_REMAINDER, 0), "needs a fixed amount or a percentage"),
        (
            SwitchRequest(
                common_pb2.SWITCH_ACTION_UNSPECIFIED, common_pb2.ALLOCATION_TYPE_AMOUNT, 1, NEW_CHECKING
            ),
            "Unknown direct deposit change",
        ),
        (
            SwitchRequest(
                common_pb2.SWITCH_ACTION_FULL,
                0,
                0,
                SwitchTarget(common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING, "011000016", "12345", ""),
            ),
            "not a valid ABA routing number",
        ),
        (
            SwitchRequest(
                common_pb2.SWITCH_ACTION_FULL,
                0,
                0,
                SwitchTarget(common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING, "011000015", "12a45", ""),
            ),
            "5 to 17 digits",
        ),
        (
            SwitchRequest(common_pb2.SWITCH_ACTION_FULL, 0, 0, SwitchTarget(0, "011000015", "123456", "")),
            "checking or savings",
        ),
    ],
)
async def test_switch_rejections(driver: SandboxDriver, request_: SwitchRequest, reason: str) -> None:
    grant = await login(driver, "user_good")
    err = await job_error_switch(driver, grant, request_)
    assert err.code == E.JOB_ERROR_CODE_ALLOCATION_REJECTED and err.transient is False
    assert reason in err.message
    assert request_.target.account_number not in err.message


# -- registry ----------------------------------------------------------------------------------


class FakeDriver(SandboxDriver):
    def platforms(self) -> list[PlatformInfo]:
        return [PlatformInfo("real_acme", "Acme Payroll", frozenset({J.JOB_NAME_IDENTITY}))]

    def employers(self) -> list[EmployerInfo]:
        return [
            EmployerInfo("emp_acme_widgets", "Acme Widgets", "12-3456789", "real_acme", data_pb2.Address())
        ]


class StrayEmployerDriver(FakeDriver):
    def employers(self) -> list[EmployerInfo]:
        return [EmployerInfo("emp_stray", "Stray Inc.", "12-3456780", "sandbox_adp", data_pb2.Address())]


def test_default_registry() -> None:
    registry = default_registry(latency=0.0, slow_latency=0.0, pending_delay=dt.timedelta(seconds=5))
    assert [p.name for p in registry.platforms()] == [
        "ADP (Sandbox)",
        "GigWorks (Sandbox)",
        "Paycor MFA (Sandbox)",
        "SlowPay (Sandbox)",
        "Workday (Sandbox)",
    ]
    assert registry.platform(SANDBOX_GIG) == next(p for p in sandbox_module.PLATFORMS if p.id == SANDBOX_GIG)
    assert registry.platform("nope") is None
    driver = registry.implementation(SANDBOX_ADP)
    assert isinstance(driver, SandboxDriver) and driver is registry.implementation(SANDBOX_MFA)
    # What the core calls is the same driver, each call in a span (service/drivers/traced.py).
    traced = registry.driver_for(SANDBOX_ADP)
    assert isinstance(traced, TracedDriver) and traced.inner is driver
    assert driver._pending_delay == dt.timedelta(seconds=5)
    with pytest.raises(UnknownPlatform) as info:
        registry.driver_for("nope")
    assert isinstance(info.value, LookupError) and not isinstance(info.value, KeyError)
    assert info.value.platform_id == "nope"


def test_register_another_driver() -> None:
    registry = default_registry()
    fake = FakeDriver()
    registry.register(fake)
    assert registry.implementation("real_acme") is fake
    assert registry.platforms()[0].id == "real_acme"  # "Acme Payroll" sorts first
    acme = registry.employer("emp_acme_widgets")
    assert acme is not None and acme.platform_id == "real_acme" and registry.employers()[0] == acme
    with pytest.raises(ValueError, match="employer on a platform it does not serve"):
        DriverRegistry().register(StrayEmployerDriver())
    with pytest.raises(ValueError, match="real_acme"):
        registry.register(FakeDriver())
    with pytest.raises(ValueError, match="sandbox_adp"):
        registry.register(SandboxDriver())
    assert DriverRegistry().platforms() == []


# -- sandbox time and change (monitoring, issue 12) ------------------------------------------------


def test_clock_brings_a_paystub_each_pay_period() -> None:
    user = "user_good+clock"
    base = sandbox_data.paystubs(user)
    assert sandbox_data.paystubs(user, days_advanced=0) == base
    newest = dt.date.fromisoformat(base[0].paystub.pay_date)
    days_to_next = (newest + sandbox_data.PAY_PERIOD - sandbox_data.ANCHOR_DATE).days
    assert sandbox_data.paystubs(user, days_advanced=days_to_next - 1) == base
    one = sandbox_data.paystubs(user, days_advanced=days_to_next)
    assert len(one) == len(base) + 1 and one[1:] == base  # old ones unchanged
    assert one[0].paystub.pay_date == (newest + sandbox_data.PAY_PERIOD).isoformat()
    assert sandbox_data.paystubs(user, days_advanced=days_to_next) == one  # deterministic


def test_clock_brings_a_raise() -> None:
    user = "user_good+raise"
    before = sandbox_data.income(user, days_advanced=89)
    after = sandbox_data.income(user, days_advanced=90)
    assert before == sandbox_data.income(user)
    assert before.compensation_amount_cents < after.compensation_amount_cents
    assert after.compensation_amount_cents <= before.compensation_amount_cents * 105 // 100 + 100
    stubs = sandbox_data.paystubs(user, days_advanced=120)
    raise_day = sandbox_data.raise_date().isoformat()
    later = [s for s in stubs if s.paystub.pay_date >= raise_day]
    earlier = [s for s in stubs if s.paystub.pay_date < raise_day]
    assert later and earlier
    # Paystubs before the raise are what they were without it.
    unraised = {s.external_id: s for s in sandbox_data.paystubs(user, days_advanced=89)}
    assert all(unraised[s.external_id] == s for s in earlier if s.external_id in unraised)
    rate = [e.rate_cents for s in later for e in s.paystub.earnings if e.rate_cents]
    assert not rate or rate[0] == after.compensation_amount_cents


def test_allocation_changed_outside_paylink() -> None:
    user = "user_good+moved"
    target = data_pb2.DepositTarget(
        name="Elsewhere Bank",
        type=common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        routing_number="011000015",
        account_number_last_four="9876",
    )
    moved = sandbox_data.allocations(user, target)
    assert [(a.type, a.target.account_number_last_four, a.priority) for a in moved.allocations] == [
        (common_pb2.ALLOCATION_TYPE_REMAINDER, "9876", 1)
    ]
    assert sandbox_data.allocations(user) != moved
    driver = sandbox_module.SandboxDriver()
    grant = sandbox_module.Grant("user_good+moved", "pass_good", "sandbox_adp", "s").encode()
    changed, shown = driver.change_allocation(grant, target)
    assert shown == moved
    assert sandbox_module.Grant.decode(changed.secret).deposit_target() == target
    later, days = driver.advance_clock(changed, 30)
    assert days == 30 and sandbox_module.Grant.decode(later.secret).deposit_target() == target


async def test_a_switch_is_kept_by_the_platform_until_the_pay_moves_elsewhere(driver: SandboxDriver) -> None:
    """The sandbox keeps a switch made through paylink in the grant the call leaves (`ctx.renewed`),
    as a real platform keeps it: later allocations jobs find the switched allocations (so a refresh
    reports no change), a later partial switch builds on them, a re-access keeps them, and a
    ChangeAllocation (the whole pay moved outside paylink) replaces them."""
    grant = await login(driver, "user_good+kept")
    profile_split = await driver.fetch_allocations(ctx(grant))
    first = ctx(grant)
    switched = await driver.switch_direct_deposit(first, FULL)
    assert switched != profile_split
    after = first.renewed.grant
    assert after is not None and await driver.fetch_allocations(ctx(after)) == switched
    assert await driver.fetch_allocations(ctx(grant)) == profile_split  # the old grant: the old platform
    reaccessed = await driver.reaccess("acct-1", SANDBOX_ADP, after)
    assert isinstance(reaccessed, LoggedIn)
    assert await driver.fetch_allocations(ctx(reaccessed.grant)) == switched

    savings = SwitchTarget(common_pb2.DEPOSIT_ACCOUNT_TYPE_SAVINGS, "021000021", "99887766", "")
    second = ctx(reaccessed.grant)
    both = await driver.switch_direct_deposit(
        second, partial(common_pb2.ALLOCATION_TYPE_AMOUNT, 5_000, savings)
    )
    assert [(a.target.account_number_last_four, a.priority) for a in both.allocations] == [
        ("7766", 1),
        ("9012", 2),
    ]
    assert second.renewed.grant is not None
    assert await driver.fetch_allocations(ctx(second.renewed.grant)) == both
    assert "99887766" not in second.renewed.grant.secret.decode()  # last four only, like the data

    target = data_pb2.DepositTarget(
        name="Elsewhere",
        type=common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        routing_number="011000015",
        account_number_last_four="4321",
    )
    moved, shown = driver.change_allocation(second.renewed.grant, target)
    assert await driver.fetch_allocations(ctx(moved)) == shown
    assert [a.target.account_number_last_four for a in shown.allocations] == ["4321"]
    # Data jobs leave the grant alone: nothing to keep.
    data_job = ctx(moved)
    await driver.fetch_allocations(data_job)
    assert data_job.renewed.grant is None


def test_a_malformed_remembered_switch_is_not_a_grant() -> None:
    fields = {
        "username": "user_good",
        "password": "pass_good",
        "platform_id": "sandbox_adp",
        "session": "s",
        "expired": False,
        "extra_paystubs": 0,
        "switched": {"allocations": "not a list"},
    }
    with pytest.raises(PlatformError) as info:
        sandbox_module.Grant.decode(json.dumps(fields).encode())
    assert info.value.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS


def test_grants_stored_before_the_clock_still_decode() -> None:
    old = {"username": "user_good", "password": "pass_good", "platform_id": "sandbox_adp", "session": "s",
           "expired": False, "extra_paystubs": 1}  # fmt: skip
    grant = sandbox_module.Grant.decode(json.dumps(old).encode())
    assert (grant.days_advanced, grant.deposit) == (0, None)


@pytest.mark.parametrize(
    "grant",
    [
        sandbox_module.Grant("user_good", "pass_good", "sandbox_adp", "s"),
        sandbox_module.Grant(
            "user_good+x", "pass_good", "sandbox_gig", "s2", True, 3, 30,
            {"name": "N", "type": 1, "routing_number": "011000015", "account_number_last_four": "1234"},
            {"allocations": [{"type": "ALLOCATION_TYPE_REMAINDER"}]},
        ),
    ],
)  # fmt: skip
def test_grant_encoding_is_the_json_of_all_its_fields(grant: sandbox_module.Grant) -> None:
    # Grants stored by earlier builds and by this one are the same bytes for the same fields.
    expected = json.dumps(dataclasses.asdict(grant), sort_keys=True).encode()
    assert grant.encode().secret == expected
    assert sandbox_module.Grant.decode(expected) == grant


async def test_a_refresh_decodes_its_grant_once(
    driver: SandboxDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Re-access decodes the stored grant and encodes the renewed one; the fetch that follows finds
    # the renewed grant decoded (the driver remembers the grants it encoded), and still checks it.
    grant = await login(driver, "user_good")
    decoded: list[bytes] = []
    real_decode = sandbox_module.Grant.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[sandbox_module.Grant], raw: bytes) -> sandbox_module.Grant:
        decoded.append(raw)
        return real_decode(cls, raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(sandbox_module.Grant, "decode", classmethod(counting))
    renewed = await driver.reaccess("acct-1", SANDBOX_ADP, grant)
    assert isinstance(renewed, LoggedIn)
    identity = await driver.fetch_identity(ctx(renewed.grant))
    assert identity == sandbox_data.identity("user_good")
    assert decoded == [grant.secret]
    # A remembered grant is still checked against the platform the job runs on.
    err = await job_error(driver, J.JOB_NAME_IDENTITY, ctx(renewed.grant, SANDBOX_WORKDAY))
    assert err.code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS
    # And a switch's renewed grant is the one later jobs decode, as before.
    switch = ctx(renewed.grant)
    switched = await driver.switch_direct_deposit(switch, FULL)
    assert switch.renewed.grant is not None
    assert await driver.fetch_allocations(ctx(switch.renewed.grant)) == switched
    assert decoded == [grant.secret]


def test_the_driver_remembers_a_bounded_number_of_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_auth, "GRANTS_KEPT", 3)
    kept = sandbox_auth.KeptGrants()
    grants = [sandbox_module.Grant(f"user_good+{i}", "pass_good", "sandbox_adp", "s") for i in range(5)]
    secrets = [kept.encode(g).secret for g in grants]
    assert kept.kept() == secrets[2:]  # the oldest went first
    assert kept.decode(secrets[0]) == grants[0]  # decoded again, as before
    assert kept.kept() == [*secrets[3:], secrets[0]]
    with pytest.raises(PlatformError):
        kept.decode(b"garbage")
    assert b"garbage" not in kept.kept()


# -- simulated latency ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latency", "jitter", "platform_id", "low", "high"),
    [
        (2.0, 0.5, SANDBOX_ADP, 1.5, 2.5),  # bench/latency.py's platform: 2 s ± 0.5 s
        (0.2, 1.0, SANDBOX_ADP, 0.0, 0.4),  # a jitter above the latency is cut to it: never below 0
        (0.0, 1.0, SANDBOX_ADP, 0.0, 0.0),  # no latency, no jitter
        (0.0, 1.0, SANDBOX_SLOW, 1.0, 3.0),  # the slow platform's latency is jittered too
    ],
)
def test_latency_jitter_is_symmetric_around_the_latency(
    latency: float, jitter: float, platform_id: str, low: float, high: float
) -> None:
    """The mean call takes the configured latency (bench/latency.py divides calls in flight by it):
    the uniform jitter is symmetric, and cut to the latency where it would go below 0 (clamping at 0
    instead would lengthen the mean call)."""
    d = SandboxDriver(latency=latency, slow_latency=2.0, jitter=jitter)
    random.seed(14)  # the module random the sandbox's jitter draws from
    delays = [d.delay(platform_id) for _ in range(20_000)]
    mean = (low + high) / 2
    assert low <= min(delays) and max(delays) <= high
    assert abs(sum(delays) / len(delays) - mean) <= 0.01 * max(mean, 1.0)
    if high > low:  # both halves of the spread are used
        assert min(delays) < mean - 0.9 * (mean - low) and max(delays) > mean + 0.9 * (high - mean)
