"""Deterministic, realistic payroll data for the sandbox driver: identity, employment, income and
deposit allocations. Who the user is lives in `sandbox_profile`, pay history and paystubs in
`sandbox_pay`, shifts in `sandbox_shifts`, tax forms in `sandbox_tax_forms`, documents in
`sandbox_documents` and the employer catalogue in `sandbox_catalog`; the names most callers need
are re-exported here.
"""

from __future__ import annotations

import datetime as dt

from paylink.v1 import common_pb2, data_pb2

from service import validation
from service.drivers import sandbox_catalog
from service.drivers.base import PaystubQuery, SwitchRequest
from service.drivers.sandbox_pay import (
    BASE_PAYSTUBS,
    MAX_PAYSTUBS,
    paystub_external_id,
    paystubs,
    periods_elapsed,
)
from service.drivers.sandbox_profile import (
    _FIRST_NAMES,
    _LAST_NAMES,
    ANCHOR_DATE,
    PAY_PERIOD,
    RAISE_AFTER,
    RAISE_BP,
    USD,
    aba_check_digit,
    aba_valid,
    platform_date,
    profile,
    raise_date,
    raised,
    rng_for,
)

__all__ = [
    "ANCHOR_DATE",
    "BASE_PAYSTUBS",
    "MAX_PAYSTUBS",
    "PAY_PERIOD",
    "RAISE_AFTER",
    "RAISE_BP",
    "USD",
    "_FIRST_NAMES",
    "_LAST_NAMES",
    "SwitchRejected",
    "aba_check_digit",
    "aba_valid",
    "allocations",
    "employment",
    "identity",
    "income",
    "paystub_external_id",
    "paystubs",
    "periods_elapsed",
    "platform_date",
    "profile",
    "raise_date",
    "raised",
    "rng_for",
    "switched_allocations",
]


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


def employment(username: str, platform_id: str = "") -> data_pb2.Employment:
    """Employment: status, title, dates and employer (one the platform serves, when given)."""
    p = profile(username)
    employer = sandbox_catalog.employer_for(username, platform_id).name if platform_id else p.employer
    return data_pb2.Employment(
        status=data_pb2.EMPLOYMENT_STATUS_TERMINATED if p.terminated else data_pb2.EMPLOYMENT_STATUS_EMPLOYED,
        title=p.title,
        start_date=p.start_date.isoformat(),
        termination_date=(p.newest_pay_date - dt.timedelta(days=5)).isoformat() if p.terminated else "",
        employer=data_pb2.Employer(name=employer, address=p.employer_address.to_proto()),
    )


def income(username: str, *, gig: bool = False, days_advanced: int = 0) -> data_pb2.Income:
    """Income: pay rate and frequency; the raise shows once the account's clock reached it. A gig
    platform reports only the VARIABLE frequency (a gig worker has no rate): paylink derives the
    rest from the paystubs (service/income_rules.py)."""
    p = profile(username)
    if platform_date(days_advanced) >= raise_date():
        p = raised(p)
    if gig:
        return data_pb2.Income(currency=USD, pay_frequency=data_pb2.PAY_FREQUENCY_VARIABLE)
    return data_pb2.Income(
        compensation_amount_cents=p.rate_cents,
        compensation_unit=data_pb2.COMPENSATION_UNIT_HOURLY
        if p.hourly
        else data_pb2.COMPENSATION_UNIT_ANNUAL,
        currency=USD,
        pay_frequency=data_pb2.PAY_FREQUENCY_BIWEEKLY,
    )


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
    target = request.target  # the field checks are paylink's own (validation.py); the limits the platform's
    if not validation.aba_checksum_ok(target.routing_number):
        raise SwitchRejected("The routing number is not a valid ABA routing number")
    if not validation.account_number_ok(target.account_number):
        raise SwitchRejected("The account number must be 5 to 17 digits")
    if not validation.deposit_type_ok(target.type):
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
    existing: data_pb2.DirectDepositAllocations | None = None,
) -> data_pb2.DirectDepositAllocations:
    """The allocations after `request` is applied to `existing` (the user's allocations now; by
    default the profile's split): the same request on the same allocations always gives the same
    result. FULL: the target becomes the only (remainder) allocation. PARTIAL: the new
    amount/percentage goes first, the existing ones keep their order. Raises SwitchRejected under
    the platform's rules."""
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
    for kept in (existing if existing is not None else allocations(username)).allocations:
        result.allocations.append(kept)
        result.allocations[-1].priority = len(result.allocations)
    return result
