"""Sandbox documents: real PDFs of the visible paystubs and of the tax forms, rendered from the
same data (service.drivers.pdf), so the same user always gets byte-identical files."""

from __future__ import annotations

import functools
import hashlib

from paylink.v1 import common_pb2, data_pb2, document_pb2, tax_form_pb2

from service.drivers import pdf, sandbox_catalog, sandbox_pay, sandbox_tax_forms
from service.drivers.base import DocumentInfo
from service.drivers.sandbox_profile import profile

_FORM_TITLES = {
    tax_form_pb2.TAX_FORM_TYPE_W2: ("Form W-2 Wage and Tax Statement", "w2"),
    tax_form_pb2.TAX_FORM_TYPE_1099_NEC: ("Form 1099-NEC Nonemployee Compensation", "1099-nec"),
    tax_form_pb2.TAX_FORM_TYPE_1099_K: (
        "Form 1099-K Payment Card and Third Party Network Transactions",
        "1099-k",
    ),
}


def _money(m: common_pb2.Money) -> str:
    sign, cents = ("-" if m.amount_cents < 0 else ""), abs(m.amount_cents)
    return f"{sign}${cents // 100:,}.{cents % 100:02d}"


def _row(label: str, *values: str) -> str:
    return f"{label:<32}" + "".join(f"{v:>16}" for v in values)


def paystub_pdf(username: str, platform_id: str, stub: data_pb2.Paystub) -> bytes:
    """The earnings statement of one paystub."""
    p = profile(username)
    employer = sandbox_catalog.employer_for(username, platform_id)
    lines = [
        f"{employer.name}  EIN {employer.ein}",
        f"{employer.address.line1}, {employer.address.city}, {employer.address.state} {employer.address.postal_code}",
        "",
        f"Paid to: {p.first_name} {p.last_name}   SSN: XXX-XX-{p.last_four_ssn}",
        f"Pay date: {stub.pay_date}   Period: {stub.pay_period_start} to {stub.pay_period_end}",
        "# Earnings",
        _row("", "Hours", "This period", "Year to date"),
    ]
    for e in stub.earnings:
        hours = f"{e.hours_hundredths / 100:.2f}" if e.hours_hundredths else ""
        lines.append(_row(e.name, hours, _money(e.amount), _money(e.amount_ytd)))
    lines += ["# Taxes", *(_row(t.name, "", _money(t.amount), _money(t.amount_ytd)) for t in stub.taxes)]
    lines += [
        "# Deductions",
        *(_row(d.name, "", _money(d.amount), _money(d.amount_ytd)) for d in stub.deductions),
    ]
    if stub.reimbursements:
        lines += ["# Reimbursements"]
        lines += [_row(r.name, "", _money(r.amount), _money(r.amount_ytd)) for r in stub.reimbursements]
    lines += [
        "# Summary",
        _row("Gross pay", "", _money(stub.gross_pay), _money(stub.gross_pay_ytd)),
        _row("Total taxes", "", _money(stub.total_taxes), _money(stub.total_taxes_ytd)),
        _row("Total deductions", "", _money(stub.total_deductions), _money(stub.total_deductions_ytd)),
        _row("Net pay", "", _money(stub.net_pay), _money(stub.net_pay_ytd)),
        _row("Check amount", "", _money(stub.check_amount)),
    ]
    return pdf.render("Earnings Statement", lines, author=employer.name)


def tax_form_pdf(form: tax_form_pb2.TaxForm) -> bytes:
    """The copy B of one tax form."""
    title, _ = _FORM_TITLES[form.type]
    lines = [
        f"Tax year {form.year}",
        f"Payer: {form.payer_name}  EIN {form.payer_ein}",
        f"{form.payer_address.line1}, {form.payer_address.city}, {form.payer_address.state}",
        f"Recipient: {form.recipient_name}  TIN: XXX-XX-{form.recipient_tin_last_four}",
        "# Amounts",
    ]
    if form.HasField("w2"):
        w2 = form.w2
        lines += [
            _row("1 Wages, tips, other comp.", _money(w2.wages)),
            _row("2 Federal income tax withheld", _money(w2.federal_income_tax_withheld)),
            _row("3 Social security wages", _money(w2.social_security_wages)),
            _row("4 Social security tax withheld", _money(w2.social_security_tax_withheld)),
            _row("5 Medicare wages and tips", _money(w2.medicare_wages)),
            _row("6 Medicare tax withheld", _money(w2.medicare_tax_withheld)),
            *(_row(f"12 Code {b.code}", _money(b.amount)) for b in w2.box_12),
            *(_row(f"15-17 {s.state}", _money(s.state_wages), _money(s.state_income_tax)) for s in w2.states),
        ]
    elif form.HasField("form_1099_nec"):
        lines.append(_row("1 Nonemployee compensation", _money(form.form_1099_nec.nonemployee_compensation)))
    else:
        k = form.form_1099_k
        lines += [
            _row("1a Gross amount", _money(k.gross_amount)),
            _row("3 Payment transactions", str(k.payment_transactions)),
        ]
        months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        lines += [_row(f"5 {month}", _money(m)) for month, m in zip(months, k.monthly_gross, strict=True)]
    return pdf.render(title, lines, author=form.payer_name)


@functools.lru_cache(maxsize=256)
def documents(
    username: str, platform_id: str, extra_paystubs: int = 0, days_advanced: int = 0, *, gig: bool
) -> tuple[tuple[DocumentInfo, bytes], ...]:
    """Every document of the user, newest first: the visible paystubs' PDFs, then the tax forms'."""
    out = []
    for item in sandbox_pay.paystubs(username, extra_paystubs, None, days_advanced, gig=gig):
        content = paystub_pdf(username, platform_id, item.paystub)
        info = DocumentInfo(
            external_id=item.document_external_id,
            type=document_pb2.DOCUMENT_TYPE_PAYSTUB,
            name=f"paystub-{item.paystub.pay_date}.pdf",
            content_type=pdf.CONTENT_TYPE,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            pay_date=item.paystub.pay_date,
        )
        out.append((info, content))
    for form in sandbox_tax_forms.tax_forms(username, platform_id, gig=gig, days_advanced=days_advanced):
        content = tax_form_pdf(form.tax_form)
        slug = _FORM_TITLES[form.tax_form.type][1]
        info = DocumentInfo(
            external_id=form.document_external_id,
            type=document_pb2.DOCUMENT_TYPE_TAX_FORM,
            name=f"{slug}-{form.tax_form.year}.pdf",
            content_type=pdf.CONTENT_TYPE,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            year=form.tax_form.year,
        )
        out.append((info, content))
    return tuple(out)
