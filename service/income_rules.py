"""Income figures derived from paystubs (pure rules, no I/O).

`derive(income, paystubs)` completes what a platform reported with what its stored paystubs show:

- `pay_frequency`, when the platform did not report it: from the median number of days between
  consecutive pay dates (at least two paystubs): up to 8 days WEEKLY, up to 14.5 BIWEEKLY, up to 17
  SEMIMONTHLY, up to 35 MONTHLY; VARIABLE when longer, or when the gaps differ by more than 7 days.
- `compensation_amount_cents` and `compensation_unit`, when the amount is not reported (0): the
  newest paystub's hourly rate (HOURLY) when its first wage line has one, else the annualized gross
  pay (ANNUAL).
- `gross_pay_ytd`, `net_pay_ytd`, `ytd_as_of`: from the newest paystub; when it carries no YTD, the
  sum of the stored paystubs of its calendar year (a lower bound if older ones were not fetched).
- `annualized_gross_pay`: gross pay of the paystubs whose pay date lies within 365 days up to the
  newest one, times 365 over the days their pay periods cover (at most 365).

Reported fields are never overwritten; derived ones are named in `derived_fields`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
from collections.abc import Sequence

from paylink.v1 import common_pb2, data_pb2

D = data_pb2
_FREQUENCIES = (
    (8, D.PAY_FREQUENCY_WEEKLY),
    (14.5, D.PAY_FREQUENCY_BIWEEKLY),
    (17, D.PAY_FREQUENCY_SEMIMONTHLY),
    (35, D.PAY_FREQUENCY_MONTHLY),
)


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _dated(paystubs: Sequence[data_pb2.Paystub]) -> list[tuple[dt.date, data_pb2.Paystub]]:
    """Paystubs with a valid pay date, newest first."""
    out = [(d, p) for p in paystubs if (d := _date(p.pay_date)) is not None]
    return sorted(out, key=lambda item: item[0], reverse=True)


def pay_frequency(paystubs: Sequence[data_pb2.Paystub]) -> data_pb2.PayFrequency.ValueType:
    """The frequency the pay dates show; UNSPECIFIED with fewer than two paystubs."""
    dates = sorted({d for d, _ in _dated(paystubs)})
    gaps = [(b - a).days for a, b in itertools.pairwise(dates)]
    if not gaps:
        return D.PAY_FREQUENCY_UNSPECIFIED
    if max(gaps) - min(gaps) > 7:
        return D.PAY_FREQUENCY_VARIABLE
    median = statistics.median(gaps)
    for limit, frequency in _FREQUENCIES:
        if median <= limit:
            return frequency
    return D.PAY_FREQUENCY_VARIABLE


def annualized_gross_cents(paystubs: Sequence[data_pb2.Paystub]) -> int | None:
    """Gross pay over the 365 days up to the newest paystub, scaled to a year; None without any."""
    dated = _dated(paystubs)
    if not dated:
        return None
    newest = dated[0][0]
    window = [(d, p) for d, p in dated if (newest - d).days < 365]
    gross = sum(p.gross_pay.amount_cents for _, p in window)
    starts = [s for _, p in window if (s := _date(p.pay_period_start)) is not None]
    ends = [e for _, p in window if (e := _date(p.pay_period_end)) is not None]
    covered = (max(ends) - min(starts)).days + 1 if starts and ends else 0
    if covered <= 0:
        return None
    return gross * 365 // min(covered, 365)


def _ytd(dated: list[tuple[dt.date, data_pb2.Paystub]]) -> tuple[int, int]:
    newest_date, newest = dated[0]
    if newest.HasField("gross_pay_ytd"):
        return newest.gross_pay_ytd.amount_cents, newest.net_pay_ytd.amount_cents
    year = [p for d, p in dated if d.year == newest_date.year]
    return sum(p.gross_pay.amount_cents for p in year), sum(p.net_pay.amount_cents for p in year)


def derive(income: data_pb2.Income, paystubs: Sequence[data_pb2.Paystub]) -> data_pb2.Income:
    """A copy of `income` completed from `paystubs` (see the module's rules)."""
    out = data_pb2.Income()
    out.CopyFrom(income)
    dated = _dated(paystubs)
    if not dated:
        return out
    currency = out.currency or dated[0][1].gross_pay.currency or "USD"
    if out.pay_frequency == D.PAY_FREQUENCY_UNSPECIFIED:
        frequency = pay_frequency(paystubs)
        if frequency != D.PAY_FREQUENCY_UNSPECIFIED:
            out.pay_frequency = frequency
            out.derived_fields.append("pay_frequency")
    annual = annualized_gross_cents(paystubs)
    if out.compensation_amount_cents == 0:
        wages = [e for e in dated[0][1].earnings if e.category == D.EARNING_CATEGORY_WAGES]
        if wages and wages[0].rate_cents > 0:
            out.compensation_amount_cents = wages[0].rate_cents
            unit = D.COMPENSATION_UNIT_HOURLY
        elif annual:
            out.compensation_amount_cents = annual
            unit = D.COMPENSATION_UNIT_ANNUAL
        else:
            unit = D.COMPENSATION_UNIT_UNSPECIFIED
        if out.compensation_amount_cents:
            out.derived_fields.append("compensation_amount_cents")
            if out.compensation_unit == D.COMPENSATION_UNIT_UNSPECIFIED:
                out.compensation_unit = unit
                out.derived_fields.append("compensation_unit")
    out.currency = currency
    gross_ytd, net_ytd = _ytd(dated)
    out.gross_pay_ytd.CopyFrom(common_pb2.Money(amount_cents=gross_ytd, currency=currency))
    out.net_pay_ytd.CopyFrom(common_pb2.Money(amount_cents=net_ytd, currency=currency))
    out.ytd_as_of = dated[0][0].isoformat()
    if annual is not None:
        out.annualized_gross_pay.CopyFrom(common_pb2.Money(amount_cents=annual, currency=currency))
    return out
