"""Sandbox logins: the usernames and their behaviours, MFA challenges and the grant the sandbox
driver stores (SPEC §4). Stateless: everything between calls lives in the grant or the MFA state,
both JSON."""

from __future__ import annotations

import dataclasses
import enum
import json
import secrets
from typing import Any

from paylink.v1 import common_pb2, data_pb2

from service.drivers.base import AccessGrant, PlatformError

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

    def encode(self) -> AccessGrant:
        return AccessGrant(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())

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
        )
        strings = (grant.username, grant.password, grant.platform_id, grant.session)
        if not all(isinstance(s, str) for s in strings) or not isinstance(grant.expired, bool):
            raise TypeError("bad grant field")
        for number in (grant.extra_paystubs, grant.days_advanced):
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise TypeError("bad grant field")
        if grant.deposit is not None:
            grant.deposit_target()  # raises TypeError/KeyError when malformed
        return grant

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

    def refreshed(self) -> Grant:
        """The same login with a new platform session token."""
        return dataclasses.replace(self, session=_new_session())


def _new_session() -> str:
    return "sbx_sess_" + secrets.token_urlsafe(24)
