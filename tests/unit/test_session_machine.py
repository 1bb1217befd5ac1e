"""The Link session state machine, transition by transition (no database, no gRPC)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from paylink.v1 import common_pb2 as c

from service import errors
from service import session_machine as m
from service.drivers.base import PlatformInfo
from service.session_machine import FailureReason, State

E = c.JobErrorCode
MAX = 5
ALL = frozenset({c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH})
PLATFORMS = {
    "adp": PlatformInfo("adp", "ADP", ALL),
    "gig": PlatformInfo("gig", "Gig", frozenset({c.JOB_NAME_IDENTITY})),
}


def session(*jobs: int, bound: uuid.UUID | None = None, targets: int = 0, platform: str = "") -> m.Session:
    terms = m.Terms(tuple(jobs or (c.JOB_NAME_IDENTITY,)), "2021-07-28", "user-1", targets)
    return m.new(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), terms, platform, bound)


def authenticating(s: m.Session, login: m.Login = m.Login.CREDENTIALS) -> m.Session:
    digest = b"digest-of-the-stored-grant" if login == m.Login.REACCESS else None
    return m.begin_login(s, login, grant_digest=digest)


def failed(s: m.Session, code: int) -> m.Session:
    """One login attempt that the platform refused."""
    login = m.Login.MFA if s.state == State.MFA_REQUIRED else m.Login.CREDENTIALS
    return m.login_failed(authenticating(s, login), code, max_attempts=MAX).session


def reason(info: pytest.ExceptionInfo[errors.DomainError]) -> str:
    assert isinstance(info.value, errors.FailedPrecondition)
    return info.value.reason


def fields(info: pytest.ExceptionInfo[errors.DomainError]) -> list[str]:
    assert isinstance(info.value, errors.InvalidArgument)
    return [f for f, _ in info.value.violations]


# -- start ---------------------------------------------------------------------------------------


def test_a_new_session_asks_for_credentials_and_is_bound_only_with_an_account() -> None:
    unbound = session()
    assert (unbound.state, unbound.on_demand, unbound.account_id) == (State.CREDENTIALS_REQUIRED, False, None)
    account = uuid.uuid4()
    bound = session(bound=account, platform="adp")
    assert (bound.on_demand, bound.account_id, bound.platform_id) == (True, account, "adp")


def test_expect_refuses_another_state_with_session_state() -> None:
    with pytest.raises(errors.DomainError) as info:
        m.expect(session(), State.MFA_REQUIRED)
    assert reason(info) == "SESSION_STATE"
    assert info.value.metadata == {"state": "CREDENTIALS_REQUIRED"}  # type: ignore[attr-defined]


# -- choosing the platform and submitting credentials --------------------------------------------


def test_platform_is_the_users_choice_and_must_support_every_required_job() -> None:
    s = session(c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME)
    assert m.resolve_platform(s, "adp", PLATFORMS.get) == "adp"
    for requested in ("gig", "", "nope"):
        with pytest.raises(errors.DomainError) as info:
            m.resolve_platform(s, requested, PLATFORMS.get)
        assert fields(info) == ["platform_id"]


def test_a_bound_session_logs_in_to_its_accounts_platform_only() -> None:
    s = session(bound=uuid.uuid4(), platform="adp")
    assert m.resolve_platform(s, "", PLATFORMS.get) == "adp"
    assert m.resolve_platform(s, "adp", PLATFORMS.get) == "adp"
    with pytest.raises(errors.DomainError) as info:
        m.resolve_platform(s, "gig", PLATFORMS.get)
    assert fields(info) == ["platform_id"]


def test_credentials_record_platform_and_login_fingerprint() -> None:
    fingerprint = m.login_fingerprint("adp", "user_good")
    s = m.credentials_submitted(session(), "adp", fingerprint, None)
    assert (s.platform_id, s.login_fingerprint) == ("adp", fingerprint)
    assert fingerprint != m.login_fingerprint("adp", "user_good+2")
    assert fingerprint != m.login_fingerprint("gig", "user_good")


def test_a_bound_session_never_takes_another_login_and_says_so_like_a_wrong_password() -> None:
    bound = session(bound=uuid.uuid4(), platform="adp")
    mine, other = m.login_fingerprint("adp", "user_good"), m.login_fingerprint("adp", "user_good+x")
    assert m.credentials_submitted(bound, "adp", mine, mine).login_fingerprint == mine
    assert m.credentials_submitted(bound, "adp", mine, None).login_fingerprint == mine  # linked before
    assert not m.another_login(bound, mine, mine) and not m.another_login(bound, mine, None)
    assert m.another_login(bound, other, mine)
    # No error that would tell a wrong username from a wrong password, and the other login's
    # fingerprint is not kept for the account.
    kept = m.credentials_submitted(bound, "adp", other, mine)
    assert kept.login_fingerprint == bound.login_fingerprint
    assert not m.another_login(session(), other, mine)  # a new account: any login is its own


def test_credentials_only_while_credentials_are_required() -> None:
    waiting = dataclasses.replace(session(), state=State.MFA_REQUIRED)
    with pytest.raises(errors.DomainError) as info:
        m.credentials_submitted(waiting, "adp", b"x", None)
    assert reason(info) == "SESSION_STATE"


# -- failed logins and attempt counting ----------------------------------------------------------


def test_a_wrong_password_counts_an_attempt_and_asks_again() -> None:
    step = m.login_failed(authenticating(session()), E.JOB_ERROR_CODE_INVALID_CREDENTIALS, max_attempts=MAX)
    s = step.session
    assert (s.state, s.failed_attempts, s.last_error) == (
        State.CREDENTIALS_REQUIRED,
        1,
        E.JOB_ERROR_CODE_INVALID_CREDENTIALS,
    )
    assert step.effects == ()


def test_the_last_allowed_attempt_fails_the_session_with_too_many_attempts() -> None:
    s = session()
    for attempt in range(1, MAX):
        s = m.login_failed(s, E.JOB_ERROR_CODE_INVALID_CREDENTIALS, max_attempts=MAX).session
        assert (s.state, s.failed_attempts) == (State.CREDENTIALS_REQUIRED, attempt)
    s = m.login_failed(s, E.JOB_ERROR_CODE_INVALID_CREDENTIALS, max_attempts=MAX).session
    assert (s.state, s.failure_reason, s.failed_attempts) == (
        State.FAILED,
        FailureReason.TOO_MANY_ATTEMPTS,
        MAX,
    )
    assert s.state.terminal


def test_a_locked_account_fails_at_once_without_counting() -> None:
    s = failed(session(), E.JOB_ERROR_CODE_ACCOUNT_LOCKED)
    assert (s.state, s.failure_reason, s.failed_attempts, s.last_error) == (
        State.FAILED,
        FailureReason.ACCOUNT_LOCKED,
        0,
        E.JOB_ERROR_CODE_ACCOUNT_LOCKED,
    )


def test_a_platform_that_stays_down_fails_the_session_transiently_never_asking_for_credentials() -> None:
    for code, reason_ in (
        (E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, FailureReason.PLATFORM_UNAVAILABLE),
        (E.JOB_ERROR_CODE_TIMEOUT, FailureReason.PLATFORM_TIMEOUT),
    ):
        step = m.login_failed(authenticating(session()), code, max_attempts=MAX)
        s = step.session
        assert (s.state, s.failure_reason, s.failed_attempts, s.last_error) == (
            State.FAILED,
            reason_,
            0,
            code,
        )
        assert step.effects == (m.Failed(),)
        bound = authenticating(session(bound=uuid.uuid4(), platform="adp"), m.Login.REACCESS)
        step = m.login_failed(bound, code, max_attempts=MAX)
        assert step.session.state == State.FAILED
        assert step.effects == (m.PlatformDown(reason_, code), m.Failed())


def test_errors_other_than_the_users_do_not_count() -> None:
    s = failed(session(), E.JOB_ERROR_CODE_JOB_NOT_SUPPORTED)
    assert (s.state, s.failed_attempts) == (State.CREDENTIALS_REQUIRED, 0)


# -- MFA -----------------------------------------------------------------------------------------


def test_a_challenge_waits_for_the_answer_and_keeps_the_driver_state() -> None:
    step = m.mfa_challenged(authenticating(session()), "code", "Enter the code", b"driver-state")
    assert step.session.state == State.MFA_REQUIRED
    assert step.session.mfa == m.Mfa("code", "Enter the code", False)
    assert step.effects == (m.KeepMfaState(b"driver-state"),)


def test_a_wrong_mfa_answer_counts_and_stays_on_the_same_challenge() -> None:
    waiting = m.mfa_challenged(authenticating(session()), "code", "Enter the code", b"s").session
    s = failed(waiting, E.JOB_ERROR_CODE_MFA_FAILED)
    assert (s.state, s.failed_attempts, s.mfa) == (State.MFA_REQUIRED, 1, waiting.mfa)
    for _ in range(MAX - 1):
        s = failed(s, E.JOB_ERROR_CODE_MFA_FAILED)
    assert (s.state, s.failure_reason, s.mfa) == (State.FAILED, FailureReason.TOO_MANY_ATTEMPTS, None)


def test_an_mfa_session_that_fails_otherwise_asks_for_credentials_again() -> None:
    waiting = m.mfa_challenged(authenticating(session()), "code", "Enter the code", b"s").session
    s = failed(waiting, E.JOB_ERROR_CODE_INVALID_CREDENTIALS)
    assert (s.state, s.mfa) == (State.CREDENTIALS_REQUIRED, None)


# -- logged in -----------------------------------------------------------------------------------


def test_a_first_login_creates_the_account_then_starts_the_jobs() -> None:
    new_id = uuid.uuid4()
    step = m.logged_in(authenticating(session()), b"grant", new_id)
    assert (step.session.state, step.session.account_id, step.session.last_error) == (
        State.JOBS_RUNNING,
        new_id,
        0,
    )
    assert step.effects == (m.ConnectAccount(new_id, True, b"grant"), m.StartJobs())


def test_a_bound_session_re_links_the_same_account() -> None:
    account = uuid.uuid4()
    failed_once = failed(session(bound=account, platform="adp"), E.JOB_ERROR_CODE_INVALID_CREDENTIALS)
    step = m.logged_in(authenticating(failed_once), b"grant", uuid.uuid4())
    assert step.session.account_id == account
    assert step.effects[0] == m.ConnectAccount(account, False, b"grant")


def test_a_bound_token_with_no_jobs_settles_at_once() -> None:
    terms = m.Terms((), "2021-07-28", "user-1")
    bound = m.new(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), terms, "adp", uuid.uuid4())
    step = m.logged_in(bound, b"grant", uuid.uuid4())
    assert step.session.state == State.COMPLETED
    assert step.effects[1:] == (m.Settle(),)


def test_re_access_with_dead_credentials_marks_them_expired_and_asks_for_new_ones() -> None:
    bound = session(bound=uuid.uuid4(), platform="adp")
    reaccess = authenticating(bound, m.Login.REACCESS)
    step = m.login_failed(reaccess, E.JOB_ERROR_CODE_INVALID_CREDENTIALS, max_attempts=MAX)
    assert (step.session.state, step.session.failed_attempts) == (State.CREDENTIALS_REQUIRED, 0)
    assert step.effects == (m.CredentialsExpired(),)
    locked = m.login_failed(reaccess, E.JOB_ERROR_CODE_ACCOUNT_LOCKED, max_attempts=MAX)
    assert (locked.session.state, locked.effects) == (State.FAILED, (m.Failed(),))


def test_re_access_that_asks_mfa_remembers_it_was_a_re_access() -> None:
    step = m.mfa_challenged(authenticating(session(bound=uuid.uuid4()), m.Login.REACCESS), "code", "p", b"s")
    assert step.session.mfa is not None and step.session.mfa.reaccess
    # ... and so does the answer to it.
    answering = authenticating(step.session, m.Login.MFA)
    assert m.mfa_challenged(answering, "code", "again", b"s2").session.mfa.reaccess  # type: ignore[union-attr]


# -- allocation choice ---------------------------------------------------------------------------


def test_several_targets_wait_in_connected_until_the_choice() -> None:
    s = session(c.JOB_NAME_DIRECT_DEPOSIT_SWITCH, targets=2)
    assert s.choice_required and s.choice_pending
    connected = m.logged_in(authenticating(s), b"grant", uuid.uuid4())
    assert connected.session.state == State.CONNECTED
    assert [type(e) for e in connected.effects] == [m.ConnectAccount]
    chosen = m.allocation_chosen(connected.session)
    assert (chosen.session.state, chosen.effects) == (State.JOBS_RUNNING, (m.StartJobs(),))
    assert not chosen.session.choice_required


def test_a_choice_before_login_is_kept_and_jobs_start_at_login() -> None:
    s = session(c.JOB_NAME_DIRECT_DEPOSIT_SWITCH, targets=3)
    chosen = m.allocation_chosen(s)
    assert (chosen.session.state, chosen.effects, chosen.session.allocation_chosen) == (
        State.CREDENTIALS_REQUIRED,
        (),
        True,
    )
    assert m.logged_in(authenticating(chosen.session), b"g", uuid.uuid4()).session.state == State.JOBS_RUNNING


def test_one_target_or_no_switch_needs_no_choice() -> None:
    assert not session(c.JOB_NAME_DIRECT_DEPOSIT_SWITCH, targets=1).choice_required
    assert not session(c.JOB_NAME_IDENTITY, targets=3).choice_required


def test_choosing_needs_an_offer_and_an_open_session() -> None:
    with pytest.raises(errors.DomainError) as info:
        m.can_choose(session(), token_has_allocation=False)
    assert reason(info) == "NO_ALLOCATION"
    running = dataclasses.replace(session(), state=State.JOBS_RUNNING)
    with pytest.raises(errors.DomainError) as info:
        m.can_choose(running, token_has_allocation=True)
    assert reason(info) == "SESSION_STATE"
    for state in m.CHOOSING:
        m.can_choose(dataclasses.replace(session(), state=state), token_has_allocation=True)


def offer(kind: int = c.ALLOCATION_TYPE_AMOUNT, value: int = 10_000, **bounds: int) -> c.Allocation:
    targets = [
        c.AllocationTarget(routing_number=f"01100001{i}", account_number=f"12345{i}") for i in range(3)
    ]
    return c.Allocation(type=kind, value=value, targets=targets, **bounds)  # type: ignore[arg-type]


def test_the_choice_takes_the_tokens_type_and_value_by_default() -> None:
    chosen = m.choose_allocation(offer(), 2, 0, 0)
    assert (chosen.type, chosen.value, [t.account_number for t in chosen.targets]) == (
        c.ALLOCATION_TYPE_AMOUNT,
        10_000,
        ["123452"],
    )


def test_the_target_index_must_be_offered() -> None:
    for index in (-1, 3):
        with pytest.raises(errors.DomainError) as info:
            m.choose_allocation(offer(), index, 0, 0)
        assert fields(info) == ["target_index"]


def test_another_value_only_within_the_tokens_bounds() -> None:
    with pytest.raises(errors.DomainError) as info:
        m.choose_allocation(offer(), 0, 0, 5_000)
    assert fields(info) == ["value"]
    bounded = offer(min_value=5_000, max_value=20_000)
    assert m.choose_allocation(bounded, 0, 0, 5_000).value == 5_000
    with pytest.raises(errors.DomainError) as info:
        m.choose_allocation(bounded, 0, 0, 25_000)
    assert fields(info) == ["value"]


def test_another_type_not_with_bounds_and_percentages_stay_within_100() -> None:
    with pytest.raises(errors.DomainError) as info:
        m.choose_allocation(offer(min_value=5_000), 0, c.ALLOCATION_TYPE_PERCENTAGE, 0)
    assert "type" in fields(info)
    with pytest.raises(errors.DomainError) as info:
        m.choose_allocation(offer(c.ALLOCATION_TYPE_PERCENTAGE, 50, max_value=100), 0, 0, 101)
    assert "value" in fields(info)


def test_switch_is_full_without_splitting_or_at_100_percent() -> None:
    assert m.switch_action(offer(), disable_splitting=True) == c.SWITCH_ACTION_FULL
    assert m.switch_action(offer(c.ALLOCATION_TYPE_PERCENTAGE, 100), False) == c.SWITCH_ACTION_FULL
    assert m.switch_action(offer(c.ALLOCATION_TYPE_PERCENTAGE, 60), False) == c.SWITCH_ACTION_PARTIAL


def test_jobs_settled_completes() -> None:
    running = m.logged_in(authenticating(session()), b"g", uuid.uuid4()).session
    assert m.jobs_settled(running).state == State.COMPLETED


# -- issue 10: AUTHENTICATING, expiry, interruption, disconnect -----------------------------------


def test_a_login_goes_authenticating_from_the_state_that_takes_its_input() -> None:
    s = authenticating(session())
    assert (s.state, s.login) == (State.AUTHENTICATING, m.Login.CREDENTIALS)
    with pytest.raises(errors.DomainError) as info:
        m.begin_login(s, m.Login.CREDENTIALS)  # a second submission while the first runs
    assert reason(info) == "SESSION_STATE"
    with pytest.raises(errors.DomainError):
        m.begin_login(session(), m.Login.MFA)
    waiting = m.mfa_challenged(s, "code", "p", b"x").session
    answering = m.begin_login(waiting, m.Login.MFA)
    assert (answering.state, answering.mfa) == (State.AUTHENTICATING, waiting.mfa)
    assert m.logged_in(answering, b"g", uuid.uuid4()).session.login is None


def test_a_session_expires_only_while_it_waits_for_the_user() -> None:
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    s = dataclasses.replace(session(), expires_at=now)
    step = m.expire(s, now)
    assert step is not None
    assert (step.session.state, step.session.failure_reason, step.effects) == (
        State.FAILED,
        FailureReason.EXPIRED,
        (m.Failed(),),
    )
    assert m.expire(s, now - dt.timedelta(seconds=1)) is None
    assert m.expire(authenticating(s), now) is None  # a login in flight ends by its lease instead
    assert m.expire(dataclasses.replace(s, state=State.JOBS_RUNNING), now) is None
    with pytest.raises(errors.DomainError) as info:
        m.expect(step.session, State.CREDENTIALS_REQUIRED)
    assert reason(info) == "SESSION_EXPIRED"


def test_a_login_whose_process_died_ends_interrupted() -> None:
    step = m.interrupted(authenticating(session()))
    assert (step.session.state, step.session.failure_reason, step.effects) == (
        State.FAILED,
        FailureReason.LOGIN_INTERRUPTED,
        (m.Failed(),),
    )


def test_disconnect_is_final_for_a_bound_session() -> None:
    bound = authenticating(session(bound=uuid.uuid4(), platform="adp"), m.Login.REACCESS)
    step = m.logged_in(bound, b"grant", uuid.uuid4(), account_connected=False)
    assert (step.session.state, step.session.failure_reason, step.effects) == (
        State.FAILED,
        FailureReason.ACCOUNT_DISCONNECTED,
        (m.Failed(),),
    )


def test_a_re_access_stores_its_grant_only_if_the_stored_one_is_still_the_one_it_started_from() -> None:
    """Through an MFA round too; the digest never shows in the session's repr."""
    account = uuid.uuid4()
    reaccess = m.begin_login(
        session(bound=account, platform="adp"), m.Login.REACCESS, grant_digest=b"SECRET-DIGEST"
    )
    assert reaccess.reaccess_grant_digest == b"SECRET-DIGEST" and "SECRET" not in repr(reaccess)
    step = m.logged_in(reaccess, b"grant", uuid.uuid4())
    assert step.effects[0] == m.ConnectAccount(account, False, b"grant", b"SECRET-DIGEST")
    assert step.session.reaccess_grant_digest is None
    assert "grant" not in repr(step.effects[0]).replace("ConnectAccount", "")

    asked = m.mfa_challenged(reaccess, "code", "Code?", b"state").session
    answering = m.begin_login(asked, m.Login.MFA)
    assert answering.reaccess_grant_digest == b"SECRET-DIGEST"
    assert m.logged_in(answering, b"grant", uuid.uuid4()).effects[0] == m.ConnectAccount(
        account, False, b"grant", b"SECRET-DIGEST"
    )
    wrong = m.login_failed(answering, E.JOB_ERROR_CODE_MFA_FAILED, max_attempts=MAX).session
    assert m.begin_login(wrong, m.Login.MFA).reaccess_grant_digest == b"SECRET-DIGEST"


