"""Deterministic, realistic payroll data for the sandbox driver.

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

from service.drivers.base import FetchedPaystub, PaystubQuery, SwitchRequest

ANCHOR_DATE = dt.date(2026, 11, 13)  # the newest base pay date is 0-13 days before this
PAY_PERIOD = dt.timedelta(days=14)
# Time at the simulated platform: each account's clock starts at ANCHOR_DATE and moves only when
# SandboxService.AdvanceClock says so. Every 14 days brings a paystub; after RAISE_AFTER the pay
# rate is RAISE_BP higher (paystubs dated from then on, and income).
RAISE_AFTER = dt.timedelta(days=90)
RAISE_BP = 500
BASE_PAYSTUBS = 6
MAX_PAYSTUBS = 24  # what a paystubs query with count 0 returns at most
USD = "USD"

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
_EMPLOYERS = (
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
    """True for nine digits whose ABA checksum holds."""
    if len(routing_number) != 9 or not routing_number.isdigit():
        return False
    return aba_check_digit(routing_number[:8]) == int(routing_number[8])


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
    hourly = rng.random() < 0.55
    rate = rng.randrange(1800, 6501, 25) if hourly else rng.randrange(4_500_000, 15_000_001, 50_000)
    tenure_days = rng.randint(120, min(15, age - 18) * 365)
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
        employer=rng.choice(_EMPLOYERS),
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


def periods_elapsed(username: str, days_advanced: int) -> int:
    """Pay dates that passed since the base paystubs, as the account's clock moved."""
    if days_advanced <= 0:
        return 0
    newest = profile(username).newest_pay_date
    return (platform_date(days_advanced) - newest).days // PAY_PERIOD.days


def raise_date() -> dt.date:
    return ANCHOR_DATE + RAISE_AFTER


