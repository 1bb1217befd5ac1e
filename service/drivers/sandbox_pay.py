"""Sandbox pay history: every paystub a sandbox user was paid since HISTORY_START, with
year-to-date figures that add up.

The platform keeps the whole history (W-2s and 1099s are computed from it) but shows only part of
it as paystubs: the newest BASE_PAYSTUBS for most users, the whole current year for
`user_salaried`, plus the ones added with SandboxService.AddPaystub. Every figure is integer cents;
each YTD is the sum of the same line over the paystubs of the same calendar year up to and
including that one, so the newest paystub's YTD equals the sum of the year's paystubs.

Employees are paid every 14 days with taxes and pre-tax deductions; on the gig platform the user
is a contractor paid every week the sum of that week's gig shifts (sandbox_shifts), with no taxes
withheld.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import hashlib
import random

from paylink.v1 import common_pb2, data_pb2

from service.drivers.base import FetchedPaystub, PaystubQuery
from service.drivers.sandbox_profile import (
    HISTORY_START,
    PAY_PERIOD,
    SALARIED_USER,
    USD,
    Profile,
    platform_date,
    profile,
    raise_date,
    raised,
    rng_for,
)

BASE_PAYSTUBS = 6
MAX_PAYSTUBS = 24  # what a paystubs query with count 0 returns at most
GIG_PAY_PERIOD = dt.timedelta(days=7)

D = data_pb2


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One line of a paystub: an earning, deduction, tax or reimbursement."""

    kind: str  # "earning", "deduction", "tax", "reimbursement"
    category: int
    name: str
    amount: int
    hours: int = 0
    rate: int = 0
    pre_tax: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Stub:
    """One paystub of the history, with its year-to-date figures."""

    pay_date: dt.date
    period_start: dt.date
    period_end: dt.date
    lines: tuple[Line, ...]
    time_off: tuple[tuple[int, str, int, int], ...]  # (category, name, used, remaining) hundredths
    ytd_lines: tuple[int, ...]  # YTD of each line, in the order of `lines`
    ytd: tuple[int, int, int, int, int]  # gross, net, taxes, deductions, reimbursements
    tasks: int = 0  # gig payouts: tasks (payment transactions) paid

    def total(self, kind: str) -> int:
        return sum(line.amount for line in self.lines if line.kind == kind)

    @property
    def gross(self) -> int:
        return self.total("earning")

    @property
    def net(self) -> int:
        return self.gross - self.total("tax") - self.total("deduction")


