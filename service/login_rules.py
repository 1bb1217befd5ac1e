"""Pure rules of a Link login, part of the session state machine (session_machine.py re-exports
them): the platform a login goes to, the login's fingerprint, and whether credentials typed into a
bound session are another login than the account's. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from service import errors
from service.drivers.base import PlatformInfo

if TYPE_CHECKING:
    from service.session_machine import Session


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


def another_login(session: Session, fingerprint: bytes, account_fingerprint: bytes | None) -> bool:
    """Whether credentials typed into a bound session are another platform login than the bound
    account's. Such a login never re-links the account, and it is answered exactly as a wrong
    password (INVALID_CREDENTIALS, a counted attempt) after the same platform call, so that a
    session cannot be used to learn which username the account has."""
    return session.on_demand and account_fingerprint is not None and account_fingerprint != fingerprint
