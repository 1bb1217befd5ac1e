"""BENCHMARKS.md's "This run" line (bench/report.py `header`) lists only the options of the parts
that ran: a full run has no monitoring results (that part runs only when asked for), so its options
are not shown."""

from __future__ import annotations

from typing import Any

from tests.unit.scripts import load_script

ARGS: dict[str, Any] = {
    "runs": 3,
    "seconds": 4.0,
    "concurrency": [16, 64],
    "jobs": 10000,
    "half_seconds": 10.0,
    "accounts": 100,
    "peer_jobs": 5000,
    "peer_runs": 1,
    "latency": 2.0,
    "latency_jitter": 0.5,
    "latency_jobs": 12000,
    "latency_concurrency": 2000,
    "latency_accounts": 1000,
    "relay_rows": 50000,
    "soak_seconds": 90,
    "port": 50151,
    "extra_workers": 0,
    "profile": True,
    "only": None,
    "monitoring_accounts": 1000000,
    "monitoring_due": 2000,
}


def _this_run(results: dict[str, Any]) -> str:
    results = {
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "memory_gib": 8,
            "kernel": "6",
            "python": "3.11",
            "commit": "abc",
            "date": "today",
            "load_average_at_start": [0.1, 0.1, 0.1],
        },
        "postgres": {"durable": {"fsync": "on"}},
        "args": ARGS,
        **results,
    }
    line: str = next(
        line for line in load_script("bench/report.py").header(results) if line.startswith("This run:")
    )
    return line


def test_a_full_run_shows_no_monitoring_options() -> None:
    parts = ("rpcs", "pipeline", "footprint", "peers", "latency", "logins", "relay")
    line = _this_run({part: {} for part in parts})
    assert "--monitoring" not in line
    assert line == (
        "This run: `bench/run.py --runs 3 --seconds 4.0 --concurrency 16,64 --jobs 10000 --half-seconds 10.0"
        " --accounts 100 --peer-jobs 5000 --peer-runs 1 --latency 2.0 --latency-jitter 0.5 --latency-jobs 12000"
        " --latency-concurrency 2000 --latency-accounts 1000 --relay-rows 50000 --soak-seconds 90 --port 50151"
        " --extra-workers 0 --profile`."
    )


def test_only_the_options_of_the_parts_that_ran() -> None:
    line = _this_run({"relay": {}, "monitoring": {}})
    assert line == (
        "This run: `bench/run.py --relay-rows 50000 --port 50151 --extra-workers 0"
        " --monitoring-accounts 1000000 --monitoring-due 2000`."
    )
    assert "--profile" not in _this_run({"rpcs": {}})