def test_credentials_the_user_types_on_a_bound_session_store_their_grant_unconditionally() -> None:
    account = uuid.uuid4()
    reaccess = m.begin_login(
        session(bound=account, platform="adp"), m.Login.REACCESS, grant_digest=b"SECRET-DIGEST"
    )
    expired = m.login_failed(reaccess, E.JOB_ERROR_CODE_INVALID_CREDENTIALS, max_attempts=MAX).session
    typed = m.begin_login(expired, m.Login.CREDENTIALS)
    assert typed.reaccess_grant_digest is None
    assert m.logged_in(typed, b"grant", uuid.uuid4()).effects[0] == m.ConnectAccount(account, False, b"grant")
    # ...and so does the MFA round of such a login.
    asked = m.mfa_challenged(typed, "code", "Code?", b"state").session
    assert m.begin_login(asked, m.Login.MFA).reaccess_grant_digest is None


def test_a_failed_session_forgets_the_digest() -> None:
    reaccess = m.begin_login(session(bound=uuid.uuid4(), platform="adp"), m.Login.REACCESS, grant_digest=b"d")
    assert (
        m.login_failed(
            reaccess, E.JOB_ERROR_CODE_ACCOUNT_LOCKED, max_attempts=MAX
        ).session.reaccess_grant_digest
        is None
    )
