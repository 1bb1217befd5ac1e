"""The money rules of a direct deposit allocation, pure (no I/O), applied three times: when a link
token is created (`check_token`), when the user chooses in Link (`choose`), and again by the worker
right before the switch reaches the platform (`check_switch`).

- The unit (AMOUNT in cents, PERCENTAGE in whole percent) is fixed by the token. The user may change
  it only when the token says so with `Allocation.alternative`, which names the other unit and
  explicit bounds in it; a unit change then needs a value, in the new unit, within those bounds.
- In the token's own unit the user may pick a value between `min_value` and `max_value`; a bound the
  token leaves out is the token's `value` (only `min_value` set: between it and `value`). No value
  (0) keeps the token's value. A value is never carried over from one unit into the other.
- Every value is bounded: 1..100 percent, 1 cent..MAX_AMOUNT_CENTS.
- A whole-paycheck switch (SWITCH_ACTION_FULL) is 100 percent, said so by the token or chosen
  explicitly within the bounds it allows, or a token with disable_direct_deposit_splitting; nothing
  else becomes one.
"""

from __future__ import annotations

import dataclasses

from paylink.v1 import common_pb2

AMOUNT = common_pb2.ALLOCATION_TYPE_AMOUNT
PERCENTAGE = common_pb2.ALLOCATION_TYPE_PERCENTAGE
UNITS = (AMOUNT, PERCENTAGE)
MAX_AMOUNT_CENTS = 100_000_000_00  # $100M: larger than any paycheck
MAX_PERCENT = 100

Violation = tuple[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """What the switch will do: a unit and a value in it."""

    type: int
    value: int


def value_problem(unit: int, value: int) -> str | None:
    """Why `value` is not a valid value in `unit` (None when it is)."""
    if unit not in UNITS:
        return "must be AMOUNT or PERCENTAGE"
    if value <= 0:
        return "must be greater than 0"
    if unit == PERCENTAGE and value > MAX_PERCENT:
        return "must be at most 100 for a percentage"
    if unit == AMOUNT and value > MAX_AMOUNT_CENTS:
        return "is larger than any paycheck"
    return None


def _bounds_problems(field: str, unit: int, low: int, high: int) -> list[Violation]:
    out = [
        (f"{field}.{name}", p)
        for name, v in (("min_value", low), ("max_value", high))
        if (p := value_problem(unit, v))
    ]
    if not out and low > high:
        out.append((f"{field}.max_value", "must not be below min_value"))
    return out


def check_token(field: str, alloc: common_pb2.Allocation) -> list[Violation]:
    """Violations of an allocation given to CreateLinkToken (fields named under `field`)."""
    out: list[Violation] = []
    if alloc.type not in UNITS:
        return [(f"{field}.type", "must be AMOUNT or PERCENTAGE")]
    if problem := value_problem(alloc.type, alloc.value):
        out.append((f"{field}.value", problem))
    low, high = own_bounds(alloc)
    given = {"min_value": alloc.HasField("min_value"), "max_value": alloc.HasField("max_value")}
    for name, bound in (("min_value", alloc.min_value), ("max_value", alloc.max_value)):
        if given[name] and (problem := value_problem(alloc.type, bound)):
            out.append((f"{field}.{name}", problem))
    if not out and low > alloc.value:
        out.append((f"{field}.min_value", "must not exceed value"))
    if not out and high < alloc.value:
        out.append((f"{field}.max_value", "must not be below value"))
    if alloc.HasField("alternative"):
        alt = alloc.alternative
        where = f"{field}.alternative"
        if alt.type not in UNITS or alt.type == alloc.type:
            out.append((f"{where}.type", "must be the other unit (AMOUNT or PERCENTAGE) than type"))
        else:
            out += _bounds_problems(where, alt.type, alt.min_value, alt.max_value)
    return out


def own_bounds(alloc: common_pb2.Allocation) -> tuple[int, int]:
    """The values the user may choose in the token's unit: a bound left out is the token's value."""
    low = alloc.min_value if alloc.HasField("min_value") else alloc.value
    high = alloc.max_value if alloc.HasField("max_value") else alloc.value
    return low, high


def choose(alloc: common_pb2.Allocation, unit: int, value: int) -> tuple[Choice | None, list[Violation]]:
    """The user's choice (ChooseAllocation `type` and `value`; 0 for not given) against the token's
    allocation: the resulting Choice, or the violations (fields `type`, `value`)."""
    if unit in (common_pb2.ALLOCATION_TYPE_UNSPECIFIED, alloc.type):
        low, high = own_bounds(alloc)
        chosen = value or alloc.value
        if not low <= chosen <= high:
            if low == high:
                return None, [("value", f"is fixed by the link token at {alloc.value}")]
            return None, [("value", f"must be between {low} and {high}")]
        return Choice(alloc.type, chosen), []
    if unit not in UNITS:
        return None, [("type", "must be AMOUNT or PERCENTAGE")]
    if not alloc.HasField("alternative") or alloc.alternative.type != unit:
        fixed = common_pb2.AllocationType.Name(alloc.type)
        return None, [("type", f"the link token fixes the allocation type to {fixed}")]
    alt = alloc.alternative
    if value == 0:
        return None, [("value", "is required when the type differs from the link token's")]
    if not alt.min_value <= value <= alt.max_value:
        return None, [("value", f"must be between {alt.min_value} and {alt.max_value}")]
    return Choice(unit, value), []


def switch_action(choice: Choice, disable_splitting: bool) -> int:
    """FULL only for 100 percent or a token that disables splitting; PARTIAL otherwise."""
    if disable_splitting or (choice.type == PERCENTAGE and choice.value == MAX_PERCENT):
        return common_pb2.SWITCH_ACTION_FULL
    return common_pb2.SWITCH_ACTION_PARTIAL


def check_switch(action: int, unit: int, value: int, disable_splitting: bool = False) -> str | None:
    """The last check before a switch reaches the platform: why these job params must not run."""
    if problem := value_problem(unit, value):
        return f"allocation value {problem}"
    expected = switch_action(Choice(unit, value), disable_splitting)
    if action != expected and not (action == common_pb2.SWITCH_ACTION_FULL and disable_splitting):
        return "the switch action does not follow from the allocation"
    return None
