"""service.allocation_rules: the unit is fixed by the token unless it offers an alternative; a unit
change needs a value in the new unit within explicit bounds; no value ever becomes 100 % or a full
switch by itself; every value is bounded (issue #11, finding 1)."""

from __future__ import annotations

import pytest
from paylink.v1 import common_pb2 as c

from service import allocation_rules as rules
from service.allocation_rules import AMOUNT, PERCENTAGE, Choice

FULL, PARTIAL = c.SWITCH_ACTION_FULL, c.SWITCH_ACTION_PARTIAL


def _alloc(unit: int = AMOUNT, value: int = 100, **extra: object) -> c.Allocation:
    return c.Allocation(type=unit, value=value, **extra)  # type: ignore[arg-type]


def test_a_dollar_never_becomes_the_whole_paycheck() -> None:
    """The review's case: token AMOUNT 100 cents, ChooseAllocation PERCENTAGE with no value."""
    choice, violations = rules.choose(_alloc(AMOUNT, 100), PERCENTAGE, 0)
    assert choice is None and violations == [
        ("type", "the link token fixes the allocation type to ALLOCATION_TYPE_AMOUNT")
    ]
    choice, violations = rules.choose(_alloc(AMOUNT, 60), PERCENTAGE, 60)  # 60 cents is not 60 %
    assert choice is None and [f for f, _ in violations] == ["type"]


def test_unit_change_needs_an_alternative_and_a_value_within_its_bounds() -> None:
    alloc = _alloc(
        AMOUNT, 100, alternative=c.AllocationAlternative(type=PERCENTAGE, min_value=5, max_value=20)
    )
    assert rules.choose(alloc, PERCENTAGE, 0) == (
        None,
        [("value", "is required when the type differs from the link token's")],
    )
    assert rules.choose(alloc, PERCENTAGE, 21)[1] == [("value", "must be between 5 and 20")]
    assert rules.choose(alloc, PERCENTAGE, 4)[1] == [("value", "must be between 5 and 20")]
    assert rules.choose(alloc, PERCENTAGE, 20) == (Choice(PERCENTAGE, 20), [])
    assert rules.choose(alloc, AMOUNT, 0) == (Choice(AMOUNT, 100), [])  # the token's own unit still works


@pytest.mark.parametrize(
    ("extra", "value", "ok"),
    [
        ({}, 0, 100),  # no value: the token's
        ({}, 100, 100),
        ({}, 101, None),  # no bounds: the value is fixed
        ({"min_value": 50}, 75, 75),  # only min: between min and value
        ({"min_value": 50}, 2**63 - 1, None),  # the review's 2^63-1
        ({"min_value": 50}, 101, None),
        ({"max_value": 500}, 500, 500),
        ({"max_value": 500}, 99, None),
        ({"min_value": 50, "max_value": 500}, 49, None),
    ],
)
def test_values_in_the_tokens_unit_stay_within_explicit_bounds(
    extra: dict[str, int], value: int, ok: int | None
) -> None:
    choice, violations = rules.choose(_alloc(AMOUNT, 100, **extra), c.ALLOCATION_TYPE_UNSPECIFIED, value)
    if ok is None:
        assert choice is None and [f for f, _ in violations] == ["value"]
    else:
        assert choice == Choice(AMOUNT, ok) and violations == []


@pytest.mark.parametrize(
    ("alloc", "fields"),
    [
        (_alloc(AMOUNT, 100), []),
        (_alloc(PERCENTAGE, 101), ["a.value"]),
        (_alloc(AMOUNT, rules.MAX_AMOUNT_CENTS + 1), ["a.value"]),
        (_alloc(AMOUNT, 0), ["a.value"]),
        (_alloc(c.ALLOCATION_TYPE_UNSPECIFIED, 5), ["a.type"]),
        (_alloc(AMOUNT, 100, min_value=200), ["a.min_value"]),
        (_alloc(AMOUNT, 100, max_value=50), ["a.max_value"]),
        (_alloc(AMOUNT, 100, max_value=2**63 - 1), ["a.max_value"]),
        (
            _alloc(AMOUNT, 100, alternative=c.AllocationAlternative(type=AMOUNT, min_value=1, max_value=2)),
            ["a.alternative.type"],
        ),
        (
            _alloc(AMOUNT, 100, alternative=c.AllocationAlternative(type=PERCENTAGE)),
            ["a.alternative.min_value", "a.alternative.max_value"],
        ),
        (
            _alloc(
                AMOUNT, 100, alternative=c.AllocationAlternative(type=PERCENTAGE, min_value=5, max_value=101)
            ),
            ["a.alternative.max_value"],
        ),
        (
            _alloc(
                AMOUNT, 100, alternative=c.AllocationAlternative(type=PERCENTAGE, min_value=30, max_value=20)
            ),
            ["a.alternative.max_value"],
        ),
        (
            _alloc(
                AMOUNT, 100, alternative=c.AllocationAlternative(type=PERCENTAGE, min_value=1, max_value=100)
            ),
            [],
        ),
    ],
)
def test_token_allocations(alloc: c.Allocation, fields: list[str]) -> None:
    assert [f for f, _ in rules.check_token("a", alloc)] == fields


def test_full_switch_only_for_an_explicit_hundred_percent() -> None:
    assert rules.switch_action(Choice(PERCENTAGE, 100), False) == FULL
    assert rules.switch_action(Choice(PERCENTAGE, 99), False) == PARTIAL
    assert rules.switch_action(Choice(AMOUNT, 100), False) == PARTIAL  # 100 cents
    assert rules.switch_action(Choice(AMOUNT, 100), True) == FULL  # the token disables splitting


@pytest.mark.parametrize(
    ("action", "unit", "value", "ok"),
    [
        (PARTIAL, AMOUNT, 100, True),
        (FULL, PERCENTAGE, 100, True),
        (FULL, AMOUNT, 100, False),  # a dollar as a full switch
        (FULL, PERCENTAGE, 60, False),
        (PARTIAL, PERCENTAGE, 100, False),
        (PARTIAL, PERCENTAGE, 0, False),
        (PARTIAL, AMOUNT, 2**63 - 1, False),
        (PARTIAL, c.ALLOCATION_TYPE_UNSPECIFIED, 5, False),
    ],
)
def test_the_last_check_before_the_platform(action: int, unit: int, value: int, ok: bool) -> None:
    assert (rules.check_switch(action, unit, value) is None) is ok
