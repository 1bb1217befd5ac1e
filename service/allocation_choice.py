"""Allocation choice: which of a link token's offered targets, unit and value a deposit switch
uses (ChooseAllocation), and whether the switch is FULL or PARTIAL. Pure rules over the money rules
of allocation_rules.py, part of the Link session state machine (session_machine.py re-exports them)."""

from __future__ import annotations

from paylink.v1 import common_pb2

from service import allocation_rules, errors


def choose_allocation(
    offered: common_pb2.Allocation, target_index: int, kind: int, value: int
) -> common_pb2.Allocation:
    """The allocation the user chose from the token's offer: one target, and a unit and value by
    the money rules of allocation_rules.py (the unit is the token's unless it offers an alternative;
    a unit change needs a value within the alternative's bounds). Raises INVALID_ARGUMENT naming
    each field that breaks a rule."""
    v = errors.Violations()
    if not 0 <= target_index < len(offered.targets):
        v.add("target_index", f"must be between 0 and {len(offered.targets) - 1}")
    choice, problems = allocation_rules.choose(offered, kind, value)
    for field, description in problems:
        v.add(field, description)
    v.raise_if_any()
    assert choice is not None
    return common_pb2.Allocation(
        type=choice.type,  # type: ignore[arg-type]
        value=choice.value,
        targets=[offered.targets[target_index]],
    )


def switch_action(chosen: common_pb2.Allocation, disable_splitting: bool) -> int:
    """FULL when the token forbids splitting or the choice is an explicit 100 %; PARTIAL otherwise."""
    return allocation_rules.switch_action(
        allocation_rules.Choice(chosen.type, chosen.value), disable_splitting
    )
