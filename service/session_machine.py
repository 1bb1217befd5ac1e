"""The Link session as a pure state machine (docs/spec.md §5): states, transitions, attempt counting,
allocation-choice rules, and what each transition asks the outside world to do. No I/O.

    CREDENTIALS_REQUIRED -> AUTHENTICATING -> (MFA_REQUIRED -> AUTHENTICATING) -> CONNECTED
        -> JOBS_RUNNING -> COMPLETED, or FAILED (with a reason, and a link_session.failed event).

AUTHENTICATING is committed before any platform call and the outcome is committed after it with a
compare-and-set on `version` (session_store.py): no connection or lock is held while the platform
answers (logins.py).

A transition takes a `Session` (an immutable snapshot) and returns a `Transition`: the next
snapshot, and the effects it emits in order, which `session_effects.py` carries out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid

from paylink.v1 import common_pb2, link_pb2

from service import errors
from service.allocation_choice import choose_allocation, switch_action
from service.login_rules import another_login, login_fingerprint, resolve_platform

E = common_pb2.JobErrorCode

# The allocation-choice rules (allocation_choice.py) and the login rules (login_rules.py).
__all__ = ["another_login", "choose_allocation", "login_fingerprint", "resolve_platform", "switch_action"]


class State(enum.StrEnum):
    """The `link_sessions.state` column (the LinkSessionState name without its prefix)."""

    CREDENTIALS_REQUIRED = "CREDENTIALS_REQUIRED"
    MFA_REQUIRED = "MFA_REQUIRED"
    CONNECTED = "CONNECTED"
    JOBS_RUNNING = "JOBS_RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    AUTHENTICATING = "AUTHENTICATING"  # a platform call is in flight (see Login)

    @property
    def terminal(self) -> bool:
        return self in (State.COMPLETED, State.FAILED)

    def to_proto(self) -> link_pb2.LinkSessionState.ValueType:
        return link_pb2.LinkSessionState.Value("LINK_SESSION_STATE_" + self.value)


# States in which the user may still choose (or change) the allocation.
CHOOSING = frozenset({State.CREDENTIALS_REQUIRED, State.MFA_REQUIRED, State.CONNECTED})
# States that wait for the user: past expires_at, the session fails with EXPIRED. (AUTHENTICATING
# waits for the platform and ends by its lease; JOBS_RUNNING waits for jobs.)
WAITING = CHOOSING


class Login(enum.StrEnum):
    """Which platform call an AUTHENTICATING session waits for."""

    CREDENTIALS = "credentials"  # a first login (or a bound session's new credentials)
    MFA = "mfa"  # the answer to a challenge
    REACCESS = "reaccess"  # a bound session re-accessing with the stored grant


class FailureReason(enum.IntEnum):
    """Why a session ended FAILED (LinkSessionFailureReason values)."""

    UNSPECIFIED = link_pb2.LINK_SESSION_FAILURE_REASON_UNSPECIFIED
    TOO_MANY_ATTEMPTS = link_pb2.LINK_SESSION_FAILURE_REASON_TOO_MANY_ATTEMPTS
    ACCOUNT_LOCKED = link_pb2.LINK_SESSION_FAILURE_REASON_ACCOUNT_LOCKED
    PLATFORM_UNAVAILABLE = link_pb2.LINK_SESSION_FAILURE_REASON_PLATFORM_UNAVAILABLE
    END_USER_ERASED = link_pb2.LINK_SESSION_FAILURE_REASON_END_USER_ERASED  # privacy: erasure.py
    EXPIRED = link_pb2.LINK_SESSION_FAILURE_REASON_EXPIRED
    LOGIN_INTERRUPTED = link_pb2.LINK_SESSION_FAILURE_REASON_LOGIN_INTERRUPTED
    ACCOUNT_DISCONNECTED = link_pb2.LINK_SESSION_FAILURE_REASON_ACCOUNT_DISCONNECTED
    PLATFORM_TIMEOUT = link_pb2.LINK_SESSION_FAILURE_REASON_PLATFORM_TIMEOUT


# Login errors that count as a failed attempt (the user typed something wrong).
COUNTED_ERRORS = frozenset({E.JOB_ERROR_CODE_INVALID_CREDENTIALS, E.JOB_ERROR_CODE_MFA_FAILED})
# Platform trouble, not the user's: retried inside the session, then a transient failure reason.
TRANSIENT_ERRORS = {
    E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE: FailureReason.PLATFORM_UNAVAILABLE,
    E.JOB_ERROR_CODE_TIMEOUT: FailureReason.PLATFORM_TIMEOUT,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Terms:
    """What the link token fixed for the session."""

    required_jobs: tuple[int, ...]
    api_version: str
    end_user_id: str
    allocation_targets: int = 0  # targets the token's allocation offers (0: no allocation)

    @property
    def switching(self) -> bool:
        return common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH in self.required_jobs


@dataclasses.dataclass(frozen=True, slots=True)
class Mfa:
    """The platform's pending question (its driver state is kept sealed by the store)."""

    type: str
    prompt: str
    reaccess: bool  # asked during re-access of a bound account, not a first login


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    id: uuid.UUID
    workspace_id: uuid.UUID
    link_token_id: uuid.UUID
    terms: Terms
    state: State
    platform_id: str
    account_id: uuid.UUID | None
    on_demand: bool
    failed_attempts: int = 0
    last_error: int = 0  # JobErrorCode of the last failed attempt (0: none)
    failure_reason: FailureReason = FailureReason.UNSPECIFIED
    mfa: Mfa | None = None
    login_fingerprint: bytes | None = None
    allocation_chosen: bool = False
    login: Login | None = None  # set while AUTHENTICATING
    # A re-access and its MFA round: the keyed digest of the stored grant it started from (logged_in).
    reaccess_grant_digest: bytes | None = dataclasses.field(default=None, repr=False)
    version: int = 0  # bumped by every saved change; the store's compare-and-set
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    def expired(self, now: dt.datetime) -> bool:
        """Past expires_at while still waiting for the user."""
        return self.state in WAITING and self.expires_at is not None and self.expires_at <= now

    @property
    def choice_required(self) -> bool:
        """The switch needs a target, the token offers several, and none was chosen yet."""
        return self.terms.switching and self.terms.allocation_targets > 1 and not self.allocation_chosen

    @property
    def choice_pending(self) -> bool:
        """What LinkSession.allocation_choice_required shows."""
        return self.choice_required and self.state in CHOOSING


