"""`make bench`'s pipeline in two deployments (bench/run.py --api-processes, default 0,1): serve alone
(results key `pipeline`), and serve (worker + relay) beside `service api` processes that take the
driver's calls (`pipeline_split`), the driver's connections spread over them round robin; with
--fleet, a third without serve (`pipeline_fleet`: api processes, a `service worker`, a `service
relay`); and bench/report.py rendering each figure labelled with its deployment and key."""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest

from bench import run
from tests.unit.scripts import load_script


def test_the_default_measures_serve_alone_then_the_split_with_one_api_process() -> None:
    assert run.pipeline_deployments([0, 1]) == [("pipeline", 0), ("pipeline_split", 1)]
    # the order is kept (pairs may alternate it), and either deployment may run alone
    assert run.pipeline_deployments([1, 0]) == [("pipeline_split", 1), ("pipeline", 0)]
    assert run.pipeline_deployments([0]) == [("pipeline", 0)]
    assert run.pipeline_deployments([3]) == [("pipeline_split", 3)]


@pytest.mark.parametrize("counts", [[], [-1], [0, 0], [1, 2], [2, 0, 1]])
def test_a_results_key_is_never_measured_twice(counts: list[int]) -> None:
    with pytest.raises(ValueError):
        run.pipeline_deployments(counts)


def test_the_driver_s_connections_go_to_the_api_processes_in_turn() -> None:
    assert run.driver_ports([7001, 7002, 7003], 3) == [7001, 7002, 7003]
    assert run.driver_ports([7001, 7002], 5) == [7001, 7002, 7001, 7002, 7001]
    assert run.driver_ports([7001], 2) == [7001, 7001]
    with pytest.raises(ValueError):
        run.driver_ports([], 1)
    with pytest.raises(ValueError):
        run.driver_ports([7001], 0)


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_the_driver_s_calls_are_spread_evenly_over_the_api_processes(processes: int) -> None:
    """bench_pipeline sends call i on connection i % connections: with one connection per process
    (what the pipeline does), every process gets the same share of the calls, within one."""
    ports = run.driver_ports([7001 + k for k in range(processes)], processes)
    calls = collections.Counter(ports[i % len(ports)] for i in range(1000))
    assert set(calls) == {7001 + k for k in range(processes)}
    assert max(calls.values()) - min(calls.values()) <= 1


def test_each_figure_names_its_deployment() -> None:
    assert run.deployment(0) == "one process: `service serve` (API + worker + relay)"
    assert run.deployment(1) == "`service serve` (worker + relay) + 1 `service api` process"
    assert run.deployment(2) == "`service serve` (worker + relay) + 2 `service api` processes"


def _pipe(rate: float, deployment: str | None, labels: dict[str, float]) -> dict[str, Any]:
    saturated = {
        "jobs": 10000,
        "jobs_per_s": rate,
        "p50_ms": 60.0,
        "p99_ms": 240.0,
        "offered_per_s": 0.0,
        "cpu_cores_used": labels,
        "rss_peak_mb_per_process": {label: 90.0 for label in labels},
    }
    half = {"jobs": 2500, "jobs_per_s": rate / 2, "p50_ms": 30.0, "p99_ms": 70.0, "offered_per_s": rate / 2}
    out: dict[str, Any] = {"saturated": saturated, "half_load": half}
    if deployment:
        out["deployment"] = deployment
    return out


RESULTS: dict[str, Any] = {
    "machine": {"cores": 2},
    "args": {"half_rate": 0.0, "profile": False},
    "pipeline": _pipe(500, run.deployment(0), {run.SERVE_LABEL: 0.7}),
    "pipeline_split": _pipe(740, run.deployment(1), {run.SPLIT_SERVE_LABEL: 0.6, run.API_LABEL: 0.5}),
}


def test_benchmarks_md_shows_both_deployments_each_labelled() -> None:
    report = load_script("bench/report.py")
    section = "\n".join(report.pipeline(RESULTS))
    single = "one process: `service serve` (API + worker + relay), `pipeline`"
    split = "`service serve` (worker + relay) + 1 `service api` process, `pipeline_split`"
    assert f"| {single} | saturated | 10000 | 0 | 500 | 60 | 240 |" in section
    assert f"| {split} | saturated | 10000 | 0 | 740 | 60 | 240 |" in section
    assert f"| {split} | half of saturated | 2500 | 370 | 370 | 30 | 70 |" in section
    assert f"| {run.API_LABEL} | 0.50 | 90 |" in section
    targets = "\n".join(report.targets(RESULTS))
    assert f"| 500 jobs/s ({single}) | **missed** |" in targets
    assert f"| 740 jobs/s ({split}) | **missed** |" in targets


