"""Sandbox tax forms, computed from the pay history so that they add up.

Employees get a W-2 for every complete year of their history (the years before the platform's current one): box
1 is gross pay less pre-tax deductions, boxes 3 and 5 are gross pay less the health premium, the
withheld taxes are the sums of the year's tax lines, box 12 code D is the 401(k). Gig workers get a
1099-K (delivery pay and tips, by pay date, with the number of tasks as transactions) and a
1099-NEC for the platform's incentives (issued whenever there are any; the sandbox ignores the
reporting thresholds).
"""

from __future__ import annotations

import hashlib

from paylink.v1 import common_pb2, data_pb2, tax_form_pb2

from service.drivers import sandbox_catalog, sandbox_pay
from service.drivers.base import FetchedTaxForm
from service.drivers.sandbox_profile import USD, platform_date, profile

T = tax_form_pb2


def _usd(cents: int) -> common_pb2.Money:
    return common_pb2.Money(amount_cents=cents, currency=USD)


def tax_years(username: str, *, gig: bool, days_advanced: int = 0) -> list[int]:
    """Years with a pay history that ended before the platform's current year, newest first."""
    years = {s.pay_date.year for s in sandbox_pay.history(username, 0, gig, days_advanced)}
    return sorted((y for y in years if y < platform_date(days_advanced).year), reverse=True)


def _sum(stubs: list[sandbox_pay.Stub], kind: str, *names: str) -> int:
    return sum(
        line.amount
        for s in stubs
        for line in s.lines
        if line.kind == kind and (not names or line.name in names)
    )


def _w2(stubs: list[sandbox_pay.Stub], state: str) -> tax_form_pb2.W2:
    gross = _sum(stubs, "earning")
    retirement = _sum(stubs, "deduction", "401(k)")
    health = _sum(stubs, "deduction", "Medical PPO")
    wages = gross - retirement - health
    taxes = {
        category: sum(
            line.amount for s in stubs for line in s.lines if line.kind == "tax" and line.category == category
        )
        for category in (
            data_pb2.TAX_CATEGORY_FEDERAL_INCOME,
            data_pb2.TAX_CATEGORY_STATE_INCOME,
            data_pb2.TAX_CATEGORY_SOCIAL_SECURITY,
            data_pb2.TAX_CATEGORY_MEDICARE,
        )
    }
    w2 = T.W2(
        wages=_usd(wages),
        federal_income_tax_withheld=_usd(taxes[data_pb2.TAX_CATEGORY_FEDERAL_INCOME]),
        social_security_wages=_usd(gross - health),
        social_security_tax_withheld=_usd(taxes[data_pb2.TAX_CATEGORY_SOCIAL_SECURITY]),
        medicare_wages=_usd(gross - health),
        medicare_tax_withheld=_usd(taxes[data_pb2.TAX_CATEGORY_MEDICARE]),
        box_12=[T.W2Box12(code="D", amount=_usd(retirement))],
    )
    if taxes[data_pb2.TAX_CATEGORY_STATE_INCOME]:
        w2.states.add(
            state=state,
            state_wages=_usd(wages),
            state_income_tax=_usd(taxes[data_pb2.TAX_CATEGORY_STATE_INCOME]),
        )
    return w2


def form_external_id(username: str, form_type: int, year: int) -> str:
    """The platform's stable id of a tax form."""
    return "tf_" + hashlib.sha256(f"{username}\x1f{form_type}\x1f{year}".encode()).hexdigest()[:24]


def document_external_id(username: str, form_type: int, year: int) -> str:
    """The platform's stable id of a tax form's PDF."""
    return "doc_tf_" + hashlib.sha256(f"{username}\x1f{form_type}\x1f{year}".encode()).hexdigest()[:24]


def tax_forms(
    username: str, platform_id: str, year: int = 0, *, gig: bool, days_advanced: int = 0
) -> list[FetchedTaxForm]:
    """The user's tax forms for `year` (0: every year), newest year first."""
    p = profile(username)
    payer = sandbox_catalog.employer_for(username, platform_id)
    out = []
    for y in tax_years(username, gig=gig, days_advanced=days_advanced):
        if year and y != year:
            continue
        stubs = [s for s in sandbox_pay.history(username, 0, gig, days_advanced) if s.pay_date.year == y]
        forms: list[tax_form_pb2.TaxForm] = []
        header = dict(
            year=y,
            payer_name=payer.name,
            payer_ein=payer.ein,
            payer_address=payer.address,
            recipient_name=f"{p.first_name} {p.last_name}",
            recipient_tin_last_four=p.last_four_ssn,
            recipient_address=p.home.to_proto(),
        )
        if gig:
            monthly = [0] * 12
            for s in stubs:
                monthly[s.pay_date.month - 1] += _sum([s], "earning", "Delivery Pay", "Customer Tips")
            forms.append(
                T.TaxForm(
                    type=T.TAX_FORM_TYPE_1099_K,
                    form_1099_k=T.Form1099K(
                        gross_amount=_usd(sum(monthly)),
                        payment_transactions=sum(s.tasks for s in stubs),
                        federal_income_tax_withheld=_usd(0),
                        monthly_gross=[_usd(m) for m in monthly],
                    ),
                    **header,  # type: ignore[arg-type]
                )
            )
            incentives = _sum(stubs, "earning", "Incentives")
            if incentives:
                forms.append(
                    T.TaxForm(
                        type=T.TAX_FORM_TYPE_1099_NEC,
                        form_1099_nec=T.Form1099Nec(
                            nonemployee_compensation=_usd(incentives), federal_income_tax_withheld=_usd(0)
                        ),
                        **header,  # type: ignore[arg-type]
                    )
                )
        else:
            forms.append(T.TaxForm(type=T.TAX_FORM_TYPE_W2, w2=_w2(stubs, p.home.state), **header))  # type: ignore[arg-type]
        out += [
            FetchedTaxForm(
                form_external_id(username, f.type, y), f, document_external_id(username, f.type, y)
            )
            for f in forms
        ]
    return out