# -- effects: what a transition asks the outside world to do, in order ---------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectAccount:
    """Create the account (`new`) or re-link the bound one, and store the platform's grant."""

    account_id: uuid.UUID
    new: bool
    grant: bytes = dataclasses.field(repr=False)
    # A re-access: store only if the stored grant still has this digest (None: store whatever is stored).
    unless_changed_from: bytes | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class KeepMfaState:
    """Seal and keep the driver's MFA state until the answer comes."""

    state: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class StartJobs:
    """Queue the token's required jobs (batch = the session)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settle:
    """Nothing to run (a bound token with no jobs): publish link_session.completed now."""


@dataclasses.dataclass(frozen=True, slots=True)
class CredentialsExpired:
    """The bound account's stored credentials no longer work: its monitoring status says so."""


@dataclasses.dataclass(frozen=True, slots=True)
class PlatformDown:
    """A bound account's platform failed re-access through every retry: its monitoring status
    follows (monitoring/rules.session_outage)."""

    reason: FailureReason
    code: int  # the platform's last error (PLATFORM_UNAVAILABLE or TIMEOUT)


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The session ended FAILED: publish link_session.failed."""


Effect = ConnectAccount | KeepMfaState | StartJobs | Settle | CredentialsExpired | PlatformDown | Failed


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    session: Session
    effects: tuple[Effect, ...] = ()


# -- transitions ---------------------------------------------------------------------------------


def new(
    session_id: uuid.UUID,
    workspace_id: uuid.UUID,
    link_token_id: uuid.UUID,
    terms: Terms,
    platform_id: str,
    bound_account_id: uuid.UUID | None,
) -> Session:
    """A session just started from a token (bound when the token names an account)."""
    return Session(
        id=session_id,
        workspace_id=workspace_id,
        link_token_id=link_token_id,
        terms=terms,
        state=State.CREDENTIALS_REQUIRED,
        platform_id=platform_id,
        account_id=bound_account_id,
        on_demand=bound_account_id is not None,
    )


def expect(session: Session, state: State) -> None:
    """FAILED_PRECONDITION SESSION_EXPIRED for an expired session, SESSION_STATE unless the session
    is in `state`. (Expire an expired session first, see `expire`.)"""
    if session.failure_reason == FailureReason.EXPIRED:
        raise errors.failed_precondition("SESSION_EXPIRED", "the session expired", state=session.state)
    if session.state != state:
        raise errors.failed_precondition(
            "SESSION_STATE", f"the session is {session.state}, not {state}", state=session.state
        )


def credentials_submitted(
    session: Session, platform_id: str, fingerprint: bytes, account_fingerprint: bytes | None
) -> Session:
    """The user typed credentials for `platform_id`; the login's fingerprint is kept for the account,
    unless it is another login than a bound account's (see another_login)."""
    expect(session, State.CREDENTIALS_REQUIRED)
    if another_login(session, fingerprint, account_fingerprint):
        return dataclasses.replace(session, platform_id=platform_id)
    return dataclasses.replace(session, platform_id=platform_id, login_fingerprint=fingerprint)


