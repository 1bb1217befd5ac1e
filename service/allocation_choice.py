"""Allocation choice: which of a link token's offered targets, type and value a deposit switch
uses (ChooseAllocation), and whether the switch is FULL or PARTIAL. Pure rules, part of the Link
session state machine (session_machine.py re-exports them)."""

from __future__ import annotations

from paylink.v1 import common_pb2

from service import errors


def choose_allocation(
    offered: common_pb2.Allocation, target_index: int, kind: int, value: int
) -> common_pb2.Allocation:
    """The allocation the user chose from the token's offer: one target, and a type and value the
    token allows (the token's own when not given; another only within its min/max). Raises
    INVALID_ARGUMENT naming each field that breaks a rule."""
    v = errors.Violations()
    if not 0 <= target_index < len(offered.targets):
        v.add("target_index", f"must be between 0 and {len(offered.targets) - 1}")
    chosen_kind = kind or offered.type
    if chosen_kind not in (common_pb2.ALLOCATION_TYPE_AMOUNT, common_pb2.ALLOCATION_TYPE_PERCENTAGE):
        v.add("type", "must be AMOUNT or PERCENTAGE")
    bounded = offered.HasField("min_value") or offered.HasField("max_value")
    if kind and kind != offered.type and bounded:
        v.add("type", "must match the token's allocation type when it sets min/max")
    chosen_value = value or offered.value
    low = offered.min_value if offered.HasField("min_value") else None
    high = offered.max_value if offered.HasField("max_value") else None
    if chosen_value <= 0 or (chosen_kind == common_pb2.ALLOCATION_TYPE_PERCENTAGE and chosen_value > 100):
        v.add("value", "is out of range for the type")
    if value and value != offered.value and low is None and high is None:
        v.add("value", "the token does not allow another value")
    if (low is not None and chosen_value < low) or (high is not None and chosen_value > high):
        v.add(
            "value",
            f"must be between {low if low is not None else 1} and {high if high is not None else chosen_value}",
        )
    v.raise_if_any()
    return common_pb2.Allocation(
        type=chosen_kind,  # type: ignore[arg-type]
        value=chosen_value,
        targets=[offered.targets[target_index]],
    )


def switch_action(chosen: common_pb2.Allocation, disable_splitting: bool) -> int:
    """FULL when the token forbids splitting or the choice is 100 %; PARTIAL otherwise."""
    full = disable_splitting or (chosen.type == common_pb2.ALLOCATION_TYPE_PERCENTAGE and chosen.value == 100)
    return common_pb2.SWITCH_ACTION_FULL if full else common_pb2.SWITCH_ACTION_PARTIAL