def test_results_from_before_the_split_still_render_as_serve_alone() -> None:
    old = {**RESULTS, "pipeline": _pipe(500, None, {run.SERVE_LABEL: 0.7})}
    del old["pipeline_split"]
    section = "\n".join(load_script("bench/report.py").pipeline(old))
    assert "| one process: `service serve` (API + worker + relay), `pipeline` | saturated |" in section
    assert "pipeline_split" not in section


def test_the_machine_s_busy_time_leaves_out_idle_and_iowait() -> None:
    from bench import common

    tick = os.sysconf("SC_CLK_TCK")
    stat = f"cpu  {tick} 0 {tick} {50 * tick} {tick} 0 {tick} 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n"
    assert common.busy_seconds(stat) == 3.0
    with pytest.raises(ValueError):
        common.busy_seconds("intr 1\n")


def test_the_fleet_runs_last_and_alone_when_asked_for() -> None:
    assert run.pipeline_deployments([0, 1], 1) == [
        ("pipeline", 0),
        ("pipeline_split", 1),
        ("pipeline_fleet", 1),
    ]
    assert run.pipeline_deployments([1, 0], 2) == [
        ("pipeline_split", 1),
        ("pipeline", 0),
        ("pipeline_fleet", 2),
    ]
    assert run.pipeline_deployments(run.api_process_counts("none"), 1) == [("pipeline_fleet", 1)]
    assert run.pipeline_deployments([0, 1]) == run.pipeline_deployments([0, 1], 0)  # not by default
    assert run.api_process_counts("0,1") == [0, 1]


@pytest.mark.parametrize(("counts", "fleet"), [([], 0), ([0], -1), ([1, 2], 1), ([0, 0], 1)])
def test_no_deployment_at_all_or_a_negative_fleet_is_refused(counts: list[int], fleet: int) -> None:
    with pytest.raises(ValueError):
        run.pipeline_deployments(counts, fleet)


def test_the_fleet_figure_says_there_was_no_serve() -> None:
    fleet = "1 `service api` process + `service worker` + `service relay` (no serve)"
    assert run.deployment(1, run.FLEET) == fleet
    assert (
        run.deployment(2, run.FLEET)
        == "2 `service api` processes + `service worker` + `service relay` (no serve)"
    )
    assert run.deployment(1, run.SPLIT) == run.deployment(1)  # the other keys' labels are unchanged


FLEET_RESULTS: dict[str, Any] = {
    **RESULTS,
    "args": {**RESULTS["args"], "api_processes": [], "fleet": 1},
    "pipeline_fleet": _pipe(
        610, run.deployment(1, run.FLEET), {run.API_LABEL: 0.5, run.WORKER_LABEL: 0.3, run.RELAY_LABEL: 0.1}
    ),
}


def test_benchmarks_md_shows_the_fleet_labelled_when_it_ran() -> None:
    report = load_script("bench/report.py")
    section = "\n".join(report.pipeline(FLEET_RESULTS))
    fleet = "1 `service api` process + `service worker` + `service relay` (no serve), `pipeline_fleet`"
    assert f"| {fleet} | saturated | 10000 | 0 | 610 | 60 | 240 |" in section
    assert f"| {fleet} | half of saturated | 2500 | 305 | 305 | 30 | 70 |" in section
    assert (
        f"| {run.WORKER_LABEL} | 0.30 | 90 |" in section and f"| {run.RELAY_LABEL} | 0.10 | 90 |" in section
    )
    assert "*fleet* (`--fleet`" in section
    assert f"| 610 jobs/s ({fleet}) | **missed** |" in "\n".join(report.targets(FLEET_RESULTS))
    assert "--api-processes none --fleet 1" in report._args(FLEET_RESULTS)


def test_without_the_fleet_benchmarks_md_does_not_mention_it() -> None:
    report = load_script("bench/report.py")
    section = "\n".join(report.pipeline(RESULTS)) + "\n".join(report.targets(RESULTS))
    assert "pipeline_fleet" not in section and "*fleet*" not in section