def begin_login(session: Session, login: Login, *, grant_digest: bytes | None = None) -> Session:
    """The platform call is about to start: AUTHENTICATING, committed before the call. A re-access
    carries the digest of the grant it starts from, kept through its MFA round (see logged_in)."""
    expected = State.MFA_REQUIRED if login == Login.MFA else State.CREDENTIALS_REQUIRED
    expect(session, expected)
    assert (grant_digest is not None) == (login == Login.REACCESS)
    digest = session.reaccess_grant_digest if login == Login.MFA else grant_digest
    return dataclasses.replace(session, state=State.AUTHENTICATING, login=login, reaccess_grant_digest=digest)


def _waiting_again(session: Session, state: State, **changes: object) -> Session:
    mfa = session.mfa if state == State.MFA_REQUIRED else None
    return dataclasses.replace(session, state=state, login=None, mfa=mfa, **changes)  # type: ignore[arg-type]


def login_failed(session: Session, code: int, *, max_attempts: int) -> Transition:
    """The platform refused the login, the MFA answer or the re-access in flight.

    A locked account fails the session at once; a wrong password or MFA answer counts an attempt
    (a re-access is not the user's attempt) and the last allowed one fails it (TOO_MANY_ATTEMPTS).
    A wrong MFA answer stays on the same challenge; anything else asks for credentials (again).
    Platform trouble (TRANSIENT_ERRORS) never asks for credentials: see `platform_down`.
    """
    if code in TRANSIENT_ERRORS:
        return platform_down(session, code)
    reaccess = session.login == Login.REACCESS
    effects: tuple[Effect, ...] = ()
    if reaccess and code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS:
        effects = (CredentialsExpired(),)
    if code == E.JOB_ERROR_CODE_ACCOUNT_LOCKED:
        return _fail(session, FailureReason.ACCOUNT_LOCKED, code, effects)
    attempts = session.failed_attempts + (1 if not reaccess and code in COUNTED_ERRORS else 0)
    if attempts >= max_attempts:
        return _fail(
            dataclasses.replace(session, failed_attempts=attempts), FailureReason.TOO_MANY_ATTEMPTS, code
        )
    state = State.MFA_REQUIRED if code == E.JOB_ERROR_CODE_MFA_FAILED else State.CREDENTIALS_REQUIRED
    return Transition(_waiting_again(session, state, failed_attempts=attempts, last_error=code), effects)


def platform_down(session: Session, code: int) -> Transition:
    """The platform stayed unavailable (or timed out) through every retry: the session fails with
    a transient reason; a bound account's monitoring status follows. Never a credentials request."""
    reason = TRANSIENT_ERRORS.get(code, FailureReason.PLATFORM_UNAVAILABLE)  # type: ignore[call-overload]
    effects: tuple[Effect, ...] = (PlatformDown(reason, code),) if session.on_demand else ()
    return _fail(session, reason, code, effects)


