"""service/income_rules.py: income fields derived from paystubs, never over reported ones."""

from __future__ import annotations

import datetime as dt

from paylink.v1 import common_pb2, data_pb2

from service import income_rules
from service.drivers import sandbox_data, sandbox_pay

D = data_pb2


def stub(
    pay_date: str, gross: int, *, days: int = 14, rate: int = 0, ytd: int | None = None
) -> data_pb2.Paystub:
    end = dt.date.fromisoformat(pay_date) - dt.timedelta(days=5)
    out = data_pb2.Paystub(
        pay_date=pay_date,
        pay_period_start=(end - dt.timedelta(days=days - 1)).isoformat(),
        pay_period_end=end.isoformat(),
        gross_pay=common_pb2.Money(amount_cents=gross, currency="USD"),
        net_pay=common_pb2.Money(amount_cents=gross * 3 // 4, currency="USD"),
    )
    out.earnings.add(
        category=D.EARNING_CATEGORY_WAGES,
        name="Regular",
        rate_cents=rate,
        hours_hundredths=8000 if rate else 0,
    )
    if ytd is not None:
        out.gross_pay_ytd.amount_cents = ytd
        out.net_pay_ytd.amount_cents = ytd // 2
    return out


def every(days: int, count: int, start: str = "2026-01-09", gross: int = 100_000) -> list[data_pb2.Paystub]:
    first = dt.date.fromisoformat(start)
    return [stub((first + dt.timedelta(days=days * i)).isoformat(), gross, days=days) for i in range(count)]


def test_pay_frequency_from_the_gaps() -> None:
    assert income_rules.pay_frequency(every(7, 5)) == D.PAY_FREQUENCY_WEEKLY
    assert income_rules.pay_frequency(every(14, 5)) == D.PAY_FREQUENCY_BIWEEKLY
    holiday = [stub(d, 1) for d in ("2026-01-09", "2026-01-22", "2026-02-06", "2026-02-20")]  # 13, 15, 14
    assert income_rules.pay_frequency(holiday) == D.PAY_FREQUENCY_BIWEEKLY
    assert income_rules.pay_frequency([stub(d, 1) for d in ("2026-01-15", "2026-01-31", "2026-02-15")]) == (
        D.PAY_FREQUENCY_SEMIMONTHLY
    )
    assert income_rules.pay_frequency(every(30, 4)) == D.PAY_FREQUENCY_MONTHLY
    assert income_rules.pay_frequency(every(60, 4)) == D.PAY_FREQUENCY_VARIABLE
    irregular = [stub(d, 1) for d in ("2026-01-02", "2026-01-05", "2026-01-30")]
    assert income_rules.pay_frequency(irregular) == D.PAY_FREQUENCY_VARIABLE
    assert income_rules.pay_frequency(every(14, 1)) == D.PAY_FREQUENCY_UNSPECIFIED
    assert income_rules.pay_frequency([]) == D.PAY_FREQUENCY_UNSPECIFIED


def test_annualized_gross_scales_the_covered_days() -> None:
    # 26 biweekly paystubs cover 364 days: 26 x 1000.00 x 365 / 364.
    assert income_rules.annualized_gross_cents(every(14, 26)) == 100_000 * 26 * 365 // 364
    # Four weeks of pay scale to a year; older paystubs than 365 days are left out.
    recent = every(7, 4, start="2026-06-05")
    old = every(7, 4, start="2025-01-03", gross=999_999)
    assert income_rules.annualized_gross_cents(recent + old) == 400_000 * 365 // 28
    assert income_rules.annualized_gross_cents([]) is None


def test_derive_fills_only_what_the_platform_left_out() -> None:
    stubs = every(14, 10)
    reported = data_pb2.Income(
        compensation_amount_cents=9_000_000,
        compensation_unit=D.COMPENSATION_UNIT_ANNUAL,
        currency="USD",
        pay_frequency=D.PAY_FREQUENCY_SEMIMONTHLY,
    )
    out = income_rules.derive(reported, stubs)
    assert list(out.derived_fields) == []
    assert (out.compensation_amount_cents, out.pay_frequency) == (9_000_000, D.PAY_FREQUENCY_SEMIMONTHLY)
    # No YTD on the paystubs: the sum of the newest one's year.
    assert out.gross_pay_ytd.amount_cents == 1_000_000 and out.ytd_as_of == stubs[-1].pay_date
    assert out.net_pay_ytd.amount_cents == 750_000
    assert out.annualized_gross_pay.amount_cents == income_rules.annualized_gross_cents(stubs)

    bare = income_rules.derive(data_pb2.Income(), stubs)
    assert list(bare.derived_fields) == ["pay_frequency", "compensation_amount_cents", "compensation_unit"]
    assert bare.pay_frequency == D.PAY_FREQUENCY_BIWEEKLY
    assert bare.compensation_unit == D.COMPENSATION_UNIT_ANNUAL and bare.currency == "USD"
    assert bare.compensation_amount_cents == bare.annualized_gross_pay.amount_cents

    hourly = [stub("2026-03-06", 200_000, rate=2500, ytd=1_234_500)]
    out = income_rules.derive(data_pb2.Income(pay_frequency=D.PAY_FREQUENCY_WEEKLY), hourly)
    assert (out.compensation_amount_cents, out.compensation_unit) == (2500, D.COMPENSATION_UNIT_HOURLY)
    assert out.gross_pay_ytd.amount_cents == 1_234_500  # reported YTD wins over a sum
    assert income_rules.derive(data_pb2.Income(currency="USD"), []) == data_pb2.Income(currency="USD")


def test_gig_income_is_derived_from_the_sandbox_payouts() -> None:
    reported = sandbox_data.income("user_gig", gig=True)
    stubs = [f.paystub for f in sandbox_pay.paystubs("user_gig", gig=True)]
    out = income_rules.derive(reported, stubs)
    assert out.pay_frequency == D.PAY_FREQUENCY_VARIABLE  # reported, kept
    assert out.compensation_unit == D.COMPENSATION_UNIT_ANNUAL
    assert list(out.derived_fields) == ["compensation_amount_cents", "compensation_unit"]
    assert out.gross_pay_ytd == stubs[0].gross_pay_ytd and out.ytd_as_of == stubs[0].pay_date
