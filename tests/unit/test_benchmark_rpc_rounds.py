"""`make bench`'s RPC rounds (bench/run.py): each target RPC is measured right beside its floor, in
halves around the floor's (floor, RPC, RPC, floor; the RPC first in every other round), and reported
with its CPU per call against the floor's and the floor's own p99 of the same round
(bench/report.py renders both)."""

from __future__ import annotations

from typing import Any

from bench import common, run
from tests.unit.scripts import load_script


def test_each_target_is_measured_in_halves_around_its_floor_and_the_order_flips_every_round() -> None:
    assert run.round_plan(0) == [
        ("read floor", 1),
        ("GetAccount", 1),
        ("GetAccount", 2),
        ("read floor", 2),
        ("write floor", 1),
        ("CreateLinkToken", 1),
        ("CreateLinkToken", 2),
        ("write floor", 2),
        ("ListJobs", 0),
        ("GetIdentity", 0),
    ]
    assert run.round_plan(1)[:8] == [
        ("GetAccount", 1),
        ("read floor", 1),
        ("read floor", 2),
        ("GetAccount", 2),
        ("CreateLinkToken", 1),
        ("write floor", 1),
        ("write floor", 2),
        ("CreateLinkToken", 2),
    ]
    assert run.round_plan(2) == run.round_plan(0)
    # every RPC and every floor a target needs is measured in every round
    for n in range(4):
        names = {name for name, _ in run.round_plan(n)}
        assert names == set(run.RPCS) | {floor for floor, _ in run.PAIRS}


def _half(rps: float, p99: float, calls: int, cpu_s: float) -> dict[str, float]:
    return {
        "rps": rps,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "ok": calls - 1,
        "errors": 1,
        "cpu_s": cpu_s,
        "pg_cpu_s": cpu_s / 4,
    }


def test_two_halves_join_into_one_measurement_with_the_cpu_per_call_over_both() -> None:
    both = run.joined([_half(1000, 10, 2000, 1.0), _half(800, 20, 1600, 1.16)])
    assert both["rps"] == 900
    assert both["p99_ms"] == 15
    assert both["errors"] == 2 and both["ok"] == 3598
    assert abs(both["cpu_us_per_call"] - 600) < 1e-9  # 2.16 s over 3,600 calls
    assert abs(both["pg_us_per_call"] - 150) < 1e-9


def test_a_paylink_round_carries_its_ratios_to_the_floor_of_the_same_round() -> None:
    floor = run.joined([_half(1000, 10, 2000, 1.0), _half(1000, 12, 2000, 1.0)])  # 500 µs a call
    paylink = run.joined([_half(900, 14, 1800, 1.08), _half(900, 16, 1800, 1.08)])  # 600 µs a call
    echo = {"rps": 2000.0}
    row = run.against(paylink, floor, echo)
    assert row["floor_ratio"] == 0.9
    assert row["ratio"] == 0.45
    assert abs(row["cpu_ratio"] - 1.2) < 1e-9
    assert row["floor_p99_ms"] == 11
    summary = run.summary("GetAccount", 16, [row, {**row, "cpu_ratio": 1.4}, {**row, "cpu_ratio": 1.1}])
    assert summary["cpu_ratio"] == 1.2  # the median of the rounds
    assert [r["cpu_ratio"] for r in summary["rounds"]] == [1.2, 1.4, 1.1]
    assert summary["floor"] == "read floor"


def _rpc(name: str, **figures: Any) -> dict[str, Any]:
    base = {"rpc": name, "concurrency": 16, "rps": 1000.0, "p50_ms": 5.0, "p99_ms": 10.0, "ratio": 0.5}
    return {**base, "floor_ratio": 1.0, "floor": "", "errors": 0, **figures}