def interrupted(session: Session) -> Transition:
    """The process running the login died (its lease ran out): the session ends, with that reason."""
    return _fail(session, FailureReason.LOGIN_INTERRUPTED, E.JOB_ERROR_CODE_UNSPECIFIED)


def expire(session: Session, now: dt.datetime) -> Transition | None:
    """An expired session ends (EXPIRED); None when it has not expired."""
    if not session.expired(now):
        return None
    return _fail(session, FailureReason.EXPIRED, session.last_error)


def _fail(session: Session, reason: FailureReason, code: int, effects: tuple[Effect, ...] = ()) -> Transition:
    return Transition(_failed(session, reason, code), (*effects, Failed()))


def _failed(session: Session, reason: FailureReason, code: int) -> Session:
    failed = dataclasses.replace(
        session, state=State.FAILED, failure_reason=reason, last_error=code, mfa=None
    )
    return dataclasses.replace(failed, reaccess_grant_digest=None)


def mfa_challenged(session: Session, kind: str, prompt: str, state: bytes) -> Transition:
    """The platform asks a question before it lets the user in (a re-access stays one)."""
    reaccess = session.login == Login.REACCESS or (session.mfa is not None and session.mfa.reaccess)
    waiting = dataclasses.replace(
        session, state=State.MFA_REQUIRED, mfa=Mfa(kind, prompt, reaccess), login=None
    )
    return Transition(waiting, (KeepMfaState(state),))


def logged_in(
    session: Session, grant: bytes, new_account_id: uuid.UUID, *, account_connected: bool = True
) -> Transition:
    """Login, MFA or re-access succeeded: the account connects (a bound session keeps its id;
    otherwise `new_account_id` is created), then the jobs start unless an allocation must be
    chosen first. A bound account that was disconnected meanwhile stays disconnected: disconnect
    is final, the session fails (ACCOUNT_DISCONNECTED) and nothing is stored. A re-access stores
    its grant only if the stored one is still the one it started from (a grant stored meanwhile is
    newer); credentials the user typed store theirs whatever is stored: the user's explicit re-link."""
    if session.on_demand and not account_connected:
        return _fail(session, FailureReason.ACCOUNT_DISCONNECTED, E.JOB_ERROR_CODE_UNSPECIFIED)
    new = session.account_id is None
    account_id = new_account_id if new else session.account_id
    assert account_id is not None
    connected = dataclasses.replace(
        session, state=State.CONNECTED, account_id=account_id, mfa=None, last_error=0, login=None
    )
    connected = dataclasses.replace(connected, reaccess_grant_digest=None)
    effects: tuple[Effect, ...] = (ConnectAccount(account_id, new, grant, session.reaccess_grant_digest),)
    if connected.choice_required:
        return Transition(connected, effects)
    started = _start(connected)
    return Transition(started.session, effects + started.effects)


def _start(session: Session) -> Transition:
    if session.terms.required_jobs:
        return Transition(dataclasses.replace(session, state=State.JOBS_RUNNING), (StartJobs(),))
    # A bound token with no jobs: re-access was the whole point; the session is settled now.
    return Transition(dataclasses.replace(session, state=State.COMPLETED), (Settle(),))


def can_choose(session: Session, token_has_allocation: bool) -> None:
    """ChooseAllocation is allowed: the token offers an allocation and the session still waits."""
    if not token_has_allocation:
        raise errors.failed_precondition("NO_ALLOCATION", "the link token offers no allocation to choose")
    if session.state not in CHOOSING:
        raise errors.failed_precondition(
            "SESSION_STATE",
            f"allocation can no longer be chosen in state {session.state}",
            state=session.state,
        )


def allocation_chosen(session: Session) -> Transition:
    """The choice is kept; a session that was only waiting for it starts its jobs."""
    chosen = dataclasses.replace(session, allocation_chosen=True)
    if chosen.state == State.CONNECTED:
        return _start(chosen)
    return Transition(chosen)


def jobs_settled(session: Session) -> Session:
    """Every job has a final outcome."""
    return dataclasses.replace(session, state=State.COMPLETED)
