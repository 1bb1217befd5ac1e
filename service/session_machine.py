"""The Link session as a pure state machine (SPEC §3): states, transitions, attempt counting,
allocation-choice rules, and what each transition asks the outside world to do. No I/O.

    CREDENTIALS_REQUIRED -> (MFA_REQUIRED) -> CONNECTED -> JOBS_RUNNING -> COMPLETED, or FAILED.

A transition takes a `Session` (an immutable snapshot) and returns a `Transition`: the next
snapshot, and the effects it emits in order (connect the account, keep the MFA state, start the
jobs, settle, mark the stored credentials expired). `sessions.py` carries the effects out and
`session_store.py` persists the snapshot with a compare-and-set on `version`, so a new state (one
that waits for a platform call, or expires) is one more member of `State` and one more function
here, not a rewrite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import uuid
from collections.abc import Callable

from paylink.v1 import common_pb2, link_pb2

from service import errors
from service.drivers.base import PlatformInfo

E = common_pb2.JobErrorCode


class State(enum.StrEnum):
    """The `link_sessions.state` column (the LinkSessionState name without its prefix)."""

    CREDENTIALS_REQUIRED = "CREDENTIALS_REQUIRED"
    MFA_REQUIRED = "MFA_REQUIRED"
    CONNECTED = "CONNECTED"
    JOBS_RUNNING = "JOBS_RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (State.COMPLETED, State.FAILED)

    def to_proto(self) -> link_pb2.LinkSessionState.ValueType:
        return link_pb2.LinkSessionState.Value("LINK_SESSION_STATE_" + self.value)


# States in which the user may still choose (or change) the allocation.
CHOOSING = frozenset({State.CREDENTIALS_REQUIRED, State.MFA_REQUIRED, State.CONNECTED})


class FailureReason(enum.IntEnum):
    """Why a session ended FAILED (LinkSessionFailureReason values)."""

    UNSPECIFIED = link_pb2.LINK_SESSION_FAILURE_REASON_UNSPECIFIED
    TOO_MANY_ATTEMPTS = link_pb2.LINK_SESSION_FAILURE_REASON_TOO_MANY_ATTEMPTS
    ACCOUNT_LOCKED = link_pb2.LINK_SESSION_FAILURE_REASON_ACCOUNT_LOCKED
    PLATFORM_UNAVAILABLE = link_pb2.LINK_SESSION_FAILURE_REASON_PLATFORM_UNAVAILABLE
    END_USER_ERASED = link_pb2.LINK_SESSION_FAILURE_REASON_END_USER_ERASED  # privacy: erasure.py


# Login errors that count as a failed attempt (the user typed something wrong).
COUNTED_ERRORS = frozenset({E.JOB_ERROR_CODE_INVALID_CREDENTIALS, E.JOB_ERROR_CODE_MFA_FAILED})


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
    version: int = 0  # bumped by every saved change; the store's compare-and-set
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None

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
    grant: bytes


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


Effect = ConnectAccount | KeepMfaState | StartJobs | Settle | CredentialsExpired


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
    """FAILED_PRECONDITION SESSION_STATE unless the session is in `state`."""
    if session.state != state:
        raise errors.failed_precondition(
            "SESSION_STATE", f"the session is {session.state}, not {state}", state=session.state
        )


def login_fingerprint(platform_id: str, username: str) -> bytes:
    """Identifies a platform login without storing the username."""
    return hashlib.sha256(f"{platform_id}\0{username}".encode()).digest()


def resolve_platform(session: Session, requested: str, platform: Callable[[str], PlatformInfo | None]) -> str:
    """The platform a login goes to: the bound account's, or the one the user picked (which must
    support every required job)."""
    if session.on_demand and requested and requested != session.platform_id:
        raise errors.invalid_field("platform_id", "a bound session logs in to its account's platform")
    platform_id = session.platform_id if session.on_demand else (requested or session.platform_id)
    info = platform(platform_id) if platform_id else None
    if info is None:
        raise errors.invalid_field("platform_id", "is required and must be a known platform")
    if not set(session.terms.required_jobs) <= info.supported_jobs:
        raise errors.invalid_field("platform_id", "does not support every required job")
    return platform_id


def credentials_submitted(
    session: Session, platform_id: str, fingerprint: bytes, account_fingerprint: bytes | None
) -> Session:
    """The user typed credentials for `platform_id`. A bound session re-links its own account only:
    another login's credentials would attach someone else's payroll account (ACCOUNT_MISMATCH)."""
    expect(session, State.CREDENTIALS_REQUIRED)
    if session.on_demand and account_fingerprint is not None and account_fingerprint != fingerprint:
        raise errors.failed_precondition(
            "ACCOUNT_MISMATCH",
            "these credentials belong to another payroll login than the account being updated;"
            " use a standard link token to connect a new account",
        )
    return dataclasses.replace(session, platform_id=platform_id, login_fingerprint=fingerprint)


def login_failed(
    session: Session, code: int, *, max_attempts: int, counts: bool = True, reaccess: bool = False
) -> Transition:
    """The platform refused a login, an MFA answer (`counts`: the user's attempt) or a re-access.

    A locked account fails the session at once; a wrong password or MFA answer counts an attempt
    and the last allowed one fails it (TOO_MANY_ATTEMPTS). A wrong MFA answer stays on the same
    challenge; anything else asks for credentials (again).
    """
    effects: tuple[Effect, ...] = ()
    if reaccess and code == E.JOB_ERROR_CODE_INVALID_CREDENTIALS:
        effects = (CredentialsExpired(),)
    if code == E.JOB_ERROR_CODE_ACCOUNT_LOCKED:
        return Transition(_failed(session, FailureReason.ACCOUNT_LOCKED, code), effects)
    attempts = session.failed_attempts + (1 if counts and code in COUNTED_ERRORS else 0)
    if attempts >= max_attempts:
        failed = _failed(session, FailureReason.TOO_MANY_ATTEMPTS, code)
        return Transition(dataclasses.replace(failed, failed_attempts=attempts), effects)
    if code == E.JOB_ERROR_CODE_MFA_FAILED:
        state, mfa = State.MFA_REQUIRED, session.mfa
    else:
        state, mfa = State.CREDENTIALS_REQUIRED, None
    return Transition(
        dataclasses.replace(session, state=state, failed_attempts=attempts, last_error=code, mfa=mfa),
        effects,
    )


def _failed(session: Session, reason: FailureReason, code: int) -> Session:
    return dataclasses.replace(session, state=State.FAILED, failure_reason=reason, last_error=code, mfa=None)


def mfa_challenged(session: Session, kind: str, prompt: str, state: bytes, *, reaccess: bool) -> Transition:
    """The platform asks a question before it lets the user in."""
    waiting = dataclasses.replace(session, state=State.MFA_REQUIRED, mfa=Mfa(kind, prompt, reaccess))
    return Transition(waiting, (KeepMfaState(state),))


def logged_in(session: Session, grant: bytes, new_account_id: uuid.UUID) -> Transition:
    """Login, MFA or re-access succeeded: the account connects (a bound session keeps its id;
    otherwise `new_account_id` is created), then the jobs start unless an allocation must be
    chosen first."""
    new = session.account_id is None
    account_id = new_account_id if new else session.account_id
    assert account_id is not None
    connected = dataclasses.replace(
        session, state=State.CONNECTED, account_id=account_id, mfa=None, last_error=0
    )
    effects: tuple[Effect, ...] = (ConnectAccount(account_id, new, grant),)
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


# -- allocation choice ---------------------------------------------------------------------------


def choose_allocation(
    offered: common_pb2.Allocation, target_index: int, kind: int, value: int
) -> common_pb2.Allocation:
    """The allocation the user chose from the token's offer: one target, and a type and value the
    token allows (the token's own when not given; another only within its min/max). Raises
    INVALID_ARGUMENT naming each field that breaks a rule."""
    v = errors.Violations()
    if not 0 <= target_index < len(offered.targets):
        v.add("target_index", f"must be between 0 and {len(offered.targets) - 1}")
    chosen_kind = kind or offered.type
    if chosen_kind not in (common_pb2.ALLOCATION_TYPE_AMOUNT, common_pb2.ALLOCATION_TYPE_PERCENTAGE):
        v.add("type", "must be AMOUNT or PERCENTAGE")
    bounded = offered.HasField("min_value") or offered.HasField("max_value")
    if kind and kind != offered.type and bounded:
        v.add("type", "must match the token's allocation type when it sets min/max")
    chosen_value = value or offered.value
    low = offered.min_value if offered.HasField("min_value") else None
    high = offered.max_value if offered.HasField("max_value") else None
    if chosen_value <= 0 or (chosen_kind == common_pb2.ALLOCATION_TYPE_PERCENTAGE and chosen_value > 100):
        v.add("value", "is out of range for the type")
    if value and value != offered.value and low is None and high is None:
        v.add("value", "the token does not allow another value")
    if (low is not None and chosen_value < low) or (high is not None and chosen_value > high):
        v.add(
            "value",
            f"must be between {low if low is not None else 1} and {high if high is not None else chosen_value}",
        )
    v.raise_if_any()
    return common_pb2.Allocation(
        type=chosen_kind,  # type: ignore[arg-type]
        value=chosen_value,
        targets=[offered.targets[target_index]],
    )


def switch_action(chosen: common_pb2.Allocation, disable_splitting: bool) -> int:
    """FULL when the token forbids splitting or the choice is 100 %; PARTIAL otherwise."""
    full = disable_splitting or (chosen.type == common_pb2.ALLOCATION_TYPE_PERCENTAGE and chosen.value == 100)
    return common_pb2.SWITCH_ACTION_FULL if full else common_pb2.SWITCH_ACTION_PARTIAL
