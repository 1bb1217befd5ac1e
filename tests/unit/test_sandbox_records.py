"""Sandbox data rules of issue 13: paystub YTD and totals that add up, shifts that match the pay,
tax forms computed from the year's pay, real deterministic PDFs, and the employer catalogue."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import io
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pypdf
import pytest
from paylink.v1 import data_pb2, document_pb2, shift_pb2, tax_form_pb2

from service.drivers import (
    pdf,
    sandbox_catalog,
    sandbox_documents,
    sandbox_pay,
    sandbox_shifts,
    sandbox_tax_forms,
)
from service.drivers.base import PaystubQuery, ShiftQuery
from service.drivers.registry import default_registry
from service.drivers.sandbox_profile import ANCHOR_DATE, profile

USERS = ["user_good", "user_salaried", "user_gig", *(f"user_good+{i}" for i in range(12))]
GIG = [False, True]


def _lines(stub: data_pb2.Paystub) -> list[tuple[str, str, int, int]]:
    out = [("earning", e.name, e.amount.amount_cents, e.amount_ytd.amount_cents) for e in stub.earnings]
    out += [("tax", t.name, t.amount.amount_cents, t.amount_ytd.amount_cents) for t in stub.taxes]
    out += [("deduction", d.name, d.amount.amount_cents, d.amount_ytd.amount_cents) for d in stub.deductions]
    out += [("reimb", r.name, r.amount.amount_cents, r.amount_ytd.amount_cents) for r in stub.reimbursements]
    return out


@pytest.mark.parametrize("gig", GIG)
@pytest.mark.parametrize("username", USERS)
def test_every_ytd_is_the_sum_of_the_year_so_far(username: str, gig: bool) -> None:
    stubs = [sandbox_pay.to_proto(s) for s in sandbox_pay.history(username, 2, gig)]
    assert [s.pay_date for s in stubs] == sorted(s.pay_date for s in stubs)
    running: collections.Counter[tuple[str, str]] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter()
    year = ""
    for stub in stubs:
        if stub.pay_date[:4] != year:
            year, running, totals = stub.pay_date[:4], collections.Counter(), collections.Counter()
        for kind, name, amount, amount_ytd in _lines(stub):
            running[(kind, name)] += amount
            assert amount_ytd == running[(kind, name)], (stub.pay_date, kind, name)
        for field in ("gross_pay", "net_pay", "total_taxes", "total_deductions", "total_reimbursements"):
            totals[field] += getattr(stub, field).amount_cents
            assert getattr(stub, field + "_ytd").amount_cents == totals[field], (stub.pay_date, field)
        # The totals are the sums of their lines; net is gross less taxes and deductions, and the
        # check adds the reimbursements.
        assert stub.gross_pay.amount_cents == sum(e.amount.amount_cents for e in stub.earnings) > 0
        assert stub.total_taxes.amount_cents == sum(t.amount.amount_cents for t in stub.taxes)
        assert stub.total_deductions.amount_cents == sum(d.amount.amount_cents for d in stub.deductions)
        assert stub.total_reimbursements.amount_cents == sum(
            r.amount.amount_cents for r in stub.reimbursements
        )
        net = stub.gross_pay.amount_cents - stub.total_taxes.amount_cents - stub.total_deductions.amount_cents
        assert stub.net_pay.amount_cents == net
        assert stub.check_amount.amount_cents == net + stub.total_reimbursements.amount_cents
        if gig:
            assert not stub.taxes and not stub.deductions  # a contractor: nothing withheld


@pytest.mark.parametrize("username", ["user_salaried", "user_salaried+a", "user_salaried+b"])
def test_salaried_user_shows_the_whole_year_and_its_ytd_adds_up(username: str) -> None:
    fetched = sandbox_pay.paystubs(username)
    newest = fetched[0].paystub
    year = newest.pay_date[:4]
    assert all(f.paystub.pay_date[:4] == year for f in fetched)
    # Every pay date of the year since the first one is there (every 14 days).
    dates = sorted(dt.date.fromisoformat(f.paystub.pay_date) for f in fetched)
    assert dates[0] - dt.timedelta(days=14) < dt.date(int(year), 1, 1)
    assert all((b - a).days == 14 for a, b in itertools.pairwise(dates))
    assert newest.gross_pay_ytd.amount_cents == sum(f.paystub.gross_pay.amount_cents for f in fetched)
    assert newest.net_pay_ytd.amount_cents == sum(f.paystub.net_pay.amount_cents for f in fetched)
    assert profile(username).hourly is False and len(fetched) <= sandbox_pay.MAX_PAYSTUBS
    # Most users see only the newest few; their YTD covers earlier paystubs too.
    assert len(sandbox_pay.paystubs("user_good")) == sandbox_pay.BASE_PAYSTUBS


def test_paystubs_link_their_document() -> None:
    for item in sandbox_pay.paystubs("user_good", query=PaystubQuery(count=3)):
        assert item.document_external_id == sandbox_pay.document_external_id(
            "user_good", item.paystub.pay_date
        )
        assert item.paystub.document_id == ""  # paylink fills it once it stored the document


@pytest.mark.parametrize("username", [u for u in USERS if profile(u).hourly])
def test_hourly_shifts_add_up_to_each_pay_period(username: str) -> None:
    shifts = sandbox_shifts.hourly_shifts(username)
    by_period: dict[dt.date, list[sandbox_shifts.ShiftRecord]] = collections.defaultdict(list)
    for stub in sandbox_pay.history(username):
        by_period[stub.period_start] = [s for s in shifts if stub.period_start <= s.date <= stub.period_end]
        worked = [line for line in stub.lines if line.kind == "earning" and line.hours]
        period = by_period[stub.period_start]
        assert len(period) == 10 and all(s.date.weekday() < 5 for s in period)
        assert sum(s.hours for s in period) == sum(line.hours for line in worked)
        assert sum(s.base for s in period) == sum(line.amount for line in worked)
        assert all(s.end > s.start and s.type == shift_pb2.SHIFT_TYPE_HOURLY for s in period)
    assert len(shifts) == 10 * len(sandbox_pay.history(username))


def test_salaried_users_have_no_shifts() -> None:
    assert sandbox_shifts.shifts("user_salaried", ShiftQuery(), gig=False) == []


@pytest.mark.parametrize("username", ["user_gig", "user_good", "user_good+3"])
def test_gig_payouts_are_the_sums_of_the_weeks_shifts(username: str) -> None:
    history = sandbox_pay.history(username, 0, True)
    shifts = sandbox_shifts.records(username, gig=True)
    assert shifts and all(s.type == shift_pb2.SHIFT_TYPE_GIG and s.tasks > 0 for s in shifts)
    for stub in history:
        week = [s for s in shifts if stub.period_start <= s.date <= stub.period_end]
        amounts = {line.name: line.amount for line in stub.lines}
        assert amounts["Delivery Pay"] == sum(s.base for s in week)
        assert amounts.get("Customer Tips", 0) == sum(s.tips for s in week)
        assert amounts.get("Incentives", 0) == sum(s.incentives for s in week)
        assert stub.tasks == sum(s.tasks for s in week)
    # Every shift before the newest payout's week is paid by exactly one payout.
    paid = [s for s in shifts if s.date >= history[0].period_start]
    assert sum(s.base + s.tips + s.incentives for s in paid) == sum(stub.gross for stub in history)


def test_shift_query_window_dates_and_order(monkeypatch: pytest.MonkeyPatch) -> None:
    default = sandbox_shifts.shifts("user_gig", ShiftQuery(), gig=True)
    dates = [dt.date.fromisoformat(f.shift.date) for f in default]
    assert dates == sorted(dates, reverse=True)
    assert dates[0] - dates[-1] <= sandbox_shifts.DEFAULT_WINDOW
    bounded = sandbox_shifts.shifts("user_gig", ShiftQuery("2025-03-01", "2025-03-31"), gig=True)
    assert bounded and all("2025-03-01" <= f.shift.date <= "2025-03-31" for f in bounded)
    everything = sandbox_shifts.shifts("user_gig", ShiftQuery("2000-01-01"), gig=True)
    assert len(everything) == len(sandbox_shifts.records("user_gig", gig=True)) > len(default)
    assert len({f.external_id for f in everything}) == len(everything)
    monkeypatch.setattr(sandbox_shifts, "MAX_SHIFTS", 50)
    capped = sandbox_shifts.shifts("user_gig", ShiftQuery("2000-01-01"), gig=True)
    assert [f.external_id for f in capped] == [f.external_id for f in everything[:50]]
    shift = default[0].shift
    assert shift.total_pay.amount_cents == sum(
        m.amount_cents for m in (shift.base_pay, shift.tips, shift.incentives)
    )
    assert shift.timezone.startswith("America/") and shift.end_time.seconds > shift.start_time.seconds


@pytest.mark.parametrize("username", ["user_salaried", "user_gig", "user_good", "user_good+1"])
def test_w2_is_computed_from_the_years_paystubs(username: str) -> None:
    forms = sandbox_tax_forms.tax_forms(username, "sandbox_adp", gig=False)
    assert forms and {f.tax_form.type for f in forms} == {tax_form_pb2.TAX_FORM_TYPE_W2}
    assert [f.tax_form.year for f in forms] == sorted({f.tax_form.year for f in forms}, reverse=True)
    assert all(f.tax_form.year < ANCHOR_DATE.year for f in forms)
    employer = sandbox_catalog.employer_for(username, "sandbox_adp")
    for item in forms:
        form = item.tax_form
        stubs = [
            sandbox_pay.to_proto(s) for s in sandbox_pay.history(username) if s.pay_date.year == form.year
        ]
        newest = stubs[-1]

        def ytd(name: str, stub: data_pb2.Paystub = newest) -> int:
            lines: list[data_pb2.Earning | data_pb2.Tax | data_pb2.Deduction] = [
                *stub.earnings,
                *stub.taxes,
                *stub.deductions,
            ]
            return sum(line.amount_ytd.amount_cents for line in lines if line.name == name)

        retirement, health = ytd("401(k)"), ytd("Medical PPO")
        assert form.w2.wages.amount_cents == newest.gross_pay_ytd.amount_cents - retirement - health
        assert form.w2.federal_income_tax_withheld.amount_cents == ytd("Federal Income Tax")
        assert form.w2.social_security_tax_withheld.amount_cents == ytd("Social Security")
        assert form.w2.medicare_tax_withheld.amount_cents == ytd("Medicare")
        assert form.w2.social_security_wages.amount_cents == newest.gross_pay_ytd.amount_cents - health
        assert [(b.code, b.amount.amount_cents) for b in form.w2.box_12] == [("D", retirement)]
        assert form.payer_name == employer.name and form.payer_ein == employer.ein
        assert form.recipient_tin_last_four == profile(username).last_four_ssn
        assert item.document_external_id.startswith("doc_tf_")
    assert len(sandbox_tax_forms.tax_forms("user_salaried", "sandbox_adp", 2024, gig=False)) == 1
    assert sandbox_tax_forms.tax_forms("user_salaried", "sandbox_adp", 2026, gig=False) == []


def test_gig_worker_gets_1099k_and_1099nec() -> None:
    forms = sandbox_tax_forms.tax_forms("user_gig", "sandbox_gig", gig=True)
    kinds = collections.Counter((f.tax_form.year, f.tax_form.type) for f in forms)
    assert set(kinds) == {
        (year, kind)
        for year in (2024, 2025)
        for kind in (tax_form_pb2.TAX_FORM_TYPE_1099_K, tax_form_pb2.TAX_FORM_TYPE_1099_NEC)
    }
    for item in forms:
        form = item.tax_form
        stubs = [s for s in sandbox_pay.history("user_gig", 0, True) if s.pay_date.year == form.year]
        amounts: collections.Counter[str] = collections.Counter()
        for s in stubs:
            for line in s.lines:
                amounts[line.name] += line.amount
        assert form.payer_name == sandbox_catalog.GIG_COMPANY
        if form.type == tax_form_pb2.TAX_FORM_TYPE_1099_K:
            k = form.form_1099_k
            assert k.gross_amount.amount_cents == amounts["Delivery Pay"] + amounts["Customer Tips"]
            assert sum(m.amount_cents for m in k.monthly_gross) == k.gross_amount.amount_cents
            assert len(k.monthly_gross) == 12 and k.payment_transactions == sum(s.tasks for s in stubs)
        else:
            assert form.form_1099_nec.nonemployee_compensation.amount_cents == amounts["Incentives"] > 0


@pytest.mark.parametrize(
    ("username", "platform_id", "gig"),
    [("user_salaried", "sandbox_workday", False), ("user_gig", "sandbox_gig", True)],
)
def test_documents_are_real_pdfs_of_the_data(username: str, platform_id: str, gig: bool) -> None:
    docs = sandbox_documents.documents(username, platform_id, gig=gig)
    stubs = sandbox_pay.paystubs(username, gig=gig)
    forms = sandbox_tax_forms.tax_forms(username, platform_id, gig=gig)
    assert [i.external_id for i, _ in docs] == [s.document_external_id for s in stubs] + [
        f.document_external_id for f in forms
    ]
    for info, content in docs:
        assert info.size_bytes == len(content) and info.sha256 == hashlib.sha256(content).hexdigest()
        assert info.content_type == "application/pdf" and content.startswith(b"%PDF-1.4\n")
        reader = pypdf.PdfReader(io.BytesIO(content), strict=True)
        text = "\n".join(page.extract_text() for page in reader.pages)
        if info.type == document_pb2.DOCUMENT_TYPE_PAYSTUB:
            stub = next(s.paystub for s in stubs if s.paystub.pay_date == info.pay_date)
            cents = stub.gross_pay_ytd.amount_cents
            assert f"Pay date: {info.pay_date}" in text and f"${cents // 100:,}.{cents % 100:02d}" in text
            assert info.name == f"paystub-{info.pay_date}.pdf"
        else:
            assert info.type == document_pb2.DOCUMENT_TYPE_TAX_FORM and f"Tax year {info.year}" in text
    # Deterministic: the same bytes again (rendered anew, not from the cache).
    info, content = docs[0]
    stub = next(s.paystub for s in stubs if s.document_external_id == info.external_id)
    assert sandbox_documents.paystub_pdf(username, platform_id, stub) == content


def test_document_hashes_are_the_same_in_another_process() -> None:
    code = (
        "import sys; sys.path[:0] = ['.', 'generated'];"
        "from service.drivers import sandbox_documents as d;"
        "print(','.join(i.sha256 for i, _ in d.documents('user_gig', 'sandbox_gig', gig=True)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "777", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
    )
    here = [i.sha256 for i, _ in sandbox_documents.documents("user_gig", "sandbox_gig", gig=True)]
    assert out.stdout.strip() == ",".join(here) and len(here) >= 6


def test_pdf_writer_pages_escapes_and_xref() -> None:
    content = pdf.render(
        "Title (x)", ["# Heading", "back\\slash (paren)", "", "é ✓"] + [f"row {i}" for i in range(120)]
    )
    reader = pypdf.PdfReader(io.BytesIO(content), strict=True)
    assert len(reader.pages) == 3 and reader.metadata is not None and reader.metadata.title == "Title (x)"
    text = reader.pages[0].extract_text()
    assert "back\\slash (paren)" in text and "é ?" in text and "row 0" in text
    # Every xref offset points at its object.
    xref_at = int(re.search(rb"startxref\n(\d+)", content).group(1))  # type: ignore[union-attr]
    entries = content[xref_at:].split(b"\n")[3 : 3 + 5]
    for number, entry in enumerate(entries, start=1):
        assert content[int(entry[:10]) :].startswith(b"%d 0 obj" % number)
    assert pdf.render("Title (x)", ["a"]) == pdf.render("Title (x)", ["a"]) != pdf.render("Title (x)", ["b"])


def test_employer_catalogue() -> None:
    employers = sandbox_catalog.employers()
    assert len({e.id for e in employers}) == len({e.ein for e in employers}) == len(employers) == 11
    assert all(
        re.fullmatch(r"emp_[a-z0-9_]+", e.id) and re.fullmatch(r"\d{2}-\d{7}", e.ein) for e in employers
    )
    registry = default_registry()
    assert registry.employers() == sorted(employers, key=lambda e: e.name.casefold())
    assert all(registry.platform(e.platform_id) is not None for e in employers)
    # Every non-gig platform serves someone, and a user's employer is one its platform serves.
    assert {e.platform_id for e in employers} == {p.id for p in registry.platforms()}
    for username in USERS:
        for platform in registry.platforms():
            assert sandbox_catalog.employer_for(username, platform.id).platform_id == platform.id
