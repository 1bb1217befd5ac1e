"""Sandbox logins: the usernames and their behaviours, MFA challenges and the grant the sandbox
driver stores (docs/spec.md §6). Stateless: everything between calls lives in the grant or the MFA state,
both JSON."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import json
import secrets
from typing import Any

from google.protobuf import json_format
from paylink.v1 import common_pb2, data_pb2

from service.drivers.base import AccessGrant, JobContext, JobPending, MfaChallenge, PlatformError

E = common_pb2.JobErrorCode

PASSWORD = "pass_good"  # noqa: S105 - the documented sandbox password
MFA_CODE = "mfa_code"
SECURITY_ANSWER = "pinwheel drive"


class User(enum.StrEnum):
    """Sandbox behaviours, named by the username before any `+suffix`."""

    GOOD = "user_good"
    MFA = "user_mfa"
    ERROR = "user_error"
    PENDING = "user_pending"
    LOCKED = "user_locked"
    FLAKY = "user_flaky"
    REAUTH_MFA = "user_reauth_mfa"
    EXPIRED = "user_expired"
    NODATA = "user_nodata"
    SALARIED = "user_salaried"  # like GOOD; salaried, whole-year paystubs, W-2s (sandbox_profile)
    GIG = "user_gig"  # like GOOD; hourly with shifts, on GigWorks a gig worker with 1099s
    # Platform trouble at login and re-access (Link sessions retry these, then fail transiently):
    UNAVAILABLE = "user_unavailable"  # login and re-access: PLATFORM_UNAVAILABLE, every time
    TIMEOUT = "user_timeout"  # login and re-access: TIMEOUT, every time
    RECOVERS = "user_recovers"  # login and re-access: PLATFORM_UNAVAILABLE twice, then they work
    REACCESS_DOWN = "user_reaccess_down"  # logs in; re-access then PLATFORM_UNAVAILABLE, every time


# How many times `user_recovers` fails before it works (per username and call kind, per process).
RECOVERS_AFTER = 2


def platform_trouble(
    user: User | None, username: str, call: str, failures: collections.Counter[tuple[str, str]]
) -> None:
    """Raises the transient failure of a platform-trouble user at `call` ("login" or "reaccess").
    `failures` counts `user_recovers`'s failures so far (the driver's, per process)."""
    if user is User.TIMEOUT:
        raise PlatformError(
            E.JOB_ERROR_CODE_TIMEOUT, "The payroll system did not answer in time", transient=True
        )
    down = user in (User.UNAVAILABLE, User.RECOVERS) or (user is User.REACCESS_DOWN and call == "reaccess")
    if not down:
        return
    if user is User.RECOVERS:
        failures[(username, call)] += 1
        if failures[(username, call)] > RECOVERS_AFTER:
            return
    raise PlatformError(
        E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, "The payroll system is temporarily unavailable", transient=True
    )


def user_of(username: str) -> User | None:
    """The behaviour of a username (exact, case-sensitive), or None for an unknown user."""
    try:
        return User(username.split("+", 1)[0])
    except ValueError:
        return None


class MfaKind(enum.StrEnum):
    """The two kinds of challenge; the value is MfaChallenge.type."""

    CODE = "code"
    SECURITY_QUESTION = "security_question"


_PROMPTS = {
    MfaKind.CODE: "Enter the code sent to your phone",
    MfaKind.SECURITY_QUESTION: "What street did you grow up on?",
}


def _answer_ok(kind: MfaKind, answer: str) -> bool:
    if kind is MfaKind.CODE:
        # As bytes: compare_digest raises TypeError for str with non-ASCII characters.
        return secrets.compare_digest(answer.strip().encode(), MFA_CODE.encode())
    return secrets.compare_digest(answer.strip().casefold().encode(), SECURITY_ANSWER.encode())


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """The sandbox's grant contents (serialized as JSON into AccessGrant.secret)."""

    username: str
    password: str
    platform_id: str
    session: str
    expired: bool = False
    extra_paystubs: int = 0
    days_advanced: int = 0  # the account's sandbox clock (SandboxService.AdvanceClock)
    # The deposit account the user moved the whole pay to outside paylink (ChangeAllocation):
    # name, type, routing_number, account_number_last_four. None: the profile's own split.
    deposit: dict[str, Any] | None = None
    # The allocations as the last direct deposit switch made through paylink left them (a
    # DirectDepositAllocations as JSON, last four digits only); None: no switch since the last
    # ChangeAllocation (then `deposit` or the profile's split holds).
    switched: dict[str, Any] | None = None
    # When the platform session ends (Unix seconds, the driver's clock): until then a re-access
    # uses it and returns this very grant; after, it opens a new session (`refreshed`). 0: ended
    # (grants stored before sessions had a lifetime).
    session_expires: int = 0

    def encode(self) -> AccessGrant:
        # The fields as `dataclasses.asdict` gives them, without its deep copy (json.dumps only
        # reads them): the same bytes (tests/unit/test_sandbox_driver.py).
        fields = {
            "username": self.username,
            "password": self.password,
            "platform_id": self.platform_id,
            "session": self.session,
            "expired": self.expired,
            "extra_paystubs": self.extra_paystubs,
            "days_advanced": self.days_advanced,
            "deposit": self.deposit,
            "switched": self.switched,
            "session_expires": self.session_expires,
        }
        return AccessGrant(json.dumps(fields, sort_keys=True).encode())

    @classmethod
    def decode(cls, raw: bytes) -> Grant:
        """Parses a grant; PlatformError(INVALID_CREDENTIALS) when it is not one of ours."""
        try:
            return cls.from_dict(json.loads(raw))
        except (ValueError, TypeError, KeyError):
            raise PlatformError(
                E.JOB_ERROR_CODE_INVALID_CREDENTIALS, "The stored session is not valid"
            ) from None

    @classmethod
    def from_dict(cls, d: Any) -> Grant:
        grant = cls(
            username=d["username"],
            password=d["password"],
            platform_id=d["platform_id"],
            session=d["session"],
            expired=d["expired"],
            extra_paystubs=d["extra_paystubs"],
            # Grants stored before the sandbox had a clock lack these two.
            days_advanced=d.get("days_advanced", 0),
            deposit=d.get("deposit"),
            switched=d.get("switched"),  # grants stored before the sandbox remembered switches lack it
            session_expires=d.get("session_expires", 0),  # and before sessions had a lifetime
        )
        strings = (grant.username, grant.password, grant.platform_id, grant.session)
        if not all(isinstance(s, str) for s in strings) or not isinstance(grant.expired, bool):
            raise TypeError("bad grant field")
        for number in (grant.extra_paystubs, grant.days_advanced, grant.session_expires):
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise TypeError("bad grant field")
        if grant.deposit is not None:
            grant.deposit_target()  # raises TypeError/KeyError when malformed
        grant.switched_allocations()  # raises TypeError when malformed
        return grant

    def switched_allocations(self) -> data_pb2.DirectDepositAllocations | None:
        """The allocations the last switch made through paylink left (None: no switch since)."""
        if self.switched is None:
            return None
        try:
            return json_format.ParseDict(self.switched, data_pb2.DirectDepositAllocations())
        except (json_format.ParseError, AttributeError) as exc:
            raise TypeError("bad grant field") from exc

    def with_switch(self, allocations: data_pb2.DirectDepositAllocations) -> Grant:
        """The grant after a switch made through paylink: the platform keeps its allocations."""
        return dataclasses.replace(self, switched=json_format.MessageToDict(allocations))

    def deposit_target(self) -> data_pb2.DepositTarget | None:
        if self.deposit is None:
            return None
        d = self.deposit
        return data_pb2.DepositTarget(
            name=str(d["name"]),
            type=int(d["type"]),  # type: ignore[arg-type]
            routing_number=str(d["routing_number"]),
            account_number_last_four=str(d["account_number_last_four"]),
        )

    def refreshed(self, expires: int) -> Grant:
        """The same login with a new platform session token, valid until `expires` (Unix seconds)."""
        return dataclasses.replace(self, session=_new_session(), session_expires=expires)

    def session_valid(self, now: int) -> bool:
        """Whether the platform session is still open at `now` (Unix seconds)."""
        return now < self.session_expires


