"""Deterministic, realistic payroll data for the sandbox driver.

Everything derives from the username (a SHA-256 seed per section) and fixed dates — never from the
clock or the global random state — so one username yields the same data in every run and process,
and `user_good+a` and `user_good+b` yield different people. Only the last four digits of an SSN or
a bank account are ever generated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random

from paylink.v1 import common_pb2, data_pb2

from service.drivers import sandbox_tables
from service.drivers.base import FetchedPaystub, PaystubQuery
from service.drivers.sandbox_profile import (
    ANCHOR_DATE,
    BASE_PAYSTUBS,
    MAX_PAYSTUBS,
    PAY_PERIOD,
    USD,
    Profile,
    aba_valid,
    periods_elapsed,
    platform_date,
    profile,
    raise_date,
    rng_for,
    with_raise,
)

__all__ = [
    "ANCHOR_DATE",
    "MAX_PAYSTUBS",
    "PAY_PERIOD",
    "aba_valid",
    "allocations",
    "employment",
    "identity",
    "income",
    "paystub_external_id",
    "paystubs",
    "profile",
    "raise_date",
    "rng_for",
]

# The vocabulary, under the names tests and older callers use.
_FIRST_NAMES = sandbox_tables.FIRST_NAMES
_LAST_NAMES = sandbox_tables.LAST_NAMES


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
        p = with_raise(p)
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
    raised = with_raise(p)
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
