"""API versions: the one place that knows which dated versions exist and what each enables.

A call may send `api-version: YYYY-MM-DD` metadata. Only released versions are accepted; anything
else (malformed, unreleased date) is INVALID_ARGUMENT. No version means the oldest behaviour.
Releasing the next version is one line in RELEASED (and a gate below if it changes behaviour).
"""

from __future__ import annotations

import datetime as dt
import re

V2021_04_29 = dt.date(2021, 4, 29)
V2021_07_28 = dt.date(2021, 7, 28)

RELEASED: tuple[dt.date, ...] = (V2021_04_29, V2021_07_28)
LATEST = RELEASED[-1]

# Feature gates: the first version with the behaviour.
ON_DEMAND_UPDATES = V2021_07_28

_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class UnknownVersion(ValueError):
    """The api-version is malformed or not a released version."""


def parse(raw: str | None) -> dt.date | None:
    """Parses the metadata value; None when the caller sent no version."""
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if not _FORMAT.match(value):
        raise UnknownVersion(f"api-version {value[:40]!r} is not a date in YYYY-MM-DD form")
    try:
        date = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise UnknownVersion(f"api-version {value!r} is not a calendar date") from exc
    if date not in RELEASED:
        known = ", ".join(v.isoformat() for v in RELEASED)
        raise UnknownVersion(f"api-version {value} is not a released version (known: {known})")
    return date


def label(version: dt.date | None) -> str:
    """The version as stored on resources and events ('' when none was sent)."""
    return version.isoformat() if version else ""


def on_demand_updates(version: dt.date | None) -> bool:
    """Whether `account_id` in CreateLinkToken binds the token to an existing account."""
    return version is not None and version >= ON_DEMAND_UPDATES