def _raised(p: Profile) -> Profile:
    step = 1 if p.hourly else 100
    rate = (p.rate_cents * (10_000 + RAISE_BP) // 10_000 + step - 1) // step * step
    return dataclasses.replace(p, rate_cents=rate)


def identity(username: str) -> data_pb2.Identity:
    """Identity: name, date of birth, last four of the SSN, contacts and home address."""
    p = profile(username)
    return data_pb2.Identity(
        full_name=f"{p.first_name} {p.last_name}",
        first_name=p.first_name,
        last_name=p.last_name,
        date_of_birth=p.date_of_birth.isoformat(),
        last_four_ssn=p.last_four_ssn,
        emails=p.emails,
        phone_numbers=[data_pb2.PhoneNumber(value=v, type=t) for v, t in p.phones],
        address=p.home.to_proto(),
    )


def employment(username: str) -> data_pb2.Employment:
    """Employment: status, title, dates and employer."""
    p = profile(username)
    return data_pb2.Employment(
        status=data_pb2.EMPLOYMENT_STATUS_TERMINATED if p.terminated else data_pb2.EMPLOYMENT_STATUS_EMPLOYED,
        title=p.title,
        start_date=p.start_date.isoformat(),
        termination_date=(p.newest_pay_date - dt.timedelta(days=5)).isoformat() if p.terminated else "",
        employer=data_pb2.Employer(name=p.employer, address=p.employer_address.to_proto()),
    )


def income(username: str, *, gig: bool = False, days_advanced: int = 0) -> data_pb2.Income:
    """Income: pay rate and frequency (VARIABLE on gig platforms, BIWEEKLY elsewhere); the raise
    shows once the account's clock reached it."""
    p = profile(username)
    if platform_date(days_advanced) >= raise_date():
        p = _raised(p)
    return data_pb2.Income(
        compensation_amount_cents=p.rate_cents,
        compensation_unit=data_pb2.COMPENSATION_UNIT_HOURLY
        if p.hourly
        else data_pb2.COMPENSATION_UNIT_ANNUAL,
        currency=USD,
        pay_frequency=data_pb2.PAY_FREQUENCY_VARIABLE if gig else data_pb2.PAY_FREQUENCY_BIWEEKLY,
    )


def _usd(cents: int) -> common_pb2.Money:
    return common_pb2.Money(amount_cents=cents, currency=USD)


def _earnings(p: Profile, rng: random.Random) -> list[data_pb2.Earning]:
    if p.hourly:
        hours = 8000 if rng.random() < 0.7 else rng.randrange(6400, 8000, 25)
        lines = [
            data_pb2.Earning(
                category=data_pb2.EARNING_CATEGORY_WAGES,
                name="Regular",
                amount=_usd((hours * p.rate_cents + 50) // 100),
                hours_hundredths=hours,
                rate_cents=p.rate_cents,
            )
        ]
        if rng.random() < 0.25:
            ot_hours, ot_rate = rng.randrange(100, 1201, 25), (p.rate_cents * 3 + 1) // 2
            lines.append(
                data_pb2.Earning(
                    category=data_pb2.EARNING_CATEGORY_OVERTIME,
                    name="Overtime",
                    amount=_usd((ot_hours * ot_rate + 50) // 100),
                    hours_hundredths=ot_hours,
                    rate_cents=ot_rate,
                )
            )
    else:
        lines = [
            data_pb2.Earning(
                category=data_pb2.EARNING_CATEGORY_WAGES, name="Salary", amount=_usd(p.rate_cents // 26)
            )
        ]
    if rng.random() < 0.08:
        bonus = rng.randrange(10_000, 150_001, 500)
        lines.append(
            data_pb2.Earning(category=data_pb2.EARNING_CATEGORY_BONUS, name="Bonus", amount=_usd(bonus))
        )
    return lines


def _paystub(p: Profile, pay_date: dt.date, balances: list[int]) -> data_pb2.Paystub:
    """One paystub; `balances` ([vacation, sick] in hundredths of hours) is carried and updated."""
    rng = rng_for(p.username, "paystub", pay_date.isoformat())
    earnings = _earnings(p, rng)
    gross = sum(e.amount.amount_cents for e in earnings)
    retirement = gross * p.retirement_bp // 10_000
    health = min(p.health_cents, gross // 4)
    fica_wages = gross - health  # section 125 health premiums are exempt from FICA, 401(k) is not
    taxable = fica_wages - retirement
    taxes = [
        (data_pb2.TAX_CATEGORY_FEDERAL_INCOME, "Federal Income Tax", taxable * p.federal_bp // 10_000),
        (
            data_pb2.TAX_CATEGORY_STATE_INCOME,
            f"{p.home.state} State Income Tax",
            taxable * p.home.state_tax_bp // 10_000,
        ),
        (data_pb2.TAX_CATEGORY_SOCIAL_SECURITY, "Social Security", (fica_wages * 62 + 500) // 1000),
        (data_pb2.TAX_CATEGORY_MEDICARE, "Medicare", (fica_wages * 145 + 5_000) // 10_000),
    ]
    tax_lines = [data_pb2.Tax(category=c, name=n, amount=_usd(a)) for c, n, a in taxes if a > 0]
    deductions = [
        data_pb2.Deduction(
            category=data_pb2.DEDUCTION_CATEGORY_RETIREMENT,
            name="401(k)",
            amount=_usd(retirement),
            pre_tax=True,
        ),
        data_pb2.Deduction(
            category=data_pb2.DEDUCTION_CATEGORY_HEALTH, name="Medical PPO", amount=_usd(health), pre_tax=True
        ),
    ]
    net = gross - retirement - health - sum(t.amount.amount_cents for t in tax_lines)
    time_off = []
    for i, (category, name, accrual, use_chance) in enumerate(
        (
            (data_pb2.TIME_OFF_CATEGORY_VACATION, "Vacation", 462, 0.15),
            (data_pb2.TIME_OFF_CATEGORY_SICK, "Sick", 154, 0.08),
        )
    ):
        used = 800 if rng.random() < use_chance and balances[i] + accrual >= 800 else 0
        balances[i] += accrual - used
        time_off.append(
            data_pb2.TimeOff(
                category=category, name=name, used_hundredths=used, remaining_hundredths=balances[i]
            )
        )
    period_end = pay_date - dt.timedelta(days=5)
    return data_pb2.Paystub(
        pay_date=pay_date.isoformat(),
        pay_period_start=(period_end - dt.timedelta(days=13)).isoformat(),
        pay_period_end=period_end.isoformat(),
        gross_pay=_usd(gross),
        net_pay=_usd(net),
        earnings=earnings,
        deductions=deductions,
        taxes=tax_lines,
        time_off=time_off,
    )


def paystub_external_id(username: str, pay_date: str) -> str:
    """The platform's stable id of a paystub."""
    return "ps_" + hashlib.sha256(f"{username}\x1f{pay_date}".encode()).hexdigest()[:24]


def paystubs(
    username: str, extra_paystubs: int = 0, query: PaystubQuery | None = None, days_advanced: int = 0
) -> list[FetchedPaystub]:
    """The user's paystubs, newest first: 6 base ones, one per pay period the account's clock moved
    past, plus `extra_paystubs` newer ones, filtered by `query` (inclusive pay-date bounds, then at
    most `count`, 0 meaning up to MAX_PAYSTUBS)."""
    query = query or PaystubQuery()
    p = profile(username)
    raised = _raised(p)
    rng = rng_for(username, "time_off")
    balances = [rng.randrange(0, 6001, 25), rng.randrange(0, 4001, 25)]
    oldest = p.newest_pay_date - PAY_PERIOD * (BASE_PAYSTUBS - 1)
    count = BASE_PAYSTUBS + max(0, extra_paystubs) + periods_elapsed(username, days_advanced)
    dates = [oldest + PAY_PERIOD * i for i in range(count)]
    stubs = [_paystub(raised if d >= raise_date() else p, d, balances) for d in dates]
    stubs.reverse()
    if query.from_pay_date:
        stubs = [s for s in stubs if s.pay_date >= query.from_pay_date]
    if query.to_pay_date:
        stubs = [s for s in stubs if s.pay_date <= query.to_pay_date]
    limit = query.count if query.count > 0 else MAX_PAYSTUBS
    return [FetchedPaystub(paystub_external_id(username, s.pay_date), s) for s in stubs[:limit]]


def allocations(
    username: str, deposit: data_pb2.DepositTarget | None = None
) -> data_pb2.DirectDepositAllocations:
    """The existing split: maybe a fixed amount to savings first, then the remainder to checking.
    `deposit`: the account the user moved the whole pay to outside paylink (ChangeAllocation)."""
    p = profile(username)
    result = data_pb2.DirectDepositAllocations()
    if deposit is not None:
        result.allocations.add(type=common_pb2.ALLOCATION_TYPE_REMAINDER, value=0, target=deposit, priority=1)
        return result
    if p.savings is not None:
        result.allocations.add(
            type=common_pb2.ALLOCATION_TYPE_AMOUNT, value=p.savings_amount_cents, target=p.savings.to_proto()
        )
    result.allocations.add(type=common_pb2.ALLOCATION_TYPE_REMAINDER, value=0, target=p.checking.to_proto())
    for priority, allocation in enumerate(result.allocations, start=1):
        allocation.priority = priority
    return result


class SwitchRejected(ValueError):
    """The platform refused a deposit switch; the message is its reason (no account numbers)."""


def _dollars(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def _check_switch(request: SwitchRequest, net_pay_cents: int) -> None:
    target = request.target
    if not aba_valid(target.routing_number):
        raise SwitchRejected("The routing number is not a valid ABA routing number")
    if not (target.account_number.isdigit() and 5 <= len(target.account_number) <= 17):
        raise SwitchRejected("The account number must be 5 to 17 digits")
    if target.type not in (common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING, common_pb2.DEPOSIT_ACCOUNT_TYPE_SAVINGS):
        raise SwitchRejected("Deposits can only go to a checking or savings account")
    if request.action == common_pb2.SWITCH_ACTION_FULL:
        return
    if request.action != common_pb2.SWITCH_ACTION_PARTIAL:
        raise SwitchRejected("Unknown direct deposit change")
    if request.allocation_type == common_pb2.ALLOCATION_TYPE_PERCENTAGE:
        if not 1 <= request.value <= 100:
            raise SwitchRejected(f"A percentage allocation must be between 1% and 100%, not {request.value}%")
    elif request.allocation_type == common_pb2.ALLOCATION_TYPE_AMOUNT:
        if request.value <= 0:
            raise SwitchRejected("A fixed amount allocation must be greater than $0.00")
        if request.value > net_pay_cents:
            raise SwitchRejected(
                f"The amount {_dollars(request.value)} exceeds the net pay of the last paycheck "
                f"({_dollars(net_pay_cents)})"
            )
    else:
        raise SwitchRejected("A partial deposit change needs a fixed amount or a percentage")


def switched_allocations(
    username: str,
    request: SwitchRequest,
    extra_paystubs: int = 0,
    *,
    days_advanced: int = 0,
    deposit: data_pb2.DepositTarget | None = None,
) -> data_pb2.DirectDepositAllocations:
    """The allocations after `request` is applied to the user's existing ones (stateless, so the
    same request always gives the same result). FULL: the target becomes the only (remainder)
    allocation. PARTIAL: the new amount/percentage goes first, the existing ones keep their order.
    Raises SwitchRejected under the platform's rules."""
    newest = paystubs(username, extra_paystubs, PaystubQuery(count=1), days_advanced)[0].paystub
    _check_switch(request, newest.net_pay.amount_cents)
    target = data_pb2.DepositTarget(
        name=request.target.name
        or ("Checking" if request.target.type == common_pb2.DEPOSIT_ACCOUNT_TYPE_CHECKING else "Savings"),
        type=common_pb2.DepositAccountType.ValueType(request.target.type),
        account_number_last_four=request.target.account_number[-4:],
        routing_number=request.target.routing_number,
    )
    result = data_pb2.DirectDepositAllocations()
    if request.action == common_pb2.SWITCH_ACTION_FULL:
        result.allocations.add(type=common_pb2.ALLOCATION_TYPE_REMAINDER, value=0, target=target, priority=1)
        return result
    result.allocations.add(
        type=common_pb2.AllocationType.ValueType(request.allocation_type),
        value=request.value,
        target=target,
        priority=1,
    )
    for existing in allocations(username, deposit).allocations:
        result.allocations.append(existing)
        result.allocations[-1].priority = len(result.allocations)
    return result
