"""Who a sandbox user is: the fixed facts every sandbox data module derives from.

Everything derives from the username (a SHA-256 seed per section) and fixed dates — never from the
clock or the global random state — so one username yields the same data in every run and process,
and `user_good+a` and `user_good+b` yield different people. Only the last four digits of an SSN or
a bank account are ever generated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import random

from paylink.v1 import common_pb2, data_pb2

from service import validation

ANCHOR_DATE = dt.date(2026, 11, 13)  # the newest base pay date is 0-13 days before this
PAY_PERIOD = dt.timedelta(days=14)
BASE_PAYSTUBS = 6
MAX_PAYSTUBS = 24  # what a paystubs query with count 0 returns at most
USD = "USD"
# Time at the simulated platform: each account's clock starts at ANCHOR_DATE and moves only when
# SandboxService.AdvanceClock says so. Every pay period brings a paystub; after RAISE_AFTER the pay
# rate is RAISE_BP higher (paystubs dated from then on, and income).
RAISE_AFTER = dt.timedelta(days=90)
RAISE_BP = 500
HISTORY_START = dt.date(2024, 1, 1)  # the platforms keep pay records from this date on
SALARIED_USER = "user_salaried"  # always salaried; the platform shows the whole year's paystubs
GIG_USER = "user_gig"  # always hourly (a gig worker on the gig platform)
LONG_TENURE_USERS = (SALARIED_USER, GIG_USER)  # employed 3+ years: tax forms for the past years

_FIRST_NAMES = (
    "James", "Maria", "Robert", "Linda", "Michael", "Aisha", "David", "Mei", "Carlos", "Sarah",
    "Daniel", "Priya", "Kevin", "Emily", "Andre", "Grace", "Luis", "Hannah", "Omar", "Olivia",
    "Tyrone", "Sofia", "Ethan", "Fatima",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Nguyen", "Williams", "Brown", "Patel", "Martinez", "Kim",
    "Davis", "Lopez", "Wilson", "Anderson", "Thomas", "Okafor", "Moore", "Jackson", "Chen",
    "Rivera", "Clark", "Lewis", "Walker", "Hall", "Young",
)  # fmt: skip
_STREETS = (
    "Maple", "Oak", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset",
    "Riverside", "Highland",
)  # fmt: skip
_STREET_SUFFIXES = ("St", "Ave", "Blvd", "Dr", "Ln", "Rd", "Ct", "Way")
# (city, state, first three digits of the ZIP code, state income tax in basis points)
_CITIES = (
    ("Austin", "TX", "787", 0),
    ("Columbus", "OH", "432", 300),
    ("Denver", "CO", "802", 440),
    ("Atlanta", "GA", "303", 539),
    ("Seattle", "WA", "981", 0),
    ("Charlotte", "NC", "282", 425),
    ("Phoenix", "AZ", "850", 250),
    ("Chicago", "IL", "606", 495),
    ("Sacramento", "CA", "958", 600),
    ("Albany", "NY", "122", 550),
    ("Orlando", "FL", "328", 0),
    ("Pittsburgh", "PA", "152", 307),
    ("Minneapolis", "MN", "554", 680),
    ("Portland", "OR", "972", 875),
)
TIMEZONES = {
    "TX": "America/Chicago", "OH": "America/New_York", "CO": "America/Denver", "GA": "America/New_York",
    "WA": "America/Los_Angeles", "NC": "America/New_York", "AZ": "America/Phoenix", "IL": "America/Chicago",
    "CA": "America/Los_Angeles", "NY": "America/New_York", "FL": "America/New_York",
    "PA": "America/New_York", "MN": "America/Chicago", "OR": "America/Los_Angeles",
}  # fmt: skip
EMPLOYERS = (
    "Northwind Logistics Inc.", "Bluebird Health Partners", "Summit Ridge Manufacturing",
    "Harbor & Pine Retail Co.", "Cedar Lane Foods", "Brightpath Software LLC",
    "Ironwood Construction", "Lakeside Medical Group", "Meridian Freight Services",
    "Golden Oak Hospitality",
)  # fmt: skip
_HOURLY_TITLES = (
    "Warehouse Associate", "Cashier", "Line Cook", "Medical Assistant", "Delivery Driver",
    "Customer Service Representative", "Forklift Operator", "Pharmacy Technician",
)  # fmt: skip
_SALARIED_TITLES = (
    "Software Engineer", "Staff Accountant", "Registered Nurse", "Operations Manager",
    "Marketing Specialist", "HR Generalist", "Financial Analyst", "Project Manager",
)  # fmt: skip
_BANKS = ("First Harbor Bank", "Prairie Federal Credit Union", "Summit National Bank", "Evergreen Bank")
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
_ROUTING_PREFIXES = (*range(1, 13), *range(21, 33))  # Federal Reserve routing symbols


def rng_for(username: str, *section: str) -> random.Random:
    """A private random stream seeded by SHA-256 of the username and a section name."""
    digest = hashlib.sha256("\x1f".join((username, *section)).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))  # noqa: S311 - fake data, not crypto


def aba_check_digit(first_eight: str) -> int:
    """The ninth digit that makes an ABA routing number's weighted checksum divisible by 10."""
    d = [int(c) for c in first_eight]
    total = 3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5])
    return (10 - total % 10) % 10


