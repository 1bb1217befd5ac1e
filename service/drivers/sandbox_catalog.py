"""The sandbox's employer catalogue: which employer runs its payroll on which sandbox platform.

Ids, EINs and addresses are derived from the names (SHA-256), so they never change. Employment,
W-2s and paystub documents of a user name the employer that the user's platform serves.
"""

from __future__ import annotations

import functools
import hashlib
import re

from paylink.v1 import data_pb2

from service.drivers.base import EmployerInfo
from service.drivers.sandbox_profile import EMPLOYERS, profile

# Which platform runs each employer's payroll (platform ids as in sandbox.PLATFORMS).
_PLATFORM_OF = {
    "Northwind Logistics Inc.": "sandbox_adp",
    "Harbor & Pine Retail Co.": "sandbox_adp",
    "Ironwood Construction": "sandbox_adp",
    "Golden Oak Hospitality": "sandbox_adp",
    "Bluebird Health Partners": "sandbox_workday",
    "Brightpath Software LLC": "sandbox_workday",
    "Lakeside Medical Group": "sandbox_workday",
    "Summit Ridge Manufacturing": "sandbox_mfa",
    "Meridian Freight Services": "sandbox_mfa",
    "Cedar Lane Foods": "sandbox_slow",
}
GIG_COMPANY = "GigWorks Inc."
GIG_PLATFORM = "sandbox_gig"
# IRS campus prefixes in use for EINs.
_EIN_PREFIXES = (10, 12, 20, 26, 27, 30, 33, 36, 45, 46, 47, 52, 56, 61, 74, 81, 82, 84, 88, 91, 94, 95)
# (street, city, state, postal code) for headquarters.
_HQ = (
    ("100 Commerce St", "Dallas", "TX", "75202"),
    ("2200 Market St", "Philadelphia", "PA", "19103"),
    ("500 Peachtree St NE", "Atlanta", "GA", "30308"),
    ("1 Lakeshore Dr", "Chicago", "IL", "60611"),
    ("77 Harbor Blvd", "Long Beach", "CA", "90802"),
    ("40 Summit Ave", "Saint Paul", "MN", "55102"),
)


def _slug(name: str) -> str:
    return "emp_" + re.sub(r"[^a-z0-9]+", "_", name.lower().replace("&", "and")).strip("_")


def _employer(name: str, platform_id: str) -> EmployerInfo:
    digest = hashlib.sha256(name.encode()).digest()
    prefix = _EIN_PREFIXES[digest[0] % len(_EIN_PREFIXES)]
    serial = int.from_bytes(digest[1:5], "big") % 10_000_000
    street, city, state, postal = _HQ[digest[5] % len(_HQ)]
    return EmployerInfo(
        id=_slug(name),
        name=name,
        ein=f"{prefix:02d}-{serial:07d}",
        platform_id=platform_id,
        address=data_pb2.Address(line1=street, city=city, state=state, postal_code=postal, country="US"),
    )


@functools.cache
def employers() -> tuple[EmployerInfo, ...]:
    """Every sandbox employer, sorted by name."""
    listed = [_employer(name, _PLATFORM_OF[name]) for name in EMPLOYERS]
    listed.append(_employer(GIG_COMPANY, GIG_PLATFORM))
    return tuple(sorted(listed, key=lambda e: e.name.casefold()))


def by_name(name: str) -> EmployerInfo:
    """The catalogue entry of an employer name."""
    return next(e for e in employers() if e.name == name)


def employer_for(username: str, platform_id: str) -> EmployerInfo:
    """The user's employer on a platform: one of the employers the platform serves (the payer of
    the user's W-2s). On the gig platform, the gig company."""
    on_platform = [e for e in employers() if e.platform_id == platform_id]
    if not on_platform:
        return by_name(profile(username).employer)
    preferred = profile(username).employer
    for employer in on_platform:
        if employer.name == preferred:
            return employer
    index = int.from_bytes(hashlib.sha256(f"{username}\x1femployer".encode()).digest()[:4], "big")
    return on_platform[index % len(on_platform)]