def _employee_lines(p: Profile, rng: random.Random) -> list[Line]:
    lines: list[Line] = []
    if p.hourly:
        hours = 8000 if rng.random() < 0.7 else rng.randrange(6400, 8000, 25)
        lines.append(
            Line(
                "earning",
                D.EARNING_CATEGORY_WAGES,
                "Regular",
                (hours * p.rate_cents + 50) // 100,
                hours,
                p.rate_cents,
            )
        )
        if rng.random() < 0.25:
            ot_hours, ot_rate = rng.randrange(100, 1201, 25), (p.rate_cents * 3 + 1) // 2
            lines.append(
                Line(
                    "earning",
                    D.EARNING_CATEGORY_OVERTIME,
                    "Overtime",
                    (ot_hours * ot_rate + 50) // 100,
                    ot_hours,
                    ot_rate,
                )
            )
    else:
        lines.append(Line("earning", D.EARNING_CATEGORY_WAGES, "Salary", p.rate_cents // 26))
    if rng.random() < 0.08:
        lines.append(Line("earning", D.EARNING_CATEGORY_BONUS, "Bonus", rng.randrange(10_000, 150_001, 500)))
    gross = sum(line.amount for line in lines)
    retirement = gross * p.retirement_bp // 10_000
    health = min(p.health_cents, gross // 4)
    fica_wages = gross - health  # section 125 health premiums are exempt from FICA, 401(k) is not
    taxable = fica_wages - retirement
    taxes = (
        (D.TAX_CATEGORY_FEDERAL_INCOME, "Federal Income Tax", taxable * p.federal_bp // 10_000),
        (
            D.TAX_CATEGORY_STATE_INCOME,
            f"{p.home.state} State Income Tax",
            taxable * p.home.state_tax_bp // 10_000,
        ),
        (D.TAX_CATEGORY_SOCIAL_SECURITY, "Social Security", (fica_wages * 62 + 500) // 1000),
        (D.TAX_CATEGORY_MEDICARE, "Medicare", (fica_wages * 145 + 5_000) // 10_000),
    )
    lines += [Line("tax", c, n, a) for c, n, a in taxes if a > 0]
    lines.append(Line("deduction", D.DEDUCTION_CATEGORY_RETIREMENT, "401(k)", retirement, pre_tax=True))
    lines.append(Line("deduction", D.DEDUCTION_CATEGORY_HEALTH, "Medical PPO", health, pre_tax=True))
    if rng.random() < 0.15:
        lines.append(Line("reimbursement", 0, "Expense Reimbursement", rng.randrange(1_500, 25_001, 5)))
    return lines


def _time_off(rng: random.Random, balances: list[int]) -> tuple[tuple[int, str, int, int], ...]:
    out = []
    for i, (category, name, accrual, use_chance) in enumerate(
        (
            (D.TIME_OFF_CATEGORY_VACATION, "Vacation", 462, 0.15),
            (D.TIME_OFF_CATEGORY_SICK, "Sick", 154, 0.08),
        )
    ):
        used = 800 if rng.random() < use_chance and balances[i] + accrual >= 800 else 0
        balances[i] += accrual - used
        out.append((category, name, used, balances[i]))
    return tuple(out)


_Raw = tuple[dt.date, dt.date, dt.date, list[Line], tuple[tuple[int, str, int, int], ...], int]


def _with_ytd(raw: list[_Raw]) -> list[Stub]:
    stubs: list[Stub] = []
    year = 0
    per_line: collections.Counter[tuple[str, str]] = collections.Counter()
    totals = [0, 0, 0, 0, 0]
    for pay_date, start, end, lines, time_off, tasks in raw:
        if pay_date.year != year:
            year, per_line, totals = pay_date.year, collections.Counter(), [0, 0, 0, 0, 0]
        for line in lines:
            per_line[(line.kind, line.name)] += line.amount
        stub = Stub(pay_date, start, end, tuple(lines), time_off, (), (0, 0, 0, 0, 0), tasks)
        for i, amount in enumerate(
            (stub.gross, stub.net, stub.total("tax"), stub.total("deduction"), stub.total("reimbursement"))
        ):
            totals[i] += amount
        ytd_lines = tuple(per_line[(line.kind, line.name)] for line in lines)
        stubs.append(
            dataclasses.replace(
                stub, ytd_lines=ytd_lines, ytd=(totals[0], totals[1], totals[2], totals[3], totals[4])
            )
        )
    return stubs


def _first_pay_date(newest: dt.date, period: dt.timedelta, earliest: dt.date) -> dt.date:
    periods = (newest - earliest) // period
    return newest - period * periods


def periods_elapsed(username: str, days_advanced: int, gig: bool = False) -> int:
    """Pay dates that passed since the base paystubs, as the account's clock moved."""
    if days_advanced <= 0:
        return 0
    newest = profile(username).newest_pay_date
    period = GIG_PAY_PERIOD if gig else PAY_PERIOD
    return (platform_date(days_advanced) - newest).days // period.days


def history(
    username: str, extra_paystubs: int = 0, gig: bool = False, days_advanced: int = 0
) -> tuple[Stub, ...]:
    """Every paystub of the user, oldest first: since HISTORY_START (or a week after the start
    date), through the newest base pay date, one per pay period the account's clock moved past,
    and `extra_paystubs` more."""
    return _history(username, max(0, extra_paystubs) + periods_elapsed(username, days_advanced, gig), gig)


@functools.lru_cache(maxsize=1024)
def _history(username: str, extra_paystubs: int, gig: bool) -> tuple[Stub, ...]:
    p = profile(username)
    if gig:
        return _gig_history(username, extra_paystubs)
    after_raise = raised(p)
    earliest = max(HISTORY_START, p.start_date + dt.timedelta(days=7))
    first = _first_pay_date(p.newest_pay_date, PAY_PERIOD, earliest)
    rng = rng_for(username, "time_off")
    balances = [rng.randrange(0, 6001, 25), rng.randrange(0, 4001, 25)]
    raw: list[_Raw] = []
    pay_date = first
    last = p.newest_pay_date + PAY_PERIOD * max(0, extra_paystubs)
    while pay_date <= last:
        stub_rng = rng_for(username, "paystub", pay_date.isoformat())
        lines = _employee_lines(after_raise if pay_date >= raise_date() else p, stub_rng)
        end = pay_date - dt.timedelta(days=5)
        raw.append((pay_date, end - dt.timedelta(days=13), end, lines, _time_off(stub_rng, balances), 0))
        pay_date += PAY_PERIOD
    return tuple(_with_ytd(raw))


def _gig_history(username: str, extra_paystubs: int) -> tuple[Stub, ...]:
    from service.drivers import sandbox_shifts  # shifts are the source of gig pay

    p = profile(username)
    earliest = max(HISTORY_START, p.start_date + dt.timedelta(days=7))
    newest = p.newest_pay_date + GIG_PAY_PERIOD * max(0, extra_paystubs)
    first = _first_pay_date(newest, GIG_PAY_PERIOD, earliest)
    newest_end = newest - dt.timedelta(days=3)
    weeks: dict[dt.date, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
    for shift in sandbox_shifts.gig_shifts(username, newest_end):
        # The week (Monday-aligned to the pay dates) whose payout includes this shift.
        end = newest_end - GIG_PAY_PERIOD * ((newest_end - shift.date) // GIG_PAY_PERIOD)
        for i, amount in enumerate((shift.base, shift.tips, shift.incentives, shift.tasks)):
            weeks[end][i] += amount
    raw: list[_Raw] = []
    pay_date = first
    while pay_date <= newest:
        end = pay_date - dt.timedelta(days=3)
        base, tips, incentives, tasks = weeks.get(end, [0, 0, 0, 0])
        if not base + tips + incentives:  # no work that week: no payout
            pay_date += GIG_PAY_PERIOD
            continue
        lines = [Line("earning", D.EARNING_CATEGORY_OTHER, "Delivery Pay", base, hours=0, rate=0)]
        if tips:
            lines.append(Line("earning", D.EARNING_CATEGORY_TIPS, "Customer Tips", tips))
        if incentives:
            lines.append(Line("earning", D.EARNING_CATEGORY_BONUS, "Incentives", incentives))
        raw.append((pay_date, end - dt.timedelta(days=6), end, lines, (), tasks))
        pay_date += GIG_PAY_PERIOD
    return tuple(_with_ytd(raw))


def _usd(cents: int) -> common_pb2.Money:
    return common_pb2.Money(amount_cents=cents, currency=USD)


def to_proto(stub: Stub) -> data_pb2.Paystub:
    """The Paystub message of a history entry (id, account_id, created_at left empty)."""
    out = data_pb2.Paystub(
        pay_date=stub.pay_date.isoformat(),
        pay_period_start=stub.period_start.isoformat(),
        pay_period_end=stub.period_end.isoformat(),
        gross_pay=_usd(stub.gross),
        net_pay=_usd(stub.net),
        check_amount=_usd(stub.net + stub.total("reimbursement")),
        total_taxes=_usd(stub.total("tax")),
        total_deductions=_usd(stub.total("deduction")),
        total_reimbursements=_usd(stub.total("reimbursement")),
        gross_pay_ytd=_usd(stub.ytd[0]),
        net_pay_ytd=_usd(stub.ytd[1]),
        total_taxes_ytd=_usd(stub.ytd[2]),
        total_deductions_ytd=_usd(stub.ytd[3]),
        total_reimbursements_ytd=_usd(stub.ytd[4]),
        time_off=[
            D.TimeOff(category=c, name=n, used_hundredths=u, remaining_hundredths=r)  # type: ignore[arg-type]
            for c, n, u, r in stub.time_off
        ],
    )
    for line, ytd in zip(stub.lines, stub.ytd_lines, strict=True):
        amount, amount_ytd = _usd(line.amount), _usd(ytd)
        if line.kind == "earning":
            out.earnings.add(
                category=line.category,
                name=line.name,
                amount=amount,
                hours_hundredths=line.hours,
                rate_cents=line.rate,
                amount_ytd=amount_ytd,
            )
        elif line.kind == "tax":
            out.taxes.add(category=line.category, name=line.name, amount=amount, amount_ytd=amount_ytd)
        elif line.kind == "deduction":
            out.deductions.add(
                category=line.category,
                name=line.name,
                amount=amount,
                pre_tax=line.pre_tax,
                amount_ytd=amount_ytd,
            )
        else:
            out.reimbursements.add(name=line.name, amount=amount, amount_ytd=amount_ytd)
    return out


def paystub_external_id(username: str, pay_date: str) -> str:
    """The platform's stable id of a paystub."""
    return "ps_" + hashlib.sha256(f"{username}\x1f{pay_date}".encode()).hexdigest()[:24]


def document_external_id(username: str, pay_date: str) -> str:
    """The platform's stable id of a paystub's PDF."""
    return "doc_ps_" + hashlib.sha256(f"{username}\x1f{pay_date}".encode()).hexdigest()[:24]


def visible(username: str, extra_paystubs: int = 0, gig: bool = False, days_advanced: int = 0) -> list[Stub]:
    """The paystubs the platform shows, newest first: the newest BASE_PAYSTUBS (the whole current
    year for user_salaried) plus the ones paid since (the clock moved, or AddPaystub)."""
    stubs = history(username, extra_paystubs, gig, days_advanced)
    if username.split("+", 1)[0] == SALARIED_USER:
        newest_year = stubs[-1].pay_date.year
        shown = [s for s in stubs if s.pay_date.year == newest_year]
    else:
        newer = sum(1 for s in stubs if s.pay_date > profile(username).newest_pay_date)
        shown = list(stubs[-(BASE_PAYSTUBS + newer) :])
    shown.reverse()
    return shown


def paystubs(
    username: str,
    extra_paystubs: int = 0,
    query: PaystubQuery | None = None,
    days_advanced: int = 0,
    *,
    gig: bool = False,
) -> list[FetchedPaystub]:
    """The user's visible paystubs, newest first, filtered by `query` (inclusive pay-date bounds,
    then at most `count`, 0 meaning up to MAX_PAYSTUBS)."""
    query = query or PaystubQuery()
    stubs = visible(username, extra_paystubs, gig, days_advanced)
    if query.from_pay_date:
        stubs = [s for s in stubs if s.pay_date.isoformat() >= query.from_pay_date]
    if query.to_pay_date:
        stubs = [s for s in stubs if s.pay_date.isoformat() <= query.to_pay_date]
    limit = query.count if query.count > 0 else MAX_PAYSTUBS
    return [
        FetchedPaystub(
            paystub_external_id(username, s.pay_date.isoformat()),
            to_proto(s),
            document_external_id(username, s.pay_date.isoformat()),
        )
        for s in stubs[:limit]
    ]