def aba_valid(routing_number: str) -> bool:
    """True for nine digits whose ABA checksum holds (paylink's own check, validation.py)."""
    return validation.aba_checksum_ok(routing_number)


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """A postal address in the US."""

    line1: str
    line2: str
    city: str
    state: str
    postal_code: str
    state_tax_bp: int

    def to_proto(self) -> data_pb2.Address:
        return data_pb2.Address(
            line1=self.line1,
            line2=self.line2,
            city=self.city,
            state=self.state,
            postal_code=self.postal_code,
            country="US",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class BankAccount:
    """An existing deposit account: never more than the last four digits."""

    name: str
    type: common_pb2.DepositAccountType.ValueType
    routing_number: str
    last_four: str

    def to_proto(self) -> data_pb2.DepositTarget:
        return data_pb2.DepositTarget(
            name=self.name,
            type=self.type,
            account_number_last_four=self.last_four,
            routing_number=self.routing_number,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """Everything fixed about one sandbox user; paystub lines vary per pay date."""

    username: str
    first_name: str
    last_name: str
    date_of_birth: dt.date
    last_four_ssn: str
    emails: tuple[str, ...]
    phones: tuple[tuple[str, str], ...]  # (E.164 number, kind)
    home: Place
    employer: str
    employer_address: Place
    title: str
    start_date: dt.date
    terminated: bool
    hourly: bool
    rate_cents: int  # per hour when hourly, per year otherwise
    newest_pay_date: dt.date  # of the base paystubs
    retirement_bp: int
    health_cents: int
    federal_bp: int
    checking: BankAccount
    savings: BankAccount | None
    savings_amount_cents: int


def _place(rng: random.Random) -> Place:
    city, state, zip3, tax_bp = rng.choice(_CITIES)
    line2 = f"Apt {rng.randint(1, 30)}{rng.choice('ABCD')}" if rng.random() < 0.3 else ""
    return Place(
        line1=f"{rng.randint(10, 9899)} {rng.choice(_STREETS)} {rng.choice(_STREET_SUFFIXES)}",
        line2=line2,
        city=city,
        state=state,
        postal_code=f"{zip3}{rng.randint(1, 99):02d}",
        state_tax_bp=tax_bp,
    )


def _routing_number(rng: random.Random) -> str:
    first_eight = f"{rng.choice(_ROUTING_PREFIXES):02d}{rng.randint(0, 999999):06d}"
    return first_eight + str(aba_check_digit(first_eight))


def _bank_account(
    rng: random.Random, name: str, kind: common_pb2.DepositAccountType.ValueType
) -> BankAccount:
    return BankAccount(
        name=f"{rng.choice(_BANKS)} {name}",
        type=kind,
        routing_number=_routing_number(rng),
        last_four=f"{rng.randint(0, 9999):04d}",
    )


@functools.lru_cache(maxsize=4096)
def profile(username: str) -> Profile:
    """The fixed facts of a sandbox user (cached: pure function of the username)."""
    rng = rng_for(username, "profile")
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    newest_pay_date = ANCHOR_DATE - dt.timedelta(days=rng.randint(0, 13))
    age = rng.randint(21, 64)  # at the anchor date
    dob = ANCHOR_DATE.replace(year=ANCHOR_DATE.year - age) - dt.timedelta(days=rng.randint(0, 360))
    emails = [f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(_EMAIL_DOMAINS)}".lower()]
    if rng.random() < 0.5:
        emails.append(f"{first[0]}{last}@{rng.choice(_EMAIL_DOMAINS)}".lower())
    phones = [(f"+1555{rng.randint(200, 999)}{rng.randint(0, 9999):04d}", "mobile")]
    if rng.random() < 0.4:
        phones.append((f"+1555{rng.randint(200, 999)}{rng.randint(0, 9999):04d}", "home"))
    base = username.split("+", 1)[0]
    hourly = (rng.random() < 0.55 or base == GIG_USER) and base != SALARIED_USER
    rate = rng.randrange(1800, 6501, 25) if hourly else rng.randrange(4_500_000, 15_000_001, 50_000)
    # At least one complete past year (a W-2 or 1099), three for the long-tenure users.
    shortest = 1100 if base in LONG_TENURE_USERS else 730
    tenure_days = rng.randint(shortest, max(shortest, min(15, age - 18) * 365))
    has_savings = rng.random() < 0.4
    return Profile(
        username=username,
        first_name=first,
        last_name=last,
        date_of_birth=dob,
        last_four_ssn=f"{rng.randint(1, 9999):04d}",
        emails=tuple(emails),
        phones=tuple(phones),
        home=_place(rng),
        employer=rng.choice(EMPLOYERS),
        employer_address=_place(rng),
        title=rng.choice(_HOURLY_TITLES if hourly else _SALARIED_TITLES),
        start_date=newest_pay_date - dt.timedelta(days=tenure_days),
        terminated=rng.random() < 0.12,
        hourly=hourly,
        rate_cents=rate,
        newest_pay_date=newest_pay_date,
        retirement_bp=rng.choice((300, 400, 500, 600, 800)),
        health_cents=rng.randrange(4_200, 16_501, 50),
        federal_bp=rng.randrange(800, 1601, 25),
        checking=_bank_account(rng, "Checking", common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING),
        savings=_bank_account(rng, "Savings", common_pb2.DEPOSIT_ACCOUNT_TYPE_SAVINGS)
        if has_savings
        else None,
        savings_amount_cents=rng.randrange(2_500, 40_001, 2_500) if has_savings else 0,
    )


def platform_date(days_advanced: int) -> dt.date:
    """The simulated platform's date for an account whose clock is `days_advanced` ahead."""
    return ANCHOR_DATE + dt.timedelta(days=days_advanced)


def raise_date() -> dt.date:
    return ANCHOR_DATE + RAISE_AFTER


def raised(p: Profile) -> Profile:
    """The profile after the raise."""
    step = 1 if p.hourly else 100
    rate = (p.rate_cents * (10_000 + RAISE_BP) // 10_000 + step - 1) // step * step
    return dataclasses.replace(p, rate_cents=rate)
