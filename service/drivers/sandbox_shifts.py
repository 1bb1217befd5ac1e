"""Sandbox shifts: the clocked shifts of hourly employees and the gig blocks of gig workers.

Hourly shifts are cut from the pay history: each pay period's Regular and Overtime hours are
spread over its ten weekdays and its pay over those hours, so the shifts of a period add up to its
paystub's hours and hourly pay. Gig blocks are generated day by day, and the gig platform's weekly
payouts (sandbox_pay) are their sums. Salaried employees have no shifts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import zoneinfo

from paylink.v1 import common_pb2, shift_pb2

from service.drivers.base import FetchedShift, ShiftQuery
from service.drivers.sandbox_profile import HISTORY_START, TIMEZONES, USD, profile, rng_for

DEFAULT_WINDOW = dt.timedelta(days=90)  # what a query without from_date returns
MAX_SHIFTS = 1000  # per fetch


@dataclasses.dataclass(frozen=True, slots=True)
class ShiftRecord:
    """One shift: local date, UTC times, hours in hundredths, money in cents."""

    type: int
    date: dt.date
    start: dt.datetime
    end: dt.datetime
    timezone: str
    hours: int
    base: int
    tips: int = 0
    incentives: int = 0
    tasks: int = 0
    distance_meters: int = 0


def _at(day: dt.date, minutes: int, zone: str) -> dt.datetime:
    local = dt.datetime.combine(day, dt.time(0), tzinfo=zoneinfo.ZoneInfo(zone))
    return (local + dt.timedelta(minutes=minutes)).astimezone(dt.UTC)


def _split(total: int, parts: int, unit: int = 1) -> list[int]:
    """`total` in `parts` shares of whole `unit`s, the larger shares first (sum preserved)."""
    units, rest = divmod(total, unit)
    base, extra = divmod(units, parts)
    shares = [(base + (1 if i < extra else 0)) * unit for i in range(parts)]
    shares[-1] += rest
    return shares


def hourly_shifts(username: str, extra_paystubs: int = 0, days_advanced: int = 0) -> list[ShiftRecord]:
    """The hourly employee's shifts over the whole pay history, oldest first ([] if salaried)."""
    from service.drivers import sandbox_pay

    p = profile(username)
    if not p.hourly:
        return []
    zone = TIMEZONES[p.home.state]
    out: list[ShiftRecord] = []
    for stub in sandbox_pay.history(username, extra_paystubs, False, days_advanced):
        worked = [line for line in stub.lines if line.kind == "earning" and line.hours]
        hours = sum(line.hours for line in worked)
        pay = sum(line.amount for line in worked)
        days = [stub.period_start + dt.timedelta(days=i) for i in range(14)]
        weekdays = [d for d in days if d.weekday() < 5]
        day_hours = _split(hours, len(weekdays), 25)
        paid = 0
        for i, (day, h) in enumerate(zip(weekdays, day_hours, strict=True)):
            rng = rng_for(username, "shift", day.isoformat())
            share = pay - paid if i == len(weekdays) - 1 else pay * h // hours
            paid += share
            start = rng.choice((420, 450, 480, 510, 540))  # 7:00 to 9:00 local
            minutes = h * 60 // 100 + (30 if h >= 600 else 0)  # unpaid lunch break from 6 hours
            out.append(
                ShiftRecord(
                    type=shift_pb2.SHIFT_TYPE_HOURLY,
                    date=day,
                    start=_at(day, start, zone),
                    end=_at(day, start + minutes, zone),
                    timezone=zone,
                    hours=h,
                    base=share,
                )
            )
    return out


@functools.lru_cache(maxsize=256)
def gig_shifts(username: str, until: dt.date) -> tuple[ShiftRecord, ...]:
    """The gig worker's blocks from the start of the history through `until`, oldest first."""
    p = profile(username)
    zone = TIMEZONES[p.home.state]
    day = max(HISTORY_START, p.start_date)
    out = []
    while day <= until:
        rng = rng_for(username, "gig", day.isoformat())
        if rng.random() < 0.62:
            start = rng.randrange(600, 1200, 15)  # 10:00 to 19:45 local
            hours = rng.randrange(200, 601, 25)
            tasks = max(1, hours * rng.randrange(150, 260) // 10_000)
            base = sum(rng.randrange(350, 801, 5) for _ in range(tasks))
            tips = sum(rng.randrange(0, 601, 25) for _ in range(tasks))
            incentives = rng.randrange(500, 3001, 100) if rng.random() < 0.25 else 0
            out.append(
                ShiftRecord(
                    type=shift_pb2.SHIFT_TYPE_GIG,
                    date=day,
                    start=_at(day, start, zone),
                    end=_at(day, start + hours * 60 // 100, zone),
                    timezone=zone,
                    hours=hours,
                    base=base,
                    tips=tips,
                    incentives=incentives,
                    tasks=tasks,
                    distance_meters=sum(rng.randrange(1_500, 9_001, 10) for _ in range(tasks)),
                )
            )
        day += dt.timedelta(days=1)
    return tuple(out)


def shift_external_id(username: str, record: ShiftRecord) -> str:
    """The platform's stable id of a shift."""
    key = f"{username}\x1f{record.type}\x1f{record.start.isoformat()}"
    return "sh_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _usd(cents: int) -> common_pb2.Money:
    return common_pb2.Money(amount_cents=cents, currency=USD)


def to_proto(record: ShiftRecord) -> shift_pb2.Shift:
    """The Shift message of a record (id, account_id, created_at left empty)."""
    shift = shift_pb2.Shift(
        type=record.type,  # type: ignore[arg-type]
        date=record.date.isoformat(),
        timezone=record.timezone,
        hours_hundredths=record.hours,
        base_pay=_usd(record.base),
        tips=_usd(record.tips),
        incentives=_usd(record.incentives),
        total_pay=_usd(record.base + record.tips + record.incentives),
        tasks=record.tasks,
        distance_meters=record.distance_meters,
    )
    shift.start_time.FromDatetime(record.start)
    shift.end_time.FromDatetime(record.end)
    return shift


def records(
    username: str, *, gig: bool, extra_paystubs: int = 0, days_advanced: int = 0
) -> list[ShiftRecord]:
    """Every shift the platform has for the user, oldest first."""
    if gig:
        from service.drivers import sandbox_pay

        newest = sandbox_pay.history(username, extra_paystubs, True, days_advanced)[-1]
        return list(gig_shifts(username, newest.period_end))
    return hourly_shifts(username, extra_paystubs, days_advanced)


def shifts(
    username: str, query: ShiftQuery, *, gig: bool, extra_paystubs: int = 0, days_advanced: int = 0
) -> list[FetchedShift]:
    """Shifts newest first within the query's dates (default: the DEFAULT_WINDOW up to the newest
    shift), at most MAX_SHIFTS."""
    found = records(username, gig=gig, extra_paystubs=extra_paystubs, days_advanced=days_advanced)
    if not found:
        return []
    low = dt.date.fromisoformat(query.from_date) if query.from_date else found[-1].date - DEFAULT_WINDOW
    high = dt.date.fromisoformat(query.to_date) if query.to_date else dt.date.max
    chosen = [r for r in reversed(found) if low <= r.date <= high][:MAX_SHIFTS]
    return [FetchedShift(shift_external_id(username, r), to_proto(r)) for r in chosen]
