"""Issue 13 end to end (gRPC, PostgreSQL, Kafka): paystub year-to-date figures that add up across
the year's paystubs, and income derived from paystubs where the platform does not report it."""

from __future__ import annotations

import collections

from paylink.v1 import account_pb2, data_pb2
from paylink.v1 import common_pb2 as c

from tests.harness import Client, EventLog, link_account

PAYSTUBS_AND_INCOME = [c.JOB_NAME_INCOME, c.JOB_NAME_PAYSTUBS]


async def all_paystubs(client: Client, account_id: str) -> list[data_pb2.Paystub]:
    stubs: list[data_pb2.Paystub] = []
    token = ""
    while True:
        page = await client.accounts.ListPaystubs(
            account_pb2.ListPaystubsRequest(account_id=account_id, page_size=7, page_token=token),
            metadata=client.md(),
        )
        stubs += page.paystubs
        token = page.next_page_token
        if not token:
            return stubs


async def test_salaried_user_ytd_equals_the_sum_of_the_years_paystubs(
    client: Client, events: EventLog
) -> None:
    _, session = await link_account(client, "user_salaried+ytd", PAYSTUBS_AND_INCOME)
    account_id = session.account_id
    added = await events.wait_for(
        lambda r: (
            r.event.account_id == account_id
            and r.event.event == "paystubs.added"
            and r.event.job.outcome == c.JOB_OUTCOME_SUCCESS
        )
    )
    assert added[0].event.job.name == c.JOB_NAME_PAYSTUBS
    stubs = await all_paystubs(client, account_id)
    newest = stubs[0]
    year = [s for s in stubs if s.pay_date[:4] == newest.pay_date[:4]]
    assert len(year) == len(stubs) >= 20  # the platform shows the whole year
    assert newest.gross_pay_ytd.amount_cents == sum(s.gross_pay.amount_cents for s in year)
    assert newest.net_pay_ytd.amount_cents == sum(s.net_pay.amount_cents for s in year)
    assert newest.total_taxes_ytd.amount_cents == sum(s.total_taxes.amount_cents for s in year)
    assert newest.total_deductions_ytd.amount_cents == sum(s.total_deductions.amount_cents for s in year)
    per_line: collections.Counter[str] = collections.Counter()
    for stub in reversed(stubs):  # oldest first: every line's YTD is the running sum
        lines: list[data_pb2.Earning | data_pb2.Tax | data_pb2.Deduction] = [
            *stub.earnings,
            *stub.taxes,
            *stub.deductions,
        ]
        for line in lines:
            per_line[line.name] += line.amount.amount_cents
            assert line.amount_ytd.amount_cents == per_line[line.name], (stub.pay_date, line.name)
        reimbursed = sum(r.amount.amount_cents for r in stub.reimbursements)
        assert stub.check_amount.amount_cents == stub.net_pay.amount_cents + reimbursed
        assert stub.document_id == ""  # no documents job ran
    income = await client.accounts.GetIncome(
        account_pb2.GetIncomeRequest(account_id=account_id), metadata=client.md()
    )
    # Reported by the platform: kept as is; the YTD comes from the newest paystub.
    assert list(income.derived_fields) == [] and income.compensation_unit == data_pb2.COMPENSATION_UNIT_ANNUAL
    assert income.gross_pay_ytd == newest.gross_pay_ytd and income.ytd_as_of == newest.pay_date


async def test_gig_income_is_derived_from_the_payouts(client: Client, events: EventLog) -> None:
    _, session = await link_account(client, "user_gig", PAYSTUBS_AND_INCOME, platform_id="sandbox_gig")
    account_id = session.account_id
    await events.settled(account_id)
    stubs = await all_paystubs(client, account_id)
    assert stubs and all(not s.taxes and not s.deductions for s in stubs)  # a contractor's payouts
    income = await client.accounts.GetIncome(
        account_pb2.GetIncomeRequest(account_id=account_id), metadata=client.md()
    )
    assert income.pay_frequency == data_pb2.PAY_FREQUENCY_VARIABLE  # reported by the platform
    assert list(income.derived_fields) == ["compensation_amount_cents", "compensation_unit"]
    assert income.compensation_unit == data_pb2.COMPENSATION_UNIT_ANNUAL
    assert income.compensation_amount_cents == income.annualized_gross_pay.amount_cents > 0
    assert income.gross_pay_ytd == stubs[0].gross_pay_ytd and income.ytd_as_of == stubs[0].pay_date
