"""docs/deployment.md's Sizing table (bench/sizing.py) is written from bench/results.json: its figures
are the results file's, its rules follow from them, and nothing outside the markers changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import sizing
from tests.unit.scripts import ROOT


def _results() -> dict[str, Any]:
    rpcs = [
        {"rpc": name, "concurrency": c, "rps": rps, "p99_ms": p99}
        for name, c, rps, p99 in [
            ("echo", 64, 9000.0, 5.0),
            ("GetAccount", 64, 1499.0, 60.0),
            ("CreateLinkToken", 64, 1231.0, 90.0),
            ("GetIdentity", 64, 1279.0, 93.0),
            ("ListJobs", 64, 1086.0, 80.0),
            ("GetAccount", 16, 1298.0, 22.0),
            ("GetIdentity", 16, 895.0, 42.1),
        ]
    ]
    saturated = {
        "jobs_per_s": 500.0,
        "cpu_ms_per_job": {
            "paylink serve (API + worker + relay)": 1.5,
            "PostgreSQL (the benchmark's cluster)": 1.1,
            "Kafka broker (this stack's)": 0.25,
            "benchmark driver (gRPC client, Kafka consumer)": 0.5,
        },
        "cpu_cores_used": {"Kafka broker (this stack's)": 0.13},
    }
    return {
        "rpcs": rpcs,
        "pipeline": {"saturated": saturated},
        "pipeline_split": {"saturated": {**saturated, "jobs_per_s": 800.0}},
        "relay": {"events_per_s": 30000.0, "rows": 50000},
        "footprint": {
            "rss_peak_under_rpc_load_mb": 85.2,
            "soak": {"rss_peak_mb": 94.5, "growth_mb": 0.09, "seconds": 90},
        },
    }


def test_the_figures_are_the_results_files() -> None:
    text = "\n".join(sizing.table(_results()))
    assert "served 1,231-1,499 simple RPCs/s at c=64" in text  # the slowest to the fastest simple RPC
    assert "1,086/s for ListJobs" in text
    assert "p99 at c=16 ≤ 42.1 ms" in text
    assert "500 jobs/s end to end with one `serve` process, 800 with the API in a process" in text
    assert "1.5 ms in paylink" in text and "1.1 ms in PostgreSQL" in text and "0.2 ms in Kafka" in text
    assert "30,000 events/s from one relay (50,000 rows)" in text
    assert "RSS peak 94 MB per process, +0.1 MB over a 90 s soak" in text
    assert "0.13 cores at the saturated pipeline" in text


def test_the_rules_follow_from_the_figures() -> None:
    text = "\n".join(sizing.table(_results()))
    assert "One api process per ~600 RPCs/s at peak" in text  # half of 1,231, down to a hundred
    assert "one paylink core for every ~600 jobs/s" in text  # 1000 / 1.5 ms, down to a hundred
    assert "about 60 times as many events a second" in text  # 30,000 / 500
    assert "| 160 MB per process (1.5 x the peak). |" in text  # 94.5 x 1.5 = 141.75, up to 32 MB


def test_rules_arithmetic() -> None:
    assert sizing.headroom_rps(1231.0) == 600
    assert sizing.headroom_rps(150.0) == 100  # never below a hundred
    assert sizing.memory_budget_mb(85.0) == 128
    assert sizing.memory_budget_mb(94.5) == 160


def test_a_part_without_figures_is_left_out() -> None:
    results = _results()
    del results["pipeline_split"], results["relay"]
    text = "\n".join(sizing.table(results))
    assert "| relay |" not in text and "pipeline_split" not in text
    assert "500 jobs/s end to end with one `serve` process, on the 2 cores" in text


def test_only_the_part_between_the_markers_changes() -> None:
    doc = f"before\n{sizing.BEGIN}\nold table\n{sizing.END}\nafter\n"
    out = sizing.rewrite(doc, _results())
    assert out.startswith(f"before\n{sizing.BEGIN}\n| part |") and out.endswith(f"{sizing.END}\nafter\n")
    assert "old table" not in out
    with pytest.raises(SystemExit):
        sizing.rewrite("no markers here", _results())


def test_the_committed_doc_holds_the_table_of_the_committed_results() -> None:
    results = json.loads((ROOT / "bench/results.json").read_text())
    doc = (ROOT / "docs/deployment.md").read_text()
    assert sizing.rewrite(doc, results) == doc, "run `python bench/report.py` after `make bench`"
