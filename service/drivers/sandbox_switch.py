"""The sandbox platforms' direct deposit switch rules: what they accept, and the allocations after
a switch. Field checks are paylink's own (`service/validation.py`); the platform adds its limits."""

from __future__ import annotations

from paylink.v1 import common_pb2, data_pb2

from service import validation
from service.drivers import sandbox_data
from service.drivers.base import PaystubQuery, SwitchRequest


class SwitchRejected(ValueError):
    """The platform refused a deposit switch; the message is its reason (no account numbers)."""


def _dollars(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def _check_switch(request: SwitchRequest, net_pay_cents: int) -> None:
    target = request.target
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
    deposit: data_pb2.DepositTarget | None = None,
) -> data_pb2.DirectDepositAllocations:
    """The allocations after `request` is applied to the user's existing ones (stateless, so the
    same request always gives the same result). FULL: the target becomes the only (remainder)
    allocation. PARTIAL: the new amount/percentage goes first, the existing ones keep their order.
    Raises SwitchRejected under the platform's rules."""
    newest = sandbox_data.paystubs(username, extra_paystubs, PaystubQuery(count=1), days_advanced)[0].paystub
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
    for existing in sandbox_data.allocations(username, deposit).allocations:
        result.allocations.append(existing)
        result.allocations[-1].priority = len(result.allocations)
    return result