# How long a sandbox platform session stays open (PAYLINK_SANDBOX_SESSION_SECONDS): a re-access
# within it reuses the session and returns the grant it was given, as a real platform's login
# session lives for minutes; after it, the re-access opens a new session (a new grant to store).
SESSION_LIFETIME = dt.timedelta(minutes=10)

# How many grants a driver remembers decoded (KeptGrants): a refresh's re-access encodes the grant
# its fetch decodes again, in the same process, one platform call later.
GRANTS_KEPT = 4096


class KeptGrants:
    """`Grant.decode` and `Grant.encode`, remembering the last GRANTS_KEPT grants by their JSON
    bytes (decoding is a pure function of them, and a Grant is not changed once made)."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[bytes, Grant] = {}  # oldest first

    def decode(self, secret: bytes) -> Grant:
        grant = self._kept.get(secret)
        if grant is None:
            grant = Grant.decode(secret)  # PlatformError when it is not one of ours: not kept
            self._keep(secret, grant)
        return grant

    def encode(self, grant: Grant) -> AccessGrant:
        encoded = grant.encode()
        self._keep(encoded.secret, grant)
        return encoded

    def kept(self) -> list[bytes]:
        """The grants remembered, oldest first (tests)."""
        return list(self._kept)

    def _keep(self, secret: bytes, grant: Grant) -> None:
        if len(self._kept) >= GRANTS_KEPT:
            del self._kept[next(iter(self._kept))]  # the oldest
        self._kept[secret] = grant


def _new_session() -> str:
    return "sbx_sess_" + secrets.token_urlsafe(24)


def usable(grant: Grant, platform_id: str) -> Grant:
    """Checks that a stored grant still logs in at this platform."""
    user = user_of(grant.username)
    if user is User.LOCKED:
        raise PlatformError(
            E.JOB_ERROR_CODE_ACCOUNT_LOCKED, "Your account is locked after too many sign-in attempts"
        )
    if user is None or grant.password != PASSWORD or grant.platform_id != platform_id or grant.expired:
        raise PlatformError(E.JOB_ERROR_CODE_INVALID_CREDENTIALS, "The saved password no longer works")
    return grant


def challenge(kind: MfaKind, grant: Grant) -> MfaChallenge:
    """The MFA question of `kind`, with the grant to finish the login with in its state."""
    state = {"kind": kind.value, "grant": dataclasses.asdict(grant)}
    return MfaChallenge(kind.value, _PROMPTS[kind], json.dumps(state, sort_keys=True).encode())


def pending(ctx: JobContext, delay: dt.timedelta, now: dt.datetime) -> None:
    """`user_pending`: pending until `delay` after the first pending report, then a final timeout."""
    if ctx.pending_since is None:
        raise JobPending(delay, "The payroll system is processing the request")
    remaining = delay - (now - ctx.pending_since)
    if remaining > dt.timedelta(0):
        raise JobPending(min(remaining, delay), "The payroll system is processing the request")
    raise PlatformError(
        E.JOB_ERROR_CODE_TIMEOUT, "The payroll system did not finish in time", transient=False
    )