def test_the_report_shows_cpu_per_call_against_the_floor_and_the_floors_p99() -> None:
    report = load_script("bench/report.py")
    results = {
        "rpcs": [
            _rpc("read floor", cpu_us_per_call=500.0),
            _rpc(
                "GetAccount",
                floor="read floor",
                floor_ratio=0.93,
                cpu_us_per_call=600.0,
                cpu_ratio=1.2,
                floor_p99_ms=9.0,
                p99_ms=12.5,
                rounds=[{"floor_ratio": 0.9, "cpu_ratio": 1.15}, {"floor_ratio": 0.95, "cpu_ratio": 1.25}],
            ),
        ]
    }
    table = "\n".join(report.rpc_table(results))
    assert (
        "| GetAccount | 16 | 1000 | 5.00 | 12.50 | 9.00 | 50% | 93% (90%-95%) (read floor) | 600 | 1.20 (1.15-1.25) |"
        in table
    )
    targets = "\n".join(report.targets(results))
    assert "CPU per call 1.20x the floor's" in targets
    assert "worst 12.5 ms (GetAccount; its floor's 9.0 ms in the same rounds)" in targets


def test_the_report_still_renders_results_from_before_cpu_per_call() -> None:
    report = load_script("bench/report.py")
    old = {"rpcs": [_rpc("GetAccount", floor="read floor", floor_ratio=0.83)]}
    assert (
        "| GetAccount | 16 | 1000 | 5.00 | 10.00 |  | 50% | 83% (read floor) |  |  |  | 0 (with cut) |"
        in report.rpc_table(old)
    )
    assert "CPU per call" not in "\n".join(report.targets(old))


def _ghz_report(ok: int, errors: dict[str, int]) -> dict[str, Any]:
    """A ghz JSON report's status and error distributions (errors: message -> count)."""
    codes: dict[str, int] = {"OK": ok}
    for message, n in errors.items():
        code = message.split("code = ", 1)[1].split(" ", 1)[0]
        codes[code] = codes.get(code, 0) + n
    return {"statusCodeDistribution": codes, "errorDistribution": errors}


def test_calls_cut_off_by_the_end_of_a_run_are_counted_apart_from_errors() -> None:
    closed = "rpc error: code = Unavailable desc = error reading from server: read tcp 127.0.0.1:{}->127.0.0.1:22160: use of closed network connection"
    cut_off = {closed.format(port): 4 for port in (56048, 56064, 56074, 56084)}  # c=16 over 4 connections
    assert common.split_errors(_ghz_report(1002, cut_off)) == (0, 16)
    real = {
        "rpc error: code = Unauthenticated desc = invalid API secret": 3,
        "rpc error: code = Unavailable desc = database unavailable, retry": 2,
        "rpc error: code = Canceled desc = grpc: the client connection is closing": 5,
    }
    assert common.split_errors(_ghz_report(900, {**cut_off, **real})) == (5, 21)
    assert common.split_errors({"statusCodeDistribution": {"OK": 10}}) == (0, 0)


def test_the_cut_off_calls_count_for_cpu_per_call_but_not_as_errors_of_a_measurement() -> None:
    halves = [{**_half(1000, 10, 2000, 1.0), "errors": 0, "cut": 16} for _ in range(2)]
    both = run.joined(halves)
    assert both["errors"] == 0 and both["cut"] == 32
    assert abs(both["cpu_us_per_call"] - 2.0 / 4030 * 1e6) < 1e-9  # 3,998 answered + 32 cut off
    floor = {**both, "cpu_us_per_call": 400.0}
    row = run.against(both, floor, {"rps": 2000.0})
    summary = run.summary("GetAccount", 16, [row, row, row])
    assert summary["errors"] == 0 and summary["cut"] == 96
    table = "\n".join(load_script("bench/report.py").rpc_table({"rpcs": [{**summary, "rpc": "GetAccount"}]}))
    [line] = [line for line in table.splitlines() if line.startswith("| GetAccount |")]
    assert line.endswith("| 0 |")  # the cut-off calls are not errors
    assert "apart as `cut`" in table  # and the table says what it leaves out
