"""bench/run.py --rpc-fixed-rate: echo and each floor offered a fraction of their own saturated rate
at c=16, each RPC the same fraction of its floor's (`fixed_rate_plan`)."""

from __future__ import annotations

from typing import Any

from bench import run


def _row(name: str, conc: int, rps: float) -> dict[str, Any]:
    return {"rpc": name, "concurrency": conc, "rps": rps}


def test_each_rpc_is_offered_half_its_floors_rate_at_c16() -> None:
    saturated = [
        _row("echo", 16, 9000.0),
        _row("read floor", 16, 4000.0),
        _row("write floor", 16, 2001.0),
        *(_row(name, 16, 100.0) for name in run.RPCS),  # their own rate does not matter
        _row("read floor", 64, 5000.0),  # other concurrencies are not used
    ]
    plan = dict(run.fixed_rate_plan(saturated, 0.5, 16))
    assert plan == {
        "echo": 4500,
        "read floor": 2000,
        "write floor": 1000,
        "GetAccount": 2000,
        "ListJobs": 2000,
        "CreateLinkToken": 1000,
        "GetIdentity": 1000,
    }


def test_nothing_without_the_concurrency_measured() -> None:
    assert run.fixed_rate_plan([_row("read floor", 64, 5000.0)], 0.5, 16) == []
